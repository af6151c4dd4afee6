//! A layer's tar, gzipped and hashed on the way, into the content store.

use anyhow::Context as _;
use dockless_builder::layer::{EncodedLayer, LayerEncoder};
use dockless_registry::{Digest, Store};

/// Layers written by a build are refused beyond this size (the runtime's own layer limit).
const MAX_LAYER_BYTES: u64 = 64 << 30;
/// A layer written by the build, as stored.
pub(super) struct StoredLayer {
    /// The gzipped blob's digest.
    pub(super) digest: Digest,
    /// The blob's size.
    pub(super) size: u64,
    /// The tar's digest.
    pub(super) diff_id: Digest,
}

/// Writes a layer's tar (from `write`, on a thread) gzipped into the store through a pipe:
/// the blob is hashed as it is staged, the tar as it is written; nothing enters the store
/// unless both sides finished.
pub(super) fn store_layer<R: Send>(
    store: &Store,
    what: &str,
    write: impl FnOnce(&mut LayerEncoder<std::io::PipeWriter>) -> anyhow::Result<R> + Send,
) -> anyhow::Result<(StoredLayer, R)> {
    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> anyhow::Result<(EncodedLayer, R)> {
            let mut encoder = LayerEncoder::new(writer);
            let made = write(&mut encoder)?;
            let (encoded, writer) = encoder.finish().context("cannot end the gzip stream")?;
            drop(writer); // EOF for the stager
            Ok((encoded, made))
        });
        let staged = store.stage(&mut reader, MAX_LAYER_BYTES, what);
        drop(reader); // a writer still going gets EPIPE instead of blocking
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the {what} writer panicked"))?;
        // A stager that failed (size limit, disk full) closed the pipe: the writer's broken
        // pipe is only the echo of that, so the stager's error is the one to tell.
        let writer_broke = produced.as_ref().err().is_some_and(|e| {
            e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            })
        });
        if writer_broke && staged.is_err() {
            return Err(staged
                .err()
                .map(anyhow::Error::from)
                .unwrap_or_else(|| anyhow::anyhow!("the {what} stager failed")))
            .with_context(|| format!("cannot store the {what}"));
        }
        // Otherwise the writer's error first: a writer that failed closed the pipe early, so
        // the staged blob is a truncated one (dropped here, never committed).
        let (encoded, made) = produced.with_context(|| format!("cannot write the {what}"))?;
        let staged = staged?;
        let size = staged.size;
        let digest = staged.commit(store)?;
        Ok((
            StoredLayer {
                digest,
                size,
                diff_id: Digest::parse(&encoded.diff_id)?,
            },
            made,
        ))
    })
}
