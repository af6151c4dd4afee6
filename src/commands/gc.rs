//! `dockless gc`: removes what dead runs left behind and says what it did.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::paths::Paths;
use crate::stages::gc::collect;

/// Removes what dead runs left behind and says what it did.
pub fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    let (containers, rootfs) = collect(paths)?;
    // Killed jobs' working dirs hold their decrypted configuration: gone once the job is.
    let jobs = crate::pipeline::workdir::collect_stale(&paths.jobs());
    // Partial downloads are kept for a day so that an interrupted pull can resume.
    let downloads = dockless_registry::Store::open(paths.store())?
        .collect_ingest(std::time::Duration::from_secs(24 * 3600))?;
    println!(
        "removed {containers} abandoned container(s), {rootfs} abandoned root filesystem(s), \
         {jobs} abandoned job directory(ies) and {downloads} expired partial download(s)"
    );
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
