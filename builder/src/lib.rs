//! dockless-builder: the pieces of `dockless build` that need neither the registry nor the
//! runtime: the build definition, the repository through the git CLI, the deterministic code
//! layer, the gzip-and-hash layer encoder, the new image's OCI config and manifest, and the
//! build cache's layout and lock.
//!
//! The binary wires them: it resolves the commit ([`git::Remote::resolve`]), asks the cache
//! ([`cache::BuildCache`]; whether the image it names is still stored is the binary's question),
//! writes the code layer ([`code_layer::write_code_layer`] into a [`layer::LayerEncoder`]) and
//! the build commands' layers (from the runtime's overlay upper dirs) into the store, then the
//! config and manifest from [`image`].

pub mod cache;
pub mod code_layer;
mod error;
pub mod git;
pub mod image;
pub mod layer;
pub mod spec;

pub use error::{CacheError, CodeLayerError, GitError, ImageError, SpecError};
pub use spec::{BuildNetwork, BuildSpec, Secret};

/// What the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::process::Command;

    /// `git -C dir args...` with a fixed identity and fixed dates; its trimmed stdout.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@e"])
            .args(args)
            .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
            .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
            .output()
            .expect("git is installed (it is a prerequisite of dockless build)");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}
