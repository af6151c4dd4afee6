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
//!     artifacts/in/<runs|custom|shared>/jobId-<id>/   earlier runs' artifacts (see artifacts)
//!     artifacts/out/current/  artifacts/out/shared/    this run's, stored on success
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
            dir.data().join("artifacts/in"),
            dir.data().join("artifacts/out/current"),
            dir.data().join("artifacts/out/shared"),
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

    /// Hands one image's output to the next image (processors): `in/tables` and `in/files` are
    /// replaced by `out/tables` and `out/files`, `out/` is emptied and recreated, and
    /// `out/state.json` is dropped (processors never see state). `in/state.json` and
    /// `in/user` stay.
    pub fn rotate_out_to_in(&self) -> Result<()> {
        self.check_dirs()?;
        for (from, to) in [
            (self.out_tables(), self.in_tables()),
            (self.out_files(), self.in_files()),
        ] {
            if let Err(e) = std::fs::remove_dir_all(&to)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::Io {
                    path: to,
                    source: e,
                });
            }
            // rename never follows a link at `from`: a planted link is moved as a link and
            // refused later by output mapping, it is not resolved here.
            std::fs::rename(&from, &to).map_err(Error::io(&from))?;
        }
        let out = self.data().join("out");
        std::fs::remove_dir_all(&out).map_err(Error::io(&out))?;
        for path in [self.out_tables(), self.out_files()] {
            std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
        }
        Ok(())
    }

    /// Fails unless `data/in` and `data/out` are real directories. The container can replace
    /// them (it owns `/data`) with links to anywhere on the host; every host-side step that
    /// moves or removes files below them checks this first, after the container has ended.
    pub fn check_dirs(&self) -> Result<()> {
        crate::out_dir::require_dir(&self.data().join("in"))?;
        crate::out_dir::require_dir(&self.data().join("out"))
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
