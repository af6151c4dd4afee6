//! The build cache: `<root>/builds-v1/<key>.json` names the image a key built; a lock per
//! key serialises builds of one definition; `tmp/` holds the fetches.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use dockless_registry::{Digest, ImageRecord, Store};
use serde::{Deserialize, Serialize};

use crate::commands::Paths;

/// Age after which a fetch directory is known to be a killed build's leftover.
const STALE_FETCH: Duration = Duration::from_secs(24 * 3600);

/// One entry of the build cache.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CacheEntry {
    /// The image's manifest digest.
    pub(super) digest: Digest,
    /// The commit it was built from.
    pub(super) commit: String,
    /// The layers the build made (code first).
    pub(super) layers: Vec<Digest>,
}

/// The build cache directory, held locked for one key: one build per key at a time (the
/// second waits, then finds the first one's image).
pub(super) struct BuildCache {
    dir: PathBuf,
    entry: PathBuf,
    _lock: std::fs::File,
}

impl BuildCache {
    /// Opens the cache and waits for the lock of `key`.
    pub(super) fn lock(paths: &Paths, key: &str) -> anyhow::Result<BuildCache> {
        let dir = paths.root.join("builds-v1");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let lock_path = dir.join(format!("{key}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(BuildCache {
            entry: dir.join(format!("{key}.json")),
            dir,
            _lock: lock,
        })
    }

    /// Where fetches make their private repositories (each removed when its build ends).
    /// Those a killed build left are removed once a day old: no fetch lives that long.
    pub(super) fn scratch(&self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_FETCH);
            if stale && let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(
                    path = %entry.path().display(),
                    error = %e,
                    "cannot remove what a killed build left"
                );
            }
        }
        Ok(dir)
    }

    /// The cached image, when the entry exists and its image is still stored (preferably
    /// under `name`). By digest over the index, not with `find_image`, whose reference
    /// parsing costs ~50 ms of regex compilation: a hit must cost no more than a lookup.
    pub(super) fn lookup(
        &self,
        store: &Store,
        name: &str,
    ) -> anyhow::Result<Option<(ImageRecord, CacheEntry)>> {
        let bytes = match std::fs::read(&self.entry) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.entry.display()));
            }
        };
        // A damaged entry is a miss: the build makes it again.
        let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) else {
            return Ok(None);
        };
        let images = store.images()?;
        let found = images
            .get(name)
            .filter(|r| r.digest == entry.digest)
            .or_else(|| images.values().find(|r| r.digest == entry.digest))
            .cloned();
        Ok(found.map(|r| (r, entry)))
    }

    /// Writes the entry atomically (temp file + rename).
    pub(super) fn record(&self, entry: &CacheEntry) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("cannot create a temp file in {}", self.dir.display()))?;
        tmp.write_all(&serde_json::to_vec_pretty(entry)?)
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        tmp.persist(&self.entry)
            .with_context(|| format!("cannot write {}", self.entry.display()))?;
        Ok(())
    }
}
