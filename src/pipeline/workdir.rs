//! The job's working directory (`tmp/` and `data/`), created under the dockless root and
//! removed on every path: explicitly at the end of the job (so a failure can be reported), and
//! by `Drop` when the pipeline unwinds early.
//!
//! It holds the decrypted configuration, so a job killed before it could clean up must not
//! leave it for long: beside every dir `<name>` is `<name>.lock`, locked (flock) for as long
//! as the job lives. The kernel drops the lock with the job's last file descriptor, SIGKILL
//! included, so a dir whose lock can be taken belongs to a dead job and [`collect_stale`]
//! (called by every job and by `dockless gc`) removes it. The lock is taken under
//! `.<name>.lock.new` (a name the collector never takes for a live job's) and renamed into
//! place before the dir exists: the collector never sees an unlocked dir of a live job.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Mode of the folder of job dirs: the runner's alone; `--userns` jobs make it passable
/// (0711) for the range, which must reach its job dir's `data/` through it.
const JOBS_DIR_MODE: u32 = 0o700;

/// Removes the working dirs under `parent` whose job is gone (killed before it could clean
/// up): their lock can be taken. Dirs of an older dockless, which have no lock, fall back to
/// the old rule (their name ends in `-<pid>` of a process that is gone). Returns how many dirs
/// were removed.
pub fn collect_stale(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let path = entry.path();
        if let Some(claiming) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".lock.new"))
        {
            // A job killed between taking its lock and naming it: no dir was created yet. Only
            // once it is a minute old: a job starting now creates the file before it locks it.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if old && lock_is_free(&path) && !parent.join(claiming).exists() {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if let Some(dir_name) = name.strip_suffix(".lock") {
            if !lock_is_free(&path) {
                continue; // a live job holds it
            }
            let dir = parent.join(dir_name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove a stale job directory");
                    continue;
                }
            }
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if parent.join(format!("{name}.lock")).exists() || !entry.path().is_dir() {
            continue; // the lock decides (above)
        }
        // An older dockless's dir, without a lock.
        let Some(pid) = name
            .rsplit_once('-')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale job directory")
            }
        }
    }
    removed
}

/// The jobs living under `parent` (their lock is held), as [`WorkDir::describe`] described
/// them, oldest first.
pub fn live(parent: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut jobs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_lock = path.extension().is_some_and(|e| e == "lock")
            && !entry.file_name().to_string_lossy().starts_with('.');
        if !is_lock || lock_is_free(&path) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(info @ serde_json::Value::Object(_)) = serde_json::from_str(&text) {
            jobs.push(info);
        }
    }
    jobs.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
    jobs
}

/// Whether nobody holds the lock at `path` (a missing file counts as held: another collector
/// took it).
fn lock_is_free(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| f.try_lock().is_ok())
}

/// A working directory that removes itself, locked for as long as it lives.
#[derive(Debug)]
pub struct WorkDir {
    path: Option<PathBuf>,
    lock_path: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Creates `<parent>/<name>`; the name must be new (a clash is an error, never a reuse).
    /// It is the runner's alone (0700): the containers reach `/data` through their bind
    /// mounts, which the runtime sets up with the runner's rights. With `--userns` (`group`
    /// = the range's base) its group may pass through (0710), as the container's root
    /// resolves the mount sources with its own host uid and gid.
    pub fn create(parent: &Path, name: &str, group: Option<u32>) -> anyhow::Result<WorkDir> {
        create_parent(parent, group.is_some())?;
        let path = parent.join(name);
        let claiming = parent.join(format!(".{name}.lock.new"));
        let lock_path = parent.join(format!("{name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&claiming)
            .with_context(|| format!("cannot create the job's lock {}", claiming.display()))?;
        let locked = lock
            .lock()
            .and_then(|()| std::fs::rename(&claiming, &lock_path));
        if let Err(e) = locked {
            let _ = std::fs::remove_file(&claiming);
            return Err(anyhow::Error::new(e)
                .context(format!("cannot lock the job directory {}", path.display())));
        }
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&path) {
            let _ = std::fs::remove_file(&lock_path);
            return Err(anyhow::Error::new(e).context(format!(
                "cannot create the job directory {}",
                path.display()
            )));
        }
        let dir = WorkDir {
            path: Some(path),
            lock_path,
            _lock: lock,
        };
        if let Some(gid) = group {
            std::os::unix::fs::chown(dir.path(), None, Some(gid))
                .and_then(|()| {
                    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o710))
                })
                .with_context(|| {
                    format!("cannot open {} to the --userns range", dir.path().display())
                })?;
        }
        Ok(dir)
    }

    /// Writes what the job is (`dockless ps` shows it) into its lock file: the lock says
    /// whether the job lives, the file what it is.
    pub fn describe(&self, info: &serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut file = &self._lock;
        file.set_len(0)
            .and_then(|()| file.write_all(info.to_string().as_bytes()))
            .with_context(|| format!("cannot write {}", self.lock_path.display()))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("present until removed")
    }

    /// Removes it with everything the components left inside (links are removed, never
    /// followed), then its lock.
    pub fn remove(mut self) -> anyhow::Result<()> {
        let path = self.path.take().expect("present until removed");
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("cannot remove the job directory {}", path.display()))?;
        let _ = std::fs::remove_file(&self.lock_path);
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.lock_path);
                }
                // The lock file stays: once this process is gone, the collector retries.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the job directory")
                }
            }
        }
    }
}

/// Creates the folder of job dirs (0700, whatever the umask), made passable (0711) for a
/// `--userns` job; an existing one readable by others (an older dockless's 0755) is narrowed
/// to 0711.
fn create_parent(parent: &Path, userns: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Some(root) = parent.parent() {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
    }
    match std::fs::DirBuilder::new()
        .mode(JOBS_DIR_MODE)
        .create(parent)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot create {}", parent.display()))
            );
        }
    }
    let mode = std::fs::metadata(parent)
        .with_context(|| format!("cannot read {}", parent.display()))?
        .mode()
        & 0o7777;
    let wanted = if userns || mode & 0o011 != 0 {
        0o711
    } else {
        JOBS_DIR_MODE
    };
    if mode != wanted {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(wanted))
            .with_context(|| format!("cannot set the mode of {}", parent.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_jobs_dir_is_kept_and_a_dead_ones_collected() {
        let parent = tempfile::tempdir().unwrap();
        let jobs = parent.path().join("jobs-v1");
        let live = WorkDir::create(&jobs, "run-1", None).unwrap();
        // A dead job: its lock file stays, nobody holds the lock.
        std::fs::create_dir_all(jobs.join("run-2/data")).unwrap();
        std::fs::write(jobs.join("run-2.lock"), "").unwrap();
        // A lock-less dir of an older dockless whose pid is alive (ours) is kept.
        let old = jobs.join(format!("old-{}", std::process::id()));
        std::fs::create_dir(&old).unwrap();
        assert_eq!(collect_stale(&jobs), 1);
        assert!(live.path().is_dir());
        assert!(!jobs.join("run-2").exists() && !jobs.join("run-2.lock").exists());
        assert!(old.is_dir());
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&jobs).unwrap().mode() & 0o7777, 0o700);
            assert_eq!(
                std::fs::metadata(live.path()).unwrap().mode() & 0o7777,
                0o700
            );
        }
        live.remove().unwrap();
        std::fs::remove_dir(&old).unwrap();
        let left: Vec<_> = std::fs::read_dir(&jobs).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
