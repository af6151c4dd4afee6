//! `dockless gc` and the per-run rootfs slots it cleans up.
//!
//! A runner killed with SIGKILL leaves its container (the runtime's `gc` finds it) and its
//! overlay mount (found here): each run's rootfs directory is guarded by a lock file held for
//! the run's lifetime, so a directory whose lock can be taken belongs to a dead run.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use dockless_runtime::rootfs::remove_leftover_run;

use super::Paths;

/// Removes what dead runs left behind and says what it did.
pub fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    let (containers, rootfs) = collect(paths)?;
    // Partial downloads are kept for a day so that an interrupted pull can resume.
    let downloads = dockless_registry::Store::open(paths.store())?
        .collect_ingest(std::time::Duration::from_secs(24 * 3600))?;
    println!(
        "removed {containers} abandoned container(s), {rootfs} abandoned root filesystem(s) \
         and {downloads} expired partial download(s)"
    );
    // Snapshots of the format before `user.overlay` marks (snapshots-v1) are never read again;
    // a run of an older dockless could still stack on them, so only when none is alive.
    let old = paths.root.join("snapshots-v1");
    if old.is_dir() && !runs_alive(paths)? {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
        println!("removed {} (snapshots of an earlier format)", old.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether any run (in any process) is alive: its slot lock is held.
pub fn runs_alive(paths: &Paths) -> anyhow::Result<bool> {
    let Ok(entries) = std::fs::read_dir(paths.rootfs_runs()) else {
        return Ok(false);
    };
    for entry in entries {
        let path = entry?.path();
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

/// Cleans up abandoned containers and rootfs slots; live runs (in any process) are untouched.
/// Cheap when there is nothing to do, so every `run` calls it first.
pub fn collect(paths: &Paths) -> anyhow::Result<(usize, usize)> {
    let report = dockless_runtime::container::gc(&paths.containers())
        .context("cannot clean up abandoned containers")?;
    for (id, why) in &report.failed {
        eprintln!("dockless: warning: abandoned run {id} not removed yet: {why}");
    }
    let mut rootfs = 0;
    let dir = paths.rootfs_runs();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((report.removed.len(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open {}", lock_path.display()));
            }
        };
        if lock.try_lock().is_err() {
            continue; // a live run holds it
        }
        let run_dir = dir.join(id);
        if run_dir.exists() {
            // The dead runner's helper may still be tearing its container down inside this
            // overlay: then removal fails for now, and the next gc finishes the job.
            if let Err(e) = remove_leftover_run(&run_dir) {
                tracing::warn!(
                    dir = %run_dir.display(),
                    error = format!("{e:#}"),
                    "abandoned rootfs still busy; left for the next gc"
                );
                continue;
            }
            rootfs += 1;
        }
        match std::fs::remove_file(&lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", lock_path.display()));
            }
        }
    }
    Ok((report.removed.len(), rootfs))
}

static SLOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A per-run rootfs directory name, locked for as long as the run lives.
pub struct RootfsSlot {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl RootfsSlot {
    /// Claims a fresh slot (the directory itself is created by the runtime).
    pub fn claim(paths: &Paths) -> anyhow::Result<RootfsSlot> {
        let base = paths.rootfs_runs();
        std::fs::create_dir_all(&base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        // Passable (a `--userns` container's root must reach its run dir) but not listable.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711))
                .with_context(|| format!("cannot set the mode of {}", base.display()))?;
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
            .open(&claiming)
            .with_context(|| format!("cannot create {}", claiming.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", claiming.display()))?;
        std::fs::rename(&claiming, &lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        Ok(RootfsSlot {
            dir: base.join(id),
            lock_path,
            _lock: lock,
        })
    }

    /// Where the runtime mounts this run's rootfs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run is over and its rootfs removed: drop the lock file too.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}
