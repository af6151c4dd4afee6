//! `load`: images from a `docker save` archive or an OCI layout, for air-gapped hosts.
//!
//! Accepted inputs: an OCI layout directory; a tar (optionally gzip-compressed) holding either
//! a `docker save` archive (`manifest.json` + config + layer tars) or an OCI layout
//! (`oci-archive`). A tar is read once, front to back: every file is staged beside the store
//! with its digest computed on the way, and only the blobs the manifests reference are
//! committed. Every blob is checked against the digest it is referenced by.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_client::manifest::{OciDescriptor, OciImageIndex};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, DOCKER_MANIFEST, Fetched};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::store::{ImageRecord, LayerRecord, MAX_METADATA_BYTES, Staged, Store};

/// Largest single file accepted from an archive (a layer).
const MAX_BLOB_BYTES: u64 = 64 << 30;

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Imports every image of `path` into `store` and returns their records.
pub fn load(store: &Store, path: &Path, platform: &Platform) -> Result<Vec<ImageRecord>> {
    let meta = std::fs::metadata(path).map_err(Error::io("stat", path))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches(".tar").to_ascii_lowercase())
        .unwrap_or_else(|| "loaded".into());
    let mut source = if meta.is_dir() {
        Source::Dir(path.to_path_buf())
    } else {
        Source::tar(store, path)?
    };
    let archive = |reason: String| Error::Archive {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(manifest) = source.small("manifest.json", path)? {
        return load_docker(store, &mut source, &manifest, path);
    }
    if let Some(index) = source.small("index.json", path)? {
        return load_oci(store, &mut source, &index, path, platform, &stem);
    }
    Err(archive(
        "neither a docker save archive (manifest.json) nor an OCI layout (index.json)".into(),
    ))
}

/// Where the files come from: a directory, or a tar already staged entry by entry.
enum Source {
    Dir(PathBuf),
    Tar {
        small: HashMap<String, Vec<u8>>,
        blobs: HashMap<String, Staged>,
        links: HashMap<String, String>,
    },
}

