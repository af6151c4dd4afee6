//! `dockless gc`: removes what dead runs left behind and says what it did.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::paths::Paths;
use crate::stages::gc::collect;

/// Removes what dead runs left behind and says what it did.
pub fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    let (containers, rootfs) = collect(paths)?;
    // A partial download whose pull is not running is removed whatever its age (a killed pull
    // on a full disk may have left most of it); a later pull starts that blob again. Other
    // ingest leftovers (a killed `load`'s temp files) go after a day.
    let store = dockless_registry::Store::open(paths.store())?;
    let partials = store.collect_partials()?;
    let bytes: u64 = partials.iter().map(|p| p.bytes).sum();
    store.collect_ingest(std::time::Duration::from_secs(24 * 3600))?;
    println!(
        "removed {containers} abandoned container(s), {rootfs} abandoned root filesystem(s) \
         and {} partial download(s) of pulls no longer running ({})",
        partials.len(),
        crate::units::size_text(bytes, crate::units::SizeStyle::Table)
    );
    let swept = crate::stages::gc::sweep_snapshots(paths)?;
    println!(
        "removed {} unpacked layer(s) no image references ({} kept while a run uses them) and \
         {} unfinished unpack(s)",
        swept.removed, swept.in_use, swept.staging
    );
    // Killed jobs' working dirs hold their decrypted configuration: gone once the job is.
    let jobs = crate::pipeline::workdir::collect_stale(&paths.jobs());
    println!("removed {jobs} abandoned job directory(ies)");
    // A killed worker's queued jobs' files (the job, its configuration): gone with it.
    let queued = crate::worker::collect_abandoned(paths);
    if queued > 0 {
        println!("removed {queued} abandoned queued job file folder(s)");
    }
    // Snapshots of the format before `user.overlay` marks (snapshots-v1) are never read again;
    // a run of an older dockless could still stack on them, so only when none is alive.
    let old = paths.root.join("snapshots-v1");
    if old.is_dir() && !paths.run_slots().any_alive()? {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {}", old.display()))?;
        println!("removed {} (snapshots of an earlier format)", old.display());
    }
    Ok(ExitCode::SUCCESS)
}
