//! Reading blobs while they download, so unpacking overlaps the transfer.
//!
//! [`Follow`] is a [`Progress`] that also tracks each blob's state; [`Follow::reader`] gives a
//! reader that returns the blob's bytes as they reach the ingest file and ends when the blob
//! is committed. The bytes a follower returns are not yet verified against the blob digest:
//! callers must verify what they derive from them (the runtime checks each layer's diff id,
//! which the verified image config names) or wait for the pull to succeed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::digest::Digest;
use crate::pull::Progress;
use crate::store::{LayerRecord, Store};

#[derive(Default)]
struct BlobState {
    started: bool,
    done: bool,
    resets: u64,
}

#[derive(Default)]
struct Shared {
    blobs: HashMap<Digest, BlobState>,
    layers: Option<(Vec<LayerRecord>, Vec<Digest>)>,
    closed: Option<String>,
}

/// Progress wrapper that lets readers follow downloads in progress.
pub struct Follow {
    inner: Arc<dyn Progress>,
    store: Store,
    shared: Mutex<Shared>,
    changed: Condvar,
}

impl Follow {
    /// Wraps the display progress `inner` for pulls into `store`.
    pub fn new(store: Store, inner: Arc<dyn Progress>) -> Arc<Follow> {
        Arc::new(Follow {
            inner,
            store,
            shared: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    fn update(&self, change: impl FnOnce(&mut Shared)) {
        let mut shared = self.shared.lock().expect("follow lock");
        change(&mut shared);
        self.changed.notify_all();
    }

    /// Ends every wait: the pull is over (`error` says why, if it failed).
    pub fn close(&self, error: Option<String>) {
        self.update(|s| s.closed = Some(error.unwrap_or_default()));
    }

    /// Blocks until the pull knows the image's layers and diff ids (after the config is
    /// verified); `None` if the pull ended first.
    pub fn wait_layers(&self) -> Option<(Vec<LayerRecord>, Vec<Digest>)> {
        let mut shared = self.shared.lock().expect("follow lock");
        loop {
            if let Some(l) = &shared.layers {
                return Some(l.clone());
            }
            if shared.closed.is_some() {
                return None;
            }
            shared = self.changed.wait(shared).expect("follow lock");
        }
    }

    /// A reader of `digest` that follows its download.
    pub fn reader(self: &Arc<Follow>, digest: &Digest) -> Follower {
        Follower {
            follow: self.clone(),
            digest: digest.clone(),
            file: None,
            resets: 0,
        }
    }
}

impl Progress for Follow {
    fn resolved(&self, image: &str, digest: &Digest) {
        self.inner.resolved(image, digest);
    }
    fn layers(&self, layers: &[LayerRecord], diff_ids: &[Digest]) {
        self.update(|s| s.layers = Some((layers.to_vec(), diff_ids.to_vec())));
        self.inner.layers(layers, diff_ids);
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        self.update(|s| s.blobs.entry(digest.clone()).or_default().started = true);
        self.inner.blob_started(digest, size, offset);
    }
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.update(|_| {});
        self.inner.blob_advanced(digest, bytes);
    }
    fn blob_reset(&self, digest: &Digest) {
        self.update(|s| s.blobs.entry(digest.clone()).or_default().resets += 1);
        self.inner.blob_reset(digest);
    }
    fn blob_retrying(&self, digest: &Digest, attempt: u32, reason: &str) {
        self.inner.blob_retrying(digest, attempt, reason);
    }
    fn blob_finished(&self, digest: &Digest, cached: bool) {
        self.update(|s| s.blobs.entry(digest.clone()).or_default().done = true);
        self.inner.blob_finished(digest, cached);
    }
}

/// Reads a blob as it downloads; see [`Follow`].
pub struct Follower {
    follow: Arc<Follow>,
    digest: Digest,
    file: Option<File>,
    resets: u64,
}

impl Follower {
    /// Opens the ingest file once the download started, or the blob once it is stored.
    fn open(&mut self) -> io::Result<()> {
        let mut shared = self.follow.shared.lock().expect("follow lock");
        loop {
            let state = shared.blobs.get(&self.digest);
            let (started, done) = state.map(|s| (s.started, s.done)).unwrap_or_default();
            if done {
                drop(shared);
                self.file = Some(File::open(self.follow.store.blob_path(&self.digest))?);
                return Ok(());
            }
            if started {
                self.resets = state.map(|s| s.resets).unwrap_or(0);
                // Opened under the lock: the commit (rename) cannot have happened yet.
                match File::open(self.follow.store.partial_path(&self.digest)) {
                    Ok(f) => {
                        self.file = Some(f);
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(err) = &shared.closed {
                return Err(io::Error::other(format!(
                    "download of {} ended: {err}",
                    self.digest
                )));
            }
            shared = self
                .follow
                .changed
                .wait_timeout(shared, Duration::from_millis(50))
                .expect("follow lock")
                .0;
        }
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.file.is_none() {
            self.open()?;
        }
        loop {
            let done = {
                let shared = self.follow.shared.lock().expect("follow lock");
                let state = shared.blobs.get(&self.digest);
                if state.map(|s| s.resets).unwrap_or(0) != self.resets {
                    return Err(io::Error::other(format!(
                        "download of {} restarted from zero",
                        self.digest
                    )));
                }
                let done = state.is_some_and(|s| s.done);
                if !done && let Some(err) = &shared.closed {
                    return Err(io::Error::other(format!(
                        "download of {} ended: {err}",
                        self.digest
                    )));
                }
                done
            };
            let n = self.file.as_mut().expect("opened above").read(buf)?;
            if n > 0 || done {
                // `done` was seen before this read, so a 0 here is the true end of the blob.
                return Ok(n);
            }
            let shared = self.follow.shared.lock().expect("follow lock");
            let _ = self
                .follow
                .changed
                .wait_timeout(shared, Duration::from_millis(20))
                .expect("follow lock");
        }
    }
}
