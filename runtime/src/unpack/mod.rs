//! Layer blobs -> directory trees, safely.
//!
//! One layer is unpacked by two threads: a parser (decompress, hash, parse the tar, check
//! limits) feeding a writer over a bounded channel; the writer applies entries through
//! `tree`, which keeps every filesystem operation inside the target directory. The
//! uncompressed stream is hashed as it is parsed (and drained to its end), and the result is
//! refused when it does not match the expected diff id; callers unpack into a staging
//! directory and only keep it when [`unpack_layer`] returns `Ok`.

mod apply;
mod compression;
mod digest;
mod error;
mod names;
mod parse;
pub(crate) mod spec;
pub(crate) mod tree;

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

pub(crate) use apply::{Applier, join as apply_join};
pub use apply::{ApplyStats, LayerFormat};
pub use compression::Compression;
pub(crate) use digest::ImageBytes;
pub use digest::{ChainId, DiffId, DigestParseError, Sha256, chain_ids};
pub use error::{EntryError, LayerError, UnpackError};

use digest::HashingReader;
use spec::Op;

/// Bounds that keep a hostile layer from exhausting disk, memory or time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Uncompressed bytes of one layer (the tar stream).
    pub max_layer_bytes: u64,
    /// Uncompressed bytes of all layers of one image that one
    /// [`SnapshotStore::ensure`](crate::rootfs::SnapshotStore::ensure) unpacks (for
    /// [`unpack_layer`], of its one layer): the per-layer limit alone still lets an image of
    /// 127 layers write 8 TiB. When passed, nothing of the image is committed.
    pub max_image_bytes: u64,
    /// Entries in one layer.
    pub max_entries: u64,
    /// Size of one regular file.
    pub max_file_size: u64,
    /// Apparent size of one GNU sparse file (holes are not written, but they are read as zeros).
    pub max_sparse_size: u64,
    /// Size of one extended attribute value (the Linux limit is 64 KiB).
    pub max_xattr_value: usize,
    /// Extended attributes on one entry.
    pub max_xattrs_per_entry: usize,
    /// Owners written shifted into a host id range (the snapshots of `--userns` runs), device
    /// nodes skipped; `None` writes the image's owners as they are.
    pub id_shift: Option<IdShift>,
    /// Skip device nodes (counted) whatever the owners: archives that are not image layers.
    pub no_devices: bool,
    /// Refuse, instead of confining, what only an attack puts in an archive that is not an
    /// image layer: names that are absolute or climb out with `..`, whiteouts, symbolic links
    /// whose targets leave the archive's folder, hard links to names outside it.
    pub refuse_escapes: bool,
}

/// Image owners shifted into the host ids `base..base+count`: for containers whose root is
/// `base` on the host (a user namespace mapping `0 -> base`, `count` ids). An image owner at
/// or above `count` has no host id and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdShift {
    /// Host id of the container's uid and gid 0.
    pub base: u32,
    /// How many ids the range has.
    pub count: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layer_bytes: 64 << 30,
            // The largest real images (CUDA and ML stacks) unpack to some tens of GB; four
            // times the per-layer limit is far above them and still a bound.
            max_image_bytes: 256 << 30,
            max_entries: 4_000_000,
            max_file_size: 32 << 30,
            max_sparse_size: 1 << 30,
            max_xattr_value: 64 << 10,
            max_xattrs_per_entry: 64,
            id_shift: None,
            no_devices: false,
            refuse_escapes: false,
        }
    }
}

/// One layer as the caller hands it over: a reader of the *compressed* blob (it may still be
/// downloading), how it is compressed and the diff id the image config promises.
pub struct LayerBlob<'a> {
    /// How errors name the layer (normally the blob digest).
    pub label: String,
    /// The blob bytes.
    pub blob: Box<dyn Read + Send + 'a>,
    /// From the layer's media type ([`Compression::from_media_type`]).
    pub compression: Compression,
    /// `rootfs.diff_ids[i]` of the image config.
    pub diff_id: DiffId,
}

