//! Typed errors of the unpacker: what failed, in which layer, at which entry.

use std::io;
use std::path::PathBuf;

use super::digest::DiffId;

/// A layer could not be unpacked; `layer` names it (blob digest or diff id).
#[derive(Debug, thiserror::Error)]
#[error("layer {layer}")]
pub struct UnpackError {
    /// The layer as the caller labelled it (normally its blob digest).
    pub layer: String,
    /// What went wrong.
    #[source]
    pub kind: LayerError,
}

/// Why a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The media type names no tar layer we can read (e.g. `+encrypted`, `application/json`).
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// The target directory could not be opened (or is a symlink).
    #[error("cannot open target directory {path}")]
    OpenTarget {
        /// The target given by the caller.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The decompressed stream or the tar framing is broken (truncated, bad checksum, ...).
    #[error("cannot read the layer's tar stream")]
    Stream(#[source] io::Error),
    /// One entry could not be applied.
    #[error("entry {entry:?}")]
    Entry {
        /// The entry name as written in the tar (lossy UTF-8).
        entry: String,
        /// Why.
        #[source]
        source: EntryError,
    },
    /// The uncompressed bytes do not hash to the diff id from the image config.
    #[error("diff id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// From the image config.
        expected: DiffId,
        /// Computed over every uncompressed byte.
        actual: DiffId,
    },
    /// A configured limit was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The layers of one image together passed [`Limits::max_image_bytes`](super::Limits)
    /// while this layer was unpacked.
    #[error(
        "limit exceeded: the image's layers together unpack to more than {max} bytes \
         (the limit max_image_bytes)"
    )]
    ImageLimit {
        /// The limit's value.
        max: u64,
    },
    /// Another layer of the same batch failed, so this one was abandoned.
    #[error("unpack cancelled")]
    Cancelled,
    /// Flushing the written data to disk failed.
    #[error("syncfs failed")]
    Sync(#[source] io::Error),
    /// An internal thread died (a bug, reported instead of propagating the panic).
    #[error("unpack thread panicked")]
    Panicked,
}

/// Why a single tar entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// A filesystem operation failed.
    #[error("{op} failed")]
    Io {
        /// The operation, e.g. `create file`, `mknod`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The entry is malformed or not allowed (reason in our words).
    #[error("{0}")]
    Invalid(String),
    /// The kernel refused an owner because it is not mapped in this user namespace: a
    /// rootless session has only as many ids as the user's subordinate ranges.
    #[error(
        "owner {uid}:{gid} is not mapped in this user namespace (a rootless run needs \
         subordinate uid and gid ranges in /etc/subuid and /etc/subgid that cover it)"
    )]
    UnmappedOwner {
        /// The entry's uid.
        uid: u32,
        /// The entry's gid.
        gid: u32,
    },
    /// A hardlink names a target that does not exist in this layer's tree.
    #[error("hardlink target {0:?} does not exist")]
    MissingLinkTarget(String),
}

impl EntryError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
        move |source| EntryError::Io { op, source }
    }

    /// For chown: EINVAL means the owner has no mapping in our user namespace.
    pub(crate) fn chown(
        op: &'static str,
        uid: u32,
        gid: u32,
    ) -> impl FnOnce(rustix::io::Errno) -> EntryError {
        move |e| {
            if e == rustix::io::Errno::INVAL {
                EntryError::UnmappedOwner { uid, gid }
            } else {
                EntryError::Io {
                    op,
                    source: e.into(),
                }
            }
        }
    }

    pub(crate) fn errno(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> EntryError {
        move |e| EntryError::Io {
            op,
            source: e.into(),
        }
    }
}
