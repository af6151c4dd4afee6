//! The process's working directory inside the rootfs: created when the image lacks it (as
//! docker, podman and runc do), refused with a message naming it when something else is there
//! (libcontainer would fail with a bare "failed to unix syscall" from its `chdir`).
//!
//! The rootfs is untrusted: every component is resolved with `openat2(RESOLVE_IN_ROOT)`, so a
//! symlink in the image resolves inside the rootfs, never on the host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Uid, chownat, mkdirat, openat2};
use rustix::io::Errno;

use super::BundleError;

/// Makes sure `workdir` (absolute) is a directory in `rootfs`, creating the missing components
/// 0755 and owned by `owner` (the container's root as the host sees it).
pub(crate) fn ensure_workdir(rootfs: &Path, workdir: &str, owner: u32) -> Result<(), BundleError> {
    let failed = |rel: &Path, source: Errno| BundleError::ReadInRootfs {
        path: rootfs.join(rel),
        source: source.into(),
    };
    let not_a_dir = || BundleError::WorkdirNotADirectory {
        workdir: workdir.to_owned(),
    };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed(Path::new(""), e))?;
    let mut so_far = PathBuf::from(".");
    for component in Path::new(workdir).components() {
        match component {
            Component::Normal(name) => {
                let next = so_far.join(name);
                match open_dir(&root, &next) {
                    Ok(_) => {}
                    Err(Errno::NOTDIR) => return Err(not_a_dir()),
                    Err(Errno::NOENT) => {
                        let parent = open_dir(&root, &so_far).map_err(|e| failed(&so_far, e))?;
                        match mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                            Ok(()) => {}
                            // A dangling link: its target is not ours to create.
                            Err(Errno::EXIST) => return Err(not_a_dir()),
                            Err(e) => return Err(failed(&next, e)),
                        }
                        chownat(
                            &parent,
                            name,
                            Some(Uid::from_raw(owner)),
                            Some(Gid::from_raw(owner)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| failed(&next, e))?;
                    }
                    Err(e) => return Err(failed(&next, e)),
                }
                so_far = next;
            }
            Component::ParentDir => {
                so_far.push("..");
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(())
}

/// Opens `rel` as a directory, resolved as if the rootfs were `/`.
fn open_dir(root: &impl AsFd, rel: &Path) -> Result<OwnedFd, Errno> {
    openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_components_are_created_and_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "").unwrap();
        std::os::unix::fs::symlink("/outside", root.join("escape")).unwrap();
        let me = rustix::process::geteuid().as_raw();

        ensure_workdir(root, "/work/deep/dir", me).unwrap();
        assert!(root.join("work/deep/dir").is_dir());
        ensure_workdir(root, "/etc", me).unwrap();
        let err = ensure_workdir(root, "/etc/passwd", me).unwrap_err();
        assert!(
            matches!(err, BundleError::WorkdirNotADirectory { .. }),
            "{err}"
        );
        let err = ensure_workdir(root, "/etc/passwd/sub", me).unwrap_err();
        assert!(
            matches!(err, BundleError::WorkdirNotADirectory { .. }),
            "{err}"
        );
        // A link to an absolute path resolves inside the rootfs; a dangling one is refused
        // (its target is not created), never followed to the host's /outside.
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        ensure_workdir(root, "/etc-link/new", me).unwrap();
        assert!(root.join("etc/new").is_dir());
        let err = ensure_workdir(root, "/escape/x", me).unwrap_err();
        assert!(
            matches!(err, BundleError::WorkdirNotADirectory { .. }),
            "{err}"
        );
        assert!(!Path::new("/outside").exists());
        // `..` never leaves the rootfs.
        ensure_workdir(root, "/../../up", me).unwrap();
        assert!(root.join("up").is_dir());
    }
}
