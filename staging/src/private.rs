//! The Storage's own folders and files are the user's alone: folders 0700, files 0600,
//! whatever the umask, because together they hold every table, file and state of the
//! installation. Entries an older dockless left readable by others are tightened on open.

use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of every folder the Storage creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file the Storage creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents as 0700 folders. Folders that exist are left as
/// they are (a parent may be the user's own, like the working directory). The explicit chmod
/// after `mkdir` undoes a umask that removed the owner's bits; the folder is never wider
/// than 0700 in between.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
            .map_err(Error::io(path)),
        // Another job created it at the same moment (and sets its mode itself).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Creates an empty 0600 file at `path` unless something is there already (the caller opens
/// it next; SQLite takes an empty file for a new database and gives its `-wal`, `-shm` and
/// `-journal` files the main file's mode).
pub(crate) fn create_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path)(e)),
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => file
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(Error::io(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Takes group and other access away from an existing entry of this user (an older dockless
/// created the Storage 0755/0644). Missing entries, links and other users' entries are left
/// alone: they are not ours to change.
pub(crate) fn tighten(path: &Path, mode: u32) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path)(e)),
    };
    if meta.file_type().is_symlink()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o077 == 0
    {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(Error::io(path))
}
