//! The stages every command shares, free of the CLI: images into the stores ([`pull`]), one
//! container on a private rootfs ([`container`]), the cleanup after killed runs ([`gc`]), the
//! Storage with its state sealed ([`storage`]), the job queue of a shared Storage ([`queue`]).
//! `commands`, the job pipeline and the build pipeline call them; they call only
//! [`crate::paths`], [`crate::rootless`] and the crates.

pub mod container;
pub mod gc;
pub mod pull;
pub mod queue;
pub mod storage;