impl Source {
    fn tar(store: &Store, path: &Path) -> Result<Source> {
        let file = File::open(path).map_err(Error::io("open", path))?;
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let gz = {
            use std::io::BufRead;
            let head = reader.fill_buf().map_err(Error::io("read", path))?;
            head.starts_with(&[0x1f, 0x8b])
        };
        let input: Box<dyn Read> = if gz {
            Box::new(flate2::bufread::MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut archive = tar::Archive::new(input);
        let bad = |source: std::io::Error| Error::ArchiveTar {
            path: path.to_path_buf(),
            source,
        };
        let (mut small, mut blobs, mut links) = (HashMap::new(), HashMap::new(), HashMap::new());
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let Some(name) = clean(&entry.path().map_err(bad)?) else {
                if entry.header().entry_type().is_dir() {
                    continue; // `./` itself
                }
                return Err(Error::Archive {
                    path: path.to_path_buf(),
                    reason: "an entry name leaves the archive".into(),
                });
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if matches!(
                        name.as_str(),
                        "manifest.json" | "index.json" | "oci-layout" | "repositories"
                    ) {
                        let mut buf = Vec::new();
                        (&mut entry)
                            .take(MAX_METADATA_BYTES + 1)
                            .read_to_end(&mut buf)
                            .map_err(bad)?;
                        if buf.len() as u64 > MAX_METADATA_BYTES {
                            return Err(Error::TooLarge {
                                what: format!("{}:{name}", path.display()),
                                expected: MAX_METADATA_BYTES,
                            });
                        }
                        small.insert(name, buf);
                    } else {
                        let staged = store.stage(
                            &mut entry,
                            MAX_BLOB_BYTES,
                            &format!("{}:{name}", path.display()),
                        )?;
                        blobs.insert(name, staged);
                    }
                }
                tar::EntryType::Symlink => {
                    // Old `docker save` links duplicate layers: `<id>/layer.tar -> ../<other>/layer.tar`.
                    if let Some(target) = entry.link_name().map_err(bad)? {
                        let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                        if let Some(t) = clean(&parent.join(target)) {
                            links.insert(name, t);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Source::Tar {
            small,
            blobs,
            links,
        })
    }

    fn small(&mut self, name: &str, origin: &Path) -> Result<Option<Vec<u8>>> {
        match self {
            Source::Dir(dir) => {
                let p = dir.join(name);
                match File::open(&p) {
                    Ok(f) => {
                        let mut buf = Vec::new();
                        f.take(MAX_METADATA_BYTES + 1)
                            .read_to_end(&mut buf)
                            .map_err(Error::io("read", &p))?;
                        Ok(Some(buf))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::Io {
                        op: "open",
                        path: p,
                        source: e,
                    }),
                }
            }
            Source::Tar { small, .. } => {
                let _ = origin;
                Ok(small.get(name).cloned())
            }
        }
    }

    /// The archive path `name` refers to once archive symlinks are followed (old `docker save`
    /// links repeated layers to the first copy), so repeated references share one blob.
    fn resolve(&self, name: &str) -> String {
        let mut current = clean(Path::new(name)).unwrap_or_else(|| name.to_string());
        if let Source::Tar { links, .. } = self {
            for _ in 0..8 {
                match links.get(&current) {
                    Some(t) => current = t.clone(),
                    None => break,
                }
            }
        }
        current
    }

    /// Stages the file at `name` (a path inside the archive), following archive symlinks.
    fn blob(&mut self, store: &Store, name: &str, origin: &Path) -> Result<Staged> {
        let missing = || Error::Archive {
            path: origin.to_path_buf(),
            reason: format!("{name} is referenced but missing"),
        };
        let name = clean(Path::new(name)).ok_or_else(missing)?;
        match self {
            Source::Dir(dir) => {
                let p = dir.join(&name);
                let mut f = File::open(&p).map_err(|_| missing())?;
                store.stage(&mut f, MAX_BLOB_BYTES, &p.display().to_string())
            }
            Source::Tar { blobs, links, .. } => {
                let mut current = name.clone();
                for _ in 0..8 {
                    match links.get(&current) {
                        Some(t) => current = t.clone(),
                        None => break,
                    }
                }
                // Each archive file is staged once; callers key what they committed by
                // `resolve(name)`, so a second reference never asks again.
                if let Some(staged) = blobs.remove(&current) {
                    return Ok(staged);
                }
                Err(missing())
            }
        }
    }
}

/// An archive-relative path without `.`/`..` games; `None` if it would leave the archive.
fn clean(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn load_docker(
    store: &Store,
    source: &mut Source,
    manifest: &[u8],
    origin: &Path,
) -> Result<Vec<ImageRecord>> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest).map_err(|source| Error::ArchiveJson {
            path: origin.to_path_buf(),
            file: "manifest.json",
            source,
        })?;
    let mut committed: HashMap<String, (Digest, u64, String)> = HashMap::new();
    let mut configs: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut records = Vec::new();
    for entry in entries {
        let config_key = source.resolve(&entry.config);
        let (config, config_size) = match configs.get(&config_key) {
            Some(known) => known.clone(),
            None => {
                let staged = source.blob(store, &entry.config, origin)?;
                let size = staged.size;
                let known = (staged.commit(store)?, size);
                configs.insert(config_key, known.clone());
                known
            }
        };
        let config_bytes = store.read_metadata(&config)?;
        let diff_ids = manifest::diff_ids(
            &origin.display().to_string(),
            &config_bytes,
            entry.layers.len(),
        )?;
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let key = source.resolve(path);
            let (digest, size, media_type) = match committed.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let staged = source.blob(store, path, origin)?;
                    let gzip = staged.head(2)?.starts_with(&[0x1f, 0x8b]);
                    if !gzip && staged.digest != *diff_id {
                        return Err(Error::DigestMismatch {
                            what: format!("{}: layer {path}", origin.display()),
                            expected: diff_id.to_string(),
                            actual: staged.digest.to_string(),
                        });
                    }
                    let size = staged.size;
                    let media = if gzip {
                        DOCKER_LAYER_GZIP
                    } else {
                        DOCKER_LAYER
                    };
                    let digest = staged.commit(store)?;
                    let known = (digest, size, media.to_string());
                    committed.insert(key, known.clone());
                    known
                }
            };
            layers.push(LayerRecord {
                digest,
                size,
                media_type,
            });
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config_size, "digest": config.to_string()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "size": l.size, "digest": l.digest.to_string()})).collect::<Vec<_>>(),
        });
        let manifest_digest = store.put_metadata(&serde_json::to_vec(&manifest).expect("json"))?;
        let names = match entry.repo_tags.filter(|t| !t.is_empty()) {
            Some(tags) => tags
                .iter()
                .map(|t| ImageRef::parse(t).map(|r| r.to_string()))
                .collect::<Result<Vec<_>>>()?,
            None => vec![manifest_digest.to_string()],
        };
        for name in names {
            let record = ImageRecord {
                name,
                digest: manifest_digest.clone(),
                index_digest: None,
                config: config.clone(),
                layers: layers.clone(),
                diff_ids: diff_ids.clone(),
                created: now(),
            };
            store.record_image(record.clone())?;
            records.push(record);
        }
    }
    Ok(records)
}

