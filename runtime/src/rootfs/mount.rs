//! The per-run root filesystem: an overlay mount (or a flattened copy) with a guard that
//! unmounts and removes it on every path.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount_bind, mount_change, mount_remount,
    unmount,
};

use super::error::{DiffError, RootfsError};
use super::flatten::flatten_into;
use super::lease::SnapshotLease;
use crate::overlay::{MountApi, mount_overlay, root_is_opaque};
use crate::unpack::IdShift;
use crate::unpack::tree::{open_dir, remove_any};

/// Which kinds of rootfs the caller accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountMode {
    /// Overlay when possible, else a flattened copy.
    OverlayOrCopy,
    /// Overlay or an error.
    OverlayOnly,
    /// Always a flattened copy (for filesystems overlayfs cannot use as upper).
    CopyOnly,
}

/// What a run got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsKind {
    /// An overlayfs over the snapshots: mounted in milliseconds, the cache stays untouched.
    Overlay,
    /// A full copy of the flattened layers: slow and disk-hungry; `reason` says why overlay
    /// was not used (the caller should tell the user).
    Copy {
        /// The overlay error, or "requested".
        reason: String,
    },
}

/// A run's root filesystem below `<run_dir>/rootfs`. Dropping it unmounts the overlay and
/// removes the run directory; [`RunRootfs::release`] does the same and reports errors.
#[derive(Debug)]
pub struct RunRootfs {
    run_dir: PathBuf,
    rootfs: PathBuf,
    kind: RootfsKind,
    api: Option<MountApi>,
    mounted: bool,
    released: bool,
    /// Keeps removal off the snapshots below this rootfs; released after the unmount (fields
    /// drop after [`Drop::drop`]).
    _lease: SnapshotLease,
}

impl RunRootfs {
    /// The directory to hand to the OCI bundle as `root.path`.
    pub fn path(&self) -> &Path {
        &self.rootfs
    }

    /// The run directory holding `rootfs/` (and `upper/`, `work/` for overlay).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Which system call mounted the overlay; `None` for a copy.
    pub fn mount_api(&self) -> Option<MountApi> {
        self.api
    }

    /// How the rootfs came to be (see [`RunRootfs::mount_api`] for the overlay's way).
    pub fn kind(&self) -> &RootfsKind {
        &self.kind
    }

    /// The overlay upper directory of this run: its changes, readable after the container
    /// ended and before the rootfs is released (for
    /// [`write_upper_as_layer`](super::write_upper_as_layer)).
    pub fn upper_dir(&self) -> Result<PathBuf, DiffError> {
        match self.kind() {
            RootfsKind::Overlay => Ok(self.run_dir().join("upper")),
            RootfsKind::Copy { reason } => Err(DiffError::NoOverlay {
                reason: reason.clone(),
            }),
        }
    }