/// What a successful unpack produced.
#[derive(Clone, Debug)]
pub struct LayerReport {
    /// The verified diff id.
    pub diff_id: DiffId,
    /// Bytes of the uncompressed tar.
    pub uncompressed_bytes: u64,
    /// Counters of the writer.
    pub stats: ApplyStats,
    /// Directories created only because an entry needed a parent (relative paths).
    pub implied_dirs: Vec<Vec<u8>>,
    /// Hardlinks (path, target) to files that are not in this layer: left for the snapshot
    /// store to make on top of the lower layers (overlay snapshot format only; flattened, they
    /// are errors).
    pub pending_hardlinks: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Batches buffered between parser and writer. A batch is flushed once it holds [`CHUNK`] bytes
/// of data or [`BATCH_OPS`] messages, so one layer holds at most about 8 MiB in flight.
const CHANNEL_DEPTH: usize = 16;
/// Messages per batch: small files travel many to a batch, which keeps the channel's
/// wake-ups (futex calls) off the profile.
const BATCH_OPS: usize = 128;
/// Largest data chunk sent to the writer (large writes are what makes the writer fast).
const CHUNK: usize = 256 * 1024;
/// Read-ahead between the decompressor/hash and the tar parser.
const TAR_BUFFER: usize = 256 * 1024;

/// Unpacks one layer into `target` (an existing directory, not a symlink) in `format`,
/// verifying the diff id. On error the content of `target` is unspecified: unpack into a
/// staging directory and discard it on failure.
pub fn unpack_layer(
    layer: LayerBlob<'_>,
    target: &Path,
    format: LayerFormat,
    limits: &Limits,
) -> Result<LayerReport, UnpackError> {
    let image = ImageBytes::new(limits.max_image_bytes);
    unpack_layer_cancellable(
        layer,
        target,
        format,
        limits,
        &image,
        &AtomicBool::new(false),
    )
}

/// [`unpack_layer`] that counts its bytes into `image` (shared by the layers of one image)
/// and gives up with [`LayerError::Cancelled`] once `cancel` is set.
pub(crate) fn unpack_layer_cancellable(
    layer: LayerBlob<'_>,
    target: &Path,
    format: LayerFormat,
    limits: &Limits,
    image: &ImageBytes,
    cancel: &AtomicBool,
) -> Result<LayerReport, UnpackError> {
    let label = layer.label.clone();
    run(layer, target, format, limits, image, cancel, true)
        .map_err(|kind| UnpackError { layer: label, kind })
}

/// A tar archive (gzip, zstd or plain) that no digest vouches for, written into `target` (an
/// existing, empty directory) under the same rules as a layer: every path resolved inside
/// `target`, no link followed out of it, the size and entry limits of `limits`. Stricter than
/// a layer: device nodes are never made, and an entry that tries to leave `target` (an
/// absolute or climbing name, a link pointing out, a whiteout) is refused, not confined. For archives a component left for later runs (Keboola's artifacts):
/// whoever wrote them may be hostile, and there is nothing to verify them against.
pub fn unpack_archive(
    label: &str,
    blob: Box<dyn Read + Send + '_>,
    compression: Compression,
    target: &Path,
    limits: &Limits,
) -> Result<LayerReport, UnpackError> {
    let layer = LayerBlob {
        label: label.to_string(),
        blob,
        compression,
        // Not compared (see `verify` below): the report carries the archive's real digest.
        diff_id: DiffId(Sha256::ZERO),
    };
    let limits = Limits {
        no_devices: true,
        refuse_escapes: true,
        ..limits.clone()
    };
    let image = ImageBytes::new(limits.max_image_bytes);
    run(
        layer,
        target,
        LayerFormat::Flattened,
        &limits,
        &image,
        &AtomicBool::new(false),
        false,
    )
    .map_err(|kind| UnpackError {
        layer: label.to_string(),
        kind,
    })
}

struct Parsed {
    diff_id: DiffId,
    bytes: u64,
    xattrs_dropped: u64,
    root_entries: u64,
}

fn run(
    layer: LayerBlob<'_>,
    target: &Path,
    format: LayerFormat,
    limits: &Limits,
    image: &ImageBytes,
    cancel: &AtomicBool,
    verify: bool,
) -> Result<LayerReport, LayerError> {
    let mut applier = Applier::new(target, format).map_err(|source| LayerError::OpenTarget {
        path: target.to_path_buf(),
        source,
    })?;
    // A store whose owners are shifted into an unprivileged host range is reachable by that
    // range through its runs' directories: a device node there would be a host device it
    // could open. Containers get their devices bound from the host instead.
    applier.skip_devices = limits.id_shift.is_some() || limits.no_devices;
    let expected = layer.diff_id;
    let compression = layer.compression;
    let blob = layer.blob;
    let (parsed, written) = std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<Op>>(CHANNEL_DEPTH);
        let parser = s.spawn(move || parse_stream(blob, compression, limits, image, tx, cancel));
        let mut written = Ok(());
        'batches: while let Ok(batch) = rx.recv() {
            if cancel.load(Ordering::Relaxed) {
                written = Err(LayerError::Cancelled);
                break;
            }
            for op in batch {
                if let Err(e) = applier.apply(op) {
                    written = Err(e);
                    break 'batches;
                }
            }
        }
        drop(rx);
        let parsed = parser.join().unwrap_or(Err(LayerError::Panicked));
        (parsed, written)
    });
    // A writer error is the cause when the parser only saw the channel close.
    written?;
    let parsed = parsed?;
    if verify && parsed.diff_id != expected {
        return Err(LayerError::DiffIdMismatch {
            expected,
            actual: parsed.diff_id,
        });
    }
    let leftovers = applier.finish()?;
    let mut stats = applier.stats.clone();
    stats.xattrs_dropped += parsed.xattrs_dropped;
    stats.root_entries_skipped += parsed.root_entries;
    Ok(LayerReport {
        diff_id: parsed.diff_id,
        uncompressed_bytes: parsed.bytes,
        stats,
        implied_dirs: leftovers.implied_dirs,
        pending_hardlinks: leftovers.pending_links,
    })
}

