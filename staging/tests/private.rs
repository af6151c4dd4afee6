//! Issue 18, item 3: the Storage is private to its user whatever the umask, and `#` values of
//! stored state are encrypted at rest. This binary sets the umask to 000 (process-wide, so it
//! is a binary of its own): every mode checked here is the one dockless sets, not the one the
//! umask happened to leave.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dockless_staging::storage::sealed::MARKER;
use dockless_staging::{
    DataDir, Error, Job, JobSpec, NewFile, SealedStorage, SqliteStorage, StateCipher, StateKey,
    Storage,
};
use serde_json::{Value, json};

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

// ---- `#` values of stored state are encrypted at rest ----

const SECRET: &str = "tok-PLAINTEXT-4711";

fn state_key() -> StateKey {
    StateKey {
        component: "keboola.test".into(),
        config: "cfg1".into(),
        row: None,
    }
}

/// One job: stages (returning the `in/state.json` the component would read), then stores
/// `out_state` as the component's new state.
fn run_job(storage: &mut dyn Storage, out_state: &Value) -> dockless_staging::Result<Value> {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&*storage, &dir)?;
    let staged: Value =
        serde_json::from_slice(&std::fs::read(dir.data().join("in/state.json")).unwrap()).unwrap();
    std::fs::write(
        dir.data().join("out/state.json"),
        serde_json::to_vec(out_state).unwrap(),
    )
    .unwrap();
    job.finish(storage, &dir, true, None)?;
    Ok(staged)
}

fn sealed(dir: &Path, key: &str) -> SealedStorage<SqliteStorage> {
    let cipher = StateCipher::open_or_create(&dir.join(key)).unwrap();
    SealedStorage::new(
        SqliteStorage::open(&dir.join("storage.db")).unwrap(),
        cipher,
    )
}

/// Every byte of the Storage files (the database, its WAL while open).
fn storage_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["storage.db", "storage.db-wal", "storage.db-journal"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn secret_state() -> Value {
    json!({
        "#refresh_token": SECRET,
        "#pin": 987654321,
        "#nested": {"inner": "nested-PLAINTEXT", "list": ["list-PLAINTEXT"]},
        "cursor": "cursor-visible",
        "#flag": true
    })
}

#[test]
fn hash_values_are_stored_encrypted_and_staged_plain() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = sealed(tmp.path(), "keys/storage.key");
    assert_eq!(mode(&tmp.path().join("keys")), 0o700);
    assert_eq!(mode(&tmp.path().join("keys/storage.key")), 0o600);

    run_job(&mut storage, &secret_state()).unwrap();
    let bytes = storage_bytes(tmp.path());
    for plain in [SECRET, "987654321", "nested-PLAINTEXT", "list-PLAINTEXT"] {
        assert!(!contains(&bytes, plain), "{plain} is stored in plain text");
    }
    assert!(
        contains(&bytes, "cursor-visible"),
        "only # values are encrypted"
    );
    assert!(contains(&bytes, MARKER));

    // The backend itself holds ciphertexts only; the job reads the plain state.
    let raw = storage.inner().state(&state_key()).unwrap().unwrap();
    assert!(
        raw["component"]["#refresh_token"]
            .as_str()
            .unwrap()
            .starts_with(MARKER)
    );
    assert!(
        raw["component"]["#pin"]
            .as_str()
            .unwrap()
            .starts_with(MARKER)
    );
    assert_eq!(raw["component"]["#flag"], true);
    let staged = run_job(&mut storage, &secret_state()).unwrap();
    assert_eq!(staged, secret_state());
    assert_eq!(
        storage.state(&state_key()).unwrap().unwrap()["component"],
        secret_state()
    );

    // A component reads back exactly what it wrote, even a value that looks like a
    // ciphertext (encrypted like any other: a planted or junk marker neither breaks the
    // configuration's state nor stays in plain text).
    let mut planted = raw["component"].clone();
    planted["#junk"] = json!(format!("{MARKER}not-a-ciphertext"));
    run_job(&mut storage, &secret_state()).unwrap();
    let echoed = run_job(&mut storage, &planted).unwrap();
    assert_eq!(echoed, secret_state());
    let stored = storage.inner().state(&state_key()).unwrap().unwrap();
    let junk = stored["component"]["#junk"].as_str().unwrap();
    assert!(
        junk.starts_with(MARKER) && !junk.contains("not-a-ciphertext"),
        "{junk}"
    );
    let again = run_job(&mut storage, &secret_state()).unwrap();
    assert_eq!(again, planted, "what the component wrote, as it wrote it");

    // A new process with the same key file reads the same state.
    drop(storage);
    let mut storage = sealed(tmp.path(), "keys/storage.key");
    assert_eq!(run_job(&mut storage, &json!({})).unwrap(), secret_state());
}