    /// Gives one run its own root filesystem over `snapshots` (committed snapshot directories,
    /// base first; `id_shift` is their store's, `lease` holds them for the run's lifetime):
    /// `run_dir` must not exist yet; it is created (0700) and holds `rootfs/`.
    /// [`SnapshotStore::mount_run`](super::SnapshotStore::mount_run) is the public way in.
    pub(crate) fn mount(
        snapshots: &[PathBuf],
        lease: SnapshotLease,
        id_shift: Option<IdShift>,
        run_dir: &Path,
        mode: MountMode,
    ) -> Result<RunRootfs, RootfsError> {
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RootfsError::RunDir { path, source }
        };
        // The run's alone: its upper dir holds whatever the container wrote (setuid files
        // included), which no host user may reach. With shifted owners (`--userns`) the
        // container's root, the range's base, must pass through: its group may (0710).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(run_dir)
            .map_err(dir_err(run_dir))?;
        if let Some(shift) = id_shift {
            std::os::unix::fs::chown(run_dir, None, Some(shift.base))
                .and_then(|()| {
                    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o710))
                })
                .map_err(dir_err(run_dir))?;
        }
        // Absolute, so the leftover-mount check can compare with /proc/self/mountinfo.
        let run_dir = &std::path::absolute(run_dir).map_err(dir_err(run_dir))?;
        let rootfs = run_dir.join("rootfs");
        let mut guard = RunRootfs {
            run_dir: run_dir.to_path_buf(),
            rootfs: rootfs.clone(),
            kind: RootfsKind::Overlay,
            api: None,
            mounted: false,
            released: false,
            _lease: lease,
        };
        // The merged root takes its attributes from the upper directory.
        for sub in ["upper", "work", "rootfs"] {
            let p = run_dir.join(sub);
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&p)
                .map_err(dir_err(&p))?;
            // With shifted owners the container's root is the range's base: "/" must be its.
            if let (Some(s), "upper" | "rootfs") = (id_shift, sub) {
                std::os::unix::fs::chown(&p, Some(s.base), Some(s.base)).map_err(dir_err(&p))?;
            }
        }
        // Overlayfs ignores the opaque mark on a layer's root, so a layer whose root is opaque
        // (`.wh..wh..opq` at the top level) simply ends the stack.
        let mut lowers: Vec<PathBuf> = Vec::with_capacity(snapshots.len());
        for dir in snapshots.iter().rev() {
            lowers.push(dir.clone());
            if root_is_opaque(dir) {
                break;
            }
        }
        let overlay_error = if mode == MountMode::CopyOnly {
            "requested".to_owned()
        } else {
            match mount_overlay(
                &lowers,
                &run_dir.join("upper"),
                &run_dir.join("work"),
                &rootfs,
            ) {
                Ok(api) => {
                    guard.api = Some(api);
                    guard.mounted = true;
                    return Ok(guard);
                }
                Err(e) if mode == MountMode::OverlayOnly => {
                    return Err(RootfsError::Mount {
                        path: rootfs,
                        source: e,
                    });
                }
                Err(e) => e.to_string(),
            }
        };
        flatten_into(snapshots, &rootfs).map_err(|source| RootfsError::Copy {
            path: rootfs.clone(),
            source,
        })?;
        guard.kind = RootfsKind::Copy {
            reason: overlay_error,
        };
        // The copy gets the overlay's `nodev,nosuid` from a bind mount onto itself.
        seal_copy(&rootfs).map_err(|source| RootfsError::Mount {
            path: rootfs.clone(),
            source,
        })?;
        guard.mounted = true;
        Ok(guard)
    }

    /// Unmounts and removes the run directory, reporting what failed.
    pub fn release(mut self) -> Result<(), RootfsError> {
        self.released = true;
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), RootfsError> {
        if self.mounted {
            match unmount(&self.rootfs, UnmountFlags::NOFOLLOW) {
                Ok(()) => {}
                Err(Errno::BUSY) => {
                    unmount(&self.rootfs, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).map_err(
                        |e| RootfsError::Unmount {
                            path: self.rootfs.clone(),
                            source: e.into(),
                        },
                    )?
                }
                Err(e) => {
                    return Err(RootfsError::Unmount {
                        path: self.rootfs.clone(),
                        source: e.into(),
                    });
                }
            }
            self.mounted = false;
        }
        remove_run_dir(&self.run_dir)
    }
}

impl Drop for RunRootfs {
    fn drop(&mut self) {
        if !self.released {
            // Errors cannot be reported from drop; `release` is the checked path.
            let _ = self.cleanup();
        }
    }
}

/// Whether anything is mounted at or below `dir` (from /proc/self/mountinfo).
pub(crate) fn has_mount_below(dir: &Path) -> std::io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|p| Path::new(&p).starts_with(dir))
    }))
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes a run directory left behind by a runner that was killed (for `dockless gc` and
/// start-up cleanup): unmounts its `rootfs` if it is still mounted, then deletes it. Refuses
/// (with [`RootfsError::StillMounted`]) rather than delete through a mount.
pub fn remove_leftover_run(run_dir: &Path) -> Result<(), RootfsError> {
    let run_dir = std::path::absolute(run_dir).map_err(|source| RootfsError::RemoveRunDir {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let rootfs = run_dir.join("rootfs");
    if has_mount_below(&rootfs).map_err(|source| RootfsError::RemoveRunDir {
        path: run_dir.clone(),
        source,
    })? {
        unmount(&rootfs, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).map_err(|e| {
            RootfsError::Unmount {
                path: rootfs.clone(),
                source: e.into(),
            }
        })?;
    }
    remove_run_dir(&run_dir)
}

fn remove_run_dir(run_dir: &Path) -> Result<(), RootfsError> {
    let err = |source: std::io::Error| RootfsError::RemoveRunDir {
        path: run_dir.to_path_buf(),
        source,
    };
    if has_mount_below(run_dir).map_err(err)? {
        return Err(RootfsError::StillMounted {
            path: run_dir.to_path_buf(),
        });
    }
    let (Some(parent), Some(name)) = (run_dir.parent(), run_dir.file_name()) else {
        return Ok(());
    };
    let parent = open_dir(parent).map_err(err)?;
    remove_any(std::os::fd::AsFd::as_fd(&parent), name.as_bytes())
        .map(|_| ())
        .map_err(|e| err(e.into()))
}

/// Binds a flattened copy onto itself as `nodev,nosuid` (see [`mount_overlay`] for why).
fn seal_copy(rootfs: &Path) -> std::io::Result<()> {
    mount_bind(rootfs, rootfs)?;
    let sealed = mount_remount(
        rootfs,
        MountFlags::BIND | MountFlags::NODEV | MountFlags::NOSUID,
        c"",
    )
    .and_then(|()| mount_change(rootfs, MountPropagationFlags::PRIVATE));
    if let Err(e) = sealed {
        let _ = unmount(rootfs, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
        return Err(e.into());
    }
    Ok(())
}
