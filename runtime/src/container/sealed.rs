//! The helper's executable as a sealed in-memory copy, so that no container can ever write
//! to the binary that started it (the pattern of CVE-2019-5736).
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
//! So the helper is not executed from its path but from a `memfd` copy sealed with
//! `F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE` (what runc and youki do): the
//! kernel refuses every write, truncation and growth of that copy for as long as it exists,
//! whoever asks, and no seal can be removed. The host file is never reachable from the
//! container. The copy is made once per process and program and reused by every run the
//! process makes (its cost is one read of the binary into memory, see [`helper_exe`]).
//!
//! It is executed as `/proc/self/fd/<n>`: the descriptor is close-on-exec, so the helper does
//! not hold it (nor does the container), yet the kernel resolves the path before it closes
//! close-on-exec descriptors. Its number is kept at [`MIN_FD`] or above, clear of the fixed
//! numbers the runner moves the helper's pipes to before that exec.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};

/// Lowest number the sealed copy's descriptor may have: above the helper's fixed fds (3..=5)
/// that `place_fds` overwrites in the child between fork and exec.
pub(crate) const MIN_FD: i32 = 10;

/// The seals of the copy: no write, no size change, and no further change of the seals.
pub(crate) const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// One sealed copy per program, shared by every runner of this process.
static COPIES: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());

/// Why the sealed copy of the helper could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a sealed copy of the runtime helper {program:?}: {what}")]
pub struct SealError {
    /// The helper executable.
    pub program: PathBuf,
    /// The step that failed.
    pub what: &'static str,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The sealed in-memory copy of `program` (made on first use, then shared), open
/// close-on-exec at a number of at least [`MIN_FD`]; execute it as `/proc/self/fd/<n>`.
pub(crate) fn helper_exe(program: &Path) -> Result<Arc<OwnedFd>, SealError> {
    let mut copies = COPIES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, fd)) = copies.iter().find(|(p, _)| p == program) {
        return Ok(Arc::clone(fd));
    }
    let fd = Arc::new(seal_copy(program)?);
    copies.push((program.to_owned(), Arc::clone(&fd)));
    Ok(fd)
}

fn seal_copy(program: &Path) -> Result<OwnedFd, SealError> {
    let err = |what: &'static str| {
        move |source: std::io::Error| SealError {
            program: program.to_owned(),
            what,
            source,
        }
    };
    let mut src = File::open(program).map_err(err("cannot open it"))?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC keeps the copy executable where vm.memfd_noexec defaults memfds to
    // non-executable; kernels before 6.3 do not know the flag (EINVAL) and need none.
    let memfd = memfd_create("dockless-runtime-helper", flags | MemfdFlags::EXEC)
        .or_else(|e| match e {
            rustix::io::Errno::INVAL => memfd_create("dockless-runtime-helper", flags),
            e => Err(e),
        })
        .map_err(|e| err("cannot create a memfd")(e.into()))?;
    let mut dst = File::from(memfd);
    // std's File-to-File copy is copy_file_range, falling back to sendfile: in-kernel.
    std::io::copy(&mut src, &mut dst).map_err(err("cannot copy it"))?;
    fcntl_add_seals(&dst, SEALS).map_err(|e| err("cannot seal the copy")(e.into()))?;
    let fd = rustix::io::fcntl_dupfd_cloexec(dst.as_fd(), MIN_FD)
        .map_err(|e| err("cannot move the copy's descriptor")(e.into()))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_copy_is_sealed_shared_and_refuses_writes() {
        let exe = std::env::current_exe().unwrap();
        let fd = helper_exe(&exe).unwrap();
        assert!(fd.as_raw_fd() >= MIN_FD);
        assert!(Arc::ptr_eq(&fd, &helper_exe(&exe).unwrap()));
        let seals = rustix::fs::fcntl_get_seals(&*fd).unwrap();
        assert!(seals.contains(SEALS), "{seals:?}");
        assert_eq!(
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .len(),
            std::fs::metadata(&exe).unwrap().len()
        );
        // Reopened for writing (as a container would through /proc/<pid>/exe), the copy
        // still refuses every write and truncation.
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        assert_eq!(w.write(b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(w.set_len(0).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
