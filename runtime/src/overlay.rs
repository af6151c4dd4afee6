//! Overlayfs as dockless uses it, in one place: the marks it reads in a layer directory, the
//! extended attributes an image may carry past them, the opaque check and the mount.
//!
//! The unpacker writes snapshots in this format and must refuse image xattrs that would forge
//! a mark; the rootfs module stacks, copies, replays and diffs those snapshots. Both read the
//! rules from here, so a fix to one rule reaches every caller. A leaf: it imports nothing from
//! the rest of the crate (which keeps `unpack` from depending on `rootfs`).
//!
//! Every overlay of dockless is mounted with `userxattr`, so overlay's marks are the
//! `user.overlay.*` names: the same snapshot then works for root and inside a rootless
//! session, where `trusted.*` cannot be written.

use std::ffi::CString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, mount, mount_change,
    move_mount,
};

/// The prefix of overlay's own names under `userxattr`: an image may never set one, or it
/// could forge a mark that changes what the mount shows.
pub(crate) const XATTR_PREFIX: &str = "user.overlay.";

/// The opaque-directory mark: the directory hides the content of the lower layers.
pub(crate) const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The value of [`OPAQUE_XATTR`] that makes a directory opaque.
pub(crate) const OPAQUE_VALUE: &[u8] = b"y";

/// Metacopy: an upper entry with metadata only, its data in a lower layer.
pub(crate) const METACOPY_XATTR: &str = "user.overlay.metacopy";

/// redirect_dir: a renamed directory pointing at its lower origin.
pub(crate) const REDIRECT_XATTR: &str = "user.overlay.redirect";

/// The marks that change what a layer directory means (exact names: the escaped
/// `user.overlay.overlay.*` form is data a container wrote).
pub(crate) const MARKS: [&str; 3] = [OPAQUE_XATTR, METACOPY_XATTR, REDIRECT_XATTR];

/// Overlayfs bookkeeping of a mount: meaningless once its upper directory becomes a lower
/// layer. (Mounts use `userxattr`, so overlay writes the `user.` names; the `trusted.` ones
/// are listed too in case a kernel wrote them.)
pub(crate) const BOOKKEEPING: [&str; 8] = [
    "user.overlay.origin",
    "user.overlay.impure",
    "user.overlay.uuid",
    "user.overlay.nlink",
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.uuid",
    "trusted.overlay.nlink",
];

/// Whether an extended attribute is one a layer carries: user attributes and file capabilities
/// (e.g. `ping`), which images legitimately set and are safe to restore. Overlay's own
/// (`user.overlay.*`, which snapshots use, and `trusted.*`) and `security.selinux` /
/// `security.ima` never come from an image nor go into one. The unpacker filters image
/// entries with it, the flattened copy and the build diff filter snapshot entries with it.
pub(crate) fn xattr_carried(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(XATTR_PREFIX.as_bytes()))
        || name == b"security.capability"
}

/// Whether a value of [`OPAQUE_XATTR`] marks the directory opaque (exactly `y`).
pub(crate) fn marks_opaque(value: &[u8]) -> bool {
    value == OPAQUE_VALUE
}

/// Reads [`OPAQUE_XATTR`] with `read` and applies [`marks_opaque`]; any error (no such
/// attribute, a longer value) means "not opaque".
fn opaque_with(read: impl FnOnce(&mut [u8]) -> Result<usize, Errno>) -> bool {
    let mut buf = [0u8; 4];
    matches!(read(&mut buf), Ok(n) if marks_opaque(&buf[..n]))
}

/// Whether an open directory of a snapshot is opaque.
pub(crate) fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    opaque_with(|buf| rustix::fs::fgetxattr(dir, OPAQUE_XATTR, buf))
}

/// Whether a snapshot's root directory is opaque (read without following a symlink). Overlayfs
/// ignores the mark on a layer's root, so callers end the stack there instead.
pub(crate) fn root_is_opaque(dir: &Path) -> bool {
    opaque_with(|buf| rustix::fs::lgetxattr(dir, OPAQUE_XATTR, buf))
}

/// Mounts overlayfs at `target`: with the new mount API and one `lowerdir+` per layer (no
/// page-size limit on the option string), else with `mount(2)`. Always `nodev,nosuid`: the
/// mount is visible on the host (below the run directory), where an image's device node or
/// setuid file must give nothing to whoever can reach it (with `--userns`, the unprivileged
/// range). The container's own `/dev` is a separate mount; `no_new_privileges` already makes
/// setuid inert inside.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<MountApi> {
    // `DOCKLESS_OVERLAY_API=legacy` takes the path of kernels before 6.5 (and of 6.5-6.7,
    // which lack `lowerdir+`) on any kernel: what tests and a doubtful user can force.
    let forced_legacy = std::env::var_os("DOCKLESS_OVERLAY_API").is_some_and(|v| v == "legacy");
    let new_api = if forced_legacy {
        Err(Errno::NOSYS)
    } else {
        mount_overlay_fsopen(lowers, upper, work, target)
    };
    let api = match new_api {
        Ok(()) => {
            tracing::debug!(
                layers = lowers.len(),
                api = MountApi::Fsconfig.name(),
                "overlay mounted with the new mount API"
            );
            MountApi::Fsconfig
        }
        Err(Errno::NOSYS | Errno::INVAL) => mount_overlay_legacy(lowers, upper, work, target)?,
        Err(e) => return Err(e.into()),
    };
    // Never let mounts made below the rootfs propagate back to the host.
    mount_change(target, MountPropagationFlags::PRIVATE)?;
    Ok(api)
}