fn stream_error(e: io::Error, image: &ImageBytes) -> LayerError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        // The reader's error may come back wrapped by the tar parser: the shared count says
        // which of the two limits it was.
        if image.exceeded() {
            LayerError::ImageLimit { max: image.max() }
        } else {
            LayerError::Limit(digest::LIMIT_MARKER.into())
        }
    } else {
        LayerError::Stream(e)
    }
}

/// The parser thread: everything up to (and including) the diff id.
fn parse_stream(
    blob: Box<dyn Read + Send + '_>,
    compression: Compression,
    limits: &Limits,
    image: &ImageBytes,
    tx: SyncSender<Vec<Op>>,
    cancel: &AtomicBool,
) -> Result<Parsed, LayerError> {
    let stream_error = |e| stream_error(e, image);
    let decoded = compression.decoder(blob).map_err(LayerError::Stream)?;
    let hashing = HashingReader::new(decoded, limits.max_layer_bytes, image);
    let mut archive = tar::Archive::new(BufReader::with_capacity(TAR_BUFFER, hashing));
    // Zero blocks inside the stream are skipped rather than taken as the end, so every
    // parser sees the same entries; what follows the last entry must still parse as tar.
    archive.set_ignore_zeros(true);
    let mut out = Batcher {
        tx,
        batch: Vec::with_capacity(BATCH_OPS),
        bytes: 0,
    };
    let mut xattrs_dropped = 0;
    let mut root_entries = 0;
    let mut count = 0u64;
    for entry in archive.entries().map_err(stream_error)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(LayerError::Cancelled);
        }
        let mut entry = entry.map_err(stream_error)?;
        count += 1;
        if count > limits.max_entries {
            return Err(LayerError::Limit(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let mut root_entry = false;
        let spec = parse::spec_of(&mut entry, limits, &mut xattrs_dropped, &mut root_entry)
            .map_err(|source| LayerError::Entry {
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                source,
            })?;
        if root_entry {
            root_entries += 1;
        }
        let Some(spec) = spec else { continue };
        let is_file = matches!(spec.kind, spec::Kind::File { .. });
        out.push(Op::Entry(Box::new(spec)))?;
        if !is_file {
            continue;
        }
        let mut remaining = entry.size();
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let mut buf = Vec::with_capacity(want);
            (&mut entry)
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(stream_error)?;
            if buf.is_empty() {
                return Err(LayerError::Stream(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry data ends early",
                )));
            }
            remaining -= buf.len() as u64;
            out.push(Op::Data(buf))?;
        }
        out.push(Op::End)?;
    }
    out.flush()?;
    // Hash whatever follows the archive (padding, or bytes another reader might see).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(stream_error)?;
    let (diff_id, bytes) = rest.into_inner().finish();
    Ok(Parsed {
        diff_id,
        bytes,
        xattrs_dropped,
        root_entries,
    })
}

/// Groups parser messages into batches for the channel.
struct Batcher {
    tx: SyncSender<Vec<Op>>,
    batch: Vec<Op>,
    bytes: usize,
}

impl Batcher {
    fn push(&mut self, op: Op) -> Result<(), LayerError> {
        if let Op::Data(d) = &op {
            self.bytes += d.len();
        }
        self.batch.push(op);
        if self.batch.len() >= BATCH_OPS || self.bytes >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is batched; an error means the writer stopped (its error is the cause).
    fn flush(&mut self) -> Result<(), LayerError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_OPS));
        self.bytes = 0;
        self.tx.send(batch).map_err(|_| LayerError::Cancelled)
    }
}

/// Flushes everything written below `path` with one `syncfs` (no per-file fsync: that is 4x
/// slower and buys nothing while the snapshot is not yet committed).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    rustix::fs::syncfs(&file)?;
    Ok(())
}
