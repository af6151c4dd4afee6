//! `dockless images`, `rmi` and `load`: the local store.

use clap::Args;

/// Arguments of `dockless images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON records instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `dockless rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (name, full digest or a digest prefix of 12+ characters).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Arguments of `dockless load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A `docker save` archive, an OCI archive (tar or tar.gz) or an OCI layout directory.
    pub input: std::path::PathBuf,

    /// Platform to pick when the layout holds an index.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
}