/// Which way an overlay was mounted: kernels before 6.8 (Debian 12's 6.1) take the legacy
/// `mount(2)` path, which a run's `--json` and debug log name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// `fsopen`/`fsconfig` with one `lowerdir+` per layer (Linux 6.8+).
    Fsconfig,
    /// `mount(2)` with the layers' paths in one option string.
    Legacy,
    /// `mount(2)` with the layers named by descriptor (`/proc/self/fd/N`): the paths would
    /// have exceeded the one page of options.
    LegacyByFd,
}

impl MountApi {
    /// The name in `--json` (`"mount_api"`) and in the debug log.
    pub fn name(self) -> &'static str {
        match self {
            MountApi::Fsconfig => "fsconfig",
            MountApi::Legacy => "mount(2)",
            MountApi::LegacyByFd => "mount(2), layers by fd",
        }
    }
}

fn mount_overlay_fsopen(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), Errno> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", lower)?;
    }
    fsconfig_set_string(&fs, "upperdir", upper)?;
    fsconfig_set_string(&fs, "workdir", work)?;
    fsconfig_set_flag(&fs, "userxattr")?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    move_mount(
        &mnt,
        c"",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// `mount(2)` copies at most one page of options; the terminating NUL counts.
const MOUNT_DATA_LIMIT: usize = 4096;

/// `mount(2)` with one option string. When the layers' paths make it longer than a page (an
/// image of many layers, a long state directory), each layer is named by a descriptor of its
/// directory instead (`/proc/self/fd/N`, held open for the call): 127 layers then take about
/// 2.3 KB. What overlay shows in mountinfo are then those short names; the layers are the
/// same directories.
fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<MountApi> {
    let full: Vec<&[u8]> = lowers.iter().map(|l| l.as_os_str().as_bytes()).collect();
    let mut data = legacy_options(&full, upper, work);
    let _held;
    let api;
    if data.len() + 1 > MOUNT_DATA_LIMIT {
        let fds = lowers
            .iter()
            .map(|l| {
                rustix::fs::open(
                    l,
                    rustix::fs::OFlags::PATH
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let short: Vec<String> = fds
            .iter()
            .map(|fd| {
                use std::os::fd::AsRawFd;
                format!("/proc/self/fd/{}", fd.as_raw_fd())
            })
            .collect();
        let short: Vec<&[u8]> = short.iter().map(|s| s.as_bytes()).collect();
        data = legacy_options(&short, upper, work);
        if data.len() + 1 > MOUNT_DATA_LIMIT {
            return Err(std::io::Error::other(format!(
                "{} layers do not fit the one page of overlay options this kernel takes                  (it lacks the new mount API's lowerdir+, Linux 6.8)",
                lowers.len()
            )));
        }
        _held = fds;
        api = MountApi::LegacyByFd;
        tracing::debug!(
            layers = lowers.len(),
            api = api.name(),
            "overlay mounted with mount(2), layers named by descriptor (options over a page)"
        );
    } else {
        api = MountApi::Legacy;
        tracing::debug!(
            layers = lowers.len(),
            api = api.name(),
            "overlay mounted with mount(2)"
        );
    }
    let data =
        CString::new(data).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    mount(
        "overlay",
        target,
        "overlay",
        MountFlags::NODEV | MountFlags::NOSUID,
        data.as_c_str(),
    )?;
    Ok(api)
}

fn legacy_options(lowers: &[&[u8]], upper: &Path, work: &Path) -> Vec<u8> {
    let mut data = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(lower);
    }
    data.extend_from_slice(b",upperdir=");
    data.extend_from_slice(upper.as_os_str().as_bytes());
    data.extend_from_slice(b",workdir=");
    data.extend_from_slice(work.as_os_str().as_bytes());
    data.extend_from_slice(b",userxattr");
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_and_capability_xattrs_are_carried() {
        for name in ["user.mime_type", "user.x", "security.capability"] {
            assert!(xattr_carried(name.as_bytes()), "{name}");
        }
        for name in [
            "user.overlay.opaque",
            "user.overlay.overlay.x",
            "trusted.overlay.opaque",
            "security.selinux",
            "security.ima",
            "system.posix_acl_access",
        ] {
            assert!(!xattr_carried(name.as_bytes()), "{name}");
        }
        assert!(MARKS.iter().all(|m| m.starts_with(XATTR_PREFIX)));
    }

    #[test]
    fn only_y_marks_opaque() {
        assert!(marks_opaque(b"y"));
        for v in [&b""[..], b"n", b"yes", b"Y", b"y\0"] {
            assert!(!marks_opaque(v), "{v:?}");
        }
    }
}
