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
//!
//! As containerd separates its content store from its writers, the parts live apart, each
//! depending only on the layout:
//! - `blobs`: the layout of the root (every path derived once), reading and sealing blobs;
//! - `ingest`: the download protocol ([`PendingIngest`], [`IngestWriter`]) and its clean-up;
//! - `staged`: uploads of not yet known digest ([`Staged`], used by `load`);
//! - `index`: `images-v1.json` ([`ImageRecord`]) and removing an image's blobs.
//!
//! [`Store`] is the one public face over them.

mod blobs;
mod index;
mod ingest;
mod staged;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use blobs::MAX_METADATA_BYTES;
pub use index::{ImageRecord, LayerRecord};
pub use ingest::{Ingest, IngestWriter, PendingIngest, RemovedPartial};
pub use staged::Staged;

use crate::digest::Digest;
use crate::error::Result;
use blobs::Layout;

/// A content store rooted at one directory.
#[derive(Clone, Debug)]
pub struct Store {
    layout: Layout,
}

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Ok(Store {
            layout: Layout::create(root.into())?,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob(digest)
    }

    /// The ingest file of a download in progress, for [`crate::follow::Follower`]: it grows
    /// while the download runs, may be truncated when a download restarts, and is renamed to
    /// [`Store::blob_path`] when verified.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.layout.partial(digest)
    }

    /// The directory of downloads in progress: its file system is the one a pull fills, so
    /// free space is measured there.
    pub fn ingest_dir(&self) -> PathBuf {
        self.layout.ingest_dir()
    }

    /// The size of a verified blob as stored (not as any descriptor claims).
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.layout.blob(digest);
        Ok(std::fs::metadata(&path)
            .map_err(crate::error::Error::io("stat", path))?
            .len())
    }

    /// Whether a verified blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.layout.has_blob(digest)
    }

    /// Opens a verified blob for reading (the runtime unpacks layers from these readers).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        self.layout.open_blob(digest)
    }

    /// Reads a small blob (manifest, config) whole, refusing anything over
    /// [`MAX_METADATA_BYTES`].
    pub fn read_metadata(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.layout.read_metadata(digest)
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
        Ok(PendingIngest::new(&self.layout, digest, size))
    }

    /// Copies a blob of not yet known digest into a temp file beside the store, hashing it
    /// on the way (used by `load`). Nothing is visible in the store until
    /// [`Staged::commit`]; dropping the `Staged` deletes the temp file.
    pub fn stage(&self, reader: &mut dyn Read, max: u64, what: &str) -> Result<Staged> {
        Staged::copy(&self.layout, reader, max, what)
    }

    /// Deletes what abandoned downloads left in the ingest dir (partials nobody holds, temp
    /// files of a killed `load`) once older than `max_age`; younger partials stay for the next
    /// pull to resume. Lock files stay: removing one that another process waits on would let
    /// two writers hold "the" lock. Returns how many files were removed.
    pub fn collect_ingest(&self, max_age: Duration) -> Result<usize> {
        ingest::collect(&self.layout, max_age)
    }

    /// Deletes every partial download whose pull is not running (its ingest lock is free),
    /// whatever its age: `dockless gc` frees what a killed or failed pull left, which on a full
    /// disk may be most of it. A running pull keeps its partial. Returns what was removed.
    pub fn collect_partials(&self) -> Result<Vec<RemovedPartial>> {
        ingest::collect_partials(&self.layout)
    }

    /// All stored images, by name.
    pub fn images(&self) -> Result<BTreeMap<String, ImageRecord>> {
        index::images(&self.layout)
    }

    /// Finds an image by name (as given or normalised), by manifest digest, or by a digest
    /// prefix of at least 12 hex characters.
    pub fn find_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        index::find(&self.layout, name)
    }

    /// Runs `work` over the stored images while no image can be recorded or removed (the
    /// index lock is held): for sweeps that must not race a pull recording an image, such as
    /// removing the unpacked layers no image references.
    pub fn with_images_locked<T>(
        &self,
        work: impl FnOnce(&BTreeMap<String, ImageRecord>) -> T,
    ) -> Result<T> {
        index::with_locked(&self.layout, work)
    }

    /// Records (or replaces) an image under its name.
    pub fn record_image(&self, record: ImageRecord) -> Result<()> {
        index::record(&self.layout, record)
    }

    /// Forgets an image and deletes the blobs no other image uses, under the index lock so
    /// that a pull recording an image at the same time sees either the blobs or no image.
    /// Returns the removed record.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord> {
        index::remove(&self.layout, name)
    }
}