fn load_oci(
    store: &Store,
    source: &mut Source,
    index: &[u8],
    origin: &Path,
    platform: &Platform,
    stem: &str,
) -> Result<Vec<ImageRecord>> {
    let bad = |reason: String| Error::Archive {
        path: origin.to_path_buf(),
        reason,
    };
    let index: OciImageIndex =
        serde_json::from_slice(index).map_err(|source| Error::ArchiveJson {
            path: origin.to_path_buf(),
            file: "index.json",
            source,
        })?;
    let mut records = Vec::new();
    for entry in &index.manifests {
        let annotations = entry.annotations.clone().unwrap_or_default();
        let ref_name = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name"))
            .cloned();
        let digest = Digest::parse(&entry.digest)?;
        let body = verified(store, source, &digest, origin)?;
        let name_for = |d: &Digest| match &ref_name {
            Some(n) if n.contains('/') || n.contains(':') => {
                ImageRef::parse(n).map(|r| r.to_string())
            }
            Some(tag) => ImageRef::parse(&format!("localhost/{stem}:{tag}")).map(|r| r.to_string()),
            None => Ok(d.to_string()),
        };
        let (manifest_body, manifest_digest, index_digest) = match manifest::parse(
            &origin.display().to_string(),
            &body,
            Some(&entry.media_type),
        )? {
            Fetched::Image(..) => (body, digest, None),
            Fetched::Index(inner, _) => {
                let chosen =
                    platform
                        .select(&inner.manifests)
                        .ok_or_else(|| Error::NoMatchingPlatform {
                            image: origin.display().to_string(),
                            platform: platform.to_string(),
                            available: crate::platform::describe(&inner.manifests),
                        })?;
                let d = Digest::parse(&chosen.digest)?;
                (verified(store, source, &d, origin)?, d, Some(digest))
            }
        };
        let Fetched::Image(m, _) =
            manifest::parse(&origin.display().to_string(), &manifest_body, None)?
        else {
            return Err(bad("nested index".into()));
        };
        let config = descriptor_blob(store, source, &m.config, origin)?;
        let diff_ids = manifest::diff_ids(
            &origin.display().to_string(),
            &store.read_metadata(&config.0)?,
            m.layers.len(),
        )?;
        let mut layers = Vec::new();
        for l in &m.layers {
            let (digest, size) = descriptor_blob(store, source, l, origin)?;
            layers.push(LayerRecord {
                digest,
                size,
                media_type: l.media_type.clone(),
            });
        }
        let record = ImageRecord {
            name: name_for(&manifest_digest)?,
            digest: manifest_digest,
            index_digest,
            config: config.0,
            layers,
            diff_ids,
            created: now(),
        };
        store.record_image(record.clone())?;
        records.push(record);
    }
    if records.is_empty() {
        return Err(bad("index.json lists no manifests".into()));
    }
    Ok(records)
}

