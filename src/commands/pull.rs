//! `dockless pull IMAGE`: fetch an image into the local store.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use dockless_registry::{Client, ImageRecord, ImageRef, Platform, Store};
use dockless_runtime::rootfs::{EnsuredLayer, LayerSource, SnapshotStore};
use dockless_runtime::unpack::Compression;

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

    /// Only download into the content store; leave unpacking to the first run.
    #[arg(long)]
    pub no_unpack: bool,

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
    if !args.no_unpack {
        let started = std::time::Instant::now();
        let unpacked = unpack(&record, paths)?;
        if !args.quiet {
            eprintln!(
                "{}: {} of {} layers unpacked in {:.2} s",
                record.name,
                unpacked.iter().filter(|l| l.unpacked.is_some()).count(),
                unpacked.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
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

/// The snapshot store of unpacked layers (beside the content store).
pub fn snapshots(paths: &Paths) -> anyhow::Result<SnapshotStore> {
    Ok(SnapshotStore::open(&paths.root)?)
}

/// Makes sure every layer of `record` is unpacked into the snapshot store; layers already
/// there are not even opened. Returns the layers' chain ids in manifest order.
pub fn unpack(record: &ImageRecord, paths: &Paths) -> anyhow::Result<Vec<EnsuredLayer>> {
    let store = Store::open(paths.store())?;
    let mut sources = Vec::with_capacity(record.layers.len());
    for (layer, diff_id) in record.layers.iter().zip(&record.diff_ids) {
        let blob = store.blob_path(&layer.digest);
        sources.push(LayerSource {
            label: layer.digest.to_string(),
            compression: Compression::from_media_type(&layer.media_type)?,
            diff_id: diff_id.to_string().parse()?,
            open: Box::new(move || {
                let file = std::fs::File::open(&blob)?;
                Ok(Box::new(file) as Box<dyn std::io::Read + Send>)
            }),
        });
    }
    snapshots(paths)?
        .ensure(sources)
        .with_context(|| format!("cannot unpack {}", record.name))
}
