//! Who uses what in the snapshot store, told by `flock` on small lock files: a lock lives as
//! long as its holder's open file, so it dies with the process (SIGKILL included) and means the
//! same in every pid namespace. A pid written in a name does neither: it can be reused, and a
//! process in another pid namespace has another number.
//!
//! Two kinds, both beside what they guard (a leaf: imports nothing from the rest of `rootfs`):
//! - a lease, `.lease-<chain-id-hex>`: held shared by every run (or caller) using that
//!   snapshot; removal takes it exclusively, without waiting, and skips the snapshot if it
//!   cannot;
//! - an owner lock, `<staging-name>.lock`: held exclusively by the process unpacking into that
//!   staging directory; whoever can take it knows the owner is gone.
//!
//! A lock file is unlinked only by a holder of its exclusive lock, and every acquirer checks
//! after locking that the path still names the file it locked (else it retries), so a lock on
//! a file already unlinked never counts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::unpack::ChainId;

/// The prefix of lease file names in a store directory.
pub(crate) const LEASE_PREFIX: &str = ".lease-";

/// The suffix of a staging directory's owner lock (`<staging-name>.lock`).
pub(crate) const OWNER_SUFFIX: &str = ".lock";

/// The lease file of a snapshot in the store directory `store`.
pub(crate) fn lease_path(store: &Path, chain: &ChainId) -> PathBuf {
    store.join(format!("{LEASE_PREFIX}{}", chain.hex()))
}

/// The owner lock of a staging directory.
pub(crate) fn owner_path(staging: &Path) -> PathBuf {
    let mut name = staging.as_os_str().to_owned();
    name.push(OWNER_SUFFIX);
    PathBuf::from(name)
}

/// How to lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Shared, waiting for an exclusive holder to finish (a run taking its lease: removal
    /// holds the lock only while it renames the snapshot away).
    SharedWait,
    /// Exclusive, without waiting.
    ExclusiveTry,
}

/// A locked lock file; the lock is released when this is dropped.
#[derive(Debug)]
pub(crate) struct Held {
    /// Holds the lock (flock belongs to the open file).
    file: File,
    path: PathBuf,
}

impl Held {
    /// Unlinks the lock file (only while holding it exclusively: see the module doc), then
    /// releases the lock.
    pub(crate) fn unlink(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens `path` (creating it, 0600, if `create`) and locks it as `how` asks. `Ok(None)`: an
/// exclusive lock is held by someone else, or the file does not exist and `create` is false.
pub(crate) fn acquire(path: &Path, how: Lock, create: bool) -> io::Result<Option<Held>> {
    // A bounded retry: each round means a remover unlinked the file between our open and lock.
    for _ in 0..64 {
        let file = match OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match how {
            Lock::SharedWait => file.lock_shared()?,
            Lock::ExclusiveTry => match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            },
        }
        let locked = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                return Ok(Some(Held {
                    file,
                    path: path.to_path_buf(),
                }));
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ if !create => return Ok(None),
            _ => continue,
        }
    }
    Err(io::Error::other(format!(
        "{} keeps being replaced while it is locked",
        path.display()
    )))
}

/// Shared locks on the snapshots a run (or a caller between [`ensure`] and recording its
/// image) uses: while it is held, no removal deletes them. Dropping it releases them, and
/// removes the lease files no other holder shares (a store without runs holds no lease files).
/// It is held by the process that took it: a runner killed with SIGKILL releases it even if
/// its container lives on, so the container's life must be tied to its supervisor.
///
/// [`ensure`]: super::SnapshotStore::ensure
#[derive(Debug)]
pub struct SnapshotLease {
    locks: Vec<Held>,
}

impl SnapshotLease {
    pub(crate) fn new(locks: Vec<Held>) -> Self {
        Self { locks }
    }
}

impl Drop for SnapshotLease {
    fn drop(&mut self) {
        for held in std::mem::take(&mut self.locks) {
            // The last holder gets the lock exclusively (a conversion of its own shared lock)
            // and may unlink; with another holder left, it just lets go.
            if held.file.try_lock().is_ok() {
                held.unlink();
            }
        }
    }
}
