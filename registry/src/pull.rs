//! `pull`: reference -> manifest -> config -> layers, into the content store.
//!
//! Each blob streams into its own ingest file with the descriptor size enforced as bytes
//! arrive and the digest checked before it becomes visible. A dropped connection resumes
//! with `Range` from the bytes already on disk; a registry that ignores `Range` gets a
//! clean restart. Layers download concurrently; a blob already stored is not fetched.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oci_client::manifest::OciDescriptor;
use reqwest::header::{CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, StatusCode};

use crate::client::{Client, Session};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::manifest::{self, Fetched};
use crate::platform::{self, Platform};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, Ingest, IngestWriter, LayerRecord, Store};

/// Callbacks for progress display; every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The manifest was resolved to `digest`.
    fn resolved(&self, _image: &str, _digest: &Digest) {}
    /// The config is verified: these are the image's layers and diff ids.
    fn layers(&self, _layers: &[LayerRecord], _diff_ids: &[Digest]) {}
    /// A blob download starts (or resumes at `offset`).
    fn blob_started(&self, _digest: &Digest, _size: u64, _offset: u64) {}
    /// `bytes` more bytes of the blob arrived.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// The bytes on disk were dropped and the blob restarts from zero.
    fn blob_reset(&self, _digest: &Digest) {}
    /// An attempt failed and the download goes on from what is on disk.
    fn blob_retrying(&self, _digest: &Digest, _attempt: u32, _reason: &str) {}
    /// The blob is in the store (`cached`: it already was).
    fn blob_finished(&self, _digest: &Digest, _cached: bool) {}
    /// Asked while blobs download: `Some(reason)` stops the pull with [`Error::Aborted`].
    /// [`crate::follow::Follow`] answers it when the reader of a download gave up, so an
    /// unpack error does not leave the download running.
    fn cancelled(&self) -> Option<String> {
        None
    }
}

/// Progress that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

