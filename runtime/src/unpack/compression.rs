//! Which decoder a layer needs, decided by its media type (never by sniffing).

use std::io::{self, BufReader, Read};

use super::error::LayerError;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members, read as one stream).
    Gzip,
    /// zstd (skippable frames are allowed).
    Zstd,
}

/// Read-ahead between the blob reader and the decoder; large reads keep syscalls and channel
/// hops (when the blob is a download stream) off the hot path.
const BLOB_BUFFER: usize = 256 * 1024;

impl Compression {
    /// The compression of a layer media type (OCI and Docker schema2, distributable or not).
    /// Anything else (encrypted layers, configs, unknown suffixes) is refused.
    pub fn from_media_type(media_type: &str) -> Result<Self, LayerError> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Self::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Self::Zstd,
            other => return Err(LayerError::UnsupportedMediaType(other.to_owned())),
        })
    }

    /// Wraps the compressed blob in the matching streaming decoder.
    pub(crate) fn decoder<'a>(
        self,
        blob: Box<dyn Read + Send + 'a>,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        let buffered = BufReader::with_capacity(BLOB_BUFFER, blob);
        Ok(match self {
            Self::None => Box::new(buffered),
            Self::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_decoders() {
        let base = "application/vnd.oci.image.layer.v1.tar";
        assert_eq!(
            Compression::from_media_type(base).unwrap(),
            Compression::None
        );
        assert_eq!(
            Compression::from_media_type(&format!("{base}+gzip")).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type(&format!("{base}+zstd")).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        for bad in [
            format!("{base}+invalid"),
            format!("{base}+gzip+encrypted"),
            "application/json".to_owned(),
            "application/gzip".to_owned(),
        ] {
            assert!(Compression::from_media_type(&bad).is_err(), "{bad}");
        }
    }

    fn decode(c: Compression, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        c.decoder(Box::new(io::Cursor::new(bytes)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn zstd_with_a_leading_skippable_frame_decodes() {
        // I2: a skippable frame (magic 0x184D2A50, 4 bytes of payload) before the real frame.
        let mut blob = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 0x5d, 0, 0, 0];
        blob.extend(zstd::encode_all(&b"docker"[..], 3).unwrap());
        assert_eq!(decode(Compression::Zstd, blob), b"docker");
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        use flate2::{Compression as Level, write::GzEncoder};
        use std::io::Write;
        let mut blob = Vec::new();
        for part in [&b"first "[..], &b"second"[..]] {
            let mut enc = GzEncoder::new(Vec::new(), Level::fast());
            enc.write_all(part).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        assert_eq!(decode(Compression::Gzip, blob), b"first second");
    }
}
