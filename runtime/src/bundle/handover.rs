//! Handing `/data` and a host `/tmp` to the container's user.

use std::path::Path;

use super::BundleError;
use super::run_spec::{RunSpec, TmpMount};
use super::user::resolve_user;

/// Gives `dir` and everything below it to `uid:gid`, never following a symlink (a container
/// that ran before may have left links to anywhere).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// When `run.hand_over_data` is set: resolves the container's user inside `rootfs` and gives
/// it `/data` and a host `/tmp` (host ids shifted into the `--userns` range if any).
pub fn hand_over(rootfs: &Path, run: &RunSpec) -> Result<(), BundleError> {
    if !run.hand_over_data {
        return Ok(());
    }
    let spec = run
        .user
        .as_deref()
        .or(run.image.user.as_deref())
        .unwrap_or("");
    let user = resolve_user(rootfs, spec)?;
    let (base, count) = run.userns.map_or((0, u32::MAX), |s| (s.base, s.count));
    if user.uid >= count || user.gid >= count {
        return Err(BundleError::HandOver {
            path: rootfs.to_owned(),
            source: std::io::Error::other(format!(
                "user {}:{} is outside the --userns range",
                user.uid, user.gid
            )),
        });
    }
    let tmp = match &run.tmp {
        TmpMount::HostDir(dir) => Some(dir.as_path()),
        TmpMount::Tmpfs => None,
    };
    for dir in [run.data_dir.as_deref(), tmp].into_iter().flatten() {
        chown_tree(dir, base + user.uid, base + user.gid).map_err(|source| {
            BundleError::HandOver {
                path: dir.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}
