//! Typed errors of the snapshot store and the per-run rootfs.

use std::io;
use std::path::PathBuf;

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
