//! Images into the stores: pull into the content store, unpack into the snapshot store
//! (while downloading, or from the verified blobs), shared by `pull`, `run`, jobs and builds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dockless_registry::follow::{Follow, FollowError};
use dockless_registry::{
    Client, Digest, ImageRecord, ImageRef, LayerRecord, Platform, Progress, Settings, Store,
};
use dockless_runtime::bundle::ImageConfig;
use dockless_runtime::rootfs::{EnsuredLayer, LayerSource, SnapshotStore};
use dockless_runtime::unpack::{ChainId, Compression, DiffId, IdShift, chain_ids};

use crate::paths::Paths;

/// Pulls an image into the content store, reporting to `progress`.
pub fn pull(
    image: &str,
    platform: &str,
    registry: &Settings,
    store: &Store,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<ImageRecord> {
    pull_until(image, platform, registry, store, progress, None)
}

/// The pull did not finish by its deadline (a job's timeout covers its pulls); what it
/// downloaded so far stays in the store's ingest area for the next pull to resume.
#[derive(Debug, thiserror::Error)]
#[error("the pull of {image} did not finish within the time left ({left:?})")]
pub struct PullDeadline {
    /// The image as named.
    pub image: String,
    /// The time the pull had.
    pub left: Duration,
}

/// [`pull`], stopped at `deadline` (if any) with [`PullDeadline`]: the pull is async, so it
/// is simply dropped at the deadline, its connections with it.
pub fn pull_until(
    image: &str,
    platform: &str,
    registry: &Settings,
    store: &Store,
    progress: Arc<dyn Progress>,
    deadline: Option<Instant>,
) -> anyhow::Result<ImageRecord> {
    let reference = ImageRef::parse(image)?;
    let platform: Platform = platform.parse()?;
    let client = Client::new(registry.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pulling = client.pull(&reference, &platform, store, progress);
    let Some(deadline) = deadline else {
        // The registry's errors already name the image and the registry.
        return Ok(runtime.block_on(pulling)?);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // The timer is made inside the runtime (it registers with the runtime's clock).
    let timed = async { tokio::time::timeout_at(deadline.into(), pulling).await };
    match runtime.block_on(timed) {
        Ok(pulled) => Ok(pulled?),
        Err(_elapsed) => {
            // A blocking task of the dropped pull (a file write) must not hold the job.
            runtime.shutdown_background();
            Err(PullDeadline {
                image: image.to_string(),
                left,
            }
            .into())
        }
    }
}

/// Pulls an image and unpacks its layers while they download: each layer's unpacker reads the
/// blob as it arrives (the runtime verifies the diff id, which the verified config names). If
/// the streamed unpack fails for a reason the pull did not share (say, a download restarted
/// from zero), the layers are unpacked again from the verified blobs.
pub fn pull_and_unpack(
    image: &str,
    platform: &str,
    registry: &Settings,
    paths: &Paths,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<(ImageRecord, Vec<EnsuredLayer>)> {
    pull_and_unpack_until(image, platform, registry, paths, progress, None)
}

/// [`pull_and_unpack`] whose pull stops at `deadline` (see [`pull_until`]); the streamed
/// unpack stops with it.
pub fn pull_and_unpack_until(
    image: &str,
    platform: &str,
    registry: &Settings,
    paths: &Paths,
    progress: Arc<dyn Progress>,
    deadline: Option<Instant>,
) -> anyhow::Result<(ImageRecord, Vec<EnsuredLayer>)> {
    let store = Store::open(paths.store())?;
    let follow = Follow::new(store.clone(), progress);
    std::thread::scope(|scope| {
        let puller = scope.spawn(|| {
            // Closed on every path, a panic included, so no follower waits forever.
            let closer = CloseOnDrop(&follow, Some("the pull ended abnormally".into()));
            let result = pull_until(image, platform, registry, &store, follow.clone(), deadline);
            closer.finish(result.as_ref().err().map(|e| format!("{e:#}")));
            result
        });
        let announced = follow.wait_layers();
        // Leased until the image is recorded: a `gc` or `rmi` sweeping meanwhile keeps the
        // layers this pull unpacks (they are in no image record yet).
        let _lease = match announced
            .as_ref()
            .map(|(_, diff_ids)| lease_layers(diff_ids, paths))
            .transpose()
        {
            Ok(lease) => lease,
            Err(e) => {
                follow.abort(format!("{e:#}"));
                let _ = puller.join().expect("pull thread panicked");
                return Err(e);
            }
        };
        let streamed_layers = announced.as_ref().map(|(layers, _)| layers.clone());
        let streamed = announced.map(|(layers, diff_ids)| {
            ensure(&layers, &diff_ids, paths, |d| {
                Ok(Box::new(follow.reader(d)))
            })
        });
        // The unpacker failed on the bytes themselves (a hostile or oversized layer): stop
        // the download rather than let it run on, and report the unpacker's error.
        if let Some(Err(e)) = streamed {
            if !FollowError::caused(e.as_ref()) {
                follow.abort(format!("{e:#}"));
                // A pull that finished before the abort recorded an image whose layers do not
                // unpack: forget it again, so that no run finds it half usable.
                if let Ok(record) = puller.join().expect("pull thread panicked")
                    && let Err(forget) = store.remove_image(&record.name)
                {
                    tracing::warn!(error = %forget, image = %record.name, "cannot forget the image");
                }
                return Err(e);
            }
            let record = puller.join().expect("pull thread panicked")?;
            tracing::warn!(
                error = format!("{e:#}"),
                "streamed unpack failed; unpacking from the stored blobs"
            );
            let unpacked = unpack(&record, paths)?;
            return Ok((record, unpacked));
        }
        let record = puller.join().expect("pull thread panicked")?;
        let unpacked = match streamed {
            // A mirror that failed mid-pull may have announced another image's layers.
            Some(Ok(u)) if streamed_layers.as_deref() == Some(record.layers.as_slice()) => u,
            Some(_) | None => unpack(&record, paths)?,
        };
        Ok((record, unpacked))
    })
}

fn lease_layers(
    diff_ids: &[Digest],
    paths: &Paths,
) -> anyhow::Result<dockless_runtime::rootfs::SnapshotLease> {
    Ok(snapshots(paths)?.lease(&chains_of(diff_ids)?)?)
}

/// The snapshot store of unpacked layers (beside the content store).
pub fn snapshots(paths: &Paths) -> anyhow::Result<SnapshotStore> {
    Ok(SnapshotStore::open(&paths.root)?)
}

/// Makes sure every layer of `record` is unpacked into the snapshot store from the verified
/// blobs; layers already there are not even opened. Returns the chain ids in manifest order.
pub fn unpack(record: &ImageRecord, paths: &Paths) -> anyhow::Result<Vec<EnsuredLayer>> {
    unpack_into(record, paths, &snapshots(paths)?)
}

/// [`unpack`] into the store of owners shifted into `shift` (`run --userns`).
pub fn unpack_shifted(
    record: &ImageRecord,
    paths: &Paths,
    shift: IdShift,
) -> anyhow::Result<Vec<EnsuredLayer>> {
    unpack_into(
        record,
        paths,
        &SnapshotStore::open_shifted(&paths.root, shift)?,
    )
}

fn unpack_into(
    record: &ImageRecord,
    paths: &Paths,
    snapshots: &SnapshotStore,
) -> anyhow::Result<Vec<EnsuredLayer>> {
    let store = Store::open(paths.store())?;
    ensure_in(snapshots, &record.layers, &record.diff_ids, |d| {
        Ok(Box::new(std::fs::File::open(store.blob_path(d))?))
    })
    .with_context(|| format!("cannot unpack {}", record.name))
}

/// Hands the runtime one reader per layer, opened lazily, and the diff ids.
fn ensure<'a>(
    layers: &[LayerRecord],
    diff_ids: &[Digest],
    paths: &Paths,
    open: impl Fn(&Digest) -> std::io::Result<Box<dyn std::io::Read + Send + 'a>> + Send + Sync + 'a,
) -> anyhow::Result<Vec<EnsuredLayer>> {
    ensure_in(&snapshots(paths)?, layers, diff_ids, open)
}

fn ensure_in<'a>(
    snapshots: &SnapshotStore,
    layers: &[LayerRecord],
    diff_ids: &[Digest],
    open: impl Fn(&Digest) -> std::io::Result<Box<dyn std::io::Read + Send + 'a>> + Send + Sync + 'a,
) -> anyhow::Result<Vec<EnsuredLayer>> {
    let open = Arc::new(open);
    let mut sources = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let (open, digest) = (open.clone(), layer.digest.clone());
        sources.push(LayerSource {
            label: layer.digest.to_string(),
            compression: Compression::from_media_type(&layer.media_type)?,
            diff_id: diff_id.to_string().parse()?,
            open: Box::new(move || open(&digest)),
        });
    }
    let ensured = snapshots.ensure(sources)?;
    let skipped: u64 = ensured
        .iter()
        .filter_map(|l| l.unpacked.as_ref())
        .map(|r| r.stats.devices_skipped)
        .sum();
    if skipped > 0 {
        eprintln!(
            "dockless: note: {skipped} device node(s) of the image not created: rootless \
             (mknod of a device needs the host's root) or a --userns store (its runs are \
             reachable by the unprivileged range); containers get the standard devices bound \
             from the host"
        );
    }
    Ok(ensured)
}

/// Closes a [`Follow`] when dropped (with the message it was given), unless `finish` closed it.
struct CloseOnDrop<'a>(&'a Follow, Option<String>);

impl CloseOnDrop<'_> {
    fn finish(mut self, error: Option<String>) {
        self.1 = None;
        self.0.close(error);
    }
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(error) = self.1.take() {
            self.0.close(Some(error));
        }
    }
}

/// The chain ids of an image's layers (the snapshot keys).
pub fn chains(record: &ImageRecord) -> anyhow::Result<Vec<ChainId>> {
    chains_of(&record.diff_ids)
}

/// The chain ids of the layers whose diff ids (bottom first) are `diff_ids`.
fn chains_of(diff_ids: &[Digest]) -> anyhow::Result<Vec<ChainId>> {
    let diff_ids: Vec<DiffId> = diff_ids
        .iter()
        .map(|d| d.to_string().parse())
        .collect::<Result<_, _>>()?;
    Ok(chain_ids(&diff_ids))
}

/// The runtime's view of a stored image's config (entry point, env, user...).
pub fn image_config(store: &Store, record: &ImageRecord) -> anyhow::Result<ImageConfig> {
    let config = store.read_metadata(&record.config)?;
    ImageConfig::from_image_config_json(&config)
        .with_context(|| format!("image config of {}", record.name))
}
