//! The snapshot store: each layer unpacked once, keyed by its chain id, shared by all images.
//!
//! Layout: `<root>/snapshots-v2/<chain-id-hex>/` is the layer's own tree in overlay format
//! (whiteouts as 0/0 character devices, opaque directories marked with
//! `user.overlay.opaque=y`, read through overlay's `userxattr` option). A snapshot is staged in `.staging-*` next to it and renamed into
//! place only after its diff id was verified and its data synced, so a snapshot directory that
//! exists is complete. Nothing writes into a committed snapshot again: runs stack them as
//! overlayfs lower layers (read-only by construction) or copy them.
//!
//! Who uses what is told by locks (see `lease`): the unpacking process holds each staging
//! directory's `<name>.lock`, so a staging directory whose lock can be taken is a dead pull's
//! ([`SnapshotStore::remove_stale_staging`]); a run holds a shared `.lease-<chain-id-hex>` on
//! each snapshot it stacks, so removal ([`SnapshotStore::remove_unreferenced`]) skips what it
//! cannot lock exclusively. A snapshot being removed is first renamed to `.removing-*`, so a
//! removal cut short never leaves a partial tree under a chain id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use rustix::fs::{RenameFlags, renameat_with};
use rustix::io::Errno;

use super::error::RootfsError;
use super::implied::reconcile;
use super::lease::{
    Held, LEASE_PREFIX, Lock, OWNER_SUFFIX, SnapshotLease, acquire, lease_path, owner_path,
};
use super::mount::{MountMode, RunRootfs, has_mount_below};
use super::rebase::reapply_over_lowers;
use crate::unpack::tree::{open_dir, remove_any};
use crate::unpack::{
    ChainId, Compression, DiffId, IdShift, ImageBytes, LayerBlob, LayerError, LayerFormat,
    LayerReport, Limits, chain_ids, sync_filesystem, unpack_layer_cancellable,
};

/// Opens a layer blob when (and only when) the store needs it; layers already in the store
/// are never opened, so the binary can skip their download.
pub type BlobOpener<'a> = Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send + 'a>> + Send + 'a>;

/// One layer of an image, in manifest order, as the binary describes it.
pub struct LayerSource<'a> {
    /// How errors name the layer (normally the blob digest).
    pub label: String,
    /// From the layer's media type.
    pub compression: Compression,
    /// `rootfs.diff_ids[i]` of the image config.
    pub diff_id: DiffId,
    /// Gives the compressed blob (a file, or a stream still downloading).
    pub open: BlobOpener<'a>,
}

/// What [`SnapshotStore::ensure`] did for one layer.
#[derive(Clone, Debug)]
pub struct EnsuredLayer {
    /// The layer's snapshot key.
    pub chain_id: ChainId,
    /// `None` if the snapshot was already there, else what unpacking reported.
    pub unpacked: Option<LayerReport>,
}

/// The on-disk store of unpacked layers.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Layers unpacked at the same time (each uses a parser and a writer thread).
    pub max_parallel_layers: usize,
    /// Limits applied to every layer.
    pub limits: Limits,
}

/// What [`SnapshotStore::remove_unreferenced`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Snapshots removed.
    pub removed: Vec<ChainId>,
    /// Snapshots no image references but a live run still stacks (leased): kept, for a later
    /// sweep.
    pub in_use: Vec<ChainId>,
}

/// A staging directory and its owner lock: the lock file is made (and locked) before the
/// directory and unlinked only after the directory is gone (committed or discarded), so a
/// staging directory without one is not being written by anyone.
struct Staging {
    dir: PathBuf,
    owner: Held,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

const STAGING_PREFIX: &str = ".staging-";

/// Snapshots being removed: no longer under their chain id, not yet deleted.
const REMOVING_PREFIX: &str = ".removing-";

impl SnapshotStore {
    /// Opens (creating if needed) the store below `root` and removes staging directories left
    /// by processes that no longer exist (see [`SnapshotStore::remove_stale_staging`]).
    pub fn open(root: &Path) -> Result<Self, RootfsError> {
        Self::open_dir(root.join("snapshots-v2"), None)
    }

    /// The store of snapshots whose owners are shifted into `shift`'s host range, for
    /// containers in a user namespace mapping `0 -> shift.base` (root's `--userns`). Kept apart
    /// from the plain store: the same chain id has other owners here.
    pub fn open_shifted(root: &Path, shift: IdShift) -> Result<Self, RootfsError> {
        Self::open_dir(
            root.join(format!(
                "snapshots-v2-userns-{}-{}",
                shift.base, shift.count
            )),
            Some(shift),
        )
    }

