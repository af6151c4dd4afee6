//! Staged uploads: blobs whose digest is not known before they are read (`load` of a
//! `docker save` archive or an OCI layout), hashed into a temp file in `ingest/` and renamed
//! into `blobs/` only on [`Staged::commit`].

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use super::Store;
use super::blobs::{Layout, seal};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// A blob copied beside the store whose digest is known, not yet visible in it.
pub struct Staged {
    /// The digest of the staged bytes.
    pub digest: Digest,
    /// Their length.
    pub size: u64,
    tmp: tempfile::NamedTempFile,
}

impl Staged {
    /// Copies `reader` into a temp file in the ingest dir, hashing it on the way and refusing
    /// more than `max` bytes (see [`Store::stage`]).
    pub(crate) fn copy(
        layout: &Layout,
        reader: &mut dyn Read,
        max: u64,
        what: &str,
    ) -> Result<Staged> {
        let ingest = layout.ingest_dir();
        let tmp = tempfile::NamedTempFile::new_in(&ingest)
            .map_err(Error::io("create temp file in", &ingest))?;
        let mut hasher = Hasher::default();
        let mut out = BufWriter::with_capacity(256 << 10, tmp.as_file());
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(Error::io("read", what))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > max {
                return Err(Error::TooLarge {
                    what: what.to_string(),
                    expected: max,
                });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(Error::io("write", tmp.path()))?;
        }
        out.flush().map_err(Error::io("write", tmp.path()))?;
        drop(out);
        Ok(Staged {
            digest: hasher.finish(),
            size,
            tmp,
        })
    }

    /// Reads the first bytes (to sniff compression).
    pub fn head(&self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut f = File::open(self.tmp.path()).map_err(Error::io("open", self.tmp.path()))?;
        let got = f
            .read(&mut buf)
            .map_err(Error::io("read", self.tmp.path()))?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Makes the blob visible under its digest (a no-op when already stored).
    pub fn commit(self, store: &Store) -> Result<Digest> {
        let dest = store.blob_path(&self.digest);
        if !dest.exists() {
            seal(self.tmp.as_file(), self.tmp.path())?;
            self.tmp.persist(&dest).map_err(|e| Error::Io {
                op: "rename into",
                path: dest.clone(),
                source: e.error,
            })?;
        }
        Ok(self.digest)
    }
}
