//! A run's overlay upper directory -> an OCI layer tar: what a build command changed.
//!
//! The upper directory holds exactly the changes of the run, in overlay's format: a whiteout
//! is a 0/0 character device, an opaque directory carries `user.overlay.opaque=y` (every
//! overlay of dockless is mounted with `userxattr`, so overlay's own marks are the exact
//! `user.overlay.*` names; a `trusted.overlay.*` name there is data the container wrote, and
//! `user.overlay.overlay.*` is overlay's escaped form of one). They become the OCI forms
//! `.wh.<name>` and `.wh..wh..opq`. The tree was written by an untrusted container, so it is
//! read with `*at` calls that never follow a symlink, iteratively (no recursion a deep tree
//! could overflow), within the [`Limits`](crate::unpack::Limits) the unpacker will apply to the layer, and the output
//! is deterministic: entries sorted by name, directories before their children, hard links as
//! links to the first path. Overlay features whose upper entries do not stand on their own
//! (metacopy: metadata without data; redirect_dir: a renamed directory pointing at its lower
//! origin) are refused.
//!
//! `walk.rs` writes the tar (the walk, the limits, the entry forms); `xattrs.rs` sorts an
//! entry's extended attributes into overlay's marks and those the layer carries.

mod walk;
mod xattrs;

#[cfg(test)]
mod tests;

pub use walk::{DiffOptions, DiffReport, write_upper_as_layer};
