//! Diff ids, chain ids and the hashing reader that computes a diff id while the tar is parsed.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;

/// A digest string that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, thiserror::Error)]
#[error("invalid sha256 digest {value:?}")]
pub struct DigestParseError {
    /// The offending text (truncated).
    pub value: String,
}

/// A sha256 content digest, the only algorithm image configs use for diff ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// All zeros: a placeholder where nothing is promised (an archive unpacked unverified).
    pub(crate) const ZERO: Sha256 = Sha256([0; 32]);

    /// Lowercase hex of the 32 bytes, as used in snapshot directory names.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    fn parse(value: &str) -> Result<Self, DigestParseError> {
        let invalid = || DigestParseError {
            value: value.chars().take(80).collect(),
        };
        let hex_part = value.strip_prefix("sha256:").ok_or_else(invalid)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The digest of a layer's *uncompressed* tar, listed in the image config's `rootfs.diff_ids`;
/// what the unpacker verifies every byte against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DiffId(pub Sha256);

/// The identity of "layers 0..=n applied in order" (OCI image spec): the key of a snapshot, so a
/// layer shared by two images is unpacked once only when everything below it is shared too.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ChainId(pub Sha256);

impl FromStr for DiffId {
    type Err = DigestParseError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Sha256::parse(value).map(Self)
    }
}

impl FromStr for ChainId {
    type Err = DigestParseError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Sha256::parse(value).map(Self)
    }
}

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ChainId {
    /// Lowercase hex without the algorithm, the snapshot directory name.
    pub fn hex(&self) -> String {
        self.0.hex()
    }
}

/// Chain ids of every prefix of `diff_ids` (manifest order, base first):
/// `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => ChainId(diff.0),
            Some(parent) => {
                let text = format!("{} {}", parent, diff);
                ChainId(Sha256(Sha256Hasher::digest(text.as_bytes()).into()))
            }
        };
        out.push(next);
    }
    out
}

type Sha256Hasher = sha2::Sha256;

/// The uncompressed bytes of all layers of one image, counted across the threads that unpack
/// them at once, against [`Limits::max_image_bytes`](super::Limits::max_image_bytes).
#[derive(Debug)]
pub(crate) struct ImageBytes {
    used: AtomicU64,
    max: u64,
}

impl ImageBytes {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// The limit.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Whether the layers together passed the limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.max
    }

    /// Counts `n` more bytes; false once the total is past the limit.
    fn add(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n) <= self.max
    }
}

/// Hashes (and counts) every byte read through it, so the diff id covers exactly the bytes the
/// tar parser consumed plus whatever is drained after the end-of-archive marker.
pub(crate) struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256Hasher,
    bytes: u64,
    limit: u64,
    image: &'a ImageBytes,
}

impl<'a, R: Read> HashingReader<'a, R> {
    /// Reads `inner`, failing once it passes `limit` bytes or the image's layers together
    /// pass theirs.
    pub(crate) fn new(inner: R, limit: u64, image: &'a ImageBytes) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
            bytes: 0,
            limit,
            image,
        }
    }

    /// The diff id of everything read so far and the byte count.
    pub(crate) fn finish(self) -> (DiffId, u64) {
        (DiffId(Sha256(self.hasher.finalize().into())), self.bytes)
    }
}

/// The error kind a [`HashingReader`] reports when the uncompressed stream passes its limit;
/// the pipeline maps it to a typed limit error (the image's, if [`ImageBytes::exceeded`]).
pub(crate) const LIMIT_MARKER: &str = "uncompressed layer size limit exceeded";

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit || !self.image.add(n as u64) {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, LIMIT_MARKER));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let id: DiffId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        assert!("sha256:AB".parse::<DiffId>().is_err());
        assert!(
            format!("sha512:{}", "ab".repeat(32))
                .parse::<DiffId>()
                .is_err()
        );
        assert!(
            format!("sha256:{}", "AB".repeat(32))
                .parse::<DiffId>()
                .is_err()
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        // The example values of the OCI image spec (config.md, "ChainID").
        let a: DiffId = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let b: DiffId = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let chain = chain_ids(&[a, b]);
        assert_eq!(chain[0].0, a.0);
        let expected = Sha256Hasher::digest(format!("{a} {b}").as_bytes());
        assert_eq!(chain[1].hex(), hex::encode(expected));
        assert!(chain_ids(&[]).is_empty());
    }
}
