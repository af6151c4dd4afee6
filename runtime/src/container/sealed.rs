//! The helper's executable as a view no one can write through, so that no container can
//! ever write to the binary that started it (the pattern of CVE-2019-5736).
//!
//! Why: the container's init is forked from the helper, and until it execs the image's
//! entrypoint its `/proc/<pid>/exe` is the helper's executable. An entrypoint that is a
//! `#!/proc/self/exe` script makes the kernel run that executable *inside* the container,
//! where the container's root can keep a handle on it (an `O_PATH` open of
//! `/proc/<pid>/exe`) and reopen it for writing once nothing executes it any more (say its
//! runner and helper were SIGKILLed, while the container lives on until the next gc). Were
//! the executable the host's `dockless` binary, the next `dockless` run by anyone, root
//! included, would run the container's code on the host.
//!
//! So the helper is never executed from its path, but from one of two views, as runc does:
//! - **A read-only overlay** (preferred: no copy, ~no cost). The program's directory is the
//!   top lower layer of an overlayfs without upper layer, created detached (`fsopen` /
//!   `fsmount`, never attached anywhere, so no mount event) and mounted read-only; the helper
//!   is the program opened `O_PATH` in it. A write through it is `EROFS` whoever asks, and the
//!   host path of the file is not reachable from it (`/proc/<pid>/map_files`, which shows
//!   the real file, needs `CAP_SYS_ADMIN` in the initial user namespace, which no container
//!   has). Needs the right to mount (root, or a rootless session's namespace) and an overlay
//!   able to stack the program's directory; the second, empty lower layer (an overlay
//!   without upper layer needs two) is a detached empty tmpfs, or, on kernels that refuse a
//!   detached mount as a layer (before about 6.15), a directory under the runner's state root.
//! - **A sealed `memfd` copy** otherwise: the program copied into memory and sealed with
//!   `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`: the kernel refuses every
//!   write, truncation and growth of it for as long as it exists, and no seal can be removed.
//!   It costs a read of the whole binary into memory (the release `dockless` with its line
//!   tables is ~130 MB: 0.1 to 0.5 s and that much memory per process, measured).
//!
//! Either is made once per process and program and shared by every run the process makes.
//! It is executed as `/proc/self/fd/<n>`: the descriptor is close-on-exec, so the helper does
//! not hold it (nor does the container), yet the kernel resolves the path before it closes
//! close-on-exec descriptors. Its number is kept at [`MIN_FD`] or above, clear of the fixed
//! numbers the runner moves the helper's pipes to before that exec.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags, fcntl_add_seals, memfd_create, openat};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_string, fsmount,
    fsopen,
};

/// Lowest number the view's descriptor may have: above the helper's fixed fds (3..=5) that
/// `place_fds` overwrites in the child between fork and exec.
pub(crate) const MIN_FD: i32 = 10;

/// The seals of the copy: no write, no size change, and no further change of the seals.
pub(crate) const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// Directory under the state root used as the overlay's second, empty lower layer (an
/// overlay without upper layer needs two).
const EMPTY_LAYER: &str = "helper-empty-layer";

/// One view per program, shared by every runner of this process.
static VIEWS: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());

/// Why no write-proof view of the helper could be made. The helper is executed only from a
/// read-only overlay or a sealed copy: its init, forked from it, exposes that executable to
/// the container as `/proc/<pid>/exe` until it execs, and through a `#!/proc/self/exe`
/// entrypoint even runs it inside (CVE-2019-5736's way to overwrite the host's binary).
/// Through such a view the kernel refuses every write, from anyone, for good.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a write-proof view of the runtime helper {program:?}: {what}")]
pub struct SealError {
    /// The helper executable.
    pub program: PathBuf,
    /// The step that failed.
    pub what: &'static str,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The write-proof view of `program` (made on first use, then shared): a read-only overlay
/// where this process may mount (its empty layer under `state_root`), else a sealed copy.
/// Open close-on-exec at a number of at least [`MIN_FD`]; execute it as `/proc/self/fd/<n>`.
pub(crate) fn helper_exe(program: &Path, state_root: &Path) -> Result<Arc<OwnedFd>, SealError> {
    let mut views = VIEWS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, fd)) = views.iter().find(|(p, _)| p == program) {
        return Ok(Arc::clone(fd));
    }
    // Any failure of the overlay (no right to mount, an old kernel, a directory overlayfs
    // cannot stack) leaves the copy, which works wherever memfds do.
    let view = match read_only_overlay(program, state_root) {
        Ok(fd) => fd,
        Err(_) => sealed_copy(program)?,
    };
    let fd = Arc::new(view);
    views.push((program.to_owned(), Arc::clone(&fd)));
    Ok(fd)
}

