//! The writer: applies parsed entries to a root through [`Tree`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags, chownat, fchmod,
    fchown, fsetxattr, fstat, futimens, linkat, mkdirat, mknodat, openat, symlinkat, utimensat,
};
use rustix::io::Errno;

use super::error::{EntryError, LayerError};
use super::names::split;
use super::spec::{Kind, Meta, Op, Spec};
use super::tree::{Tree, list_dir, lstat_at, open_child_dir, os, remove_any};
use crate::overlay::{OPAQUE_VALUE, OPAQUE_XATTR};

/// How whiteouts are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFormat {
    /// The layer goes into an empty directory of its own, to be stacked by overlayfs: whiteouts
    /// become 0/0 character devices and opaque directories get `user.overlay.opaque=y`.
    OverlaySnapshot,
    /// The layer is applied on top of the lower layers' content in the same directory:
    /// whiteouts delete, opaque markers empty the directory of lower content.
    Flattened,
}

/// Counters returned with a finished layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries applied (whiteouts included, skipped root entries excluded).
    pub entries: u64,
    /// Entries naming the root itself (`./`, `..`, ...), ignored on purpose.
    pub root_entries_skipped: u64,
    /// Extended attributes outside the allow-list (`user.*`, `security.capability`), dropped.
    pub xattrs_dropped: u64,
    /// Allowed extended attributes the filesystem refused (e.g. `user.*` on tmpfs).
    pub xattrs_failed: u64,
    /// Device nodes not created: the kernel refuses `mknod` of devices inside a user namespace
    /// (rootless), and an id-shifted store never holds any (its run directories are reachable
    /// by the unprivileged range). Containers get the standard devices bound from the host.
    pub devices_skipped: u64,
}

struct OpenFile {
    file: File,
    spec: Box<Spec>,
    sparse: bool,
}

/// A directory whose owner, mode and times are applied after its children exist (so a 0400
/// directory can still be filled and its mtime is not disturbed by the children).
struct DeferredDir {
    path: Vec<u8>,
    dev: u64,
    ino: u64,
    meta: Meta,
}

/// Applies entries to one root.
pub(crate) struct Applier {
    tree: Tree,
    format: LayerFormat,
    /// Paths this layer wrote (with all their ancestors): whiteouts and opaque markers only
    /// hide *lower* content (flattened format).
    written: HashSet<Vec<u8>>,
    dirs: Vec<DeferredDir>,
    file: Option<OpenFile>,
    /// Hardlinks (path, target) whose target is not in this layer (overlay snapshot format).
    pending_links: Vec<(Vec<u8>, Vec<u8>)>,
    /// Device nodes are counted and skipped instead of created (an id-shifted store).
    pub(crate) skip_devices: bool,
    pub(crate) stats: ApplyStats,
}

