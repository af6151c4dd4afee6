//! `dockless images` and `dockless rmi`: what the local store holds.

use std::process::ExitCode;

use clap::Args;
use dockless_registry::{ImageRecord, Store};
use dockless_runtime::unpack::{ChainId, DiffId, chain_ids};

use super::Paths;

/// Arguments of `dockless images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON records instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists stored images: name, digest, size.
pub fn list(args: ImagesArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let store = Store::open(paths.store())?;
    let images = store.images()?;
    if args.json {
        let records: Vec<_> = images.values().collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = images.keys().map(|k| k.len()).max().unwrap_or(0).max(5);
    println!("{:<width$}  {:<19}  {:>10}", "IMAGE", "DIGEST", "SIZE");
    for record in images.values() {
        println!(
            "{:<width$}  sha256:{}  {:>10}",
            record.name,
            record.digest.short(),
            human_size(record.size())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `dockless rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (name, full digest or a digest prefix of 12+ characters).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Removes images and the blobs no other image uses.
pub fn remove(args: RmiArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let store = Store::open(paths.store())?;
    for name in &args.images {
        let removed = store.remove_image(name)?;
        println!("Untagged: {} ({})", removed.name, removed.digest);
        // Snapshots are shared by chain id: drop only those no remaining image stacks on.
        let live: std::collections::HashSet<ChainId> = store
            .images()?
            .values()
            .map(chains)
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        // A running container stacks its overlay on the snapshots: keep them while any run
        // lives (a later `rmi` or `dockless gc` is not needed: they are reused or stay small).
        if super::gc::runs_alive(paths)? {
            eprintln!("dockless: a container is running; the image's unpacked layers are kept");
            continue;
        }
        // The plain snapshots and those shifted for `run --userns`.
        for snapshots in dockless_runtime::rootfs::SnapshotStore::open_all(&paths.root)? {
            for chain in chains(&removed)? {
                if !live.contains(&chain) && snapshots.contains(&chain) {
                    snapshots.remove(&chain)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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

/// Imports images for air-gapped hosts and prints what was loaded.
pub fn load(args: LoadArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let store = Store::open(paths.store())?;
    let platform: dockless_registry::Platform = args.platform.parse()?;
    for record in dockless_registry::load::load(&store, &args.input, &platform)? {
        println!("Loaded image: {} ({})", record.name, record.digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// The chain ids of an image's layers (the snapshot keys).
pub fn chains(record: &ImageRecord) -> anyhow::Result<Vec<ChainId>> {
    let diff_ids: Vec<DiffId> = record
        .diff_ids
        .iter()
        .map(|d| d.to_string().parse())
        .collect::<Result<_, _>>()?;
    Ok(chain_ids(&diff_ids))
}
