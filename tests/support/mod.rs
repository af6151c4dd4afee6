//! What every end-to-end test binary needs once: reading a command's output, the root check
//! and a test's own dockless root. Shared by `tests/cli` and `tests/rootless` (a binary may use
//! only part of it).
//!
//! The tests that need root, the local registries or real containers are
//! `#[ignore = "needs root and scripts/test-env"]`: plain `cargo test` skips them, and
//! `scripts/test` runs them all as root with `--include-ignored`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A command's output as text, lossily: assertion messages must show whatever came out.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails the test with the way to run it when it is not root: `what` says why it needs root.
/// An ignored test run as an ordinary user with `--include-ignored` then fails with a clear
/// message instead of a permission error deep in a run.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "{what}: run the tests through scripts/test"
    );
}

/// One test's dockless root (its own image store, Storage, job dirs and run state), removed
/// when dropped: tests running in parallel never share state.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// A fresh root; `what` is why the test needs root (see [`require_root`]).
    pub fn new(what: &str) -> Root {
        require_root(what);
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The root folder (`DOCKLESS_ROOT`; the run state is its `run/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `dockless args...` on this root with extra `env` and `stdin`; retries are fast (1 ms
    /// base) so that tests of failing registries do not wait.
    pub fn dockless_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", self.path())
            .env("DOCKLESS_RUN_ROOT", self.path().join("run"))
            .env("DOCKLESS_RETRY_BASE_MS", "1")
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dockless");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }
}

/// A `dockless` process a test started and waits for later. Should the test fail first, the
/// process is stopped on drop (SIGTERM: the runner stops its container and removes the run;
/// SIGKILL if it has not ended 30 s later), so a failed test never leaves a container waiting
/// for a signal that will not come.
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    /// Takes charge of `child`.
    pub fn new(child: std::process::Child) -> Spawned {
        Spawned(Some(child))
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("not waited for yet").id()
    }

    /// Waits for it and collects its output.
    pub fn wait_with_output(mut self) -> std::process::Output {
        let child = self.0.take().expect("not waited for yet");
        child.wait_with_output().expect("wait for dockless")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        // SAFETY: kill(2) of our own child, not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs git in `dir` with a fixed identity and time (commit ids are then reproducible) and
/// returns its stdout; a failure fails the test with git's message.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
        .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
        .output()
        .expect("git must be installed for dockless build");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A git repository at `dir` (created) with `files` (path, content) committed on `main`: a
/// component's source for `dockless build`.
pub fn commit_repo(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "component"]);
}

/// A command's stdout as JSON; when it is not, the test fails showing both streams.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Builds a component image with `dockless build` on this root: `main.sh` (`script`)
/// committed in a fresh repository under the root, the test registry's busybox as the base,
/// `/bin/sh /home/main.sh` as the entry point; returns `tag`.
pub fn busybox_component(root: &Root, script: &str, tag: &str) -> String {
    let repo = root.path().join("repo");
    commit_repo(&repo, &[("main.sh", script)]);
    let base = format!("{}/busybox:latest", dockless_testkit::test_env().registry);
    let out = root.dockless_with(
        &[
            "build",
            "--base",
            &base,
            "--repo",
            repo.to_str().unwrap(),
            "--ref",
            "HEAD",
            "--entrypoint",
            "/bin/sh /home/main.sh",
            "--tag",
            tag,
        ],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    tag.to_string()
}
