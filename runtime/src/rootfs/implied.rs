//! Implied directories of an overlay snapshot take the attributes of the lower layers.
//!
//! A layer that holds `usr/bin/x` but no `usr/` entry makes `usr` and `usr/bin` in its own
//! snapshot. Overlayfs shows a merged directory with the attributes of its uppermost copy, so
//! without this step the image's `/usr` would turn into 0755 root:root with the unpack time.
//! Applied flattened, the lower `usr` would simply stay as it was: copying its owner, mode and
//! times onto the implied copy gives the same result. A lower *symlink* at that path cannot be
//! reproduced this way (the implied directory would hide it): that is reported as
//! [`RootfsError::ImpliedDirOverSymlink`], and the store then replays the layer over its lowers
//! (`rebase.rs`).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::error::RootfsError;
use crate::unpack::tree::{lookup_literal, open_dir, os};

/// Copies the attributes of the nearest lower directory onto each implied directory of the
/// staged snapshot `upper`. `lowers` are the lower snapshot roots, nearest first.
pub(crate) fn reconcile(
    upper: &Path,
    lowers: &[PathBuf],
    implied: &[Vec<u8>],
    label: &str,
) -> Result<(), RootfsError> {
    if implied.is_empty() || lowers.is_empty() {
        return Ok(());
    }
    let attrs_err = |path: &[u8], source: std::io::Error| RootfsError::ImpliedDirAttrs {
        label: label.to_owned(),
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    };
    let upper_fd = open_dir(upper).map_err(|e| attrs_err(b"", e))?;
    let mut lower_fds = Vec::with_capacity(lowers.len());
    for lower in lowers {
        lower_fds.push(open_dir(lower).map_err(|e| attrs_err(b"", e))?);
    }
    for path in implied {
        for lower in &lower_fds {
            let st = match lookup_literal(lower, path) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                // A parent is a symlink or not a directory in this lower layer: the upper
                // directory chain already shadows it (an explicit entry replaced it).
                Err(Errno::LOOP | Errno::NOTDIR) => break,
                Err(e) => return Err(attrs_err(path, e.into())),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let fd = rustix::fs::openat2(
                        &upper_fd,
                        os(path),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
                    )
                    .map_err(|e| attrs_err(path, e.into()))?;
                    let fd = fd.as_fd();
                    rustix::fs::fchown(
                        fd,
                        Some(Uid::from_raw(st.st_uid)),
                        Some(Gid::from_raw(st.st_gid)),
                    )
                    .and_then(|_| rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777)))
                    .and_then(|_| {
                        rustix::fs::futimens(
                            fd,
                            &Timestamps {
                                last_access: Timespec {
                                    tv_sec: st.st_atime,
                                    tv_nsec: st.st_atime_nsec as _,
                                },
                                last_modification: Timespec {
                                    tv_sec: st.st_mtime,
                                    tv_nsec: st.st_mtime_nsec as _,
                                },
                            },
                        )
                    })
                    .map_err(|e| attrs_err(path, e.into()))?;
                    break;
                }
                FileType::Symlink => {
                    return Err(RootfsError::ImpliedDirOverSymlink {
                        label: label.to_owned(),
                        path: String::from_utf8_lossy(path).into_owned(),
                    });
                }
                // A whiteout or a file below: the implied directory replaces it, as a flattened
                // apply that creates a directory there would.
                _ => break,
            }
        }
    }
    Ok(())
}
