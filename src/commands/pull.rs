//! `dockless pull IMAGE`: fetch an image into the local store.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use dockless_registry::{Client, ImageRecord, ImageRef, Platform, Store};

use super::Paths;
use crate::settings::RegistryArgs;

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

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Pulls and prints the manifest digest on stdout.
pub fn run(args: PullArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let record = pull(
        &args.image,
        &args.platform,
        args.quiet,
        &args.registry,
        paths,
    )?;
    println!("{}", record.digest);
    Ok(ExitCode::SUCCESS)
}

/// Pulls an image; shared with `run`, which pulls when the image is not stored.
pub fn pull(
    image: &str,
    platform: &str,
    quiet: bool,
    registry: &RegistryArgs,
    paths: &Paths,
) -> anyhow::Result<ImageRecord> {
    let reference = ImageRef::parse(image)?;
    let platform: Platform = platform.parse()?;
    let store = Store::open(paths.store())?;
    let client = Client::new(registry.resolve())?;
    let progress: Arc<dyn dockless_registry::Progress> =
        Arc::from(crate::progress::for_stderr(quiet));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The registry's errors already name the image and the registry.
    Ok(runtime.block_on(client.pull(&reference, &platform, &store, progress))?)
}
