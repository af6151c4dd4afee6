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
    aborted: Option<String>,
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

    /// Stops the pull: its downloads end with [`crate::Error::Aborted`] within a fraction of a
    /// second (between two chunks, or at the next quiet tick) and every follower's next read
    /// fails. The caller of [`crate::Client::pull`] calls it when the unpacker reading a
    /// download failed for a reason of its own (see [`FollowError::caused`]), so that a layer
    /// that cannot be unpacked does not go on downloading.
    pub fn abort(&self, reason: String) {
        self.update(|s| {
            s.aborted.get_or_insert(reason);
        });
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
    fn cancelled(&self) -> Option<String> {
        self.shared.lock().expect("follow lock").aborted.clone()
    }
}

/// Why a [`Follower`] read failed: the download, not the reader, is at fault. It travels as
/// the inner error of the `io::Error` a follower returns, so the caller can tell "the download
/// restarted or failed" (unpack the verified blobs once the pull is done) from "the unpacker
/// failed on these bytes" (stop the pull with [`Follow::abort`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The download went back to byte zero; what was read is not the blob's prefix any more.
    #[error("download of {0} restarted from zero")]
    Restarted(Digest),
    /// The pull ended (failed, or was aborted) before the blob was complete.
    #[error("download of {digest} ended: {reason}")]
    Ended {
        /// The blob being read.
        digest: Digest,
        /// The pull's error, if it said one.
        reason: String,
    },
}

impl FollowError {
    /// Whether `error` or any of its causes is a follower's read failure.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<FollowError>()
                || e.downcast_ref::<io::Error>()
                    .and_then(|io| io.get_ref())
                    .is_some_and(|inner| inner.is::<FollowError>())
            {
                return true;
            }
            next = e.source();
        }
        false
    }

    fn ended(digest: &Digest, reason: &str) -> io::Error {
        io::Error::other(FollowError::Ended {
            digest: digest.clone(),
            reason: reason.to_string(),
        })
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
            if let Some(err) = shared.closed.as_ref().or(shared.aborted.as_ref()) {
                return Err(FollowError::ended(&self.digest, err));
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
                    return Err(io::Error::other(FollowError::Restarted(
                        self.digest.clone(),
                    )));
                }
                let done = state.is_some_and(|s| s.done);
                if !done && let Some(err) = shared.closed.as_ref().or(shared.aborted.as_ref()) {
                    return Err(FollowError::ended(&self.digest, err));
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
