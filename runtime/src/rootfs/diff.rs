//! A run's overlay upper directory -> an OCI layer tar: what a build command changed.
//!
//! The upper directory holds exactly the changes of the run, in overlay's format: a whiteout
//! is a 0/0 character device, an opaque directory carries `user.overlay.opaque=y` (every
//! overlay of dockless is mounted with `userxattr`, so overlay's own marks are the exact
//! `user.overlay.*` names; a `trusted.overlay.*` name there is data the container wrote, and
//! `user.overlay.overlay.*` is overlay's escaped form of one). They become the OCI forms
//! `.wh.<name>` and `.wh..wh..opq`. The tree was written by an untrusted container, so it is
//! read with `*at` calls that never follow a symlink, iteratively (no recursion a deep tree
//! could overflow), within the [`Limits`] the unpacker will apply to the layer, and the output
//! is deterministic: entries sorted by name, directories before their children, hard links as
//! links to the first path. Overlay features whose upper entries do not stand on their own
//! (metacopy: metadata without data; redirect_dir: a renamed directory pointing at its lower
//! origin) are refused.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat, fgetxattr, flistxattr, openat, readlinkat};
use rustix::io::Errno;

use super::mount::{RootfsKind, RunRootfs};
use crate::unpack::Limits;
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, os};

