//! Shared helpers of the runtime's integration tests: reading the test OCI layout and
//! describing a directory tree so two unpackers' results can be compared entry by entry.
#![allow(dead_code)]

pub mod tarw;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use dockless_runtime::rootfs::LayerSource;
use dockless_runtime::unpack::{Compression, DiffId};
use sha2::Digest;

/// The OCI layout the test environment builds (`scripts/test-env up`; `scripts/test-env env` prints where).
pub fn oci_layout() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("DOCKLESS_TEST_OCI_LAYOUT")
            .unwrap_or_else(|_| "/var/cache/dockless-test/oci".into()),
    );
    assert!(
        dir.join("index.json").is_file(),
        "test OCI layout missing at {}: run scripts/test-env up",
        dir.display()
    );
    dir
}

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (mknod, chown, overlay mounts)"
    );
}

/// A layer of an image in the layout.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub blob: PathBuf,
    pub digest: String,
    pub diff_id: DiffId,
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    layout.join("blobs/sha256").join(hex)
}

/// The layers (manifest order) of the image tagged `tag`.
pub fn image_layers(layout: &Path, tag: &str) -> Vec<Layer> {
    let index = read_json(&layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| {
            panic!(
                "tag {tag} not in {}: run scripts/test-env up",
                layout.display()
            )
        });
    let manifest = read_json(&blob_path(layout, desc["digest"].as_str().unwrap()));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| Layer {
            media_type: l["mediaType"].as_str().unwrap().to_owned(),
            blob: blob_path(layout, l["digest"].as_str().unwrap()),
            digest: l["digest"].as_str().unwrap().to_owned(),
            diff_id: d.as_str().unwrap().parse().unwrap(),
        })
        .collect()
}

/// The store's view of the layers: each opened from its blob file when needed.
pub fn sources(layers: &[Layer]) -> Vec<LayerSource<'static>> {
    layers
        .iter()
        .map(|l| {
            let blob = l.blob.clone();
            LayerSource {
                label: l.digest.clone(),
                compression: Compression::from_media_type(&l.media_type).unwrap(),
                diff_id: l.diff_id,
                open: Box::new(move || Ok(Box::new(File::open(blob)?) as Box<dyn Read + Send>)),
            }
        })
        .collect()
}

/// Everything compared about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub mtime: Option<i64>,
    /// Other paths sharing the inode (hardlinks), sorted.
    pub hardlinks: Vec<String>,
}

/// Describes the tree below `root` (the root itself is `""`).
pub fn describe(root: &Path, with_dir_mtimes: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes, with_dir_mtimes);
    for paths in inodes.values() {
        if paths.len() > 1 {
            for p in paths {
                let others: Vec<String> = paths.iter().filter(|o| *o != p).cloned().collect();
                out.get_mut(p).unwrap().hardlinks = others;
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    path: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
    with_dir_mtimes: bool,
) {
    let md = std::fs::symlink_metadata(path).unwrap();
    let rel = path
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_file() {
        '-'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let content = (kind == '-').then(|| {
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut File::open(path).unwrap(), &mut h).unwrap();
        hex::encode(h.finalize())
    });
    if kind != 'd' {
        inodes
            .entry((md.dev(), md.ino()))
            .or_default()
            .push(rel.clone());
    }
    out.insert(
        rel.clone(),
        Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == '-' { md.size() } else { 0 },
            content,
            link: (kind == 'l').then(|| std::fs::read_link(path).unwrap()),
            rdev: md.rdev(),
            mtime: (kind != 'd' || with_dir_mtimes).then(|| md.mtime()),
            hardlinks: Vec::new(),
        },
    );
    if kind == 'd' {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &path.join(n), out, inodes, with_dir_mtimes);
        }
    }
}

/// Panics with a readable list of differences.
pub fn assert_same_tree(
    expected: &BTreeMap<String, Node>,
    actual: &BTreeMap<String, Node>,
    what: &str,
) {
    let mut diffs = Vec::new();
    for (path, e) in expected {
        match actual.get(path) {
            None => diffs.push(format!("missing {path:?}: {e:?}")),
            Some(a) if a != e => {
                diffs.push(format!("differs {path:?}:\n  want {e:?}\n  got  {a:?}"))
            }
            _ => {}
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            diffs.push(format!("unexpected {path:?}: {:?}", actual[path]));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
