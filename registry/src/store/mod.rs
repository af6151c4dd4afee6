//! The content store: verified blobs by digest, in-flight downloads, and the image index.
//!
//! ```text
//! <root>/
//! ├── blobs/sha256/<hex>      complete, verified, read-only; never written in place
//! ├── ingest/<hex>.partial    a download in progress (resumed by the next pull)
//! ├── ingest/<hex>.lock       held (flock) by the one process writing that partial
//! ├── images-v1.json          image name -> ImageRecord
//! └── images.lock             serialises index updates across processes
//! ```
//!
//! A blob enters `blobs/` only by `rename` after its size and digest were checked, so the
//! store never holds a partial or unverified blob, whatever happens to the process. Two
//! pulls of the same blob serialise on the ingest lock; the second finds the blob present.
//! Blob files are not fsynced: a killed process cannot lose page-cache writes, and the
//! runtime checks every layer's diff id again when it unpacks.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// Manifests, indexes and configs larger than this are refused (containerd's limit is 4 MiB
/// for manifests; configs of real images stay far below 16 MiB).
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

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

/// A content store rooted at one directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// The result of asking to ingest a blob.
pub enum Ingest {
    /// The blob is already in the store; nothing to fetch.
    Present,
    /// We hold the ingest lock and may write.
    Writer(Box<IngestWriter>),
}

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        }
        Ok(Store { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The ingest file of a download in progress, for [`crate::follow::Follower`]: it grows
    /// while the download runs, may be truncated when a download restarts, and is renamed to
    /// [`Store::blob_path`] when verified.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.partial", digest.hex()))
    }

    /// Whether a verified blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a verified blob for reading (the runtime unpacks layers from these readers).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(Error::io("open blob", path))
    }

    /// Reads a small blob (manifest, config) whole, refusing anything over
    /// [`MAX_METADATA_BYTES`].
    pub fn read_metadata(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(Error::io("read", &path))?;
        if buf.len() as u64 > MAX_METADATA_BYTES {
            return Err(Error::TooLarge {
                what: digest.to_string(),
                expected: MAX_METADATA_BYTES,
            });
        }
        Ok(buf)
    }

    /// Stores small bytes whose digest we computed ourselves (e.g. a manifest already
    /// verified in memory).
    pub fn put_metadata(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if let Ingest::Writer(mut w) = self
            .try_ingest(&digest, bytes.len() as u64)?
            .wait_blocking()?
        {
            w.reset()?;
            w.write(bytes)?;
            w.commit()?;
        }
        Ok(digest)
    }

    /// Starts ingesting `digest` of `size` bytes. A partial left by an earlier, killed pull
    /// is kept so the caller can resume it with a `Range` request.
    pub fn try_ingest(&self, digest: &Digest, size: u64) -> Result<PendingIngest> {
        Ok(PendingIngest {
            store: self.clone(),
            digest: digest.clone(),
            size,
        })
    }

    /// Copies a blob of not yet known digest into a temp file beside the store, hashing it
    /// on the way (used by `load`). Nothing is visible in the store until
    /// [`Staged::commit`]; dropping the `Staged` deletes the temp file.
    pub fn stage(&self, reader: &mut dyn Read, max: u64, what: &str) -> Result<Staged> {
        let ingest = self.root.join("ingest");
        let tmp = tempfile::NamedTempFile::new_in(&ingest)
            .map_err(Error::io("create temp file in", &ingest))?;
        let mut hasher = Hasher::default();
        let mut out = BufWriter::with_capacity(256 << 10, tmp.as_file());
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(Error::io("read", what))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > max {
                return Err(Error::TooLarge {
                    what: what.to_string(),
                    expected: max,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(Error::io("write", tmp.path()))?;
        }
        out.flush().map_err(Error::io("write", tmp.path()))?;
        drop(out);
        Ok(Staged {
            digest: hasher.finish(),
            size,
            tmp,
        })
    }

    /// Deletes what abandoned downloads left in the ingest dir (partials nobody holds, temp
    /// files of a killed `load`) once older than `max_age`; younger partials stay for the next
    /// pull to resume. Lock files stay: removing one that another process waits on would let
    /// two writers hold "the" lock. Returns how many files were removed.
    pub fn collect_ingest(&self, max_age: Duration) -> Result<usize> {
        let dir = self.root.join("ingest");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= max_age);
            if !old {
                continue;
            }
            // A partial's lock is held until it is removed, so no writer starts on it meanwhile.
            let _guard = match name.strip_suffix(".partial") {
                Some(hex) => {
                    let lock_path = dir.join(format!("{hex}.lock"));
                    let lock = match OpenOptions::new().write(true).open(&lock_path) {
                        Ok(f) => f,
                        // Committed meanwhile (the commit removes the lock file) or never locked.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(Error::Io {
                                op: "open",
                                path: lock_path,
                                source: e,
                            });
                        }
                    };
                    if lock.try_lock().is_err() {
                        continue; // a live pull is writing it
                    }
                    Some(lock)
                }
                None if name.starts_with(".tmp") => None,
                None => continue,
            };
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
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
        Ok(removed)
    }

    /// All stored images, by name.
    pub fn images(&self) -> Result<BTreeMap<String, ImageRecord>> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| Error::StoreCorrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::Io {
                op: "read",
                path,
                source: e,
            }),
        }
    }

    /// Finds an image by name (as given or normalised), by manifest digest, or by a digest
    /// prefix of at least 12 hex characters.
    pub fn find_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let images = self.images()?;
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

    /// Records (or replaces) an image under its name.
    pub fn record_image(&self, record: ImageRecord) -> Result<()> {
        self.update_index(|images| {
            // An `rmi` may have removed a shared blob after we found it present.
            if let Some(missing) = record.blobs().find(|d| !self.has_blob(d)) {
                return Err(Error::Io {
                    op: "record image (a blob was removed meanwhile, pull again)",
                    path: self.blob_path(missing),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            images.insert(record.name.clone(), record);
            Ok(())
        })
    }

    /// Forgets an image and deletes the blobs no other image uses, under the index lock so
    /// that a pull recording an image at the same time sees either the blobs or no image.
    /// Returns the removed record.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord> {
        let found = self
            .find_image(name)?
            .ok_or_else(|| Error::ImageNotStored(name.to_string()))?;
        self.update_index(|images| {
            images.remove(&found.name);
            let live: std::collections::HashSet<&Digest> =
                images.values().flat_map(|r| r.blobs()).collect();
            for digest in found.blobs().filter(|d| !live.contains(d)) {
                let path = self.blob_path(digest);
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

    fn index_path(&self) -> PathBuf {
        self.root.join("images-v1.json")
    }

    /// Read-modify-write of the index under an exclusive lock, replaced atomically.
    fn update_index(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, ImageRecord>) -> Result<()>,
    ) -> Result<()> {
        let lock_path = self.root.join("images.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        lock.lock().map_err(Error::io("lock", &lock_path))?;
        let mut images = self.images()?;
        change(&mut images)?;
        let bytes = serde_json::to_vec_pretty(&images).expect("image records always serialise");
        let tmp = tempfile::NamedTempFile::new_in(&self.root)
            .map_err(Error::io("create temp file in", &self.root))?;
        fs::write(tmp.path(), bytes).map_err(Error::io("write", tmp.path()))?;
        let path = self.index_path();
        tmp.persist(&path).map_err(|e| Error::Io {
            op: "rename into",
            path,
            source: e.error,
        })?;
        Ok(())
    }
}

/// An ingest that may have to wait for another process writing the same blob.
pub struct PendingIngest {
    store: Store,
    digest: Digest,
    size: u64,
}

impl PendingIngest {
    fn paths(&self) -> (PathBuf, PathBuf) {
        let ingest = self.store.root.join("ingest");
        (
            ingest.join(format!("{}.lock", self.digest.hex())),
            ingest.join(format!("{}.partial", self.digest.hex())),
        )
    }

    fn try_acquire(&self) -> Result<Option<Ingest>> {
        if self.store.has_blob(&self.digest) {
            return Ok(Some(Ingest::Present));
        }
        let (lock_path, partial_path) = self.paths();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::Io {
                    op: "lock",
                    path: lock_path,
                    source: e,
                });
            }
        }
        // Another process may have committed between our check and the lock.
        if self.store.has_blob(&self.digest) {
            return Ok(Some(Ingest::Present));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial_path)
            .map_err(Error::io("open", &partial_path))?;
        let mut writer = IngestWriter {
            store: self.store.clone(),
            digest: self.digest.clone(),
            size: self.size,
            partial_path,
            lock_path,
            out: BufWriter::with_capacity(256 << 10, file),
            hasher: Hasher::default(),
            written: 0,
            _lock: lock,
        };
        writer.rehash_existing()?;
        Ok(Some(Ingest::Writer(Box::new(writer))))
    }

    /// Waits (polling, async) until the blob is present or we hold its ingest lock.
    pub async fn wait(self) -> Result<Ingest> {
        loop {
            if let Some(i) = self.try_acquire()? {
                return Ok(i);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The blocking variant of [`PendingIngest::wait`], for synchronous callers.
    pub fn wait_blocking(self) -> Result<Ingest> {
        loop {
            if let Some(i) = self.try_acquire()? {
                return Ok(i);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Exclusive writer of one blob: enforces the descriptor size as bytes arrive and checks the
/// digest before the blob becomes visible.
pub struct IngestWriter {
    store: Store,
    digest: Digest,
    size: u64,
    partial_path: PathBuf,
    lock_path: PathBuf,
    out: BufWriter<File>,
    hasher: Hasher,
    written: u64,
    _lock: File,
}

impl IngestWriter {
    /// Bytes already in the partial file: where a resumed download starts.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Hashes a partial left by an earlier process so the download can resume after it.
    /// A partial longer than the descriptor is garbage and is dropped.
    fn rehash_existing(&mut self) -> Result<()> {
        let file = self.out.get_mut();
        let len = file
            .metadata()
            .map_err(Error::io("stat", &self.partial_path))?
            .len();
        if len > self.size {
            return self.reset();
        }
        file.seek(SeekFrom::Start(0))
            .map_err(Error::io("seek", &self.partial_path))?;
        let mut buf = vec![0u8; 256 << 10];
        let mut reader = (&*file).take(len);
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(Error::io("read", &self.partial_path))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&buf[..n]);
        }
        self.written = len;
        file.seek(SeekFrom::Start(len))
            .map_err(Error::io("seek", &self.partial_path))?;
        Ok(())
    }

    /// Drops whatever was written (a server that ignored our `Range`, a bad partial).
    pub fn reset(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(Error::io("write", &self.partial_path))?;
        let file = self.out.get_mut();
        file.set_len(0)
            .map_err(Error::io("truncate", &self.partial_path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(Error::io("seek", &self.partial_path))?;
        self.hasher = Hasher::default();
        self.written = 0;
        Ok(())
    }

    /// Appends bytes; refuses to grow past the descriptor size.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.written + bytes.len() as u64 > self.size {
            self.discard();
            return Err(Error::TooLarge {
                what: self.digest.to_string(),
                expected: self.size,
            });
        }
        self.hasher.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(Error::io("write", &self.partial_path))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks size and digest, then renames the blob into place. On a mismatch the partial
    /// is deleted (it can never become valid) and nothing enters the store.
    pub fn commit(mut self) -> Result<()> {
        if self.written != self.size {
            return Err(Error::Truncated {
                what: self.digest.to_string(),
                expected: self.size,
                received: self.written,
            });
        }
        self.out
            .flush()
            .map_err(Error::io("write", &self.partial_path))?;
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            self.discard();
            return Err(Error::DigestMismatch {
                what: format!("blob {}", self.digest),
                expected: self.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        seal(self.out.get_ref(), &self.partial_path)?;
        let dest = self.store.blob_path(&self.digest);
        fs::rename(&self.partial_path, &dest).map_err(Error::io("rename into", dest))?;
        let _ = fs::remove_file(&self.lock_path);
        Ok(())
    }

    /// Deletes the partial: used when its content is known to be wrong.
    pub(crate) fn discard(&mut self) {
        let _ = fs::remove_file(&self.partial_path);
        self.written = 0;
        self.hasher = Hasher::default();
    }
}

/// A blob copied beside the store whose digest is known, not yet visible in it.
pub struct Staged {
    /// The digest of the staged bytes.
    pub digest: Digest,
    /// Their length.
    pub size: u64,
    tmp: tempfile::NamedTempFile,
}

impl Staged {
    /// Reads the first bytes (to sniff compression).
    pub fn head(&self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut f = File::open(self.tmp.path()).map_err(Error::io("open", self.tmp.path()))?;
        let got = f
            .read(&mut buf)
            .map_err(Error::io("read", self.tmp.path()))?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Makes the blob visible under its digest (a no-op when already stored).
    pub fn commit(self, store: &Store) -> Result<Digest> {
        let dest = store.blob_path(&self.digest);
        if !dest.exists() {
            seal(self.tmp.as_file(), self.tmp.path())?;
            self.tmp.persist(&dest).map_err(|e| Error::Io {
                op: "rename into",
                path: dest.clone(),
                source: e.error,
            })?;
        }
        Ok(self.digest)
    }
}

impl Drop for IngestWriter {
    /// An ingest that got no byte leaves nothing behind; one with bytes keeps its partial
    /// for the next pull to resume.
    fn drop(&mut self) {
        if self.written == 0 && self.partial_path.exists() {
            // The lock file stays: removing it while others may wait on it would let two
            // writers hold "the" lock at once.
            let _ = fs::remove_file(&self.partial_path);
        }
    }
}

/// Makes a blob read-only before it becomes visible.
fn seal(file: &File, path: &Path) -> Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(Error::io("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(store: &Store, digest: &Digest, size: u64) -> IngestWriter {
        match store
            .try_ingest(digest, size)
            .unwrap()
            .wait_blocking()
            .unwrap()
        {
            Ingest::Writer(w) => *w,
            Ingest::Present => panic!("blob unexpectedly present"),
        }
    }

    #[test]
    fn commit_verifies_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"hello world");

        let mut w = writer(&store, &d, 11);
        assert!(matches!(
            w.write(b"hello world!"),
            Err(Error::TooLarge { .. })
        ));
        drop(w);
        assert!(!store.has_blob(&d));

        let mut w = writer(&store, &d, 11);
        w.write(b"hello").unwrap();
        assert!(matches!(
            w.commit(),
            Err(Error::Truncated { received: 5, .. })
        ));
        assert!(!store.has_blob(&d));

        // The partial survives an interrupted writer and is resumed from its end.
        let w = writer(&store, &d, 11);
        assert_eq!(w.offset(), 5);
        let mut w = w;
        w.write(b" world").unwrap();
        w.commit().unwrap();
        assert!(store.has_blob(&d));
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"hello world");
        assert!(matches!(
            store.try_ingest(&d, 11).unwrap().wait_blocking().unwrap(),
            Ingest::Present
        ));
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            0,
            "ingest dir left clean"
        );
    }

    #[test]
    fn abandoned_partials_expire_and_held_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (Digest::of(b"aaaa"), Digest::of(b"bbbb"));
        let mut w = writer(&store, &a, 4);
        w.write(b"aa").unwrap();
        drop(w); // the process "died": the partial stays for a resume
        let mut held = writer(&store, &b, 4);
        held.write(b"bb").unwrap();
        held.out.flush().unwrap();
        let age = |d: &Digest| {
            let f = File::options()
                .write(true)
                .open(store.partial_path(d))
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
                .unwrap();
        };
        assert_eq!(
            store.collect_ingest(Duration::from_secs(3600)).unwrap(),
            0,
            "young partials stay"
        );
        age(&a);
        age(&b);
        assert_eq!(store.collect_ingest(Duration::from_secs(3600)).unwrap(), 1);
        assert!(!store.partial_path(&a).exists());
        assert!(
            store.partial_path(&b).exists(),
            "a partial whose writer lives stays"
        );
    }

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"expected");
        let mut w = writer(&store, &d, 8);
        w.write(b"tampered").unwrap();
        let err = w.commit().unwrap_err();
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        assert!(!store.has_blob(&d));
        assert!(
            !dir.path()
                .join(format!("ingest/{}.partial", d.hex()))
                .exists()
        );
    }

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