/// Why an upper directory could not become a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The run got a flattened copy: there is no upper directory holding only its changes.
    #[error("build commands need an overlay root filesystem; this run got a copy ({reason})")]
    NoOverlay {
        /// Why overlay was not used.
        reason: String,
    },
    /// Reading the upper directory failed.
    #[error("cannot {op} {}", path.display())]
    Read {
        /// What we tried.
        op: &'static str,
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An overlay feature whose upper entries depend on the lower layers.
    #[error("{} uses overlay {feature}, which a layer cannot express", path.display())]
    Unsupported {
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// The feature (xattr) found.
        feature: &'static str,
    },
    /// A name the OCI layer format reserves for whiteouts (`.wh.*`): written as it is, it
    /// would delete or hide files when the layer is applied.
    #[error("{} has a name reserved for OCI whiteouts", path.display())]
    ReservedName {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// A file changed size while it was read.
    #[error("{} changed while it was read", path.display())]
    Changed {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// An entry nested deeper than [`DiffOptions::max_depth`]: the build made a tree no image
    /// needs, and reading it without a bound would cost memory and descriptors per level.
    #[error("{} is nested deeper than {max} levels", path.display())]
    TooDeep {
        /// The first entry found too deep, relative to the upper directory.
        path: PathBuf,
        /// The depth allowed.
        max: usize,
    },
    /// The layer would pass one of the [`Limits`] the unpacker applies to it later: better
    /// to fail the build now than to write a layer no run can use.
    #[error("{} exceeds the layer limit {limit} of {max}", path.display())]
    Limit {
        /// The entry that passed it, relative to the upper directory.
        path: PathBuf,
        /// The [`Limits`] field, e.g. `max_file_size`.
        limit: &'static str,
        /// Its value.
        max: u64,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the layer entry {}", path.display())]
    Write {
        /// The entry being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Directory levels a layer written by [`write_upper_as_layer`] may have by default: far more
/// than any image tree, and few enough descriptors to hold one per level.
const DEFAULT_MAX_DEPTH: usize = 256;

/// How [`write_upper_as_layer`] writes entries.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// Every entry gets this mtime instead of its own (reproducible layers).
    pub fixed_mtime: Option<u64>,
    /// Paths (relative, e.g. `etc/resolv.conf`) the runtime creates as mount points: left out
    /// when they are an empty file or an empty directory without an overlay mark, so a run's
    /// plumbing does not become part of the image.
    pub mount_points: Vec<PathBuf>,
    /// The bounds the unpacker will apply to this layer (`max_layer_bytes`, `max_entries`,
    /// `max_file_size`, `max_xattrs_per_entry` and `max_xattr_value` are checked while
    /// writing).
    pub limits: Limits,
    /// Path components an entry may have below the upper directory (default 256).
    pub max_depth: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            fixed_mtime: None,
            mount_points: Vec::new(),
            limits: Limits::default(),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// What [`write_upper_as_layer`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Entries written, whiteouts and opaque markers included.
    pub entries: u64,
    /// `.wh.<name>` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaque_dirs: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
}

impl RunRootfs {
    /// The overlay upper directory of this run: its changes, readable after the container
    /// ended and before the rootfs is released.
    pub fn upper_dir(&self) -> Result<PathBuf, DiffError> {
        match self.kind() {
            RootfsKind::Overlay => Ok(self.run_dir().join("upper")),
            RootfsKind::Copy { reason } => Err(DiffError::NoOverlay {
                reason: reason.clone(),
            }),
        }
    }
}

/// Overlay's own marks under `userxattr` (exact names: `user.overlay.overlay.*` is data).
const OPAQUE_XATTR: &str = "user.overlay.opaque";
const METACOPY_XATTR: &str = "user.overlay.metacopy";
const REDIRECT_XATTR: &str = "user.overlay.redirect";
const OVERLAY_MARKS: [&str; 3] = [OPAQUE_XATTR, METACOPY_XATTR, REDIRECT_XATTR];

/// Writes the changes in `upper` as an uncompressed OCI layer tar into `out` (and ends the
/// archive).
pub fn write_upper_as_layer(
    upper: &Path,
    options: &DiffOptions,
    out: impl Write,
) -> Result<DiffReport, DiffError> {
    let root = openat(
        rustix::fs::CWD,
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(read_err("open", upper))?;
    let mut walk = Walk {
        tar: tar::Builder::new(Counted {
            inner: out,
            written: 0,
            limit: options.limits.max_layer_bytes,
            over: false,
        }),
        options,
        report: DiffReport::default(),
        links: HashMap::new(),
    };
    walk.run(root)?;
    let end = Path::new("end of archive");
    let finished = walk.tar.finish();
    finished.map_err(|e| walk.write_failed(end, e))?;
    walk.tar
        .into_inner()
        .and_then(|mut out| out.inner.flush())
        .map_err(write_err(end))?;
    Ok(walk.report)
}

/// One directory being written: its open descriptor and the names still to write.
struct Frame {
    fd: OwnedFd,
    rel: PathBuf,
    depth: usize,
    names: std::vec::IntoIter<Vec<u8>>,
}

impl Frame {
    fn new(fd: OwnedFd, rel: PathBuf, depth: usize) -> Result<Frame, DiffError> {
        let mut names = list_dir(fd.as_fd()).map_err(read_err("list", &rel))?;
        names.sort();
        Ok(Frame {
            fd,
            rel,
            depth,
            names: names.into_iter(),
        })
    }
}

/// The output, counted so the layer stays within `max_layer_bytes`.
struct Counted<W> {
    inner: W,
    written: u64,
    limit: u64,
    /// Set when a write was refused for the limit (the tar error then says why).
    over: bool,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.limit {
            self.over = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "layer size limit reached",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Walk<'o, W: Write> {
    tar: tar::Builder<Counted<W>>,
    options: &'o DiffOptions,
    report: DiffReport,
    /// (dev, ino) of files with several links -> the first path written.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Walk<'_, W> {
    /// Writes everything below `root`, sorted by name, each directory before its children,
    /// holding one open directory per level (never recursing).
    fn run(&mut self, root: OwnedFd) -> Result<(), DiffError> {
        let mut stack = vec![Frame::new(root, PathBuf::new(), 0)?];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let path = frame.rel.join(OsStr::from_bytes(&name));
            let depth = frame.depth + 1;
            if depth > self.options.max_depth {
                return Err(DiffError::TooDeep {
                    path,
                    max: self.options.max_depth,
                });
            }
            if let Some(child) = self.entry(frame.fd.as_fd(), &frame.rel, &name, &path)? {
                stack.push(Frame::new(child, path, depth)?);
            }
        }
        Ok(())
    }

    /// Writes one entry of `dir` (at `rel`); a directory to descend into is returned open.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        name: &[u8],
        path: &Path,
    ) -> Result<Option<OwnedFd>, DiffError> {
        if name.starts_with(b".wh.") {
            return Err(DiffError::ReservedName {
                path: path.to_path_buf(),
            });
        }
        let Some(st) = lstat_at(dir, name).map_err(read_err("stat", path))? else {
            return Ok(None); // cannot happen in a stopped run; nothing to write if it did
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return self.directory(dir, name, &st, path),
            FileType::CharacterDevice if st.st_rdev == 0 => {
                let mut whiteout = name.to_vec();
                whiteout.splice(0..0, b".wh.".iter().copied());
                let wh_path = rel.join(OsStr::from_bytes(&whiteout));
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_mode(0o644);
                self.append(&mut h, &wh_path, &[], io::empty(), &wh_path)?;
                self.report.whiteouts += 1;
            }
            FileType::RegularFile => self.file(dir, name, &st, path)?,
            FileType::Symlink => {
                let target =
                    readlinkat(dir, os(name), Vec::new()).map_err(read_err("read link", path))?;
                let mut h = self.header(&st, tar::EntryType::Symlink);
                self.append_link(&mut h, path, OsStr::from_bytes(target.as_bytes()))?;
            }
            FileType::Fifo => {
                let mut h = self.header(&st, tar::EntryType::Fifo);
                self.append(&mut h, path, &[], io::empty(), path)?;
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                let entry = if kind == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = self.header(&st, entry);
                let rdev = st.st_rdev;
                h.set_device_major(rustix::fs::major(rdev))
                    .and_then(|()| h.set_device_minor(rustix::fs::minor(rdev)))
                    .map_err(write_err(path))?;
                self.append(&mut h, path, &[], io::empty(), path)?;
            }
            // Sockets (and anything unknown) have no layer form: their users are gone.
            _ => {}
        }
        Ok(None)
    }

    /// Writes a directory (and its opaque marker); returns it open unless it is a bare mount
    /// point left out.
    fn directory(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<Option<OwnedFd>, DiffError> {
        let child = open_child_dir(dir, name).map_err(read_err("open", path))?;
        let xattrs = Xattrs::read(child.as_fd(), path, &self.options.limits)?;
        if xattrs.has(REDIRECT_XATTR) {
            return Err(DiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "redirect_dir",
            });
        }
        if self.is_mount_point(path)
            && xattrs.overlay.is_empty()
            && list_dir(child.as_fd()).is_ok_and(|c| c.is_empty())
        {
            return Ok(None);
        }
        let mut h = self.header(st, tar::EntryType::Directory);
        self.append(&mut h, &dir_name(path), &xattrs.carried, io::empty(), path)?;
        if xattrs.is_opaque() {
            let marker = path.join(".wh..wh..opq");
            let mut h = self.header(st, tar::EntryType::Regular);
            h.set_mode(0o644);
            self.append(&mut h, &marker, &[], io::empty(), &marker)?;
            self.report.opaque_dirs += 1;
        }
        Ok(Some(child))
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
        path: &Path,
    ) -> Result<(), DiffError> {
        let size = st.st_size as u64;
        let limits = &self.options.limits;
        if size > limits.max_file_size {
            return Err(limit(path, "max_file_size", limits.max_file_size));
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(st, tar::EntryType::Link);
                return self.append_link(&mut h, path, &first);
            }
        }
        // Refused before hours of reading; the counted output catches the headers' bytes.
        if self.tar.get_ref().written.saturating_add(size) > limits.max_layer_bytes {
            return Err(limit(path, "max_layer_bytes", limits.max_layer_bytes));
        }
        let fd: OwnedFd = openat(
            dir,
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(read_err("open", path))?;
        // The file opened must be the one listed (nothing should move in a stopped run).
        let opened = rustix::fs::fstat(&fd).map_err(read_err("stat", path))?;
        if (opened.st_dev, opened.st_ino, opened.st_size) != (st.st_dev, st.st_ino, st.st_size) {
            return Err(DiffError::Changed {
                path: path.to_path_buf(),
            });
        }
        let xattrs = Xattrs::read(fd.as_fd(), path, &self.options.limits)?;
        if xattrs.has(METACOPY_XATTR) {
            return Err(DiffError::Unsupported {
                path: path.to_path_buf(),
                feature: "metacopy",
            });
        }
        if size == 0 && xattrs.overlay.is_empty() && self.is_mount_point(path) {
            return Ok(());
        }
        if st.st_nlink > 1 {
            self.links
                .insert((st.st_dev, st.st_ino), path.to_path_buf());
        }
        let mut h = self.header(st, tar::EntryType::Regular);
        h.set_size(size);
        let body = Exact {
            file: std::fs::File::from(fd),
            left: size,
            path,
        };
        self.append(&mut h, path, &xattrs.carried, body, path)?;
        self.report.content_bytes += size;
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        self.options.mount_points.iter().any(|m| m == path)
    }

    fn header(&self, st: &Stat, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid.into());
        h.set_gid(st.st_gid.into());
        h.set_mtime(
            self.options
                .fixed_mtime
                .unwrap_or(st.st_mtime.max(0) as u64),
        );
        h.set_size(0);
        h
    }

    /// Counts one more entry against `max_entries`.
    fn admit(&mut self, shown: &Path) -> Result<(), DiffError> {
        let max = self.options.limits.max_entries;
        if self.report.entries >= max {
            return Err(limit(shown, "max_entries", max));
        }
        self.report.entries += 1;
        Ok(())
    }

    fn append(
        &mut self,
        h: &mut tar::Header,
        name: &Path,
        xattrs: &[(String, Vec<u8>)],
        body: impl Read,
        shown: &Path,
    ) -> Result<(), DiffError> {
        self.admit(shown)?;
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            let written = self
                .tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)));
            written.map_err(|e| self.write_failed(shown, e))?;
        }
        let written = self.tar.append_data(h, name, body);
        written.map_err(|e| self.write_failed(shown, e))
    }

    fn append_link(
        &mut self,
        h: &mut tar::Header,
        path: &Path,
        target: impl AsRef<Path>,
    ) -> Result<(), DiffError> {
        self.admit(path)?;
        let written = self.tar.append_link(h, path, target);
        written.map_err(|e| self.write_failed(path, e))
    }

    /// A failed write of `path`: the layer size limit if the output refused it for that.
    fn write_failed(&self, path: &Path, source: io::Error) -> DiffError {
        if self.tar.get_ref().over {
            let max = self.options.limits.max_layer_bytes;
            return limit(path, "max_layer_bytes", max);
        }
        DiffError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn limit(path: &Path, limit: &'static str, max: u64) -> DiffError {
    DiffError::Limit {
        path: path.to_path_buf(),
        limit,
        max,
    }
}

/// The extended attributes of one entry: overlay's own marks (exact names), and those a layer
/// carries (`user.*` but any `user.overlay.*`, `security.capability`), sorted by name. Any
/// other name (`trusted.*`, escaped `user.overlay.overlay.*`, other overlay bookkeeping such
/// as `user.overlay.origin`) is dropped.
struct Xattrs {
    overlay: Vec<(String, Vec<u8>)>,
    carried: Vec<(String, Vec<u8>)>,
}

impl Xattrs {
    fn read(fd: BorrowedFd<'_>, path: &Path, limits: &Limits) -> Result<Xattrs, DiffError> {
        let mut names = vec![0u8; 4096];
        let len = loop {
            match flistxattr(fd, &mut names[..]) {
                Ok(n) => break n,
                Err(Errno::RANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
                Err(Errno::NOTSUP) => break 0,
                Err(e) => return Err(read_err("list xattrs of", path)(e)),
            }
        };
        let mut list: Vec<String> = names[..len]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        list.sort();
        let mut out = Xattrs {
            overlay: Vec::new(),
            carried: Vec::new(),
        };
        for name in list {
            let is_overlay = OVERLAY_MARKS.contains(&name.as_str());
            let carried = (name.starts_with("user.")
                && !name.starts_with(crate::unpack::OVERLAY_XATTR_PREFIX))
                || name == "security.capability";
            if !is_overlay && !carried {
                continue;
            }
            if carried && out.carried.len() >= limits.max_xattrs_per_entry {
                return Err(limit(
                    path,
                    "max_xattrs_per_entry",
                    limits.max_xattrs_per_entry as u64,
                ));
            }
            let mut value = vec![0u8; 256];
            let n = loop {
                match fgetxattr(fd, name.as_str(), &mut value[..]) {
                    Ok(n) => break n,
                    Err(Errno::RANGE) if value.len() < (1 << 17) => {
                        value.resize(value.len() * 4, 0)
                    }
                    Err(e) => return Err(read_err("read xattrs of", path)(e)),
                }
            };
            value.truncate(n);
            if is_overlay {
                out.overlay.push((name, value));
            } else {
                if value.len() > limits.max_xattr_value {
                    return Err(limit(
                        path,
                        "max_xattr_value",
                        limits.max_xattr_value as u64,
                    ));
                }
                out.carried.push((name, value));
            }
        }
        Ok(out)
    }

    fn has(&self, mark: &str) -> bool {
        self.overlay.iter().any(|(n, _)| n == mark)
    }

    fn is_opaque(&self) -> bool {
        self.overlay
            .iter()
            .any(|(n, v)| n == OPAQUE_XATTR && v.as_slice() == b"y")
    }
}
/// Exactly `left` bytes of a file, or an error: the tar header already promised the size.
struct Exact<'p> {
    file: std::fs::File,
    left: u64,
    path: &'p Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(DiffError::Changed {
                path: self.path.to_path_buf(),
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn dir_name(path: &Path) -> PathBuf {
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    bytes.push(b'/');
    PathBuf::from(OsStr::from_bytes(&bytes))
}

fn read_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> DiffError + 'a {
    move |e| DiffError::Read {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::{Compression, LayerBlob, LayerFormat, Limits, unpack_layer};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests mount overlayfs and make whiteouts: run them as root"
        );
    }

    /// Every entry below `root`: kind, mode, owner and content or link target.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                let p = dir.join(&name);
                let m = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                let what = if m.is_dir() {
                    walk(root, &p, out);
                    "dir".to_owned()
                } else if m.file_type().is_symlink() {
                    format!("link {}", std::fs::read_link(&p).unwrap().display())
                } else {
                    format!("file {:?}", std::fs::read_to_string(&p).unwrap())
                };
                out.insert(
                    rel,
                    format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
                );
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn entries(tar_bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(tar_bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Changes made through a real overlay, turned into a layer and applied on the lower tree
    /// by the runtime's own unpacker, give the tree the overlay showed.
    #[test]
    fn overlay_changes_round_trip_through_the_layer() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged, applied] =
            ["lower", "upper", "work", "merged", "applied"].map(|d| tmp.path().join(d));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        write(&lower.join("changed"), "old");
        write(&lower.join("deleted"), "bye");
        write(&lower.join("dir/removed"), "x");
        write(&lower.join("dir/kept"), "k");
        write(&lower.join("replaced/old"), "o");
        write(&lower.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n");

        super::super::mount::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged)
            .unwrap();
        let result = std::panic::catch_unwind(|| {
            write(&merged.join("changed"), "new content");
            write(&merged.join("added/deep/file"), "a");
            std::fs::remove_file(merged.join("deleted")).unwrap();
            std::fs::remove_file(merged.join("dir/removed")).unwrap();
            std::fs::remove_dir_all(merged.join("replaced")).unwrap();
            write(&merged.join("replaced/fresh"), "f");
            symlink("../changed", merged.join("added/link")).unwrap();
            std::fs::hard_link(merged.join("added/deep/file"), merged.join("added/hard")).unwrap();
            std::fs::create_dir(merged.join("proc")).unwrap(); // a mount point, empty
            snapshot(&merged)
        });
        rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()).unwrap();
        let expected = result.unwrap();

        let options = DiffOptions {
            fixed_mtime: Some(1_700_000_000),
            mount_points: vec![PathBuf::from("proc")],
            ..DiffOptions::default()
        };
        let mut layer = Vec::new();
        let report = write_upper_as_layer(&upper, &options, &mut layer).unwrap();
        let mut again = Vec::new();
        write_upper_as_layer(&upper, &options, &mut again).unwrap();
        assert_eq!(layer, again, "the same upper dir gives the same bytes");
        assert_eq!((report.whiteouts, report.opaque_dirs), (2, 1), "{report:?}");
        let names = entries(&layer);
        for wanted in [
            ".wh.deleted",
            "dir/.wh.removed",
            "replaced/.wh..wh..opq",
            "replaced/fresh",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing in {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.starts_with("proc")), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("etc")),
            "unchanged: {names:?}"
        );

        // Apply on a copy of the lower tree: the result is what the overlay showed (but the
        // mount point left out).
        let cp = std::process::Command::new("cp")
            .args(["-a", lower.to_str().unwrap(), applied.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(cp.success());
        let diff_id = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))
        );
        unpack_layer(
            LayerBlob {
                label: "diff".into(),
                blob: Box::new(&layer[..]),
                compression: Compression::None,
                diff_id: diff_id.parse().unwrap(),
            },
            &applied,
            LayerFormat::Flattened,
            &Limits::default(),
        )
        .unwrap();
        let mut expected = expected;
        expected.remove(Path::new("proc"));
        assert_eq!(snapshot(&applied), expected);
        let hard = std::fs::metadata(applied.join("added/hard")).unwrap();
        assert_eq!(
            hard.ino(),
            std::fs::metadata(applied.join("added/deep/file"))
                .unwrap()
                .ino()
        );
    }

    #[test]
    fn a_copied_rootfs_has_no_upper_dir() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::rootfs::SnapshotStore::open(tmp.path()).unwrap();
        let chain: crate::unpack::ChainId = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        write(&store.snapshot_dir(&chain).join("file"), "x");
        let copy = store
            .mount_run(
                &[chain],
                &tmp.path().join("run"),
                crate::rootfs::MountMode::CopyOnly,
            )
            .unwrap();
        let err = copy.upper_dir().unwrap_err();
        assert_eq!(
            err.to_string(),
            "build commands need an overlay root filesystem; this run got a copy (requested)"
        );
        copy.release().unwrap();
        let overlay = store
            .mount_run(
                &[chain],
                &tmp.path().join("run2"),
                crate::rootfs::MountMode::OverlayOnly,
            )
            .unwrap();
        assert_eq!(
            overlay.upper_dir().unwrap(),
            overlay.run_dir().join("upper")
        );
        overlay.release().unwrap();
    }

    #[test]
    fn reserved_names_and_metacopy_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("a/.wh.sneaky"), "");
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        assert!(matches!(err, DiffError::ReservedName { .. }), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("bin/tool"), "");
        rustix::fs::setxattr(
            tmp.path().join("bin/tool"),
            "user.overlay.metacopy",
            b"",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bin/tool uses overlay metacopy, which a layer cannot express"
        );
    }

    #[test]
    fn user_xattr_opaque_marks_and_whiteout_devices_convert() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("opq")).unwrap();
        rustix::fs::setxattr(
            tmp.path().join("opq"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("gone"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut out = Vec::new();
        write_upper_as_layer(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
        assert_eq!(entries(&out), [".wh.gone", "opq/", "opq/.wh..wh..opq"]);
    }

    /// A lower tree made by `lower`, changed through a real overlay (mounted as dockless
    /// mounts it, with `userxattr`) by `change`: the temp dir, the upper dir and what the
    /// overlay showed.
    fn through_overlay(
        lower_setup: impl FnOnce(&Path),
        change: impl FnOnce(&Path) + std::panic::UnwindSafe,
    ) -> (tempfile::TempDir, PathBuf, BTreeMap<PathBuf, String>) {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] =
            ["lower", "upper", "work", "merged"].map(|d| tmp.path().join(d));
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        lower_setup(&lower);
        super::super::mount::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &merged)
            .unwrap();
        let shown = merged.clone();
        let result = std::panic::catch_unwind(move || {
            change(&shown);
            snapshot(&shown)
        });
        rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()).unwrap();
        (tmp, upper, result.unwrap())
    }

    /// `layer` applied by the runtime's unpacker on a copy of `tmp/lower`: the tree it gives.
    fn applied_on_lower(tmp: &Path, layer: &[u8]) -> BTreeMap<PathBuf, String> {
        let applied = tmp.join("applied");
        let cp = std::process::Command::new("cp")
            .args(["-a"])
            .arg(tmp.join("lower"))
            .arg(&applied)
            .status()
            .unwrap();
        assert!(cp.success());
        let diff_id = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(layer))
        );
        unpack_layer(
            LayerBlob {
                label: "diff".into(),
                blob: Box::new(layer),
                compression: Compression::None,
                diff_id: diff_id.parse().unwrap(),
            },
            &applied,
            LayerFormat::Flattened,
            &Limits::default(),
        )
        .unwrap();
        snapshot(&applied)
    }

    /// Every xattr name the layer carries (from its PAX headers), with the entry.
    fn layer_xattrs(tar_bytes: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in tar::Archive::new(tar_bytes).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if let Some(exts) = entry.pax_extensions().unwrap() {
                for ext in exts {
                    let key = ext.unwrap().key().unwrap().to_owned();
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        out.push((path.clone(), name.to_owned()));
                    }
                }
            }
        }
        out
    }

    fn xattr_names(path: &Path) -> Vec<String> {
        let mut buf = vec![0u8; 64 << 10];
        let n = rustix::fs::llistxattr(path, &mut buf[..]).unwrap();
        buf[..n]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    /// Under `userxattr`, `trusted.overlay.*` names a container sets are data (overlay did not
    /// act on them), and a `user.overlay.*` name it sets is stored escaped: none of them marks
    /// anything, and none reaches the layer.
    #[test]
    fn xattrs_that_are_not_overlays_marks_are_neither_interpreted_nor_carried() {
        let set = |p: &Path, name: &str, value: &[u8]| {
            rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap()
        };
        let (tmp, upper, expected) = through_overlay(
            |lower| {
                write(&lower.join("kept/a"), "a");
                write(&lower.join("moved/x"), "x");
                write(&lower.join("tool"), "binary");
                write(&lower.join("escaped/b"), "b");
            },
            move |merged| {
                set(&merged.join("kept"), "trusted.overlay.opaque", b"y");
                set(
                    &merged.join("moved"),
                    "trusted.overlay.redirect",
                    b"/elsewhere",
                );
                set(&merged.join("tool"), "trusted.overlay.metacopy", b"");
                set(&merged.join("tool"), "user.note", b"kept");
                set(&merged.join("escaped"), "user.overlay.opaque", b"y");
            },
        );
        // The upper dir really holds the names this test is about.
        assert!(xattr_names(&upper.join("kept")).contains(&"trusted.overlay.opaque".into()));
        assert!(xattr_names(&upper.join("tool")).contains(&"trusted.overlay.metacopy".into()));
        assert!(
            xattr_names(&upper.join("escaped")).contains(&"user.overlay.overlay.opaque".into()),
            "{:?}",
            xattr_names(&upper.join("escaped"))
        );

        let mut layer = Vec::new();
        let report = write_upper_as_layer(&upper, &DiffOptions::default(), &mut layer).unwrap();
        assert_eq!(report.opaque_dirs, 0, "{:?}", entries(&layer));
        assert_eq!(
            layer_xattrs(&layer),
            [("tool".to_owned(), "user.note".to_owned())]
        );
        assert_eq!(applied_on_lower(tmp.path(), &layer), expected);
    }

    /// `rm -rf /data && mkdir /data` on a base with /data content: the new /data is an empty,
    /// opaque mount point, and must stay opaque in the layer or the base content comes back.
    #[test]
    fn an_opaque_mount_point_is_written_with_its_marker() {
        let (tmp, upper, expected) = through_overlay(
            |lower| write(&lower.join("data/old"), "from the base"),
            |merged| {
                std::fs::remove_dir_all(merged.join("data")).unwrap();
                std::fs::create_dir(merged.join("data")).unwrap();
                std::fs::create_dir(merged.join("proc")).unwrap();
            },
        );
        let options = DiffOptions {
            mount_points: vec![PathBuf::from("data"), PathBuf::from("proc")],
            ..DiffOptions::default()
        };
        let mut layer = Vec::new();
        write_upper_as_layer(&upper, &options, &mut layer).unwrap();
        assert_eq!(entries(&layer), ["data/", "data/.wh..wh..opq"]);
        let mut expected = expected;
        expected.remove(Path::new("proc"));
        let applied = applied_on_lower(tmp.path(), &layer);
        assert!(!applied.contains_key(Path::new("data/old")), "{applied:?}");
        assert_eq!(applied, expected);
    }

    /// `depth` directories named `d`, each in the one before, below `root` (no shell, no
    /// recursion).
    fn nest(root: &Path, depth: usize) {
        let mut dir = openat(
            rustix::fs::CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
            dir = open_child_dir(dir.as_fd(), b"d").unwrap();
        }
    }

    #[test]
    fn a_tree_deeper_than_the_cap_is_refused_with_its_path() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        nest(tmp.path(), 300);
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        let DiffError::TooDeep { path, max } = &err else {
            panic!("{err}");
        };
        assert_eq!((path.components().count(), *max), (257, 256));
        assert_eq!(
            err.to_string(),
            format!(
                "{} is nested deeper than 256 levels",
                "d/".repeat(257).trim_end_matches('/')
            )
        );

        // Within a larger cap the same tree is written, on a thread with a stack far too
        // small for one frame per level (the recursive walk this replaced overflowed it).
        let upper = tmp.path().to_path_buf();
        let report = std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || {
                let options = DiffOptions {
                    max_depth: 300,
                    ..DiffOptions::default()
                };
                write_upper_as_layer(&upper, &options, io::sink())
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(report.entries, 300);
    }

    #[test]
    fn files_over_the_size_limits_are_refused_before_they_are_read() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        // Sparse: 64 GiB of holes, over the default max_file_size of 32 GiB.
        let big = std::fs::File::create(tmp.path().join("big")).unwrap();
        big.set_len(64 << 30).unwrap();
        let started = std::time::Instant::now();
        let err =
            write_upper_as_layer(tmp.path(), &DiffOptions::default(), io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big exceeds the layer limit max_file_size of 34359738368"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        big.set_len(1 << 20).unwrap();
        let mut options = DiffOptions::default();
        options.limits.max_file_size = 1000;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert!(
            matches!(&err, DiffError::Limit { path, limit: "max_file_size", max: 1000 }
                if path == Path::new("big")),
            "{err}"
        );

        // Within max_file_size but over what the whole layer may hold.
        let mut options = DiffOptions::default();
        options.limits.max_layer_bytes = 1 << 19;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "big exceeds the layer limit max_layer_bytes of 524288"
        );
    }

    #[test]
    fn the_layer_size_counts_headers_too() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            write(&tmp.path().join(name), &"x".repeat(100));
        }
        // Each file takes a 512-byte header and a 512-byte block: "c" passes 3000 bytes.
        let mut options = DiffOptions::default();
        options.limits.max_layer_bytes = 3000;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert!(
            matches!(&err, DiffError::Limit { path, limit: "max_layer_bytes", max: 3000 }
                if path == Path::new("c")),
            "{err}"
        );
        // Room for the three files but not the end of the archive (two zero blocks).
        options.limits.max_layer_bytes = 3 * 1024 + 1023;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert!(
            matches!(&err, DiffError::Limit { path, .. } if path == Path::new("end of archive")),
            "{err}"
        );
        options.limits.max_layer_bytes = 4 * 1024;
        let mut layer = Vec::new();
        write_upper_as_layer(tmp.path(), &options, &mut layer).unwrap();
        assert!(layer.len() <= 4 * 1024, "{}", layer.len());
    }

    #[test]
    fn entries_over_max_entries_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c", "d", "e"] {
            write(&tmp.path().join(name), "");
        }
        let mut options = DiffOptions::default();
        options.limits.max_entries = 3;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d exceeds the layer limit max_entries of 3"
        );
        options.limits.max_entries = 5;
        let report = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap();
        assert_eq!(report.entries, 5);
    }

    #[test]
    fn xattrs_over_their_limits_are_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        write(&file, "");
        for (name, value) in [
            ("user.a", &b"1"[..]),
            ("user.b", b"2"),
            ("user.c", &[7; 100]),
        ] {
            rustix::fs::setxattr(&file, name, value, rustix::fs::XattrFlags::empty()).unwrap();
        }
        let mut options = DiffOptions::default();
        options.limits.max_xattrs_per_entry = 2;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f exceeds the layer limit max_xattrs_per_entry of 2"
        );
        let mut options = DiffOptions::default();
        options.limits.max_xattr_value = 99;
        let err = write_upper_as_layer(tmp.path(), &options, io::sink()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f exceeds the layer limit max_xattr_value of 99"
        );
        options.limits.max_xattr_value = 100;
        let mut layer = Vec::new();
        write_upper_as_layer(tmp.path(), &options, &mut layer).unwrap();
        assert_eq!(layer_xattrs(&layer).len(), 3);
    }
}