impl Client {
    /// Pulls `image` for `platform` into `store` and records it. A digest-pinned image that is
    /// already stored needs no network at all.
    ///
    /// The manifest's claims are checked against [`crate::Limits`] before any blob is fetched,
    /// and every download keeps the free-space reserve and the stall rule. Dropping the future
    /// (a job's deadline: `tokio::time::timeout_at`) stops every download at once; their locks
    /// are released and their bytes stay for the next pull to resume or for
    /// [`Store::collect_partials`].
    pub async fn pull(
        &self,
        image: &ImageRef,
        platform: &Platform,
        store: &Store,
        progress: Arc<dyn Progress>,
    ) -> Result<ImageRecord> {
        if let Some(pinned) = image.digest()
            && let Some(found) = stored_by_digest(store, image, pinned)?
        {
            return Ok(found);
        }
        let endpoints = self.endpoints(image);
        let mut last_error = None;
        for (i, host) in endpoints.iter().enumerate() {
            let is_last = i + 1 == endpoints.len();
            match self
                .pull_from(image, host, platform, store, progress.clone())
                .await
            {
                Ok(record) => return Ok(record),
                Err(e) if !is_last => {
                    tracing::warn!(mirror = %host, error = %e, "mirror failed, trying the next endpoint");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("at least one endpoint"))
    }

    async fn pull_from(
        &self,
        image: &ImageRef,
        host: &str,
        platform: &Platform,
        store: &Store,
        progress: Arc<dyn Progress>,
    ) -> Result<ImageRecord> {
        let mut session = self.session(image, host).await?;
        let name = image.to_string();
        let (manifest_body, digest, index_digest) =
            resolve(&mut session, image, platform, store).await?;
        let Fetched::Image(manifest, _) = manifest::parse(&name, &manifest_body, None)? else {
            return Err(Error::Manifest {
                image: name,
                reason: "an index was nested inside an index".into(),
            });
        };
        progress.resolved(&name, &digest);

        let config = descriptor(&name, &manifest.config)?;
        if config.size > crate::store::MAX_METADATA_BYTES {
            return Err(Error::Manifest {
                image: name,
                reason: format!(
                    "config blob of {} bytes is larger than the {} byte limit",
                    config.size,
                    crate::store::MAX_METADATA_BYTES
                ),
            });
        }
        let layers: Vec<Blob> = manifest
            .layers
            .iter()
            .map(|l| descriptor(&name, l))
            .collect::<Result<_>>()?;
        // The descriptors are the registry's claims: check them before any blob byte moves.
        check_caps(&name, &self.settings.limits, &layers)?;
        check_space(&name, store, &self.settings.limits, &config, &layers)?;
        fetch_blob(&mut session.clone(), store, &config, progress.as_ref()).await?;
        let config_bytes = store.read_metadata(&config.digest)?;
        let diff_ids = manifest::diff_ids(&name, &config_bytes, manifest.layers.len())?;

        let records: Vec<LayerRecord> = layers
            .iter()
            .map(|b| LayerRecord {
                digest: b.digest.clone(),
                size: b.size,
                media_type: b.media_type.clone(),
            })
            .collect();
        progress.layers(&records, &diff_ids);
        fetch_layers(
            &session,
            store,
            &layers,
            self.settings.concurrent_layers,
            progress,
        )
        .await?;

        // A blob already stored is not fetched, so its descriptor size was never checked against
        // it: record what the verified blob really weighs (`images` shows it).
        let layers = records
            .into_iter()
            .map(|l| {
                Ok(LayerRecord {
                    size: store.blob_size(&l.digest)?,
                    ..l
                })
            })
            .collect::<Result<_>>()?;
        let record = ImageRecord {
            name,
            digest,
            index_digest,
            config: config.digest,
            layers,
            diff_ids,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        store.record_image(record.clone())?;
        Ok(record)
    }
}

/// A validated descriptor: the digest parsed, the size non-negative.
#[derive(Clone, Debug)]
struct Blob {
    digest: Digest,
    size: u64,
    media_type: String,
}

fn descriptor(image: &str, d: &OciDescriptor) -> Result<Blob> {
    let digest = Digest::parse(&d.digest)?;
    let size = u64::try_from(d.size).map_err(|_| Error::Manifest {
        image: image.to_string(),
        reason: format!("descriptor {} has negative size {}", d.digest, d.size),
    })?;
    Ok(Blob {
        digest,
        size,
        media_type: d.media_type.clone(),
    })
}

/// Refuses a manifest whose layer count or declared sizes exceed the caps.
fn check_caps(image: &str, limits: &Limits, layers: &[Blob]) -> Result<()> {
    if layers.len() > limits.max_layers {
        return Err(Error::TooManyLayers {
            image: image.to_string(),
            count: layers.len(),
            max: limits.max_layers,
        });
    }
    if let Some(big) = layers.iter().find(|l| l.size > limits.max_layer_bytes) {
        return Err(Error::LayerTooLarge {
            image: image.to_string(),
            blob: big.digest.to_string(),
            size: big.size,
            max: limits.max_layer_bytes,
        });
    }
    let total = layers
        .iter()
        .fold(0u64, |sum, l| sum.saturating_add(l.size));
    if total > limits.max_image_bytes {
        return Err(Error::ImageTooLarge {
            image: image.to_string(),
            size: total,
            max: limits.max_image_bytes,
        });
    }
    Ok(())
}

/// Refuses a pull whose missing blobs would eat into the free-space reserve (bytes of a
/// partial download already on disk are not needed again).
fn check_space(
    image: &str,
    store: &Store,
    limits: &Limits,
    config: &Blob,
    layers: &[Blob],
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let needed = std::iter::once(config)
        .chain(layers)
        .filter(|b| seen.insert(&b.digest) && !store.has_blob(&b.digest))
        .map(|b| {
            let partial = std::fs::metadata(store.partial_path(&b.digest)).map_or(0, |m| m.len());
            b.size.saturating_sub(partial)
        })
        .fold(0u64, u64::saturating_add);
    let path = store.ingest_dir();
    let available = crate::limits::available_bytes(&path)?;
    if needed.saturating_add(limits.free_space_reserve) > available {
        return Err(Error::NoSpace {
            what: image.to_string(),
            path,
            needed,
            available,
            reserve: limits.free_space_reserve,
        });
    }
    Ok(())
}

fn stored_by_digest(
    store: &Store,
    image: &ImageRef,
    pinned: &Digest,
) -> Result<Option<ImageRecord>> {
    // Only a pin to the platform manifest itself is unambiguous; a pinned index still has to
    // be resolved for the requested platform (from the stored index, without a GET).
    let wanted = image.with_digest(pinned).to_string();
    let found = store.images()?.into_values().find(|r| {
        r.digest == *pinned
            && ImageRef::parse(&r.name).is_ok_and(|n| n.with_digest(pinned).to_string() == wanted)
    });
    Ok(found.filter(|r| {
        store.has_blob(&r.config) && r.layers.iter().all(|l| store.has_blob(&l.digest))
    }))
}

/// Resolves the reference to one image manifest: (body, manifest digest, index digest).
async fn resolve(
    session: &mut Session,
    image: &ImageRef,
    platform: &Platform,
    store: &Store,
) -> Result<(Vec<u8>, Digest, Option<Digest>)> {
    let name = image.to_string();
    let key = image.manifest_key();
    let (body, digest) = manifest_bytes(session, store, &key, image.digest().cloned()).await?;
    match manifest::parse(&name, &body, None)? {
        Fetched::Image(..) => Ok((body, digest, None)),
        Fetched::Index(index, _) => {
            let entry =
                platform
                    .select(&index.manifests)
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        image: name.clone(),
                        platform: platform.to_string(),
                        available: platform::describe(&index.manifests),
                    })?;
            let chosen = Digest::parse(&entry.digest)?;
            let (child, child_digest) =
                manifest_bytes(session, store, &chosen.to_string(), Some(chosen.clone())).await?;
            if i64::try_from(child.len()).ok() != Some(entry.size) {
                return Err(Error::Manifest {
                    image: name,
                    reason: format!(
                        "manifest {chosen} is {} bytes, the index says {}",
                        child.len(),
                        entry.size
                    ),
                });
            }
            Ok((child, child_digest, Some(digest)))
        }
    }
}

/// A manifest's bytes: from the store when its digest is known and stored (a HEAD tells the
/// digest of a tag without spending pull quota), else from the registry; stored afterwards.
async fn manifest_bytes(
    session: &mut Session,
    store: &Store,
    key: &str,
    pinned: Option<Digest>,
) -> Result<(Vec<u8>, Digest)> {
    let known = match pinned.clone() {
        Some(d) => Some(d),
        // Some registries refuse HEAD (405 and the like): then the GET below tells the digest.
        None => match manifest::head_digest(session, key).await {
            Ok(d) => d,
            Err(Error::Status { .. }) => None,
            Err(e) => return Err(e),
        },
    };
    if let Some(d) = known
        && store.has_blob(&d)
    {
        return Ok((store.read_metadata(&d)?, d));
    }
    let (body, digest, _content_type) = manifest::fetch(session, key, pinned.as_ref()).await?;
    store.put_metadata(&body)?;
    Ok((body, digest))
}

async fn fetch_layers(
    session: &Session,
    store: &Store,
    layers: &[Blob],
    concurrency: usize,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    for layer in layers.iter().filter(|l| seen.insert(l.digest.clone())) {
        let (mut session, store, layer, progress, limit) = (
            session.clone(),
            store.clone(),
            layer.clone(),
            progress.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closed");
            fetch_blob(&mut session, &store, &layer, progress.as_ref()).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // The first failure aborts the other downloads (dropping the set cancels them); their
        // partials stay in the ingest dir for the next pull to resume.
        joined.expect("download task panicked")?;
    }
    Ok(())
}

async fn fetch_blob(
    session: &mut Session,
    store: &Store,
    blob: &Blob,
    progress: &dyn Progress,
) -> Result<()> {
    let mut writer = match store.try_ingest(&blob.digest, blob.size)?.wait().await? {
        Ingest::Present => {
            progress.blob_finished(&blob.digest, true);
            return Ok(());
        }
        Ingest::Writer(w) => *w,
    };
    let what = format!("blob {}", blob.digest);
    let ingest_dir = store.ingest_dir();
    let url = session.url(&format!("blobs/{}", blob.digest));
    let attempts = session.retry_attempts();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(reason) = progress.cancelled() {
            return Err(Error::Aborted { what, reason });
        }
        let failure = match fetch_attempt(
            session,
            &url,
            &what,
            blob,
            &mut writer,
            &ingest_dir,
            progress,
        )
        .await?
        {
            None => break,
            Some(f) => f,
        };
        if attempt >= attempts {
            return Err(failure.into_error(session, &what, blob, writer.offset(), attempt));
        }
        let reason = failure.to_string();
        tracing::warn!(%what, attempt, offset = writer.offset(), %reason, "download interrupted, resuming");
        progress.blob_retrying(&blob.digest, attempt, &reason);
        tokio::time::sleep(session.retry_delay(attempt + 1)).await;
    }
    writer.commit()?;
    progress.blob_finished(&blob.digest, false);
    Ok(())
}

/// Why an attempt stopped early; all are resumable.
enum Interrupted {
    Stream(reqwest::Error),
    ShortBody,
    /// Fewer bytes than the stall rule's floor arrived in a window (how many did).
    Stalled(u64),
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interrupted::Stream(e) => write!(f, "{e}"),
            Interrupted::ShortBody => write!(f, "connection closed before the end of the blob"),
            Interrupted::Stalled(n) => write!(f, "stalled ({n} bytes in the last window)"),
        }
    }
}

