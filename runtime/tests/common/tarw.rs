//! Writing hostile tars for the tests: names, link names and numeric fields go into the
//! headers byte for byte (tar::Builder's path helpers would refuse or clean them).

use std::io::Read;
use std::path::Path;

use dockless_runtime::unpack::{
    Compression, DiffId, LayerBlob, LayerFormat, LayerReport, Limits, UnpackError, unpack_layer,
};
use sha2::Digest;
use tar::{EntryType, Header};

/// A tar under construction.
pub struct Tar {
    out: Vec<u8>,
    pub mtime: u64,
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts the whole record including its own digits.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Self {
        Self {
            out: Vec::new(),
            mtime: 1_600_000_000,
        }
    }

    /// Appends a raw header (checksum computed) and its data padded to 512 bytes.
    pub fn raw(&mut self, h: &mut Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A PAX extended header with the given records, describing the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend(pax_record(k, v));
        }
        let mut h = Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"PaxHeader");
        h.set_entry_type(EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        self.raw(&mut h, &body)
    }

    /// A header of `kind` named `name` (bytes verbatim; PAX `path`/`linkpath` when long).
    pub fn header(
        &self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        size: u64,
        mode: u32,
    ) -> Header {
        let mut h = Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            if name.len() <= 100 {
                g.name[..name.len()].copy_from_slice(name);
            }
            if link.len() <= 100 {
                g.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h
    }

    pub fn entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut recs: Vec<(&str, &[u8])> = Vec::new();
        if name.len() > 100 {
            recs.push(("path", name));
        }
        if link.len() > 100 {
            recs.push(("linkpath", link));
        }
        if !recs.is_empty() {
            self.pax(&recs);
        }
        let mut h = self.header(name, kind, link, data.len() as u64, mode);
        self.raw(&mut h, data)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Regular, b"", data, 0o644)
    }
    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Regular, b"", data, mode)
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Directory, b"", b"", 0o755)
    }
    pub fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name.as_bytes(), EntryType::Directory, b"", b"", mode)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            EntryType::Symlink,
            target.as_bytes(),
            b"",
            0o777,
        )
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(
            name.as_bytes(),
            EntryType::Link,
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    /// The archive with its two end blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    /// The archive without end blocks.
    pub fn unterminated(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// The diff id of a plain tar.
pub fn diff_id_of(bytes: &[u8]) -> DiffId {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

/// Applies one uncompressed layer (with its correct diff id) to `root`.
pub fn apply_with(
    root: &Path,
    layer: &[u8],
    format: LayerFormat,
) -> Result<LayerReport, UnpackError> {
    let blob: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(layer.to_vec()));
    unpack_layer(
        LayerBlob {
            label: "test-layer".into(),
            blob,
            compression: Compression::None,
            diff_id: diff_id_of(layer),
        },
        root,
        format,
        &Limits::default(),
    )
}

/// Applies one layer flattened (whiteouts delete), as when layers share one directory.
pub fn apply(root: &Path, layer: &[u8]) -> Result<LayerReport, UnpackError> {
    apply_with(root, layer, LayerFormat::Flattened)
}
