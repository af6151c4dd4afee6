//! The ingest protocol: how a download becomes a verified blob.
//!
//! One process at a time writes a blob, holding `ingest/<hex>.lock` (flock); the bytes go to
//! `ingest/<hex>.partial`, checked against the descriptor's size as they arrive and against the
//! digest before the partial is renamed into `blobs/`. A partial left by a killed pull is
//! rehashed and resumed by the next one; [`collect`] removes those nobody resumed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use super::blobs::{Layout, seal};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// The result of asking to ingest a blob.
pub enum Ingest {
    /// The blob is already in the store; nothing to fetch.
    Present,
    /// We hold the ingest lock and may write.
    Writer(Box<IngestWriter>),
}

/// An ingest that may have to wait for another process writing the same blob.
pub struct PendingIngest {
    layout: Layout,
    digest: Digest,
    size: u64,
}

impl PendingIngest {
    pub(crate) fn new(layout: &Layout, digest: &Digest, size: u64) -> PendingIngest {
        PendingIngest {
            layout: layout.clone(),
            digest: digest.clone(),
            size,
        }
    }

    fn try_acquire(&self) -> Result<Option<Ingest>> {
        if self.layout.has_blob(&self.digest) {
            return Ok(Some(Ingest::Present));
        }
        let lock_path = self.layout.ingest_lock(&self.digest);
        let partial_path = self.layout.partial(&self.digest);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
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
        if self.layout.has_blob(&self.digest) {
            return Ok(Some(Ingest::Present));
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&partial_path)
            .map_err(Error::io("open", &partial_path))?;
        let mut writer = IngestWriter {
            layout: self.layout.clone(),
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
    layout: Layout,
    digest: Digest,
    size: u64,
    partial_path: std::path::PathBuf,
    lock_path: std::path::PathBuf,
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
        let dest = self.layout.blob(&self.digest);
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

/// Deletes partials nobody holds and temp files of a killed `load` once older than `max_age`
/// (see [`super::Store::collect_ingest`]); returns how many files were removed.
pub(crate) fn collect(layout: &Layout, max_age: Duration) -> Result<usize> {
    let dir = layout.ingest_dir();
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
        if remove_if_present(&path)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a file; `false` when it was already gone (committed or collected meanwhile).
fn remove_if_present(path: &std::path::Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// A partial download that [`super::Store::collect_partials`] removed: `dockless gc` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedPartial {
    /// The partial file (gone now).
    pub path: std::path::PathBuf,
    /// The bytes it held, now free.
    pub bytes: u64,
}

/// Deletes every partial whose download is not running, whatever its age (see
/// [`super::Store::collect_partials`]).
pub(crate) fn collect_partials(layout: &Layout) -> Result<Vec<RemovedPartial>> {
    let dir = layout.ingest_dir();
    let mut removed = Vec::new();
    for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
        let entry = entry.map_err(Error::io("list", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".partial") else {
            continue;
        };
        // The writer creates and locks `<hex>.lock` before it opens the partial and removes the
        // lock file only after the partial is renamed away, so a free lock (or none) means no
        // pull is writing it. Held until the partial is gone, so no writer starts meanwhile.
        let lock_path = dir.join(format!("{hex}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue, // a live pull is writing it
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::Io {
                    op: "lock",
                    path: lock_path,
                    source: e,
                });
            }
        }
        let path = entry.path();
        let bytes = fs::metadata(&path).map_or(0, |m| m.len());
        // Gone already when it was committed between the listing and the lock.
        if remove_if_present(&path)? {
            removed.push(RemovedPartial { path, bytes });
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

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
    fn gc_removes_every_partial_whose_pull_is_not_running_whatever_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (dead, live) = (Digest::of(b"dead"), Digest::of(b"live"));
        let mut w = writer(&store, &dead, 4);
        w.write(b"de").unwrap();
        drop(w); // the pull was killed a moment ago: its partial is young
        let mut held = writer(&store, &live, 4);
        held.write(b"li").unwrap();
        held.out.flush().unwrap();
        // A partial whose lock file is gone too (nothing can be writing it).
        let orphan = Digest::of(b"orphan");
        fs::write(store.partial_path(&orphan), b"orph").unwrap();
        assert_eq!(
            store
                .collect_ingest(Duration::from_secs(24 * 3600))
                .unwrap(),
            0,
            "the issue: the age-based collection keeps a killed pull's young partial"
        );

        let mut removed = store.collect_partials().unwrap();
        removed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut expected = vec![
            RemovedPartial {
                path: store.partial_path(&dead),
                bytes: 2,
            },
            RemovedPartial {
                path: store.partial_path(&orphan),
                bytes: 4,
            },
        ];
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(removed, expected);
        assert!(
            store.partial_path(&live).exists(),
            "the partial of a running pull stays"
        );
        assert_eq!(
            store.collect_ingest(Duration::from_secs(3600)).unwrap(),
            0,
            "the age-based collection is unchanged and finds nothing more"
        );
        held.write(b"ve").unwrap();
        held.commit().unwrap();
        assert!(store.has_blob(&live));
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
}
