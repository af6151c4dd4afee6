//! Snapshots -> a root filesystem for one run.
//!
//! [`SnapshotStore`] keeps each layer unpacked once (keyed by chain id, read-only once
//! committed); [`SnapshotStore::mount_run`] gives a run its own writable view: an overlayfs
//! over the image's snapshots with a fresh upper directory, or, where overlay cannot be
//! mounted, a flattened copy (and says which it did). [`RunRootfs`] unmounts and removes the
//! run directory when dropped.

mod diff;
mod error;
mod flatten;
mod implied;
mod mount;
mod rebase;
mod store;

pub use diff::{DiffOptions, DiffReport, write_upper_as_layer};
pub use error::{DiffError, RootfsError};
pub use mount::{MountMode, RootfsKind, RunRootfs, remove_leftover_run};
pub use store::{BlobOpener, EnsuredLayer, LayerSource, SnapshotStore};
