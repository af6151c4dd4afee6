//! Keboola's artifacts in a job (see [`dockless_staging::artifacts`]): the archives the
//! configuration asks for are unpacked into `/data/artifacts/in/...` before the first
//! container, through the runtime's hardened unpacker (the rules image layers get: every path
//! inside the target, no link followed out, size and entry limits, no device nodes), since
//! whoever stored them may be hostile. Storing this run's is part of the output transaction.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use dockless_runtime::unpack::{Compression, Limits, unpack_archive};
use dockless_staging::Storage;
use dockless_staging::artifacts::Download;

/// Bounds of one unpacked artifact (Keboola caps the archive at 1 GiB; an archive may still
/// expand far beyond it).
fn limits() -> Limits {
    Limits {
        max_layer_bytes: 8 << 30,
        max_image_bytes: 8 << 30,
        max_entries: 1_000_000,
        max_file_size: 8 << 30,
        ..Limits::default()
    }
}

/// Unpacks one stored archive into `data/<download.target>` (which must not exist yet); on
/// error nothing of it is left.
pub fn unpack(storage: &dyn Storage, download: &Download, data: &Path) -> anyhow::Result<()> {
    let target = data.join(&download.target);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::create_dir(&target).with_context(|| {
        format!(
            "artifact file {}: cannot create {}",
            download.file_id,
            download.target.display()
        )
    })?;
    let unpacked = storage
        .open_file(download.file_id)
        .map_err(anyhow::Error::from)
        .and_then(|slices| {
            // A file's slices, read one after the other.
            let blob = slices.into_iter().fold(
                Box::new(std::io::empty()) as Box<dyn Read + Send>,
                |all, slice| Box::new(all.chain(slice)),
            );
            unpack_archive(
                &format!("artifact file {}", download.file_id),
                blob,
                Compression::Gzip,
                &target,
                &limits(),
            )
            .map_err(anyhow::Error::from)
        });
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&target);
        return Err(e.context(format!(
            "cannot unpack artifact file {} into /data/{}",
            download.file_id,
            download.target.display()
        )));
    }
    Ok(())
}
