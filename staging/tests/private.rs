//! Issue 18, item 3: the Storage is private to its user whatever the umask, and `#` values of
//! stored state are encrypted at rest. This binary sets the umask to 000 (process-wide, so it
//! is a binary of its own): every mode checked here is the one dockless sets, not the one the
//! umask happened to leave.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dockless_staging::{NewFile, SqliteStorage, Storage};

fn open_umask() {
    rustix::process::umask(rustix::fs::Mode::empty());
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Stores a small file so that the blob folders exist.
fn add_file(storage: &mut SqliteStorage) {
    let mut tx = storage.begin().unwrap();
    let mut slices = std::iter::once(dockless_staging::storage::Slice {
        name: "a.txt".into(),
        reader: Box::new(&b"hello"[..]),
        origin: "a.txt".into(),
    });
    tx.add_file(
        &NewFile {
            name: "a.txt".into(),
            tags: vec![],
            is_public: false,
            is_permanent: false,
            is_encrypted: false,
        },
        &mut slices,
    )
    .unwrap();
    tx.commit().unwrap();
}

#[test]
fn storage_dirs_are_0700_and_files_0600_whatever_the_umask() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("state/deeper/storage.db");
    let mut storage = SqliteStorage::open(&db).unwrap();
    add_file(&mut storage);
    // While the connection is open the WAL and its index exist.
    let mut checked = Vec::new();
    for dir in [
        tmp.path().join("state"),
        tmp.path().join("state/deeper"),
        tmp.path().join("state/deeper/storage.db.files"),
        tmp.path().join("state/deeper/storage.db.files/sha256"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        checked.push(dir);
    }
    let blobs: Vec<_> = std::fs::read_dir(tmp.path().join("state/deeper/storage.db.files/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 1);
    for file in [
        db.clone(),
        tmp.path().join("state/deeper/storage.db-wal"),
        tmp.path().join("state/deeper/storage.db-shm"),
        blobs[0].clone(),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(storage);
}

#[test]
fn an_old_world_readable_storage_is_made_private_when_opened() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("storage.db");
    let mut storage = SqliteStorage::open(&db).unwrap();
    add_file(&mut storage);
    drop(storage);
    let blobs = tmp.path().join("storage.db.files");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&blobs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let storage = SqliteStorage::open(&db).unwrap();
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&blobs), 0o700);
    assert_eq!(mode(&tmp.path().join("storage.db-wal")), 0o600);
    drop(storage);
}
