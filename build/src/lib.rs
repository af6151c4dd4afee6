//! dockless-build: the pieces of `dockless build` that need neither the registry nor the
//! runtime: the build definition, the repository through the git CLI, the deterministic code
//! layer, the gzip-and-hash layer encoder and the new image's OCI config and manifest.
//!
//! The binary wires them: it resolves the commit ([`git::Remote::resolve`]), asks its cache,
//! writes the code layer ([`code_layer::write_code_layer`] into a [`layer::LayerEncoder`]) and
//! the build commands' layers (from the runtime's overlay upper dirs) into the store, then the
//! config and manifest from [`image`].

pub mod code_layer;
mod error;
pub mod git;
pub mod image;
pub mod layer;
pub mod spec;

pub use error::{CodeLayerError, GitError, ImageError, SpecError};
pub use spec::{BuildNetwork, BuildSpec, Secret};
