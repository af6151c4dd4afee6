//! The job's working directory (`tmp/` and `data/`), created under the dockless root and
//! removed on every path: explicitly at the end of the job (so a failure can be reported), and
//! by `Drop` when the pipeline unwinds early.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Removes the working dirs under `parent` whose dockless process is gone (killed before it
/// could clean up); a dir's name ends in `-<pid>` of the process that created it. Dirs of live
/// processes, and names not of this form, are left alone.
pub fn collect_stale(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale job directory")
            }
        }
    }
    removed
}

/// A working directory that removes itself.
#[derive(Debug)]
pub struct WorkDir {
    path: Option<PathBuf>,
}

impl WorkDir {
    /// Creates `<parent>/<name>`; the name must be new (a clash is an error, never a reuse).
    /// It is the runner's alone (0700): the containers reach `/data` through their bind
    /// mounts, which the runtime sets up with the runner's rights. With `--userns` (`group`
    /// = the range's base) its group may pass through (0710), as the container's root
    /// resolves the mount sources with its own host uid and gid.
    pub fn create(parent: &Path, name: &str, group: Option<u32>) -> anyhow::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let path = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create the job directory {}", path.display()))?;
        let dir = WorkDir { path: Some(path) };
        if let Some(gid) = group {
            use std::os::unix::fs::PermissionsExt;
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

    /// Its path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("present until removed")
    }

    /// Removes it with everything the components left inside (links are removed, never
    /// followed).
    pub fn remove(mut self) -> anyhow::Result<()> {
        let path = self.path.take().expect("present until removed");
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("cannot remove the job directory {}", path.display()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the job directory");
        }
    }
}
