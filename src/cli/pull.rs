//! `dockless pull`.

use clap::Args;

use super::registry::RegistryArgs;

/// Arguments of `dockless pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, resolved as docker does (`busybox` = docker.io/library/busybox:latest).
    pub image: String,

    /// Platform to pick from a multi-platform index: os/arch[/variant].
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,

    /// Only download into the content store; leave unpacking to the first run.
    #[arg(long)]
    pub no_unpack: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}