    /// The plain store and every id-shifted one found below `root` (for removing an image's
    /// snapshots everywhere).
    pub fn open_all(root: &Path) -> Result<Vec<Self>, RootfsError> {
        let mut stores = vec![Self::open(root)?];
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(stores);
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix("snapshots-v2-userns-"))
            else {
                continue;
            };
            if let Some((base, count)) = rest.split_once('-')
                && let (Ok(base), Ok(count)) = (base.parse(), count.parse())
            {
                stores.push(Self::open_shifted(root, IdShift { base, count })?);
            }
        }
        Ok(stores)
    }

    /// The id shift of this store's snapshots, if any.
    pub fn id_shift(&self) -> Option<IdShift> {
        self.limits.id_shift
    }

    fn open_dir(dir: PathBuf, shift: Option<IdShift>) -> Result<Self, RootfsError> {
        let store_err = |source| RootfsError::Store {
            path: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(store_err)?;
        let store = Self {
            dir: dir.clone(),
            max_parallel_layers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
            limits: Limits {
                id_shift: shift,
                ..Limits::default()
            },
        };
        store.remove_stale_staging()?;
        Ok(store)
    }

    /// The directory of a snapshot (whether or not it exists).
    pub fn snapshot_dir(&self, chain: &ChainId) -> PathBuf {
        self.dir.join(chain.hex())
    }

    /// Whether a snapshot is committed.
    pub fn contains(&self, chain: &ChainId) -> bool {
        std::fs::symlink_metadata(self.snapshot_dir(chain)).is_ok_and(|m| m.is_dir())
    }

    /// Gives one run its own root filesystem for the image whose chain ids (manifest order)
    /// are `chain`: `run_dir` must not exist yet; it is created (0700) and holds `rootfs/`.
    pub fn mount_run(
        &self,
        chain: &[ChainId],
        run_dir: &Path,
        mode: MountMode,
    ) -> Result<RunRootfs, RootfsError> {
        if chain.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        // Leased before the check: once held, no removal can take the snapshots away.
        let lease = self.lease(chain)?;
        for c in chain {
            if !self.contains(c) {
                return Err(RootfsError::MissingSnapshot(*c));
            }
        }
        let snapshots: Vec<PathBuf> = chain.iter().map(|c| self.snapshot_dir(c)).collect();
        RunRootfs::mount(&snapshots, lease, self.id_shift(), run_dir, mode)
    }

    /// Takes shared leases on `chains` (whether or not they are committed yet): while the
    /// returned lease lives, [`SnapshotStore::remove_unreferenced`] and
    /// [`SnapshotStore::remove`] leave them alone. [`SnapshotStore::mount_run`] takes one for
    /// the run's lifetime; a caller may also hold one from before [`SnapshotStore::ensure`]
    /// until its image is recorded. Waits only for a removal in the middle of renaming one of
    /// them away (then the snapshot is gone and must be unpacked again).
    pub fn lease(&self, chains: &[ChainId]) -> Result<SnapshotLease, RootfsError> {
        let mut locks = Vec::with_capacity(chains.len());
        for chain in chains {
            let path = lease_path(&self.dir, chain);
            match acquire(&path, Lock::SharedWait, true) {
                Ok(Some(held)) => locks.push(held),
                Ok(None) => {
                    return Err(RootfsError::Store {
                        path,
                        source: io::Error::other("lease file vanished"),
                    });
                }
                Err(source) => return Err(RootfsError::Store { path, source }),
            }
        }
        Ok(SnapshotLease::new(locks))
    }

    /// Makes sure every layer of an image is in the store, unpacking the missing ones (several
    /// at once), and returns the chain ids in manifest order. A layer is committed only when it
    /// and every layer below it unpacked and verified; on error nothing partial remains.
    pub fn ensure(&self, layers: Vec<LayerSource<'_>>) -> Result<Vec<EnsuredLayer>, RootfsError> {
        if layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        let diff_ids: Vec<DiffId> = layers.iter().map(|l| l.diff_id).collect();
        let chains = chain_ids(&diff_ids);
        let labels: Vec<String> = layers.iter().map(|l| l.label.clone()).collect();
        let mut jobs = VecDeque::new();
        for (index, layer) in layers.into_iter().enumerate() {
            if !self.contains(&chains[index]) {
                jobs.push_back((index, layer));
            }
        }
        let missing: Vec<usize> = jobs.iter().map(|(i, _)| *i).collect();
        let image_bytes = ImageBytes::new(self.limits.max_image_bytes);
        let mut staged: HashMap<usize, (Staging, LayerReport)> = HashMap::new();
        let mut first_error: Option<(usize, RootfsError)> = None;
        if !jobs.is_empty() {
            // A failed layer cancels the layers above it (they cannot be committed), never the
            // ones below, which stay useful to this and other images.
            let cancel: Vec<AtomicBool> =
                (0..chains.len()).map(|_| AtomicBool::new(false)).collect();
            let queue = Mutex::new(jobs);
            let workers = self.max_parallel_layers.min(missing.len()).max(1);
            let (tx, rx) = mpsc::channel();
            std::thread::scope(|s| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    let (queue, cancel, chains, image_bytes) =
                        (&queue, &cancel, &chains, &image_bytes);
                    s.spawn(move || {
                        loop {
                            let job = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                            let Some((index, layer)) = job else { break };
                            let result = self.stage(
                                index,
                                layer,
                                &chains[index],
                                image_bytes,
                                &cancel[index],
                            );
                            if let Err(e) = &result {
                                // Past the image's limit nothing is committed: stop them all.
                                let from = if is_image_limit(e) { 0 } else { index + 1 };
                                for flag in &cancel[from..] {
                                    flag.store(true, Ordering::Relaxed);
                                }
                            }
                            if tx.send((index, result)).is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
                for (index, result) in rx {
                    match result {
                        Ok(ok) => {
                            staged.insert(index, ok);
                        }
                        Err(e) => {
                            // Report the real cause (not a "cancelled" follow-up), and of
                            // several real causes the lowest layer's.
                            let replace = match &first_error {
                                None => true,
                                Some((i, old)) => match (is_cancelled(old), is_cancelled(&e)) {
                                    (true, false) => true,
                                    (false, true) => false,
                                    _ => index < *i,
                                },
                            };
                            if replace {
                                first_error = Some((index, e));
                            }
                        }
                    }
                }
            });
        }

        // Commit in manifest order up to the first failed layer; everything above it is dropped.
        // An image past its size limit commits nothing (or each retry would add another
        // limit's worth of its layers). 1. implied directories take the attributes of their
        // lower layers (staged or stored); 2. one syncfs makes all staged data durable;
        // 3. renames publish the snapshots.
        let stop = match &first_error {
            Some((_, e)) if is_image_limit(e) => None,
            Some((i, _)) => Some(*i),
            None => Some(usize::MAX),
        };
        let mut commit_error = None;
        let mut ready = Vec::new();
        for (index, label) in labels.iter().enumerate() {
            if stop.is_none_or(|stop| index > stop) {
                break;
            }
            let Some((staging, report)) = staged.get(&index) else {
                // Already stored: go on. Failed or cancelled: nothing above it may be committed.
                if self.contains(&chains[index]) {
                    continue;
                }
                break;
            };
            let (dir, implied, links) = (
                staging.dir.clone(),
                report.implied_dirs.clone(),
                report.pending_hardlinks.clone(),
            );
            if !links.is_empty() && index == 0 {
                let (path, target) = &links[0];
                commit_error = Some(RootfsError::Unpack {
                    index,
                    source: crate::unpack::UnpackError {
                        layer: label.clone(),
                        kind: crate::unpack::LayerError::Entry {
                            entry: String::from_utf8_lossy(path).into_owned(),
                            source: crate::unpack::EntryError::MissingLinkTarget(
                                String::from_utf8_lossy(target).into_owned(),
                            ),
                        },
                    },
                });
                break;
            }
            let lowers: Vec<PathBuf> = (0..index)
                .rev()
                .map(|i| match staged.get(&i) {
                    Some((s, _)) => s.dir.clone(),
                    None => self.snapshot_dir(&chains[i]),
                })
                .collect();
            let reconciled = if links.is_empty() {
                reconcile(&dir, &lowers, &implied, label)
            } else {
                // Links to lower files can only be made on top of the lowers.
                Err(RootfsError::ImpliedDirOverSymlink {
                    label: label.clone(),
                    path: String::new(),
                })
            };
            match reconciled {
                Ok(()) => {}
                Err(RootfsError::ImpliedDirOverSymlink { .. }) => {
                    match self.rebase(&dir, &implied, &links, &lowers, label, &chains[index]) {
                        Ok(rebased) => {
                            if let Some(entry) = staged.get_mut(&index) {
                                let old = std::mem::replace(&mut entry.0, rebased);
                                self.discard(old);
                            }
                        }
                        Err(e) => {
                            commit_error = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    commit_error = Some(e);
                    break;
                }
            }
            ready.push(index);
        }
        if let Some(&first) = ready.first()
            && let Err(source) = sync_filesystem(&self.dir)
        {
            commit_error = Some(RootfsError::Commit {
                chain: chains[first],
                source,
            });
            ready.clear();
        }
        let mut reports: HashMap<usize, LayerReport> = HashMap::new();
        for index in ready {
            let Some((staging, report)) = staged.remove(&index) else {
                continue;
            };
            if let Err(source) = self.commit(staging, &chains[index]) {
                commit_error = Some(RootfsError::Commit {
                    chain: chains[index],
                    source,
                });
                break;
            }
            reports.insert(index, report);
        }
        for (_, (staging, _)) in staged.drain() {
            self.discard(staging);
        }
        let result: Vec<EnsuredLayer> = chains
            .iter()
            .enumerate()
            .map(|(index, chain)| EnsuredLayer {
                chain_id: *chain,
                unpacked: reports.remove(&index),
            })
            .collect();
        if let Some((_, e)) = first_error {
            return Err(e);
        }
        if let Some(e) = commit_error {
            return Err(e);
        }
        Ok(result)
    }

    /// Unpacks one layer into a fresh staging directory.
    fn stage(
        &self,
        index: usize,
        layer: LayerSource<'_>,
        chain: &ChainId,
        image_bytes: &ImageBytes,
        cancel: &AtomicBool,
    ) -> Result<(Staging, LayerReport), RootfsError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(RootfsError::Unpack {
                index,
                source: crate::unpack::UnpackError {
                    layer: layer.label,
                    kind: crate::unpack::LayerError::Cancelled,
                },
            });
        }
        let staging = self.new_staging(&chain.hex())?;
        let dir = staging.dir.clone();
        let created = std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .and_then(|()| match self.limits.id_shift {
                // The layer's root (and so its implied directories) belongs to the container's
                // root, as its other entries do.
                Some(s) => std::os::unix::fs::chown(&dir, Some(s.base), Some(s.base)),
                None => Ok(()),
            })
            .map_err(|source| RootfsError::Store {
                path: dir.clone(),
                source,
            });
        if let Err(e) = created {
            self.discard(staging);
            return Err(e);
        }
        let label = layer.label.clone();
        let blob = match (layer.open)() {
            Ok(b) => b,
            Err(source) => {
                self.discard(staging);
                return Err(RootfsError::OpenLayer { label, source });
            }
        };
        let blob = LayerBlob {
            label: layer.label,
            blob,
            compression: layer.compression,
            diff_id: layer.diff_id,
        };
        match unpack_layer_cancellable(
            blob,
            &dir,
            LayerFormat::OverlaySnapshot,
            &self.limits,
            image_bytes,
            cancel,
        ) {
            Ok(report) => Ok((staging, report)),
            Err(source) => {
                self.discard(staging);
                Err(RootfsError::Unpack { index, source })
            }
        }
    }

    /// A fresh staging name `.staging-<what>-<pid>-<nanos>-<n>` with its owner lock held; the
    /// directory itself is for the caller to create. The pid is for people reading the
    /// directory; ownership is the lock.
    fn new_staging(&self, what: &str) -> Result<Staging, RootfsError> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.dir.join(format!(
            "{STAGING_PREFIX}{what}-{}-{nanos}-{n}",
            std::process::id()
        ));
        let lock = owner_path(&dir);
        match acquire(&lock, Lock::ExclusiveTry, true) {
            Ok(Some(owner)) => Ok(Staging { dir, owner }),
            Ok(None) => Err(RootfsError::Store {
                path: lock,
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            }),
            Err(source) => Err(RootfsError::Store { path: lock, source }),
        }
    }

    /// Replays a staged layer through an overlay of its lowers (see `rebase.rs`) and returns
    /// the new staging directory.
    fn rebase(
        &self,
        staged: &Path,
        implied: &[Vec<u8>],
        links: &[(Vec<u8>, Vec<u8>)],
        lowers: &[PathBuf],
        label: &str,
        chain: &ChainId,
    ) -> Result<Staging, RootfsError> {
        let work = self.new_staging("rebase")?;
        let target = match self.new_staging(&chain.hex()) {
            Ok(t) => t,
            Err(e) => {
                self.discard(work);
                return Err(e);
            }
        };
        let result = reapply_over_lowers(staged, implied, links, lowers, &work.dir, label)
            .and_then(|upper| {
                std::fs::rename(&upper, &target.dir).map_err(|source| RootfsError::Store {
                    path: upper.clone(),
                    source,
                })
            });
        // Never delete through a mount that could not be undone: then the work directory
        // stays, its owner lock released when `work` drops, for the stale-staging sweep.
        if !has_mount_below(&work.dir).unwrap_or(true) {
            self.discard(work);
        }
        match result {
            Ok(()) => Ok(target),
            Err(e) => {
                self.discard(target);
                Err(e)
            }
        }
    }

    /// Atomically moves a staged snapshot into place; if another process committed the same
    /// chain id meanwhile, its copy wins and ours is dropped.
    fn commit(&self, staged: Staging, chain: &ChainId) -> io::Result<()> {
        let target = self.snapshot_dir(chain);
        match renameat_with(
            rustix::fs::CWD,
            &staged.dir,
            rustix::fs::CWD,
            &target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                staged.owner.unlink();
                Ok(())
            }
            Err(Errno::EXIST | Errno::NOTEMPTY) => {
                self.discard(staged);
                Ok(())
            }
            Err(e) => {
                self.discard(staged);
                Err(e.into())
            }
        }
    }

    /// Best-effort removal of a staging directory, then of its owner lock.
    fn discard(&self, staging: Staging) {
        self.remove_entry(&staging.dir);
        staging.owner.unlink();
    }

    /// Best-effort removal of an entry of the store directory (never following symlinks
    /// inside it); whether it is gone.
    fn remove_entry(&self, path: &Path) -> bool {
        match (path.file_name(), open_dir(&self.dir)) {
            (Some(name), Ok(parent)) => {
                remove_any(std::os::fd::AsFd::as_fd(&parent), name.as_bytes()).is_ok()
            }
            _ => false,
        }
    }

    /// The names in the store directory (UTF-8 ones: every name the store makes is).
    fn names(&self) -> Result<Vec<String>, RootfsError> {
        let store_err = |source| RootfsError::Store {
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(store_err)? {
            if let Some(name) = entry.map_err(store_err)?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Removes the staging directories (and rebase work directories) of pulls whose process
    /// is gone, for `dockless gc` (and every [`SnapshotStore::open`]); returns how many. The
    /// owner is gone when its lock (`<name>.lock`) can be taken or does not exist (the lock is
    /// made before the directory and removed after it); a pid is never taken as an owner (it
    /// can be reused, and means another process in another pid namespace). A directory with a
    /// mount left below it by a killed rebase is unmounted first, or kept if that fails.
    pub fn remove_stale_staging(&self) -> Result<usize, RootfsError> {
        let store_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RootfsError::Store { path, source }
        };
        let names = self.names()?;
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut removed = 0;
        for name in &names {
            if !name.starts_with(STAGING_PREFIX) {
                continue;
            }
            let path = self.dir.join(name);
            if let Some(dir) = name.strip_suffix(OWNER_SUFFIX) {
                // A lock without its directory: its owner died between the two, or while
                // discarding. Handled with the directory when there is one.
                if !present.contains(dir)
                    && let Some(held) =
                        acquire(&path, Lock::ExclusiveTry, false).map_err(store_err(&path))?
                {
                    held.unlink();
                }
                continue;
            }
            let lock = owner_path(&path);
            // Asked of the disk, not of the listing: a lock and directory made while the store
            // was being listed may show only the directory (the lock is made first).
            let owner = if std::fs::symlink_metadata(&lock).is_ok() {
                match acquire(&lock, Lock::ExclusiveTry, false).map_err(store_err(&lock))? {
                    Some(held) => Some(held),
                    // Its owner is alive (or just finished it).
                    None => continue,
                }
            } else {
                None
            };
            // A rebase interrupted by a crash may have left its overlay mounted.
            let merged = path.join("merged");
            if has_mount_below(&merged).map_err(store_err(&merged))? {
                let _ = rustix::mount::unmount(
                    &merged,
                    rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
                );
            }
            if has_mount_below(&path).map_err(store_err(&path))? {
                continue;
            }
            if self.remove_entry(&path) {
                removed += 1;
                if let Some(held) = owner {
                    held.unlink();
                }
            }
        }
        Ok(removed)
    }

    /// Removes every committed snapshot whose chain id is not in `keep` and that no live run
    /// leases, for `dockless gc` and `rmi`: `keep` is the chain ids of every stored image (the
    /// binary computes them). A leased snapshot is reported in [`Sweep::in_use`] and kept. Also
    /// finishes removals cut short (`.removing-*`) and drops lease files of snapshots that are
    /// gone. Call it on every store of [`SnapshotStore::open_all`].
    pub fn remove_unreferenced(&self, keep: &HashSet<ChainId>) -> Result<Sweep, RootfsError> {
        let mut sweep = Sweep::default();
        let names = self.names()?;
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        for name in &names {
            if let Some(chain) = committed_chain(name) {
                if keep.contains(&chain) {
                    continue;
                }
                if self.remove_unleased(&chain)? {
                    sweep.removed.push(chain);
                } else {
                    sweep.in_use.push(chain);
                }
            } else if name.starts_with(REMOVING_PREFIX) {
                // Out of the committed namespace already: nobody can use it. Another sweep may
                // be deleting it at the same time, so errors are left for the next one.
                self.remove_entry(&self.dir.join(name));
            } else if let Some(hex) = name.strip_prefix(LEASE_PREFIX)
                && !present.contains(hex)
            {
                let path = self.dir.join(name);
                if let Some(held) = acquire(&path, Lock::ExclusiveTry, false).map_err(|source| {
                    RootfsError::Store {
                        path: path.clone(),
                        source,
                    }
                })? {
                    held.unlink();
                }
            }
        }
        sweep.removed.sort();
        sweep.in_use.sort();
        Ok(sweep)
    }

    /// Removes a committed snapshot (for `rmi`; the caller makes sure no image still needs
    /// it). Refuses with [`RootfsError::SnapshotInUse`] while a run leases it.
    pub fn remove(&self, chain: &ChainId) -> Result<(), RootfsError> {
        if self.remove_unleased(chain)? {
            Ok(())
        } else {
            Err(RootfsError::SnapshotInUse(*chain))
        }
    }

    /// Removes a snapshot unless it is leased (then `false`): under its exclusive lease it is
    /// renamed out of the committed namespace (so no run can start on it and a removal cut
    /// short leaves no tree that looks committed), the lease released, then the tree deleted.
    fn remove_unleased(&self, chain: &ChainId) -> Result<bool, RootfsError> {
        let lease = lease_path(&self.dir, chain);
        let Some(held) =
            acquire(&lease, Lock::ExclusiveTry, true).map_err(|source| RootfsError::Store {
                path: lease.clone(),
                source,
            })?
        else {
            return Ok(false);
        };
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let removing_name = format!(
            "{REMOVING_PREFIX}{}-{}-{n}",
            chain.hex(),
            std::process::id()
        );
        let removing = self.dir.join(&removing_name);
        match std::fs::rename(self.snapshot_dir(chain), &removing) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                held.unlink();
                return Ok(true);
            }
            Err(source) => {
                return Err(RootfsError::Store {
                    path: self.snapshot_dir(chain),
                    source,
                });
            }
        }
        held.unlink();
        let parent = open_dir(&self.dir).map_err(|source| RootfsError::Store {
            path: self.dir.clone(),
            source,
        })?;
        remove_any(std::os::fd::AsFd::as_fd(&parent), removing_name.as_bytes())
            .map(|_| true)
            .map_err(|e| RootfsError::Store {
                path: removing.clone(),
                source: e.into(),
            })
    }
}

/// The chain id a committed snapshot's directory name stands for (64 lowercase hex digits).
fn committed_chain(name: &str) -> Option<ChainId> {
    if name.len() != 64 {
        return None;
    }
    format!("sha256:{name}").parse().ok()
}

fn is_image_limit(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Unpack { source, .. } if matches!(source.kind, LayerError::ImageLimit { .. }))
}

fn is_cancelled(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Unpack { source, .. } if matches!(source.kind, LayerError::Cancelled))
}
