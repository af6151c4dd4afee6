//! The image index, `images-v1.json`: image name -> [`ImageRecord`], read whole and replaced
//! atomically under `images.lock`. Removing an image deletes the blobs no other image keeps
//! alive, under the same lock, so a concurrent pull sees either the blobs or no image.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use super::blobs::Layout;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// One layer of a stored image, in manifest order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    /// Digest of the compressed blob as stored.
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type (tells the runtime how to decompress).
    pub media_type: String,
}

/// What `dockless images` lists and what the runtime needs to build a rootfs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// Canonical name as pulled (`docker.io/library/busybox:latest` or `repo@sha256:...`).
    pub name: String,
    /// Digest of the platform image manifest.
    pub digest: Digest,
    /// Digest of the index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// Digest of the image config blob.
    pub config: Digest,
    /// Layers in manifest order.
    pub layers: Vec<LayerRecord>,
    /// Uncompressed layer digests from the config (`rootfs.diff_ids`), same order.
    pub diff_ids: Vec<Digest>,
    /// Unix time of the pull or load.
    pub created: u64,
}

impl ImageRecord {
    /// Bytes of config and layers as stored (compressed), as `docker images` counts them.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Every blob this image keeps alive.
    fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.digest, &self.config]
            .into_iter()
            .chain(self.index_digest.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// All stored images, by name; no index file yet means no image.
pub(crate) fn images(layout: &Layout) -> Result<BTreeMap<String, ImageRecord>> {
    let path = layout.index();
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| Error::StoreCorrupt { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

/// See [`super::Store::find_image`].
pub(crate) fn find(layout: &Layout, name: &str) -> Result<Option<ImageRecord>> {
    let images = images(layout)?;
    if let Some(r) = images.get(name) {
        return Ok(Some(r.clone()));
    }
    if let Ok(r) = crate::ImageRef::parse(name)
        && let Some(rec) = images.get(&r.to_string())
    {
        return Ok(Some(rec.clone()));
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(images
            .values()
            .find(|r| r.digest.hex().starts_with(hex))
            .cloned());
    }
    Ok(None)
}

/// Records (or replaces) an image, refusing one whose blobs an `rmi` removed meanwhile.
pub(crate) fn record(layout: &Layout, record: ImageRecord) -> Result<()> {
    update(layout, |images| {
        // An `rmi` may have removed a shared blob after we found it present.
        if let Some(missing) = record.blobs().find(|d| !layout.has_blob(d)) {
            return Err(Error::Io {
                op: "record image (a blob was removed meanwhile, pull again)",
                path: layout.blob(missing),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        images.insert(record.name.clone(), record);
        Ok(())
    })
}

/// See [`super::Store::remove_image`].
pub(crate) fn remove(layout: &Layout, name: &str) -> Result<ImageRecord> {
    let found = find(layout, name)?.ok_or_else(|| Error::ImageNotStored(name.to_string()))?;
    update(layout, |images| {
        images.remove(&found.name);
        let live: HashSet<&Digest> = images.values().flat_map(|r| r.blobs()).collect();
        for digest in found.blobs().filter(|d| !live.contains(d)) {
            let path = layout.blob(digest);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "remove",
                        path,
                        source: e,
                    });
                }
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// See [`super::Store::with_images_locked`].
pub(crate) fn with_locked<T>(
    layout: &Layout,
    work: impl FnOnce(&BTreeMap<String, ImageRecord>) -> T,
) -> Result<T> {
    let _lock = lock(layout)?;
    Ok(work(&images(layout)?))
}

/// The index lock, held until the returned file is dropped.
fn lock(layout: &Layout) -> Result<fs::File> {
    let lock_path = layout.index_lock();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(Error::io("open", &lock_path))?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;
    Ok(lock)
}

/// Read-modify-write of the index under an exclusive lock, replaced atomically.
fn update(
    layout: &Layout,
    change: impl FnOnce(&mut BTreeMap<String, ImageRecord>) -> Result<()>,
) -> Result<()> {
    let _lock = lock(layout)?;
    let mut images = images(layout)?;
    change(&mut images)?;
    let bytes = serde_json::to_vec_pretty(&images).expect("image records always serialise");
    let root = layout.root();
    let tmp =
        tempfile::NamedTempFile::new_in(root).map_err(Error::io("create temp file in", root))?;
    fs::write(tmp.path(), bytes).map_err(Error::io("write", tmp.path()))?;
    let path = layout.index();
    tmp.persist(&path).map_err(|e| Error::Io {
        op: "rename into",
        path,
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn index_round_trip_and_rmi_keeps_shared_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let shared = store.put_metadata(b"shared layer").unwrap();
        let a_only = store.put_metadata(b"a layer").unwrap();
        let rec = |name: &str, extra: &Digest| ImageRecord {
            name: name.into(),
            digest: store.put_metadata(name.as_bytes()).unwrap(),
            index_digest: None,
            config: store
                .put_metadata(format!("cfg {name}").as_bytes())
                .unwrap(),
            layers: [&shared, extra]
                .iter()
                .map(|d| LayerRecord {
                    digest: (*d).clone(),
                    size: 1,
                    media_type: "x".into(),
                })
                .collect(),
            diff_ids: vec![],
            created: 0,
        };
        store.record_image(rec("a", &a_only)).unwrap();
        store.record_image(rec("b", &shared)).unwrap();
        assert_eq!(store.images().unwrap().len(), 2);
        let removed = store.remove_image("a").unwrap();
        assert_eq!(removed.name, "a");
        assert!(store.has_blob(&shared), "a blob another image uses stays");
        assert!(!store.has_blob(&a_only));
        assert!(matches!(
            store.remove_image("a"),
            Err(Error::ImageNotStored(_))
        ));
    }
}
