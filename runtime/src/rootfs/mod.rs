//! Snapshots -> a root filesystem for one run.
//!
//! [`SnapshotStore`] keeps each layer unpacked once (keyed by chain id, read-only once
//! committed); [`SnapshotStore::mount_run`] gives a run its own writable view: an overlayfs
//! over the image's snapshots with a fresh upper directory, or, where overlay cannot be
//! mounted, a flattened copy (and says which it did). [`RunRootfs`] unmounts and removes the
//! run directory when dropped.
//!
//! The files import one way only (no cycle): `store` (the store, [`SnapshotStore::ensure`],
//! `mount_run`, removal) -> `implied` (implied directories take their lowers' attributes),
//! `rebase` (replay a layer over its lowers) and `mount` ([`RunRootfs`]) -> `flatten` (the copy
//! fallback) -> `error`; `store` and `mount` -> `lease` (the lock files that say which run
//! uses a snapshot and which process owns a staging directory), a leaf; `slot` (the per-run
//! slot locks) -> `mount`; `diff` (an upper directory -> a layer) stands apart. Overlay's own rules (marks, the xattr allow-list, the
//! opaque check, the mount) are in the crate's leaf module `overlay`, directory helpers in
//! `unpack::tree`.

mod diff;
mod error;
mod flatten;
mod implied;
mod lease;
mod mount;
mod rebase;
mod slot;
mod store;

pub use diff::{DiffOptions, DiffReport, write_upper_as_layer};
pub use error::{DiffError, RootfsError};
pub use lease::SnapshotLease;
pub use mount::{MountMode, RootfsKind, RunRootfs, remove_leftover_run};
pub use slot::{RootfsSlot, RunSlots, SlotError, SlotsCollected};
pub use store::{BlobOpener, EnsuredLayer, LayerSource, SnapshotStore, Sweep};
