//! Filesystem primitives confined to one root directory.
//!
//! Every path with more than one component is resolved by the kernel with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: `..` and absolute
//! symlinks are clamped at the root, as in a chroot, and the result is a directory fd. The final
//! component of an entry is then touched with `*at` calls on that fd that never follow it
//! (`O_NOFOLLOW | O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `unlinkat`), so no entry can write, chmod,
//! chown or delete anything outside the root, whatever the tar contains.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat, mkdirat, openat, openat2, readlinkat,
    statat, unlinkat,
};
use rustix::io::Errno;

use super::error::EntryError;

/// How the kernel may resolve paths below the root.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Symlinks followed while creating implied parents (the kernel's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Parent directories kept open between entries (tar entries come grouped by directory).
const CACHE_LIMIT: usize = 256;

/// Wraps a single path component for the `*at` calls.
pub(crate) fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// An open root plus a cache of resolved parent directories.
pub(crate) struct Tree {
    root: Rc<OwnedFd>,
    cache: HashMap<Vec<u8>, Rc<OwnedFd>>,
    /// Directories this tree created because an entry needed them (paths relative to the root,
    /// shallowest first).
    pub(crate) implied: Vec<Vec<u8>>,
    /// The root's owner, which implied directories take (the container's root: 0 normally,
    /// the base of the range for id-shifted snapshots).
    owner: (u32, u32),
}

impl Tree {
    /// Opens `root` (which must be a real directory, not a symlink to one).
    pub(crate) fn open(root: &Path) -> std::io::Result<Self> {
        let fd = open_dir(root)?;
        let st = rustix::fs::fstat(&fd)?;
        Ok(Self {
            root: Rc::new(fd),
            cache: HashMap::new(),
            implied: Vec::new(),
            owner: (st.st_uid, st.st_gid),
        })
    }

    /// Opens `path` (cleaned, relative) inside the root with extra `flags`.
    pub(crate) fn open_in_root(&self, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        openat2(
            &*self.root,
            os(path),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    /// Forgets every cached directory; called whenever something is removed or replaced, since
    /// that may change what a cached path resolves to.
    pub(crate) fn invalidate(&mut self) {
        self.cache.clear();
    }

    /// Remembers a directory fd the caller just created at `path`.
    pub(crate) fn remember(&mut self, path: &[u8], fd: OwnedFd) {
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(path.to_vec(), Rc::new(fd));
    }

    /// The directory at `path` (empty = the root), following symlinks inside the root.
    /// With `create`, missing directories are made (mode 0755, owned by us), also where a
    /// dangling symlink points; without it, a missing path gives `None`.
    pub(crate) fn dir(
        &mut self,
        path: &[u8],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, EntryError> {
        if path.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(fd) = self.cache.get(path) {
            return Ok(Some(fd.clone()));
        }
        let fd = match self.open_in_root(path, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) if create => self.create_dirs(path)?,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(EntryError::errno("resolve parent directory")(e)),
        };
        let fd = Rc::new(fd);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(path.to_vec(), fd.clone());
        Ok(Some(fd))
    }

    /// Makes `path` exist as a directory, component by component. Symlinks met on the way are
    /// followed by substituting their target into the path string and letting the kernel
    /// resolve it again (so `..` in a target behaves exactly as the kernel would treat it).
    fn create_dirs(&mut self, path: &[u8]) -> Result<OwnedFd, EntryError> {
        let mut pending = path.to_vec();
        let mut hops = 0;
        loop {
            match self.open_in_root(&pending, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOENT | Errno::NOTDIR) => {}
                Err(e) => return Err(EntryError::errno("resolve parent directory")(e)),
            }
            let comps: Vec<&[u8]> = pending
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            // Find the first prefix that does not resolve to a directory.
            let mut parent = self.root.clone();
            let mut missing = None;
            for i in 0..comps.len() {
                let prefix = comps[..=i].join(&b'/');
                match self.open_in_root(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => parent = Rc::new(fd),
                    Err(Errno::NOENT | Errno::NOTDIR) => {
                        missing = Some(i);
                        break;
                    }
                    Err(e) => return Err(EntryError::errno("resolve parent directory")(e)),
                }
            }
            let Some(i) = missing else {
                return Err(EntryError::Invalid(
                    "parent directory changed while it was created".into(),
                ));
            };
            let name = comps[i];
            match statat(&*parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {
                    mkdirat(&*parent, os(name), Mode::from_raw_mode(0o755))
                        .map_err(EntryError::errno("create implied directory"))?;
                    let fd = openat(
                        &*parent,
                        os(name),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(EntryError::errno("open implied directory"))?;
                    // Implied directories are 0755 whatever the umask (moby#53257 semantics).
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(EntryError::errno("chmod implied directory"))?;
                    let (uid, gid) = self.owner;
                    rustix::fs::fchown(
                        &fd,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(EntryError::errno("chown implied directory"))?;
                    if let Some(rel) = self.relative_path_of(&fd) {
                        self.implied.push(rel);
                    }
                }
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(EntryError::errno("resolve parent directory")(Errno::LOOP));
                    }
                    let target = readlinkat(&*parent, os(name), Vec::new())
                        .map_err(EntryError::errno("read symlink"))?
                        .into_bytes();
                    let mut next = Vec::with_capacity(pending.len() + target.len());
                    if !target.starts_with(b"/") {
                        next.extend_from_slice(&comps[..i].join(&b'/'));
                        next.push(b'/');
                    }
                    next.extend_from_slice(&target);
                    for rest in &comps[i + 1..] {
                        next.push(b'/');
                        next.extend_from_slice(rest);
                    }
                    pending = next;
                }
                Ok(_) => {
                    return Err(EntryError::Invalid(format!(
                        "parent {:?} exists and is not a directory",
                        String::from_utf8_lossy(&comps[..=i].join(&b'/'))
                    )));
                }
                Err(e) => return Err(EntryError::errno("stat parent directory")(e)),
            }
        }
    }

    /// Where `fd` really is below the root (for the record of implied directories).
    fn relative_path_of(&self, fd: &OwnedFd) -> Option<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let root = std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd())).ok()?;
        let me = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = me.strip_prefix(&root).ok()?;
        Some(rel.as_os_str().as_bytes().to_vec())
    }
}

/// Opens a directory for reading, refusing a symlink in its last component (the trees read and
/// written here are the only thing trusted, never where a link in them points).
pub(crate) fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(openat(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Looks `path` up literally below `root` (no symlink followed anywhere, no mount crossed), as
/// overlayfs merges layers by name.
pub(crate) fn lookup_literal(root: &OwnedFd, path: &[u8]) -> Result<Stat, Errno> {
    let fd = openat2(
        root,
        os(path),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )?;
    rustix::fs::fstat(&fd)
}

/// `lstat` of one component below `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens a directory child for reading without following a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let mut it = Dir::new(fd)?;
    while let Some(entry) = it.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` below `dir` whatever it is (a directory with all its content), never
/// following symlinks. Returns whether something was there.
pub(crate) fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> Result<bool, Errno> {
    match unlinkat(dir, os(name), AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(Errno::ISDIR) => {
            let child = open_child_dir(dir, name)?;
            for entry in list_dir(child.as_fd())? {
                remove_any(child.as_fd(), &entry)?;
            }
            drop(child);
            unlinkat(dir, os(name), AtFlags::REMOVEDIR)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}
