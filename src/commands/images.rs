//! `dockless images` and `dockless rmi`: what the local store holds.

use std::process::ExitCode;

use dockless_registry::Store;

use crate::cli::images::{ImagesArgs, LoadArgs, RmiArgs};
use crate::paths::Paths;
use crate::units::{SizeStyle, size_text};

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
            size_text(record.size(), SizeStyle::Table)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes images and the blobs no other image uses.
pub fn remove(args: RmiArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let store = Store::open(paths.store())?;
    for name in &args.images {
        let removed = store.remove_image(name)?;
        println!("Untagged: {} ({})", removed.name, removed.digest);
    }
    // Snapshots are shared by chain id: drop those no remaining image stacks on (a live run
    // keeps its own until a later `rmi` or `gc`).
    let swept = crate::stages::gc::sweep_snapshots(paths)?;
    if swept.in_use > 0 {
        eprintln!(
            "dockless: {} unpacked layer(s) kept while a container uses them; `dockless gc` \
             removes them once it has ended",
            swept.in_use
        );
    }
    Ok(ExitCode::SUCCESS)
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
