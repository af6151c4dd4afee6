//! A layer blob as the store wants it: the tar stream hashed (its diff id) while it is gzipped,
//! with a gzip header that carries no time and no name, so equal tars give equal blobs.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// The media type of the layers dockless makes.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Gzips what is written into `W` and hashes it uncompressed.
pub struct LayerEncoder<W: Write> {
    gz: GzEncoder<W>,
    hasher: Sha256,
    bytes: u64,
}

/// What [`LayerEncoder::finish`] measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedLayer {
    /// `sha256:<hex>` of the uncompressed tar: the layer's diff id.
    pub diff_id: String,
    /// Length of the uncompressed tar.
    pub tar_bytes: u64,
}

impl<W: Write> LayerEncoder<W> {
    /// A fixed header (mtime 0, no file name, OS "unknown") and the default level: the same
    /// tar always gives the same bytes with the same zlib backend.
    pub fn new(out: W) -> Self {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(out, flate2::Compression::default());
        LayerEncoder {
            gz,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Ends the gzip stream; returns the diff id and the writer.
    pub fn finish(self) -> io::Result<(EncodedLayer, W)> {
        let out = self.gz.finish()?;
        Ok((
            EncodedLayer {
                diff_id: format!("sha256:{}", hex::encode(self.hasher.finalize())),
                tar_bytes: self.bytes,
            },
            out,
        ))
    }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.gz.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gz.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn same_input_same_blob_and_diff_id_of_the_plain_bytes() {
        let encode = |data: &[u8]| {
            let mut e = LayerEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let (a, blob_a) = encode(b"some tar bytes");
        let (b, blob_b) = encode(b"some tar bytes");
        assert_eq!(blob_a, blob_b);
        assert_eq!(a, b);
        assert_eq!(
            a.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(b"some tar bytes")))
        );
        assert_eq!(&blob_a[4..8], &[0, 0, 0, 0], "no mtime in the gzip header");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&blob_a[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, b"some tar bytes");
    }
}
