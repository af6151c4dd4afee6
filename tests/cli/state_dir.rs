//! End-to-end: what dockless leaves on disk is its user's alone (issue 18, item 3). Under a
//! umask of 022, after a pull, a build and a job that stores `#` state, no file or folder
//! below `--root` or the run state is open to group or others, except the two folders a
//! `--userns` container's root must pass through (0711: the root itself and `rootfs-v1`), and
//! the stored state keeps its `#` value encrypted. Needs root and `scripts/test-env up`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dockless_staging::{SealedStorage, SqliteStorage, StateCipher, StateKey, Storage};
use dockless_testkit::test_env;
use serde_json::json;

use crate::support::{self, git, text};

const TOKEN: &str = "tok-PLAIN-4711";

/// `dockless args...` under umask 022 on `root` (created by dockless) and `run`.
fn dockless(root: &Path, run: &Path, args: &[&str]) -> Output {
    let out = Command::new("sh")
        .args([
            "-c",
            "umask 022 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_dockless"),
        ])
        .args(args)
        .env("DOCKLESS_ROOT", root)
        .env("DOCKLESS_RUN_ROOT", run)
        .env("DOCKLESS_RETRY_BASE_MS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dockless {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// Every entry below `dir` with its mode; the contents of snapshots (the image's own modes,
/// behind the 0700 `snapshots-v2`) are not walked.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.mode() & 0o7777));
        if meta.is_dir() && !path.ends_with("snapshots-v2") {
            walk(&path, out);
        }
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn state_is_private_under_umask_022_and_secret_state_is_encrypted() {
    let test = support::Root::new("dockless run needs root here");
    let root = test.path().join("state");
    let run = test.path().join("run");
    let base = format!("{}/busybox:latest", test_env().registry);
    dockless(&root, &run, &["pull", &base]);

    // A component whose state holds a secret.
    let repo = test.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("main.sh"),
        format!("echo '{{\"#refresh_token\": \"{TOKEN}\", \"n\": 1}}' > /data/out/state.json\n"),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "v1"]);
    let built = dockless(
        &root,
        &run,
        &[
            "build",
            "--json",
            "--base",
            &base,
            "--repo",
            repo.to_str().unwrap(),
            "--ref",
            "main",
            "--entrypoint",
            "sh /home/main.sh",
        ],
    );
    let built: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let image = built["name"].as_str().expect("the built image's name");
    let config = test.path().join("config.json");
    std::fs::write(&config, json!({"parameters": {}}).to_string()).unwrap();
    dockless(
        &root,
        &run,
        &[
            "run",
            image,
            "--config",
            config.to_str().unwrap(),
            "--component-id",
            "sealed",
            "--config-id",
            "cfg-1",
        ],
    );

    let mut entries = vec![(
        root.clone(),
        std::fs::metadata(&root).unwrap().mode() & 0o7777,
    )];
    walk(&root, &mut entries);
    walk(&run, &mut entries);
    let passable = [root.clone(), root.join("rootfs-v1")];
    for (path, mode) in &entries {
        if passable.contains(path) {
            assert_eq!(*mode, 0o711, "{} (passable for --userns)", path.display());
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:04o}", path.display());
        }
    }
    for expected in [
        "storage.db",
        "storage.key",
        "store/images-v1.json",
        "jobs-v1",
        "builds-v1",
    ] {
        assert!(
            entries.iter().any(|(p, _)| *p == root.join(expected)),
            "{expected} was walked"
        );
    }

    // The secret is not in the database file; dockless's key decrypts it.
    let db = std::fs::read(root.join("storage.db")).unwrap();
    assert!(
        !db.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "plaintext # value in storage.db"
    );
    let storage = SealedStorage::new(
        SqliteStorage::open(&root.join("storage.db")).unwrap(),
        StateCipher::open_or_create(&root.join("storage.key")).unwrap(),
    );
    let state = storage
        .state(&StateKey {
            component: "sealed".into(),
            config: "cfg-1".into(),
            row: None,
        })
        .unwrap()
        .expect("state stored");
    assert_eq!(state["component"]["#refresh_token"], TOKEN);
    assert_eq!(state["component"]["n"], 1);
}
