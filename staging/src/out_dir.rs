//! Reading what a container left in `/data/out` without trusting it.
//!
//! Only regular files and real folders are accepted: a symlink (say to `/etc/shadow`), a
//! device, a FIFO or a socket is refused with an error naming it. Files are opened with
//! `O_NOFOLLOW` and checked again on the open handle, so a name that turned into a link
//! between listing and opening is refused too. The container has exited by the time output
//! mapping runs; nothing else writes into the folder.

use std::collections::BTreeMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Largest manifest or state file read into memory.
const MAX_DOCUMENT: u64 = 16 << 20;

fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else if t.is_dir() {
        "directory"
    } else {
        "file"
    }
}

/// Fails unless `path` is a real directory (not a link to one).
pub(crate) fn require_dir(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(Error::io(path))?;
    match kind(&meta) {
        "directory" => Ok(()),
        other => Err(Error::UnsafeEntry {
            kind: if other == "file" {
                "regular file instead of a folder"
            } else {
                other
            },
            path: path.to_path_buf(),
        }),
    }
}

/// Opens a regular file without following a symlink; refuses anything else.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => Error::UnsafeEntry {
                kind: "symlink",
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(Error::io(path))?;
    match kind(&meta) {
        "file" => Ok(file),
        other => Err(Error::UnsafeEntry {
            kind: other,
            path: path.to_path_buf(),
        }),
    }
}

/// Reads a small document (manifest, state) safely.
pub(crate) fn read_document(path: &Path) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(path))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(Error::mapping(
            path.display().to_string(),
            "larger than 16 MiB",
        ));
    }
    Ok(bytes)
}

/// Counts the bytes that pass through, for progress reports.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a data file or slice for streaming, decompressing `*.gz`; `progress` (if any) counts
/// the bytes read from disk.
pub(crate) fn open_data(path: &Path, progress: Option<Arc<AtomicU64>>) -> Result<Box<dyn Read>> {
    let file = open_regular(path)?;
    let raw: Box<dyn Read> = match progress {
        Some(count) => Box::new(Counted { inner: file, count }),
        None => Box::new(file),
    };
    let reader = BufReader::with_capacity(1 << 18, raw);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(
            1 << 18,
            flate2::read::MultiGzDecoder::new(reader),
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// One data entry of `out/tables` or `out/files`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The data file or slice folder.
    pub path: PathBuf,
    /// Slices (sorted by name) when the entry is a folder.
    pub slices: Option<Vec<PathBuf>>,
    /// `<name>.manifest` next to it, if any.
    pub manifest: Option<PathBuf>,
}

/// Lists the direct children of an out folder: data entries by name, each with its manifest.
/// `folders` says whether sub-folders are data (sliced tables) or ignored (files).
pub(crate) fn scan(
    dir: &Path,
    folders: bool,
    kind_name: &'static str,
) -> Result<BTreeMap<String, Entry>> {
    require_dir(dir)?;
    let mut data = BTreeMap::new();
    let mut manifests = Vec::new();
    for item in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let item = item.map_err(Error::io(dir))?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        match kind(&meta) {
            "file" if name.ends_with(".manifest") => manifests.push((name, path)),
            "file" => {
                data.insert(
                    name,
                    Entry {
                        path,
                        slices: None,
                        manifest: None,
                    },
                );
            }
            "directory" if folders => {
                let slices = scan_slices(&path)?;
                data.insert(
                    name,
                    Entry {
                        path,
                        slices: Some(slices),
                        manifest: None,
                    },
                );
            }
            "directory" => {}
            other => return Err(Error::UnsafeEntry { kind: other, path }),
        }
    }
    for (name, path) in manifests {
        let data_name = &name[..name.len() - ".manifest".len()];
        match data.get_mut(data_name) {
            Some(entry) => entry.manifest = Some(path),
            None => {
                return Err(Error::OrphanedManifest {
                    kind: kind_name,
                    path,
                });
            }
        }
    }
    Ok(data)
}

fn scan_slices(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut slices = Vec::new();
    for item in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let item = item.map_err(Error::io(dir))?;
        let path = item.path();
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        match kind(&meta) {
            "file" => slices.push(path),
            other => return Err(Error::UnsafeEntry { kind: other, path }),
        }
    }
    slices.sort();
    Ok(slices)
}

/// Opens an output file for upload as is (no decompression).
pub(crate) fn open_data_raw(path: &Path) -> Result<Box<dyn Read>> {
    Ok(Box::new(BufReader::with_capacity(
        1 << 18,
        open_regular(path)?,
    )))
}