/// Commits the blob `blobs/sha256/<hex>` after checking it hashes to its name, and returns
/// its bytes (manifests and indexes are small).
fn verified(store: &Store, source: &mut Source, digest: &Digest, origin: &Path) -> Result<Vec<u8>> {
    if !store.has_blob(digest) {
        commit_checked(store, source, digest, None, origin)?;
    }
    store.read_metadata(digest)
}

fn descriptor_blob(
    store: &Store,
    source: &mut Source,
    d: &OciDescriptor,
    origin: &Path,
) -> Result<(Digest, u64)> {
    let digest = Digest::parse(&d.digest)?;
    let size = u64::try_from(d.size).map_err(|_| Error::Archive {
        path: origin.to_path_buf(),
        reason: format!("negative size for {digest}"),
    })?;
    if !store.has_blob(&digest) {
        commit_checked(store, source, &digest, Some(size), origin)?;
    }
    Ok((digest, size))
}

fn commit_checked(
    store: &Store,
    source: &mut Source,
    digest: &Digest,
    size: Option<u64>,
    origin: &Path,
) -> Result<()> {
    let staged = source.blob(store, &format!("blobs/sha256/{}", digest.hex()), origin)?;
    if staged.digest != *digest {
        return Err(Error::DigestMismatch {
            what: format!("{}: blobs/sha256/{}", origin.display(), digest.hex()),
            expected: digest.to_string(),
            actual: staged.digest.to_string(),
        });
    }
    if let Some(size) = size
        && staged.size != size
    {
        return Err(Error::Archive {
            path: origin.to_path_buf(),
            reason: format!(
                "{digest} is {} bytes, its descriptor says {size}",
                staged.size
            ),
        });
    }
    staged.commit(store)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An old-style `docker save` archive whose second layer is a symlink to the first, as
    /// docker writes repeated (e.g. empty) layers, with two images sharing one config.
    #[test]
    fn docker_archive_with_linked_repeated_layers() {
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        layer.append_data(&mut h, "hello", &b"hi"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let diff_id = Digest::of(&layer);
        let config = format!(
            r#"{{"rootfs": {{"type": "layers", "diff_ids": ["{diff_id}", "{diff_id}"]}}}}"#
        );
        let manifest = r#"[{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["one/layer.tar", "two/layer.tar"]},
                           {"Config": "c.json", "RepoTags": ["b:1"], "Layers": ["two/layer.tar", "one/layer.tar"]}]"#;
        let mut archive = tar::Builder::new(Vec::new());
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            archive.append_data(&mut h, name, bytes).unwrap();
        };
        add("one/layer.tar", &layer);
        add("c.json", config.as_bytes());
        add("manifest.json", manifest.as_bytes());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_cksum();
        archive
            .append_link(&mut link, "two/layer.tar", "../one/layer.tar")
            .unwrap();
        let bytes = archive.into_inner().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old-save.tar");
        std::fs::write(&path, bytes).unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let records = load(&store, &path, &Platform::linux_amd64()).unwrap();
        assert_eq!(records.len(), 2);
        for r in &records {
            assert_eq!(r.layers.len(), 2);
            assert!(
                r.layers.iter().all(|l| l.digest == diff_id),
                "both layers are the one blob"
            );
        }
        assert_eq!(records[0].config, records[1].config);
        assert_eq!(records[0].name, "docker.io/library/a:1");
    }

    #[test]
    fn cleans_archive_paths() {
        assert_eq!(clean(Path::new("./a/b/../c")).as_deref(), Some("a/c"));
        assert_eq!(
            clean(Path::new("/blobs/sha256/x")).as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(clean(Path::new("../etc/passwd")), None);
        assert_eq!(clean(Path::new(".")), None);
    }
}
