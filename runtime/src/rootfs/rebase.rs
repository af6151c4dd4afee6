//! The slow path for a layer that only makes sense on top of its lowers.
//!
//! A layer holding `lib/systemd/x` with no `lib` entry, over a lower layer where `lib` is a
//! symlink to `usr/lib`, means `usr/lib/systemd/x`. Unpacked on its own, such a layer gets a
//! real `lib` directory that would hide the symlink. When the store sees this, it replays the
//! staged snapshot through a writable overlay of the lower snapshots, skipping the implied
//! directories, so every path resolves in the merged view exactly as a flattened apply would;
//! hardlinks to files of lower layers are made there too (overlayfs copies the file up);
//! overlayfs then records the changes (copy-ups, whiteouts) in a fresh upper directory, which
//! becomes the snapshot.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};
use rustix::mount::{UnmountFlags, unmount};

use super::error::RootfsError;
use super::flatten::replay;
use crate::overlay::{BOOKKEEPING, mount_overlay};
use crate::unpack::spec::{Kind, Meta, Op, Spec};
use crate::unpack::tree::{list_dir, lstat_at, open_child_dir, open_dir, os, remove_any};
use crate::unpack::{Applier, LayerError, LayerFormat, UnpackError};

/// Re-applies the staged snapshot `staged` over `lowers` (nearest first) and returns the
/// directory holding the new snapshot (inside `work_base`, which is created and must not
/// exist). `staged` is left for the caller to discard.
pub(crate) fn reapply_over_lowers(
    staged: &Path,
    implied: &[Vec<u8>],
    links: &[(Vec<u8>, Vec<u8>)],
    lowers: &[PathBuf],
    work_base: &Path,
    label: &str,
) -> Result<PathBuf, RootfsError> {
    let store_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Store { path, source }
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(work_base)
        .map_err(store_err(work_base))?;
    let (upper, work, merged) = (
        work_base.join("upper"),
        work_base.join("work"),
        work_base.join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(d)
            .map_err(store_err(d))?;
    }
    // The merged root takes the upper dir's owner, and implied directories the root's: the
    // staged layer's (the range's base in an id-shifted store, else the runner's).
    {
        use std::os::unix::fs::MetadataExt;
        let staged_root = std::fs::symlink_metadata(staged).map_err(store_err(staged))?;
        std::os::unix::fs::chown(&upper, Some(staged_root.uid()), Some(staged_root.gid()))
            .map_err(store_err(&upper))?;
    }
    mount_overlay(lowers, &upper, &work, &merged).map_err(|source| RootfsError::Mount {
        path: merged.clone(),
        source,
    })?;
    let result = replay_into(staged, implied, links, &merged, label);
    let unmounted = unmount(&merged, UnmountFlags::NOFOLLOW).map_err(|e| RootfsError::Unmount {
        path: merged.clone(),
        source: e.into(),
    });
    result.map_err(|source| RootfsError::Copy {
        path: merged.clone(),
        source,
    })?;
    unmounted?;
    if let Ok(fd) = open_dir(&upper) {
        strip_bookkeeping(fd.as_fd());
    }
    // Overlay's work directory is not part of the snapshot.
    if let Ok(base) = open_dir(work_base) {
        let _ = remove_any(base.as_fd(), b"work");
        let _ = remove_any(base.as_fd(), b"merged");
    }
    Ok(upper)
}

fn replay_into(
    staged: &Path,
    implied: &[Vec<u8>],
    links: &[(Vec<u8>, Vec<u8>)],
    merged: &Path,
    label: &str,
) -> Result<(), UnpackError> {
    let wrap = |kind| UnpackError {
        layer: label.to_owned(),
        kind,
    };
    let mut applier = Applier::new(merged, LayerFormat::Flattened).map_err(|source| {
        wrap(LayerError::OpenTarget {
            path: merged.to_path_buf(),
            source,
        })
    })?;
    let src = open_dir(staged).map_err(|source| {
        wrap(LayerError::OpenTarget {
            path: staged.to_path_buf(),
            source,
        })
    })?;
    let implied: HashSet<Vec<u8>> = implied.iter().cloned().collect();
    replay(
        src.as_fd(),
        &[],
        &mut applier,
        &mut HashMap::new(),
        &implied,
    )
    .map_err(wrap)?;
    // Links to lower files: overlayfs copies the file up and links it in the new layer.
    for (path, target) in links {
        let spec = Spec {
            raw_name: String::from_utf8_lossy(path).into_owned(),
            path: path.clone(),
            kind: Kind::Hardlink(target.clone()),
            meta: Meta {
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: (0, 0),
                xattrs: Vec::new(),
            },
        };
        applier.apply(Op::Entry(Box::new(spec))).map_err(wrap)?;
    }
    applier.finish().map_err(wrap)?;
    Ok(())
}

/// Removes overlay's [`BOOKKEEPING`] xattrs of the temporary mount from a directory tree
/// (directories and regular files, through fds opened without following symlinks; symlinks
/// keep theirs, which no lower layer reads). Whiteouts and the opaque mark are kept.
fn strip_bookkeeping(dir: BorrowedFd<'_>) {
    for name in BOOKKEEPING {
        let _ = rustix::fs::fremovexattr(dir, name);
    }
    let Ok(names) = list_dir(dir) else { return };
    for name in names {
        let Ok(Some(st)) = lstat_at(dir, &name) else {
            continue;
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                if let Ok(child) = open_child_dir(dir, &name) {
                    strip_bookkeeping(child.as_fd());
                }
            }
            FileType::RegularFile => {
                if let Ok(fd) = rustix::fs::openat(
                    dir,
                    os(&name),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    for x in BOOKKEEPING {
                        let _ = rustix::fs::fremovexattr(&fd, x);
                    }
                }
            }
            _ => {}
        }
    }
}
