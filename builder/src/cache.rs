//! The build cache: `<root>/builds-v1/<key>.json` names the image a key built; a lock per
//! key serialises builds of one definition; `tmp/` holds the fetches.
//!
//! The layout and the lock protocol live here, beside the cache key
//! ([`crate::BuildSpec::cache_key`]); whether the named image is still stored is the caller's
//! question (this crate does not know the content store), so digests are kept as the strings
//! the store prints.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CacheError;

/// The cache directory's name under the state root (versioned like every on-disk layout).
const CACHE_DIR: &str = "builds-v1";

/// Age after which a fetch directory is known to be a killed build's leftover.
const STALE_FETCH: Duration = Duration::from_secs(24 * 3600);

/// One entry of the build cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The image's manifest digest (`sha256:...`).
    pub digest: String,
    /// The commit it was built from.
    pub commit: String,
    /// The layers the build made (code first), as digests.
    pub layers: Vec<String>,
}

/// The build cache directory, held locked for one key: one build per key at a time (the
/// second waits, then finds the first one's image).
#[derive(Debug)]
pub struct BuildCache {
    dir: PathBuf,
    entry: PathBuf,
    _lock: std::fs::File,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` and its missing parents 0700: the cache and the fetches' scratch
/// repositories (which may hold a private repository's code) are the user's alone.
fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))
}

impl BuildCache {
    /// Opens the cache under the state directory `root` and waits for the lock of `key`.
    pub fn lock(root: &Path, key: &str) -> Result<BuildCache, CacheError> {
        let dir = root.join(CACHE_DIR);
        create_private_dir(&dir)?;
        let lock_path = dir.join(format!("{key}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;
        Ok(BuildCache {
            entry: dir.join(format!("{key}.json")),
            dir,
            _lock: lock,
        })
    }

    /// Where fetches make their private repositories (each removed when its build ends).
    /// Those a killed build left are removed once a day old: no fetch lives that long.
    pub fn scratch(&self) -> Result<PathBuf, CacheError> {
        let dir = self.dir.join("tmp");
        create_private_dir(&dir)?;
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

    /// The key's entry, if one was recorded; a damaged entry is a miss (the build makes it
    /// again).
    pub fn entry(&self) -> Result<Option<CacheEntry>, CacheError> {
        let bytes = match std::fs::read(&self.entry) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &self.entry)(e)),
        };
        Ok(serde_json::from_slice::<CacheEntry>(&bytes).ok())
    }

    /// Writes the entry atomically (temp file + rename).
    pub fn record(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(io_err("create a temp file in", &self.dir))?;
        let json = serde_json::to_vec_pretty(entry).map_err(CacheError::Encode)?;
        let tmp_path = tmp.path().to_path_buf();
        tmp.write_all(&json).map_err(io_err("write", &tmp_path))?;
        tmp.persist(&self.entry)
            .map_err(|e| io_err("write", &self.entry)(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_a_damaged_one_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let cache = BuildCache::lock(root.path(), "k").unwrap();
        assert_eq!(cache.entry().unwrap(), None);
        let entry = CacheEntry {
            digest: "sha256:ab".into(),
            commit: "c".into(),
            layers: vec!["sha256:cd".into()],
        };
        cache.record(&entry).unwrap();
        assert_eq!(cache.entry().unwrap(), Some(entry));
        std::fs::write(root.path().join("builds-v1/k.json"), b"{").unwrap();
        assert_eq!(cache.entry().unwrap(), None);
        assert!(cache.scratch().unwrap().is_dir());
    }
}
