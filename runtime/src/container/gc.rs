//! Finds and removes what runs killed mid-way left behind: running containers, their
//! cgroups, libcontainer state and run directories.
//!
//! Each run holds an exclusive `flock` on its directory `<state_root>/runs/<id>` from before
//! its container exists until after it is deleted (parent and helper share the lock), so a
//! lock that can be taken means its owners are dead and everything under that id is garbage.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use rustix::fs::FlockOperation;

use super::RunError;

/// Subdirectory of the state root with one directory per run (its bundle, and its lock).
pub(crate) const RUNS_DIR: &str = "runs";
/// Subdirectory of the state root used as libcontainer's state root.
pub(crate) const CONTAINERS_DIR: &str = "containers";
/// Age after which a run directory still being set up (`.new-<id>`) whose lock can be
/// taken is considered abandoned (its creator locks it right after `mkdir`).
const STAGING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// What [`gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Ids of abandoned runs that were cleaned up.
    pub removed: Vec<String>,
    /// Ids skipped because their run is still alive.
    pub alive: Vec<String>,
    /// Abandoned runs that could not be removed this time, with why (the others still are).
    pub failed: Vec<(String, String)>,
}

/// Cleans up every abandoned run under `state_root`; runs still in progress (in this or any
/// other process) are left alone. Safe to call at any time, e.g. at every start.
pub fn gc(state_root: &Path) -> Result<GcReport, RunError> {
    let mut report = GcReport::default();
    let runs = state_root.join(RUNS_DIR);
    for id in list_dir(&runs)? {
        let run_dir = runs.join(&id);
        if id.starts_with('.') {
            collect_staging(&run_dir)?;
            continue;
        }
        let lock = match File::open(&run_dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RunError::Io {
                    what: "cannot open a run directory",
                    path: run_dir,
                    source,
                });
            }
        };
        match lock_run(&lock, false) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                report.alive.push(id);
                continue;
            }
            Err(source) => {
                return Err(RunError::Io {
                    what: "cannot lock a run directory",
                    path: run_dir,
                    source,
                });
            }
        }
        match remove_leftover(state_root, &id) {
            Ok(true) => report.removed.push(id),
            Ok(false) => {}
            // One stuck run must not keep the others (or the caller's own cleanup) waiting.
            Err(e) => report
                .failed
                .push((id, super::error_messages(&e).join(": "))),
        }
    }
    // Container state without a run directory: its helper died during its own cleanup.
    for id in list_dir(&state_root.join(CONTAINERS_DIR))? {
        if !runs.join(&id).exists() && remove_leftover(state_root, &id)? {
            report.removed.push(id);
        }
    }
    Ok(report)
}

/// `flock(LOCK_EX)` on an open run directory. The open file description is shared with the
/// helper through fd inheritance; a plain call rather than nix's `Flock`, whose drop would
/// unlock it for the helper too.
pub(crate) fn lock_run(dir: &File, wait: bool) -> io::Result<()> {
    let op = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    Ok(rustix::fs::flock(dir, op)?)
}

/// A run directory still being set up (`.new-<id>`): removed once its lock can be taken and
/// it is old enough that its creator cannot be between `mkdir` and `flock`.
fn collect_staging(dir: &Path) -> Result<(), RunError> {
    let old = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STAGING_MAX_AGE);
    if old
        && let Ok(lock) = File::open(dir)
        && lock_run(&lock, false).is_ok()
    {
        remove_dir(dir)?;
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<String>, RunError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(RunError::Io {
            what: "cannot list",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// SIGKILLs the recorded init of every abandoned run (lock free) below `state_root`. A
/// rootless runner calls this before it enters its user namespace: the inits of a dead
/// session live in that session's namespace, where only a process of the parent namespace
/// with the owner's uid holds CAP_KILL over every container user. Returns how many it killed.
pub fn kill_abandoned_inits(state_root: &Path) -> Result<usize, RunError> {
    let runs = state_root.join(RUNS_DIR);
    let mut killed = 0;
    for id in list_dir(&runs)? {
        if id.starts_with('.') {
            continue;
        }
        let run_dir = runs.join(&id);
        let Ok(lock) = File::open(&run_dir) else {
            continue;
        };
        if lock_run(&lock, false).is_ok()
            && super::init_record::kill_recorded(&run_dir) == super::init_record::InitFate::Killed
        {
            killed += 1;
        }
    }
    Ok(killed)
}

/// Kills and deletes the container of run `id` (if any) and removes its run directory;
/// returns whether anything was there. The caller guarantees that no live helper owns the run.
pub(crate) fn remove_leftover(state_root: &Path, id: &str) -> Result<bool, RunError> {
    let container_dir = state_root.join(CONTAINERS_DIR).join(id);
    let run_dir = state_root.join(RUNS_DIR).join(id);
    // Without a cgroup (rootless) delete cannot reach the processes; the init can be. One
    // that survives (not ours to signal from here, or stuck in the kernel) keeps its run and
    // record for a later gc; gc goes on with the other runs meanwhile.
    if let super::init_record::InitFate::StillAlive(pid) =
        super::init_record::kill_recorded(&run_dir)
    {
        return Err(RunError::Leftover {
            path: run_dir,
            reason: format!(
                "its init {pid} is still alive (rootless: `dockless gc` ends it from outside the \
                 user namespace)"
            ),
        });
    }
    let mut found = false;
    if container_dir.exists() {
        found = true;
        let deleted = Container::load(container_dir.clone()).and_then(|mut c| c.delete(true));
        // If the state vanished meanwhile, a run that just ended removed it itself.
        if let Err(cause) = deleted
            && container_dir.exists()
        {
            // State unreadable or delete failed half-way: fall back to the cgroup recorded in
            // our own config.json, then drop the state.
            kill_cgroup_from_bundle(&run_dir, cause)?;
            remove_dir(&container_dir)?;
        }
    }
    match std::fs::remove_dir_all(&run_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(found),
        Err(source) => Err(RunError::Io {
            what: "cannot remove",
            path: run_dir,
            source,
        }),
    }
}

fn remove_dir(dir: &Path) -> Result<(), RunError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RunError::Io {
            what: "cannot remove",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// SIGKILLs every task in each v1 controller's (or the unified) cgroup of the run and removes
/// the cgroup directories. `cause` is why libcontainer could not delete it, reported if the
/// bundle does not name the cgroup either.
fn kill_cgroup_from_bundle(run_dir: &Path, cause: LibcontainerError) -> Result<(), RunError> {
    let config = run_dir.join("config.json");
    let Ok(spec) = libcontainer::oci_spec::runtime::Spec::load(&config) else {
        return Err(RunError::LeftoverContainer {
            path: run_dir.to_owned(),
            source: Box::new(cause),
        });
    };
    let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Ok(());
    };
    for dir in cgroup_dirs(&path) {
        for _ in 0..50 {
            let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
                break;
            };
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Every directory a cgroups path maps to: one per mounted v1 hierarchy, or the unified one.
pub(crate) fn cgroup_dirs(cgroups_path: &Path) -> Vec<PathBuf> {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let dir = e.path().join(rel);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    let unified = root.join(rel);
    if unified.is_dir() {
        dirs.push(unified);
    }
    dirs
}
