//! Handing `/data` and a host `/tmp` to the container's user.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};

use super::BundleError;
use super::run_spec::{RunSpec, TmpMount};
use super::user::resolve_user;
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, os};

/// Directory levels [`chown_tree`] descends at most (a container may have nested anything).
const MAX_DEPTH: usize = 256;

/// Gives `dir` and everything below it to `uid:gid`. Walked through directory descriptors
/// only, every entry looked at and changed relative to its open parent without following a
/// link, never across a mount: a link swapped in during the walk (by a container that ran
/// before, or a host user who owns the tree) is changed as a link, never followed.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dev = rustix::fs::fstat(&fd)?.st_dev;
    chown_dir(fd, dev, (Uid::from_raw(uid), Gid::from_raw(gid)), 0)
}

fn chown_dir(fd: OwnedFd, dev: u64, owner: (Uid, Gid), depth: usize) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "nested deeper than {MAX_DEPTH} directories"
        )));
    }
    rustix::fs::fchown(&fd, Some(owner.0), Some(owner.1))?;
    for name in list_dir(fd.as_fd())? {
        let Some(st) = lstat_at(fd.as_fd(), &name)? else {
            continue;
        };
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type == FileType::Directory && st.st_dev == dev {
            chown_dir(open_child_dir(fd.as_fd(), &name)?, dev, owner, depth + 1)?;
        } else if file_type == FileType::RegularFile && st.st_nlink > 1 {
            // A hard link may be a file from outside the tree (linked in by whoever owns
            // the tree): never given away. Its content stays readable as it was.
            continue;
        } else if st.st_dev == dev {
            rustix::fs::chownat(
                &fd,
                os(&name),
                Some(owner.0),
                Some(owner.1),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
    }
    Ok(())
}

/// Gives `/data` and a host `/tmp` to the container: to its user when `run.hand_over_data`
/// is set (resolved inside `rootfs`), else, with `--userns`, to its root, whose host ids are
/// the range's base (a user's ids are shifted into the range as well). Without either, the
/// directories are left as they are.
pub fn hand_over(rootfs: &Path, run: &RunSpec) -> Result<(), BundleError> {
    let inside = if run.hand_over_data {
        let spec = run
            .user
            .as_deref()
            .or(run.image.user.as_deref())
            .unwrap_or("");
        let user = resolve_user(rootfs, spec)?;
        (user.uid, user.gid)
    } else if run.userns.is_some() {
        (0, 0)
    } else {
        return Ok(());
    };
    let (base, count) = run.userns.map_or((0, u32::MAX), |s| (s.base, s.count));
    let refuse = |why: String| BundleError::HandOver {
        path: rootfs.to_owned(),
        source: std::io::Error::other(why),
    };
    if inside.0 >= count || inside.1 >= count {
        return Err(refuse(format!(
            "user {}:{} is outside the --userns range",
            inside.0, inside.1
        )));
    }
    let (Some(uid), Some(gid)) = (base.checked_add(inside.0), base.checked_add(inside.1)) else {
        return Err(refuse("the --userns range overflows the id space".into()));
    };
    let tmp = match &run.tmp {
        TmpMount::HostDir(dir) => Some(dir.as_path()),
        TmpMount::Tmpfs => None,
    };
    for dir in [run.data_dir.as_deref(), tmp].into_iter().flatten() {
        chown_tree(dir, uid, gid).map_err(|source| BundleError::HandOver {
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::chown_tree;

    #[test]
    #[ignore = "needs root and scripts/test-env"]
    fn links_are_changed_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "x").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("in/tables")).unwrap();
        std::fs::write(data.join("in/tables/t.csv"), "a\n").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("in/link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), data.join("link-file")).unwrap();
        // A hard link to a file outside the tree (same filesystem): never given away.
        std::fs::hard_link(outside.join("secret"), data.join("hard-link")).unwrap();

        chown_tree(&data, 4242, 4343).unwrap();
        for p in [
            "",
            "in",
            "in/tables",
            "in/tables/t.csv",
            "in/link-dir",
            "link-file",
        ] {
            let m = std::fs::symlink_metadata(data.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
        }
        for p in [outside.clone(), outside.join("secret")] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (0, 0),
                "{} was followed into",
                p.display()
            );
        }
        // The top itself given as a link is refused, not followed.
        std::os::unix::fs::symlink(&outside, tmp.path().join("top-link")).unwrap();
        assert!(chown_tree(&tmp.path().join("top-link"), 4242, 4343).is_err());
    }
}