fn error(program: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SealError {
    let program = program.to_owned();
    move |source| SealError {
        program,
        what,
        source,
    }
}

/// `program` opened `O_PATH` in a detached, read-only overlay whose top layer is its
/// directory. The second, empty layer is a detached empty tmpfs where the kernel takes one as
/// a layer (Linux from about 6.15), else `<state_root>/helper-empty-layer` (created if
/// missing), which overlayfs refuses if it lies below the program's directory.
pub(crate) fn read_only_overlay(program: &Path, state_root: &Path) -> Result<OwnedFd, SealError> {
    let invalid = |what| error(program, what)(std::io::ErrorKind::InvalidInput.into());
    let (Some(dir), Some(name)) = (program.parent(), program.file_name()) else {
        return Err(invalid("it has no directory and file name"));
    };
    // ':' separates layers in the option and '\\' escapes; such paths take the copy.
    let usable = |p: &str| p.starts_with('/') && !p.contains([':', '\\']);
    let dir = dir.to_string_lossy();
    if !usable(&dir) {
        return Err(invalid("its directory cannot be an overlay layer"));
    }
    let sys = |what| move |e: rustix::io::Errno| error(program, what)(e.into());
    let mut last = None;
    // The tmpfs's descriptor must outlive the overlay's creation only.
    let tmpfs = empty_tmpfs();
    let detached = tmpfs
        .as_ref()
        .ok()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let in_state = state_root.join(EMPTY_LAYER);
    let in_state = in_state.to_string_lossy();
    for empty in detached
        .iter()
        .map(String::as_str)
        .chain([in_state.as_ref()])
    {
        if !usable(empty) {
            continue;
        }
        if empty == in_state {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o555)
                .create(empty)
                .map_err(error(program, "cannot create the overlay's empty layer"))?;
        }
        let created = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).and_then(|fs| {
            fsconfig_set_string(&fs, "lowerdir", format!("{dir}:{empty}").as_str())?;
            fsconfig_create(&fs)?;
            Ok(fs)
        });
        match created {
            Ok(fs) => {
                let mnt = fsmount(
                    &fs,
                    FsMountFlags::FSMOUNT_CLOEXEC,
                    MountAttrFlags::MOUNT_ATTR_RDONLY
                        | MountAttrFlags::MOUNT_ATTR_NODEV
                        | MountAttrFlags::MOUNT_ATTR_NOSUID,
                )
                .map_err(sys("cannot mount the overlay"))?;
                // The file keeps the detached mount alive; the mount's descriptor can go.
                // Never a link (in a directory others may write, it could lead out of the
                // read-only view), and only a regular file.
                let file = openat(
                    &mnt,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys("cannot open it in the overlay"))?;
                if !rustix::fs::FileType::from_raw_mode(
                    rustix::fs::fstat(&file)
                        .map_err(sys("cannot open it in the overlay"))?
                        .st_mode,
                )
                .is_file()
                {
                    return Err(sys("cannot open it in the overlay")(
                        rustix::io::Errno::NOEXEC,
                    ));
                }
                return rustix::io::fcntl_dupfd_cloexec(&file, MIN_FD)
                    .map_err(sys("cannot move its descriptor"));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(sys("cannot create the overlay")(
        last.unwrap_or(rustix::io::Errno::INVAL),
    ))
}

/// A detached, read-only, empty tmpfs (never attached anywhere).
fn empty_tmpfs() -> rustix::io::Result<OwnedFd> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&fs)?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

/// A copy of `program` in a memfd sealed against every change.
pub(crate) fn sealed_copy(program: &Path) -> Result<OwnedFd, SealError> {
    let sys = |what| move |e: rustix::io::Errno| error(program, what)(e.into());
    let mut src = File::open(program).map_err(error(program, "cannot open it"))?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC keeps the copy executable where vm.memfd_noexec defaults memfds to
    // non-executable; kernels before 6.3 do not know the flag (EINVAL) and need none.
    let memfd = memfd_create("dockless-runtime-helper", flags | MemfdFlags::EXEC)
        .or_else(|e| match e {
            rustix::io::Errno::INVAL => memfd_create("dockless-runtime-helper", flags),
            e => Err(e),
        })
        .map_err(sys("cannot create a memfd"))?;
    let mut dst = File::from(memfd);
    // std's File-to-File copy is copy_file_range, falling back to sendfile: in-kernel.
    std::io::copy(&mut src, &mut dst).map_err(error(program, "cannot copy it"))?;
    fcntl_add_seals(&dst, SEALS).map_err(sys("cannot seal the copy"))?;
    rustix::io::fcntl_dupfd_cloexec(dst.as_fd(), MIN_FD)
        .map_err(sys("cannot move the copy's descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reopens `fd` for writing (as a container would through `/proc/<pid>/exe`) and returns
    /// the errno of the open, or else of the write.
    fn write_errno(fd: &OwnedFd) -> Option<i32> {
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match std::fs::OpenOptions::new().write(true).open(path) {
            Err(e) => e.raw_os_error(),
            Ok(mut w) => {
                assert_eq!(w.set_len(0).unwrap_err().raw_os_error(), Some(libc::EPERM));
                w.write(b"x").unwrap_err().raw_os_error()
            }
        }
    }

    #[test]
    fn the_copy_is_sealed_and_refuses_writes() {
        let exe = std::env::current_exe().unwrap();
        let fd = sealed_copy(&exe).unwrap();
        assert!(fd.as_raw_fd() >= MIN_FD);
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SEALS), "{seals:?}");
        assert_eq!(
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .len(),
            std::fs::metadata(&exe).unwrap().len()
        );
        assert_eq!(write_errno(&fd), Some(libc::EPERM));
    }

    #[test]
    #[ignore = "needs root and scripts/test-env"]
    fn the_overlay_view_is_read_only_and_not_the_host_file() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let program = tmp.path().join("bin/tool");
        std::fs::create_dir(tmp.path().join("bin")).unwrap();
        std::fs::write(&program, b"#!/bin/sh\n").unwrap();
        let fd = read_only_overlay(&program, &tmp.path().join("state")).unwrap();
        assert!(fd.as_raw_fd() >= MIN_FD);
        let seen = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_ne!(seen.dev(), std::fs::metadata(&program).unwrap().dev());
        assert_eq!(write_errno(&fd), Some(libc::EROFS));
        assert_eq!(std::fs::read(&program).unwrap(), b"#!/bin/sh\n");
    }

    #[test]
    fn one_view_per_program_is_shared() {
        let exe = std::env::current_exe().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let a = helper_exe(&exe, tmp.path()).unwrap();
        let b = helper_exe(&exe, tmp.path()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(matches!(write_errno(&a), Some(libc::EPERM | libc::EROFS)));
    }
}