/// What a finished layer leaves for the snapshot store to complete.
pub(crate) struct Leftovers {
    /// Directories created only as parents of entries.
    pub(crate) implied_dirs: Vec<Vec<u8>>,
    /// Hardlinks to files of lower layers, to be made on top of them.
    pub(crate) pending_links: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Applier {
    /// Opens `root` for applying one layer.
    pub(crate) fn new(root: &Path, format: LayerFormat) -> std::io::Result<Self> {
        Ok(Self {
            tree: Tree::open(root)?,
            format,
            written: HashSet::new(),
            dirs: Vec::new(),
            file: None,
            pending_links: Vec::new(),
            skip_devices: false,
            stats: ApplyStats::default(),
        })
    }

    /// Applies one message from the parser.
    pub(crate) fn apply(&mut self, op: Op) -> Result<(), LayerError> {
        match op {
            Op::Entry(spec) => {
                self.stats.entries += 1;
                let name = spec.raw_name.clone();
                self.entry(spec).map_err(|source| LayerError::Entry {
                    entry: name,
                    source,
                })
            }
            Op::Data(chunk) => {
                let Some(open) = self.file.as_mut() else {
                    return Ok(());
                };
                let result = if open.sparse && chunk.iter().all(|&b| b == 0) {
                    open.file
                        .seek(SeekFrom::Current(chunk.len() as i64))
                        .map(|_| ())
                } else {
                    open.file.write_all(&chunk)
                };
                result.map_err(|source| LayerError::Entry {
                    entry: open.spec.raw_name.clone(),
                    source: EntryError::Io {
                        op: "write file",
                        source,
                    },
                })
            }
            Op::End => {
                let Some(open) = self.file.take() else {
                    return Ok(());
                };
                let name = open.spec.raw_name.clone();
                self.finish_file(open).map_err(|source| LayerError::Entry {
                    entry: name,
                    source,
                })
            }
        }
    }

    fn mark_written(&mut self, path: &[u8]) {
        if self.format != LayerFormat::Flattened {
            return;
        }
        let mut p = path;
        while self.written.insert(p.to_vec()) {
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }

    fn entry(&mut self, spec: Box<Spec>) -> Result<(), EntryError> {
        match &spec.kind {
            Kind::Whiteout => return self.whiteout(&spec.path),
            Kind::Opaque => return self.opaque(&spec.path),
            _ => {}
        }
        if !self.pending_links.is_empty() {
            // A later entry of the layer replaces a pending link of the same name.
            self.pending_links.retain(|(p, _)| p != &spec.path);
        }
        let (parent_path, name) = split(&spec.path);
        let parent = self
            .tree
            .dir(parent_path, true)?
            .ok_or_else(|| EntryError::Invalid("parent directory vanished".into()))?;
        let parent = parent.as_fd();
        self.mark_written(&spec.path);
        match &spec.kind {
            Kind::File { sparse, .. } => {
                let fd = self
                    .replace(parent, name, |p| {
                        openat(
                            p,
                            os(name),
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o600),
                        )
                    })
                    .map_err(EntryError::errno("create file"))?;
                let sparse = *sparse;
                self.file = Some(OpenFile {
                    file: File::from(fd),
                    spec,
                    sparse,
                });
                Ok(())
            }
            Kind::Dir => {
                let name = name.to_vec();
                self.directory(parent, &name, *spec)
            }
            Kind::Symlink(target) => {
                self.replace(parent, name, |p| symlinkat(os(target), p, os(name)))
                    .map_err(EntryError::errno("create symlink"))?;
                self.link_meta(parent, name, &spec.meta)
            }
            Kind::Hardlink(target) => {
                let (tparent_path, tname) = split(target);
                let missing = match self.tree.dir(tparent_path, false)? {
                    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                    Some(tparent) => match self.replace(parent, name, |p| {
                        linkat(&*tparent, os(tname), p, os(name), AtFlags::empty())
                    }) {
                        Ok(()) => false,
                        Err(Errno::NOENT) => true,
                        Err(e) => return Err(EntryError::errno("create hardlink")(e)),
                    },
                    None => true,
                };
                if !missing {
                    return Ok(());
                }
                // A snapshot holds one layer only: a link to a file of a lower layer is made
                // when the snapshot is committed on top of its lowers.
                if self.format == LayerFormat::OverlaySnapshot {
                    self.pending_links.push((spec.path.clone(), target.clone()));
                    return Ok(());
                }
                Err(EntryError::MissingLinkTarget(
                    String::from_utf8_lossy(target).into_owned(),
                ))
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                let ft = if matches!(spec.kind, Kind::Char(..)) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                if self.skip_devices {
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(*major, *minor);
                let made = self.replace(parent, name, |p| {
                    mknodat(p, os(name), ft, Mode::from_raw_mode(0o600), dev)
                });
                if made == Err(Errno::PERM) && crate::userns::in_user_namespace() {
                    self.stats.devices_skipped += 1;
                    return Ok(());
                }
                made.map_err(EntryError::errno("mknod"))?;
                self.node_meta(parent, name, &spec.meta)
            }
            Kind::Fifo => {
                self.replace(parent, name, |p| {
                    mknodat(p, os(name), FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                })
                .map_err(EntryError::errno("mkfifo"))?;
                self.node_meta(parent, name, &spec.meta)
            }
            Kind::Whiteout | Kind::Opaque => unreachable!("handled above"),
        }
    }

    /// Runs `create`; if the name is taken, removes whatever is there (never following it, a
    /// directory with its content) and tries once more. Replacing is unlink + create, never
    /// writing into an existing inode (which may be a hardlink shared with another path).
    fn replace<T>(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        mut create: impl FnMut(BorrowedFd<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        match create(parent) {
            Err(Errno::EXIST) => {
                remove_any(parent, name)?;
                self.tree.invalidate();
                create(parent)
            }
            other => other,
        }
    }

    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        spec: Spec,
    ) -> Result<(), EntryError> {
        match mkdirat(parent, os(name), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = lstat_at(parent, name).map_err(EntryError::errno("stat"))?;
                let is_dir =
                    st.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if !is_dir {
                    remove_any(parent, name).map_err(EntryError::errno("remove"))?;
                    self.tree.invalidate();
                    mkdirat(parent, os(name), Mode::from_raw_mode(0o700))
                        .map_err(EntryError::errno("create directory"))?;
                }
            }
            Err(e) => return Err(EntryError::errno("create directory")(e)),
        }
        let fd = open_child_dir(parent, name).map_err(EntryError::errno("open directory"))?;
        self.set_xattrs(fd.as_fd(), &spec.meta.xattrs);
        let st = fstat(&fd).map_err(EntryError::errno("stat directory"))?;
        self.dirs.push(DeferredDir {
            path: spec.path.clone(),
            dev: st.st_dev,
            ino: st.st_ino,
            meta: spec.meta,
        });
        self.tree.remember(&spec.path, fd);
        Ok(())
    }

    fn finish_file(&mut self, open: OpenFile) -> Result<(), EntryError> {
        let OpenFile { file, spec, sparse } = open;
        if sparse && let Kind::File { size, .. } = spec.kind {
            file.set_len(size)
                .map_err(EntryError::io("truncate sparse file"))?;
        }
        // chown before chmod: chown clears setuid/setgid (and security.capability).
        fchown(&file, Some(uid(spec.meta.uid)), Some(gid(spec.meta.gid)))
            .map_err(EntryError::chown("chown", spec.meta.uid, spec.meta.gid))?;
        fchmod(&file, Mode::from_raw_mode(spec.meta.mode)).map_err(EntryError::errno("chmod"))?;
        self.set_xattrs(file.as_fd(), &spec.meta.xattrs);
        futimens(&file, &times(spec.meta.mtime)).map_err(EntryError::errno("set times"))?;
        Ok(())
    }

    /// Owner and times of a symlink, on the link itself.
    fn link_meta(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), EntryError> {
        chownat(
            parent,
            os(name),
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(EntryError::chown("lchown", meta.uid, meta.gid))?;
        utimensat(
            parent,
            os(name),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(EntryError::errno("set symlink times"))?;
        if !meta.xattrs.is_empty() {
            self.stats.xattrs_dropped += meta.xattrs.len() as u64;
        }
        Ok(())
    }

    /// Owner, mode and times of a device node or fifo we just created. The mode goes through an
    /// `O_PATH` fd of exactly that inode (never a path lookup that could follow a symlink).
    fn node_meta(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), EntryError> {
        chownat(
            parent,
            os(name),
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(EntryError::chown("chown", meta.uid, meta.gid))?;
        let fd = openat(
            parent,
            os(name),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(EntryError::errno("open node"))?;
        chmod_o_path(&fd, meta.mode).map_err(EntryError::errno("chmod"))?;
        utimensat(
            parent,
            os(name),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(EntryError::errno("set times"))?;
        Ok(())
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)]) {
        for (name, value) in xattrs {
            if fsetxattr(fd, os(name), value, XattrFlags::empty()).is_err() {
                self.stats.xattrs_failed += 1;
            }
        }
    }

    fn whiteout(&mut self, victim: &[u8]) -> Result<(), EntryError> {
        let (parent_path, name) = split(victim);
        match self.format {
            LayerFormat::OverlaySnapshot => {
                let parent = self
                    .tree
                    .dir(parent_path, true)?
                    .ok_or_else(|| EntryError::Invalid("parent directory vanished".into()))?;
                // Something of this layer already has the name: a whiteout cannot hide it.
                if lstat_at(parent.as_fd(), name)
                    .map_err(EntryError::errno("stat"))?
                    .is_some()
                {
                    return Ok(());
                }
                mknodat(
                    &*parent,
                    os(name),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(EntryError::errno("create overlay whiteout"))
            }
            LayerFormat::Flattened => {
                // A parent that does not exist (or a dangling symlink) has nothing to hide.
                let Some(parent) = self.tree.dir(parent_path, false)? else {
                    return Ok(());
                };
                let before = fstat(&*parent).map_err(EntryError::errno("stat"))?;
                self.remove_lower(parent.as_fd(), name, victim)?;
                // Restore the parent's times (a whiteout is not a change of the directory).
                let dir = openat(
                    &*parent,
                    c".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(EntryError::errno("open parent directory"))?;
                let ts = Timestamps {
                    last_access: Timespec {
                        tv_sec: before.st_atime,
                        tv_nsec: before.st_atime_nsec as _,
                    },
                    last_modification: Timespec {
                        tv_sec: before.st_mtime,
                        tv_nsec: before.st_mtime_nsec as _,
                    },
                };
                futimens(&dir, &ts).map_err(EntryError::errno("restore parent times"))?;
                Ok(())
            }
        }
    }

    fn opaque(&mut self, dir_path: &[u8]) -> Result<(), EntryError> {
        let dir = self
            .tree
            .dir(dir_path, true)?
            .ok_or_else(|| EntryError::Invalid("directory vanished".into()))?;
        match self.format {
            LayerFormat::OverlaySnapshot => {
                let fd = openat(
                    &*dir,
                    c".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(EntryError::errno("open directory"))?;
                fsetxattr(&fd, OPAQUE_XATTR, OPAQUE_VALUE, XattrFlags::empty())
                    .map_err(EntryError::errno("set user.overlay.opaque"))
            }
            LayerFormat::Flattened => {
                self.mark_written(dir_path);
                for child in list_dir(dir.as_fd()).map_err(EntryError::errno("list directory"))? {
                    let path = join(dir_path, &child);
                    self.remove_lower(dir.as_fd(), &child, &path)?;
                }
                Ok(())
            }
        }
    }

    /// Removes `name` unless this layer wrote it; keeps what this layer wrote below it.
    fn remove_lower(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), EntryError> {
        if !self.written.contains(path) {
            remove_any(parent, name).map_err(EntryError::errno("remove"))?;
            self.tree.invalidate();
            return Ok(());
        }
        let Some(st) = lstat_at(parent, name).map_err(EntryError::errno("stat"))? else {
            return Ok(());
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        let dir = open_child_dir(parent, name).map_err(EntryError::errno("open directory"))?;
        for child in list_dir(dir.as_fd()).map_err(EntryError::errno("list directory"))? {
            let child_path = join(path, &child);
            self.remove_lower(dir.as_fd(), &child, &child_path)?;
        }
        Ok(())
    }

    /// Applies the deferred directory attributes; call once after the last entry.
    pub(crate) fn finish(&mut self) -> Result<Leftovers, LayerError> {
        self.file = None;
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter() {
            let fd = match self.tree.open_in_root(
                &d.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Removed or replaced later in the layer: nothing to do.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(dir_error(d, EntryError::errno("open directory")(e))),
            };
            let st =
                fstat(&fd).map_err(|e| dir_error(d, EntryError::errno("stat directory")(e)))?;
            if st.st_dev != d.dev || st.st_ino != d.ino {
                continue;
            }
            apply_dir_meta(&fd, &d.meta).map_err(|e| dir_error(d, e))?;
        }
        Ok(Leftovers {
            implied_dirs: std::mem::take(&mut self.tree.implied),
            pending_links: std::mem::take(&mut self.pending_links),
        })
    }
}

fn dir_error(d: &DeferredDir, source: EntryError) -> LayerError {
    LayerError::Entry {
        entry: String::from_utf8_lossy(&d.path).into_owned(),
        source,
    }
}

fn apply_dir_meta(fd: &OwnedFd, meta: &Meta) -> Result<(), EntryError> {
    fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))
        .map_err(EntryError::chown("chown", meta.uid, meta.gid))?;
    fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(EntryError::errno("chmod"))?;
    futimens(fd, &times(meta.mtime)).map_err(EntryError::errno("set times"))
}

/// `chmod` of the inode behind an `O_PATH` fd (fchmod refuses `O_PATH` fds); the magic link
/// names exactly that inode, never a path that could be swapped.
fn chmod_o_path(fd: &OwnedFd, mode: u32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(mode))
}

pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn uid(raw: u32) -> Uid {
    Uid::from_raw(raw)
}

fn gid(raw: u32) -> Gid {
    Gid::from_raw(raw)
}

fn times((sec, nsec): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
