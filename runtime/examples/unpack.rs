//! Drives the snapshot store from the command line, for `bench/unpack`:
//! `unpack LAYOUT TAG STORE_DIR [--flatten RUN_DIR]` unpacks every layer of the image `TAG` of
//! the OCI layout `LAYOUT` into a (fresh) snapshot store, as `dockless pull` does, and with
//! `--flatten` also materialises a flattened copy (to compare its output with GNU tar's).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dockless_runtime::rootfs::{LayerSource, MountMode, SnapshotStore};
use dockless_runtime::unpack::{ChainId, Compression, DiffId};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("parse json")
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: unpack LAYOUT TAG STORE_DIR [--flatten RUN_DIR]");
        std::process::exit(2);
    }
    let (layout, tag, store_dir) = (Path::new(&args[1]), &args[2], Path::new(&args[3]));
    let index = json(&layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
        .expect("tag not in layout");
    let manifest = json(&blob(layout, desc["digest"].as_str().expect("digest")));
    let config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().expect("config"),
    ));
    let layers: Vec<LayerSource<'static>> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().expect("diff_ids"))
        .map(|(l, d)| {
            let path = blob(layout, l["digest"].as_str().expect("digest"));
            LayerSource {
                label: l["digest"].as_str().expect("digest").to_owned(),
                compression: Compression::from_media_type(l["mediaType"].as_str().expect("mt"))
                    .expect("media type"),
                diff_id: d
                    .as_str()
                    .expect("diff id")
                    .parse::<DiffId>()
                    .expect("diff id"),
                open: Box::new(move || Ok(Box::new(File::open(path)?) as Box<dyn Read + Send>)),
            }
        })
        .collect();
    let start = Instant::now();
    let store = SnapshotStore::open(store_dir).expect("open store");
    let ensured = match store.ensure(layers) {
        Ok(e) => e,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("unpack failed: {msg}");
            std::process::exit(1);
        }
    };
    let entries: u64 = ensured
        .iter()
        .filter_map(|l| l.unpacked.as_ref())
        .map(|r| r.stats.entries)
        .sum();
    println!(
        "unpacked {} layers, {entries} entries in {:.3}s",
        ensured.len(),
        start.elapsed().as_secs_f64()
    );
    if args.len() == 6 && args[4] == "--flatten" {
        let chain: Vec<ChainId> = ensured.iter().map(|l| l.chain_id).collect();
        let run = store
            .mount_run(&chain, Path::new(&args[5]), MountMode::CopyOnly)
            .expect("flattened copy");
        // Keep the copy for inspection: forget the guard instead of removing it.
        println!("flattened copy at {}", run.path().display());
        std::mem::forget(run);
    }
}
