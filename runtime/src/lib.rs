//! dockless-runtime: layers -> rootfs -> bundle -> container -> result.
//!
//! The runtime never talks HTTP: it receives layer readers and the expected diff ids from the
//! binary, unpacks them into read-only snapshots, builds an OCI runtime bundle and runs it
//! through youki's libcontainer in a single-threaded helper process.

pub mod bundle;
pub mod container;
pub mod network;
mod overlay;

pub use overlay::MountApi;
pub mod rootfs;
pub mod systemd;
pub mod unpack;
pub mod userns;
