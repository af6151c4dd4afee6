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

/// What [`sweep_snapshots`] did, over every snapshot store (the plain one and the id-shifted
/// ones of `--userns`).
#[derive(Debug, Default)]
pub struct SnapshotSweep {
    /// Unpacked layers no stored image references, removed.
    pub removed: usize,
    /// Unreferenced layers a live run still stacks on: kept for a later sweep.
    pub in_use: usize,
    /// Staging directories of unpacks whose process is gone, removed.
    pub staging: usize,
}

/// Removes the unpacked layers no stored image references (after `rmi`, or leaked by a run
/// that outlived its image) and what killed unpacks left. The image index stays locked
/// meanwhile, so a pull cannot record an image whose layers are being swept; a pull still
/// unpacking holds leases on its layers, as a run does, and those are kept.
pub fn sweep_snapshots(paths: &Paths) -> anyhow::Result<SnapshotSweep> {
    let store = dockless_registry::Store::open(paths.store())?;
    store.with_images_locked(|images| {
        let mut keep = std::collections::HashSet::new();
        for record in images.values() {
            keep.extend(crate::stages::pull::chains(record)?);
        }
        let mut sweep = SnapshotSweep::default();
        for snapshots in dockless_runtime::rootfs::SnapshotStore::open_all(&paths.root)? {
            sweep.staging += snapshots.remove_stale_staging()?;
            let swept = snapshots.remove_unreferenced(&keep)?;
            sweep.removed += swept.removed.len();
            sweep.in_use += swept.in_use.len();
        }
        Ok(sweep)
    })?
}
