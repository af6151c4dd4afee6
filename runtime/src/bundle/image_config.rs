//! The part of an OCI/Docker image config that decides how the process starts.

use super::BundleError;

/// The `config` object of an image configuration (OCI image-spec `config.md`), reduced to the
/// fields a run uses. Unknown fields are ignored, as the spec asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// Default arguments prepended to the command.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default command (arguments after the entrypoint).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` environment entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory; empty or absent means `/`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty or absent means root.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(serde::Deserialize)]
struct FullImageConfig {
    #[serde(default)]
    config: Option<ImageConfig>,
}

impl ImageConfig {
    /// Parses a whole image configuration blob (the JSON the manifest's `config` descriptor
    /// points at) and returns its `config` object; an image without one gets the defaults.
    pub fn from_image_config_json(json: &[u8]) -> Result<Self, BundleError> {
        let full: FullImageConfig =
            serde_json::from_slice(json).map_err(BundleError::ImageConfig)?;
        Ok(full.config.unwrap_or_default())
    }
}