impl Interrupted {
    fn into_error(
        self,
        session: &Session,
        what: &str,
        blob: &Blob,
        received: u64,
        attempts: u32,
    ) -> Error {
        match self {
            Interrupted::Stream(source) => Error::Unreachable {
                image: session.image.clone(),
                registry: session.host.clone(),
                attempts,
                source,
            },
            Interrupted::ShortBody => Error::Truncated {
                what: what.to_string(),
                expected: blob.size,
                received,
            },
            Interrupted::Stalled(bytes) => {
                let stall = &session.limits().stall;
                Error::Stalled {
                    what: what.to_string(),
                    received: bytes,
                    window: stall.window,
                    min_rate: stall.min_bytes_per_sec,
                    attempts,
                }
            }
        }
    }
}

/// How often a download looks at a cancellation and the stall rule when no bytes arrive.
const TICK: Duration = Duration::from_millis(100);

/// Free space is measured again after this many bytes of one download.
const SPACE_CHECK_BYTES: u64 = 256 << 10;

/// Stops a download before it eats into the free-space reserve.
struct SpaceWatch<'a> {
    dir: &'a Path,
    reserve: u64,
    what: &'a str,
    unchecked: u64,
}

impl<'a> SpaceWatch<'a> {
    fn new(dir: &'a Path, limits: &Limits, what: &'a str) -> SpaceWatch<'a> {
        SpaceWatch {
            dir,
            reserve: limits.free_space_reserve,
            what,
            unchecked: 0,
        }
    }

    /// `remaining` bytes of the blob are still to come.
    fn check(&mut self, remaining: u64) -> Result<()> {
        self.unchecked = 0;
        let available = crate::limits::available_bytes(self.dir)?;
        if available < self.reserve {
            return Err(Error::NoSpace {
                what: self.what.to_string(),
                path: self.dir.to_path_buf(),
                needed: remaining,
                available,
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    fn advanced(&mut self, bytes: u64, remaining: u64) -> Result<()> {
        self.unchecked += bytes;
        if self.unchecked >= SPACE_CHECK_BYTES {
            self.check(remaining)?;
        }
        Ok(())
    }
}

/// One GET of the blob from the writer's offset. `Ok(None)`: all bytes are on disk;
/// `Ok(Some(_))`: interrupted, resumable; `Err`: final.
async fn fetch_attempt(
    session: &mut Session,
    url: &str,
    what: &str,
    blob: &Blob,
    writer: &mut IngestWriter,
    store_dir: &Path,
    progress: &dyn Progress,
) -> Result<Option<Interrupted>> {
    let offset = writer.offset();
    if offset == blob.size {
        return Ok(None);
    }
    let mut headers = HeaderMap::new();
    if offset > 0 {
        headers.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
        );
    }
    let mut response = session.send(Method::GET, url, headers, what).await?;
    match response.status() {
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let range = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {offset}-")) {
                tracing::warn!(%what, range, "unexpected Content-Range, restarting from zero");
                writer.reset()?;
                progress.blob_reset(&blob.digest);
                return Ok(Some(Interrupted::ShortBody));
            }
        }
        _ if offset > 0 => {
            // The server ignored Range and sends everything again.
            writer.reset()?;
            progress.blob_reset(&blob.digest);
        }
        _ => {}
    }
    let start = writer.offset();
    if let Some(len) = response.content_length()
        && start + len > blob.size
    {
        writer.discard();
        return Err(Error::TooLarge {
            what: what.to_string(),
            expected: blob.size,
        });
    }
    progress.blob_started(&blob.digest, blob.size, start);
    let limits = session.limits().clone();
    let mut space = SpaceWatch::new(store_dir, &limits, what);
    space.check(blob.size - start)?;
    let floor = limits.stall.floor();
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    loop {
        // Wake up now and then even when nothing arrives, to notice a reader that gave up
        // and a trickle below the stall rule (the read timeout only catches total silence).
        match tokio::time::timeout(TICK, response.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                writer.write(&bytes)?;
                window_bytes += bytes.len() as u64;
                progress.blob_advanced(&blob.digest, bytes.len() as u64);
                space.advanced(bytes.len() as u64, blob.size - writer.offset())?;
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Ok(Some(Interrupted::Stream(e))),
            Err(_quiet) => {}
        }
        if let Some(reason) = progress.cancelled() {
            return Err(Error::Aborted {
                what: what.to_string(),
                reason,
            });
        }
        if let Some(floor) = floor
            && window_start.elapsed() >= limits.stall.window
        {
            if window_bytes < floor {
                return Ok(Some(Interrupted::Stalled(window_bytes)));
            }
            window_start = Instant::now();
            window_bytes = 0;
        }
    }
    if writer.offset() < blob.size {
        return Ok(Some(Interrupted::ShortBody));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(count: usize, size: u64) -> Vec<Blob> {
        (0..count)
            .map(|i| Blob {
                digest: Digest::of(&i.to_le_bytes()),
                size,
                media_type: String::new(),
            })
            .collect()
    }

    #[test]
    fn caps_hold_at_their_bound_and_refuse_past_it() {
        let limits = Limits::default();
        assert!(
            check_caps("x", &limits, &blobs(127, 1)).is_ok(),
            "docker's 127"
        );
        assert!(matches!(
            check_caps("x", &limits, &blobs(128, 1)),
            Err(Error::TooManyLayers {
                count: 128,
                max: 127,
                ..
            })
        ));
        assert!(check_caps("x", &limits, &blobs(1, 16 << 30)).is_ok());
        assert!(matches!(
            check_caps("x", &limits, &blobs(1, (16 << 30) + 1)),
            Err(Error::LayerTooLarge { .. })
        ));
        assert!(check_caps("x", &limits, &blobs(4, 16 << 30)).is_ok());
        assert!(matches!(
            check_caps("x", &limits, &blobs(5, 16 << 30)),
            Err(Error::ImageTooLarge { .. })
        ));
        // Sizes that would overflow a plain sum are still refused, not wrapped.
        let mut generous = limits.clone();
        generous.max_layer_bytes = u64::MAX;
        assert!(matches!(
            check_caps("x", &generous, &blobs(3, u64::MAX / 2)),
            Err(Error::ImageTooLarge { size: u64::MAX, .. })
        ));
    }
}
