//! Typed errors of the snapshot store, the per-run rootfs and its diff (a leaf of `rootfs`:
//! every other file can name them without importing a sibling that does the work).

use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::unpack::{ChainId, UnpackError};

/// Why a snapshot could not be made or a run rootfs could not be provided or released.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The store directory could not be created or read.
    #[error("snapshot store {path}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An image without layers has no rootfs.
    #[error("an image needs at least one layer")]
    NoLayers,
    /// The caller's opener for a layer blob failed.
    #[error("cannot open the blob of layer {label}")]
    OpenLayer {
        /// The layer label.
        label: String,
        /// The caller's error.
        #[source]
        source: io::Error,
    },
    /// Unpacking a layer failed (nothing of it was committed).
    #[error("cannot unpack layer {index} of the image")]
    Unpack {
        /// Position in manifest order.
        index: usize,
        /// The unpacker's error.
        #[source]
        source: UnpackError,
    },
    /// A layer creates a directory implicitly where a lower layer has a symlink; overlayfs
    /// would hide the symlink. The store handles this by replaying the layer over its lowers;
    /// the error only escapes if that replay is impossible.
    #[error("layer {label}: implied directory {path:?} would hide a symlink of a lower layer")]
    ImpliedDirOverSymlink {
        /// The layer label.
        label: String,
        /// The directory (relative to the rootfs).
        path: String,
    },
    /// Copying a lower directory's attributes onto an implied directory failed.
    #[error("layer {label}: cannot copy attributes of {path:?} from a lower layer")]
    ImpliedDirAttrs {
        /// The layer label.
        label: String,
        /// The directory.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Renaming the staged snapshot into place (or syncing it) failed.
    #[error("cannot commit snapshot {chain}")]
    Commit {
        /// The snapshot.
        chain: ChainId,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A run needs a snapshot that is not in the store.
    #[error("snapshot {0} is not in the store")]
    MissingSnapshot(ChainId),
    /// A snapshot to remove is leased by a live run (or another caller): it stays.
    #[error("snapshot {0} is in use by a running container; not removed")]
    SnapshotInUse(ChainId),
    /// The run directory could not be prepared.
    #[error("cannot prepare run directory {path}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The overlay mount failed and no fallback was allowed.
    #[error("overlay mount on {path} failed")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The flattened copy failed.
    #[error("flattened copy into {path} failed")]
    Copy {
        /// The target rootfs.
        path: PathBuf,
        /// What failed.
        #[source]
        source: UnpackError,
    },
    /// The rootfs could not be unmounted.
    #[error("cannot unmount {path}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A mount is still present below a run directory, so it was not removed.
    #[error("{path} still has a mount below it; not removed")]
    StillMounted {
        /// The run directory.
        path: PathBuf,
    },
    /// The run directory could not be removed.
    #[error("cannot remove run directory {path}")]
    RemoveRunDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why an upper directory could not become a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The run got a flattened copy: there is no upper directory holding only its changes.
    #[error("build commands need an overlay root filesystem; this run got a copy ({reason})")]
    NoOverlay {
        /// Why overlay was not used.
        reason: String,
    },
    /// Reading the upper directory failed.
    #[error("cannot {op} {}", path.display())]
    Read {
        /// What we tried.
        op: &'static str,
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An overlay feature whose upper entries depend on the lower layers.
    #[error("{} uses overlay {feature}, which a layer cannot express", path.display())]
    Unsupported {
        /// The entry, relative to the upper directory.
        path: PathBuf,
        /// The feature (xattr) found.
        feature: &'static str,
    },
    /// A name the OCI layer format reserves for whiteouts (`.wh.*`): written as it is, it
    /// would delete or hide files when the layer is applied.
    #[error("{} has a name reserved for OCI whiteouts", path.display())]
    ReservedName {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// A file changed size while it was read.
    #[error("{} changed while it was read", path.display())]
    Changed {
        /// The entry, relative to the upper directory.
        path: PathBuf,
    },
    /// An entry nested deeper than [`DiffOptions::max_depth`](super::DiffOptions::max_depth): the build made a tree no image
    /// needs, and reading it without a bound would cost memory and descriptors per level.
    #[error("{} is nested deeper than {max} levels", path.display())]
    TooDeep {
        /// The first entry found too deep, relative to the upper directory.
        path: PathBuf,
        /// The depth allowed.
        max: usize,
    },
    /// The layer would pass one of the [`Limits`](crate::unpack::Limits) the unpacker applies to it later: better
    /// to fail the build now than to write a layer no run can use.
    #[error("{} exceeds the layer limit {limit} of {max}", path.display())]
    Limit {
        /// The entry that passed it, relative to the upper directory.
        path: PathBuf,
        /// The [`Limits`](crate::unpack::Limits) field, e.g. `max_file_size`.
        limit: &'static str,
        /// Its value.
        max: u64,
    },
    /// Writing the tar stream failed.
    #[error("cannot write the layer entry {}", path.display())]
    Write {
        /// The entry being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl DiffError {
    /// For `map_err`: reading `path` (relative to the upper directory) failed in `op`.
    pub(super) fn read<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Self + 'a {
        move |e| Self::Read {
            op,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    /// For `map_err`: writing the entry `path` failed.
    pub(super) fn write(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `path` would pass the [`Limits`](crate::unpack::Limits) field `limit`, whose value is
    /// `max`.
    pub(super) fn limit(path: &Path, limit: &'static str, max: u64) -> Self {
        Self::Limit {
            path: path.to_path_buf(),
            limit,
            max,
        }
    }
}
