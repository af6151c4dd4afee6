//! Per-run rootfs slots and the lock protocol that tells a live run's from a dead one's.
//!
//! Every run mounts its rootfs in a directory of its own under `<root>/rootfs-v1`, guarded by
//! `<id>.lock`, a file locked (flock) for as long as the run lives. A runner killed with
//! SIGKILL drops its lock with its last file descriptor, so a slot whose lock can be taken
//! belongs to a dead run and [`RunSlots::collect_abandoned`] may remove it. A slot is locked
//! under `.<id>.lock.new` (a name gc ignores) before it is renamed into place: gc never sees
//! an unlocked new slot.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{RootfsError, remove_leftover_run};

/// The slots directory's name under the state root (versioned like every on-disk layout).
const SLOTS_DIR: &str = "rootfs-v1";

/// A slot's lock file or directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct SlotError {
    /// What was tried (`create`, `lock`, `list`...).
    op: &'static str,
    /// Where.
    path: PathBuf,
    /// The OS error.
    #[source]
    source: io::Error,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SlotError + 'a {
    move |source| SlotError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The per-run rootfs slots of one state root: where runs claim theirs and gc finds those of
/// dead runs. Kept in the runtime because the lock protocol and the mounts it guards are the
/// runtime's; the binary only chooses the state root.
#[derive(Debug, Clone)]
pub struct RunSlots {
    dir: PathBuf,
}

/// What [`RunSlots::collect_abandoned`] did.
#[derive(Debug, Default)]
pub struct SlotsCollected {
    /// Root filesystems of dead runs removed.
    pub removed: usize,
    /// Dead runs' root filesystems that could not be removed yet (their helper may still be
    /// tearing the container down inside): the next collection retries them.
    pub busy: Vec<(PathBuf, RootfsError)>,
}

static SLOT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RunSlots {
    /// The slots under the state directory `root`; nothing is created until a claim.
    pub fn new(root: &Path) -> RunSlots {
        RunSlots {
            dir: root.join(SLOTS_DIR),
        }
    }

    /// The directory that holds every slot (a `--userns` container's root must be able to
    /// pass through it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims a fresh slot, locked for as long as the returned value lives (the directory
    /// itself is created by [`super::SnapshotStore::mount_run`]).
    pub fn claim(&self) -> Result<RootfsSlot, SlotError> {
        let base = &self.dir;
        std::fs::create_dir_all(base).map_err(io_err("create", base))?;
        // Passable (a `--userns` container's root must reach its run dir) but not listable.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711))
                .map_err(io_err("set the mode of", base))?;
        }
        let id = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            SLOT_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Locked under a name gc ignores, then renamed: gc never sees an unlocked new slot.
        let claiming = base.join(format!(".{id}.lock.new"));
        let lock_path = base.join(format!("{id}.lock"));
        let lock = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&claiming)
            .map_err(io_err("create", &claiming))?;
        lock.lock().map_err(io_err("lock", &claiming))?;
        std::fs::rename(&claiming, &lock_path).map_err(io_err("create", &lock_path))?;
        Ok(RootfsSlot {
            dir: base.join(id),
            lock_path,
            _lock: lock,
        })
    }

    /// Whether any run (in any process) is alive: its slot lock is held. Snapshots must stay
    /// while one is, since its overlay stacks on them.
    pub fn any_alive(&self) -> Result<bool, SlotError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(false);
        };
        for entry in entries {
            let path = entry.map_err(io_err("list", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == "lock")
                || path.to_string_lossy().ends_with(".lock.new")
            {
                match File::open(&path) {
                    Ok(f) if f.try_lock().is_err() => return Ok(true),
                    _ => {}
                }
            }
        }
        Ok(false)
    }

    /// Removes the root filesystems and locks of dead runs; live runs (in any process) are
    /// untouched. Cheap when there is nothing to do, so every run may call it first.
    pub fn collect_abandoned(&self) -> Result<SlotsCollected, SlotError> {
        let mut collected = SlotsCollected::default();
        let dir = &self.dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(collected),
            Err(e) => return Err(io_err("list", dir)(e)),
        };
        for entry in entries {
            let name = entry
                .map_err(io_err("list", dir))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            // `.<id>.lock.new` files are slots being claimed; only `<id>.lock` counts.
            let Some(id) = name
                .strip_suffix(".lock")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            let lock_path = dir.join(&name);
            let lock = match File::open(&lock_path) {
                Ok(f) => f,
                // Another gc (a concurrent run) collected it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", &lock_path)(e)),
            };
            if lock.try_lock().is_err() {
                continue; // a live run holds it
            }
            let run_dir = dir.join(id);
            if run_dir.exists() {
                // The dead runner's helper may still be tearing its container down inside
                // this overlay: then removal fails for now, and the next gc finishes the job.
                if let Err(e) = remove_leftover_run(&run_dir) {
                    collected.busy.push((run_dir, e));
                    continue;
                }
                collected.removed += 1;
            }
            match std::fs::remove_file(&lock_path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &lock_path)(e)),
            }
        }
        Ok(collected)
    }
}

/// A per-run rootfs directory name, locked for as long as the run lives.
#[derive(Debug)]
pub struct RootfsSlot {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl RootfsSlot {
    /// Where the runtime mounts this run's rootfs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run is over and its rootfs removed: drop the lock file too. (Dropped without
    /// this, the slot's lock is released and gc removes what is left.)
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_slot_is_kept_and_a_dead_one_collected() {
        let root = tempfile::tempdir().unwrap();
        let slots = RunSlots::new(root.path());
        assert!(!slots.any_alive().unwrap());
        let live = slots.claim().unwrap();
        assert!(live.dir().starts_with(slots.dir()));
        assert!(slots.any_alive().unwrap());
        // A dead run: its lock file stays, its lock is gone.
        let dead = slots.claim().unwrap();
        std::fs::create_dir(dead.dir()).unwrap();
        let dead_dir = dead.dir().to_path_buf();
        drop(dead);
        let collected = slots.collect_abandoned().unwrap();
        assert_eq!(collected.removed, 1, "{:?}", collected.busy);
        assert!(!dead_dir.exists());
        assert!(slots.any_alive().unwrap());
        live.release();
        assert!(!slots.any_alive().unwrap());
    }
}