#[test]
fn a_wrong_key_is_a_clear_error_naming_the_value_and_the_key_file() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = sealed(tmp.path(), "a.key");
    run_job(&mut storage, &secret_state()).unwrap();
    drop(storage);
    let mut storage = sealed(tmp.path(), "b.key");
    let err = run_job(&mut storage, &json!({})).unwrap_err();
    assert!(matches!(err, Error::StateDecrypt { .. }), "{err:?}");
    assert!(!err.is_user_error());
    let text = err.to_string();
    assert!(
        text.contains("component.#")
            && text.contains("b.key")
            && text.contains("keboola.test/cfg1"),
        "{text}"
    );
    // The stored state is untouched by the failed job.
    let mut storage = sealed(tmp.path(), "a.key");
    assert_eq!(run_job(&mut storage, &json!({})).unwrap(), secret_state());
}

#[test]
fn a_value_changed_in_the_database_does_not_decrypt() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = sealed(tmp.path(), "storage.key");
    run_job(&mut storage, &json!({"#a": "x"})).unwrap();
    let raw = storage.inner().state(&state_key()).unwrap().unwrap();
    let sealed_a = raw["component"]["#a"].as_str().unwrap().to_string();
    // Another component's or another configuration's ciphertext, or a flipped byte, is
    // refused.
    let cipher = StateCipher::open_or_create(&tmp.path().join("storage.key")).unwrap();
    let mut other = json!({"#a": "x"});
    cipher
        .seal(
            &StateKey {
                component: "keboola.other".into(),
                ..state_key()
            },
            &mut other,
        )
        .unwrap();
    let mut other_config = json!({"#a": "x"});
    cipher
        .seal(
            &StateKey {
                config: "another-config".into(),
                ..state_key()
            },
            &mut other_config,
        )
        .unwrap();
    for bad in [
        other["#a"].as_str().unwrap().to_string(),
        other_config["#a"].as_str().unwrap().to_string(),
        {
            let mut s = sealed_a.clone();
            let last = s.pop().unwrap();
            s.push(if last == 'A' { 'B' } else { 'A' });
            s
        },
    ] {
        let mut state = json!({"component": {"#a": bad}});
        let err = cipher.unseal(&state_key(), &mut state).unwrap_err();
        assert!(err.to_string().contains("component.#a"), "{err}");
    }
}

#[test]
fn old_plaintext_state_still_reads_and_is_encrypted_when_stored_again() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    {
        // Written as an older dockless did: straight into the backend.
        let mut plain = SqliteStorage::open(&tmp.path().join("storage.db")).unwrap();
        let mut tx = plain.begin().unwrap();
        tx.set_state(
            &state_key(),
            &json!({"component": {"#refresh_token": SECRET}}),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let mut storage = sealed(tmp.path(), "storage.key");
    let staged = run_job(&mut storage, &json!({"#refresh_token": SECRET})).unwrap();
    assert_eq!(staged, json!({"#refresh_token": SECRET}));
    drop(storage);
    assert!(!contains(&storage_bytes(tmp.path()), SECRET));
}

#[test]
fn a_key_file_that_is_a_link_or_readable_by_others_is_refused() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real.key");
    StateCipher::open_or_create(&real).unwrap();
    let before = std::fs::read(&real).unwrap();

    // A planted link, to a valid key or to nothing, is refused and never followed or created.
    let link = tmp.path().join("link.key");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let dangling = tmp.path().join("dangling.key");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    for path in [&link, &dangling] {
        let err = StateCipher::open_or_create(path).unwrap_err();
        assert!(matches!(err, Error::StateKeyFile { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("symbolic link") && text.contains(".key"),
            "{text}"
        );
    }
    assert!(!tmp.path().join("nowhere").exists());
    assert_eq!(std::fs::read(&real).unwrap(), before);

    // Group- or world-readable.
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = StateCipher::open_or_create(&real).unwrap_err().to_string();
    assert!(text.contains("0644") && text.contains("0600"), "{text}");

    // Not a key, not a file.
    let junk = tmp.path().join("junk.key");
    std::fs::write(&junk, "hello\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = StateCipher::open_or_create(&junk).unwrap_err().to_string();
    assert!(text.contains("does not hold a state key"), "{text}");
    let text = StateCipher::open_or_create(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(text.contains("not a regular file"), "{text}");

    // Another user's file (only root can make one).
    if rustix::process::geteuid().is_root() {
        let theirs = tmp.path().join("theirs.key");
        StateCipher::open_or_create(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let text = StateCipher::open_or_create(&theirs)
            .unwrap_err()
            .to_string();
        assert!(text.contains("owned by uid 65534"), "{text}");
    }
}

#[test]
fn jobs_creating_the_key_at_once_share_one_key() {
    open_umask();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("new/storage.key");
    let ciphers: Vec<StateCipher> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| StateCipher::open_or_create(&path).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut state = json!({"component": {"#a": "x"}});
    ciphers[0].seal(&state_key(), &mut state).unwrap();
    for cipher in &ciphers {
        let mut copy = state.clone();
        cipher.unseal(&state_key(), &mut copy).unwrap();
        assert_eq!(copy, json!({"component": {"#a": "x"}}));
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["storage.key"], "no temporary file is left");
}
