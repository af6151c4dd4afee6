//! What killed runs left behind: their containers (the runtime's `gc`) and their rootfs slots
//! (the runtime's [`RunSlots`](dockless_runtime::rootfs::RunSlots)). Every run collects
//! first; `dockless gc` collects on demand.

use anyhow::Context as _;

use crate::paths::Paths;

/// Cleans up abandoned containers and rootfs slots; live runs (in any process) are untouched.
/// Cheap when there is nothing to do, so every `run` calls it first. Returns how many
/// containers and root filesystems were removed.
pub fn collect(paths: &Paths) -> anyhow::Result<(usize, usize)> {
    let report = dockless_runtime::container::gc(&paths.containers())
        .context("cannot clean up abandoned containers")?;
    for (id, why) in &report.failed {
        eprintln!("dockless: warning: abandoned run {id} not removed yet: {why}");
    }
    let slots = paths.run_slots().collect_abandoned()?;
    for (dir, e) in &slots.busy {
        tracing::warn!(
            dir = %dir.display(),
            error = format!("{e:#}"),
            "abandoned rootfs still busy; left for the next gc"
        );
    }
    Ok((report.removed.len(), slots.removed))
}

/// [`collect`] before a run or job: leftovers of killed runs must not stop it, so a failure is
/// only reported (`dockless gc` retries).
pub fn collect_before_run(paths: &Paths) {
    if let Err(e) = collect(paths) {
        tracing::warn!(
            error = format!("{e:#}"),
            "cleaning up after earlier runs failed; `dockless gc` retries"
        );
    }
}
