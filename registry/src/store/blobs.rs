//! The blob half of the content store: where every file of the store lives, and how verified
//! blobs are read and sealed.
//!
//! This is the leaf of the store: the ingest protocol, staged uploads and the image index all
//! derive their paths from [`Layout`], so they cannot disagree on where a blob is.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Manifests, indexes and configs larger than this are refused (containerd's limit is 4 MiB
/// for manifests; configs of real images stay far below 16 MiB).
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

/// The store's directory layout, rooted at one directory (drawn in the module doc of
/// [`crate::store`]).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates the blob and ingest directories under `root` if they are missing: 0700 (the
    /// store is its user's alone; a umask can only narrow that).
    pub(crate) fn create(root: PathBuf) -> Result<Layout> {
        let layout = Layout { root };
        for dir in [layout.root.join("blobs/sha256"), layout.ingest_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(Error::io("create", &dir))?;
        }
        Ok(layout)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob(digest).is_file()
    }

    /// Downloads in progress and temp files of staged uploads.
    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// The partial file of a download in progress.
    pub(crate) fn partial(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir().join(format!("{}.partial", digest.hex()))
    }

    /// The lock held by the one process writing that partial.
    pub(crate) fn ingest_lock(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir().join(format!("{}.lock", digest.hex()))
    }

    /// The image index, `images-v1.json`.
    pub(crate) fn index(&self) -> PathBuf {
        self.root.join("images-v1.json")
    }

    /// The lock that serialises index updates across processes.
    pub(crate) fn index_lock(&self) -> PathBuf {
        self.root.join("images.lock")
    }

    pub(crate) fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob(digest);
        File::open(&path).map_err(Error::io("open blob", path))
    }

    /// Reads a small blob whole, refusing anything over [`MAX_METADATA_BYTES`].
    pub(crate) fn read_metadata(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob(digest);
        let mut buf = Vec::new();
        self.open_blob(digest)?
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(Error::io("read", &path))?;
        if buf.len() as u64 > MAX_METADATA_BYTES {
            return Err(Error::TooLarge {
                what: digest.to_string(),
                expected: MAX_METADATA_BYTES,
            });
        }
        Ok(buf)
    }
}

/// Makes a blob read-only before it becomes visible.
pub(crate) fn seal(file: &File, path: &Path) -> Result<()> {
    file.set_permissions(fs::Permissions::from_mode(0o400))
        .map_err(Error::io("chmod", path))
}
