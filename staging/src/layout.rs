//! The job's working directory, mounted into the container as `/data` (and `/tmp`).
//!
//! ```text
//! <work>/
//!   tmp/                       mounted at /tmp
//!   data/                      mounted at /data
//!     config.json | config.yml
//!     in/state.json            component state ({} when none)
//!     in/tables/<dest>(.manifest)
//!     in/files/<id>_<name>(.manifest)
//!     in/user/                 always empty
//!     out/tables/  out/files/  written by the component
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Paths of one job's working directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates `<work>/tmp` and the `<work>/data/{in/{tables,files,user},out/{tables,files}}`
    /// tree (existing folders are kept).
    pub fn create(work: &Path) -> Result<DataDir> {
        let dir = DataDir {
            root: work.to_path_buf(),
        };
        for path in [
            dir.tmp(),
            dir.in_tables(),
            dir.in_files(),
            dir.data().join("in/user"),
            dir.out_tables(),
            dir.out_files(),
        ] {
            std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        }
        Ok(dir)
    }

    /// Uses an existing working directory without creating anything.
    pub fn at(work: &Path) -> DataDir {
        DataDir {
            root: work.to_path_buf(),
        }
    }

    /// The working directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Mounted at `/data`.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Mounted at `/tmp`.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `data/in/tables`.
    pub fn in_tables(&self) -> PathBuf {
        self.root.join("data/in/tables")
    }
    /// `data/in/files`.
    pub fn in_files(&self) -> PathBuf {
        self.root.join("data/in/files")
    }
    /// `data/out/tables`.
    pub fn out_tables(&self) -> PathBuf {
        self.root.join("data/out/tables")
    }
    /// `data/out/files`.
    pub fn out_files(&self) -> PathBuf {
        self.root.join("data/out/files")
    }
}
