//! The snapshot store: each layer unpacked once, keyed by its chain id, shared by all images.
//!
//! Layout: `<root>/snapshots-v2/<chain-id-hex>/` is the layer's own tree in overlay format
//! (whiteouts as 0/0 character devices, opaque directories marked with
//! `user.overlay.opaque=y`, read through overlay's `userxattr` option). A snapshot is staged in `.staging-*` next to it and renamed into
//! place only after its diff id was verified and its data synced, so a snapshot directory that
//! exists is complete. Nothing writes into a committed snapshot again: runs stack them as
//! overlayfs lower layers (read-only by construction) or copy them.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
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
use super::mount::{MountMode, RunRootfs, has_mount_below};
use super::rebase::reapply_over_lowers;
use crate::unpack::tree::{open_dir, remove_any};
use crate::unpack::{
    ChainId, Compression, DiffId, IdShift, LayerBlob, LayerFormat, LayerReport, Limits, chain_ids,
    sync_filesystem, unpack_layer_cancellable,
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

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

const STAGING_PREFIX: &str = ".staging-";

impl SnapshotStore {
    /// Opens (creating if needed) the store below `root` and removes staging directories left
    /// by processes that no longer exist.
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
        store.remove_stale_staging().map_err(store_err)?;
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
        for c in chain {
            if !self.contains(c) {
                return Err(RootfsError::MissingSnapshot(*c));
            }
        }
        let snapshots: Vec<PathBuf> = chain.iter().map(|c| self.snapshot_dir(c)).collect();
        RunRootfs::mount(&snapshots, self.id_shift(), run_dir, mode)
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
        let mut staged: HashMap<usize, (PathBuf, LayerReport)> = HashMap::new();
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
                    let (queue, cancel, chains) = (&queue, &cancel, &chains);
                    s.spawn(move || {
                        loop {
                            let job = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                            let Some((index, layer)) = job else { break };
                            let result = self.stage(index, layer, &chains[index], &cancel[index]);
                            if result.is_err() {
                                for flag in &cancel[index + 1..] {
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
        // 1. implied directories take the attributes of their lower layers (staged or stored);
        // 2. one syncfs makes all staged data durable; 3. renames publish the snapshots.
        let stop = first_error.as_ref().map_or(usize::MAX, |(i, _)| *i);
        let mut commit_error = None;
        let mut ready = Vec::new();
        for (index, label) in labels.iter().enumerate() {
            if index > stop {
                break;
            }
            let Some((dir, report)) = staged.get(&index) else {
                // Already stored: go on. Failed or cancelled: nothing above it may be committed.
                if self.contains(&chains[index]) {
                    continue;
                }
                break;
            };
            let (dir, implied, links) = (
                dir.clone(),
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
                    Some((d, _)) => d.clone(),
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
                        Ok(new_dir) => {
                            self.discard(&dir);
                            if let Some(entry) = staged.get_mut(&index) {
                                entry.0 = new_dir;
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
            let Some((dir, report)) = staged.remove(&index) else {
                continue;
            };
            if let Err(source) = self.commit(&dir, &chains[index]) {
                commit_error = Some(RootfsError::Commit {
                    chain: chains[index],
                    source,
                });
                break;
            }
            reports.insert(index, report);
        }
        for (_, (dir, _)) in staged.drain() {
            self.discard(&dir);
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
        cancel: &AtomicBool,
    ) -> Result<(PathBuf, LayerReport), RootfsError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(RootfsError::Unpack {
                index,
                source: crate::unpack::UnpackError {
                    layer: layer.label,
                    kind: crate::unpack::LayerError::Cancelled,
                },
            });
        }
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!(
            "{STAGING_PREFIX}{}-{}-{n}",
            chain.hex(),
            std::process::id()
        ));
        std::fs::DirBuilder::new()
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
            })?;
        let label = layer.label.clone();
        let blob = match (layer.open)() {
            Ok(b) => b,
            Err(source) => {
                self.discard(&dir);
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
            cancel,
        ) {
            Ok(report) => Ok((dir, report)),
            Err(source) => {
                self.discard(&dir);
                Err(RootfsError::Unpack { index, source })
            }
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
    ) -> Result<PathBuf, RootfsError> {
        let pid = std::process::id();
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let work_base = self.dir.join(format!("{STAGING_PREFIX}rebase-{pid}-{n}"));
        let result = reapply_over_lowers(staged, implied, links, lowers, &work_base, label)
            .and_then(|upper| {
                let target = self
                    .dir
                    .join(format!("{STAGING_PREFIX}{}-{pid}-{n}", chain.hex()));
                std::fs::rename(&upper, &target)
                    .map(|()| target)
                    .map_err(|source| RootfsError::Store {
                        path: upper.clone(),
                        source,
                    })
            });
        // Never delete through a mount that could not be undone.
        if !has_mount_below(&work_base).unwrap_or(true) {
            self.discard(&work_base);
        }
        result
    }

    /// Atomically moves a staged snapshot into place; if another process committed the same
    /// chain id meanwhile, its copy wins and ours is dropped.
    fn commit(&self, staged: &Path, chain: &ChainId) -> io::Result<()> {
        let target = self.snapshot_dir(chain);
        match renameat_with(
            rustix::fs::CWD,
            staged,
            rustix::fs::CWD,
            &target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST | Errno::NOTEMPTY) => {
                self.discard(staged);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Best-effort removal of a staging directory (never following symlinks inside it).
    fn discard(&self, dir: &Path) {
        if let Some(name) = dir.file_name()
            && let Ok(parent) = open_dir(&self.dir)
        {
            let _ = remove_any(std::os::fd::AsFd::as_fd(&parent), name.as_bytes());
        }
    }

    fn remove_stale_staging(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let name: OsString = entry?.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            let path = self.dir.join(&name);
            if alive {
                continue;
            }
            // A rebase interrupted by a crash may have left its overlay mounted.
            let merged = path.join("merged");
            if has_mount_below(&merged)? {
                let _ = rustix::mount::unmount(
                    &merged,
                    rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
                );
            }
            if !has_mount_below(&path)? {
                self.discard(&path);
            }
        }
        Ok(())
    }

    /// Removes a committed snapshot (for garbage collection; the caller makes sure no image
    /// or run still needs it).
    pub fn remove(&self, chain: &ChainId) -> Result<(), RootfsError> {
        let parent = open_dir(&self.dir).map_err(|source| RootfsError::Store {
            path: self.dir.clone(),
            source,
        })?;
        remove_any(std::os::fd::AsFd::as_fd(&parent), chain.hex().as_bytes())
            .map(|_| ())
            .map_err(|e| RootfsError::Store {
                path: self.snapshot_dir(chain),
                source: e.into(),
            })
    }
}

fn is_cancelled(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Unpack { source, .. } if matches!(source.kind, crate::unpack::LayerError::Cancelled))
}
