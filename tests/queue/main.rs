//! The job queue of a PostgreSQL Storage end to end: `dockless submit`, several `dockless
//! worker` processes, `jobs`, `job`, `logs`, `kill`, against the test environment's real
//! PostgreSQL (a fresh database per test) and real containers; the restart test runs a
//! PostgreSQL cluster of its own, so that restarting it disturbs no other test.
//!
//! Needs root and `scripts/test-env up` (the registries, PostgreSQL): run by `scripts/test`.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod queue;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Root, Spawned, json_of, text};

/// A database of its own on the test environment's PostgreSQL, dropped at the end.
pub use dockless_testkit::TestDatabase as Database;

/// A dockless root with a Storage URL: every command of a test's "host".
pub struct Host {
    /// The host's own dockless root.
    pub root: Root,
    /// The Storage every host shares.
    pub url: String,
    /// The state key file every host shares (copied into each root).
    key: std::path::PathBuf,
}

impl Host {
    /// A host on `url` whose state key is the file at `key` (created by the first host).
    pub fn new(url: &str, key: Option<&Path>) -> Host {
        let root = Root::new("the job queue runs real containers");
        let own = root.path().join("storage.key");
        if let Some(key) = key {
            std::fs::copy(key, &own).unwrap();
        }
        Host {
            root,
            url: url.to_string(),
            key: own,
        }
    }

    /// The state key file of this host (for the next host).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// `dockless args...` on this host.
    pub fn dockless(&self, args: &[&str]) -> Output {
        self.root
            .dockless_with(args, &[("DOCKLESS_STORAGE", self.url.as_str())], "")
    }

    /// `dockless worker --host NAME ...` in the background, in a process group of its own
    /// (so that a test can kill the whole "host" at once).
    pub fn worker(&self, name: &str, extra: &[&str]) -> Spawned {
        use std::os::unix::process::CommandExt as _;
        let log =
            std::fs::File::create(self.root.path().join(format!("worker-{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", self.root.path())
            .env("DOCKLESS_RUN_ROOT", self.root.path().join("run"))
            .env("DOCKLESS_STORAGE", &self.url)
            .args(["worker", "--host", name, "--poll", "1s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start a worker");
        Spawned::new(child)
    }

    /// Asserts that the runs and jobs of this host left nothing: no mount, container, job
    /// directory, root filesystem or queued job folder.
    pub fn assert_clean(&self) {
        dockless_testkit::assert_clean(
            self.root.path(),
            &["jobs-v1", "rootfs-v1", "run/containers-v1/runs", "queued"],
        );
    }

    /// What the worker `name` printed.
    pub fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.path().join(format!("worker-{name}.log")))
            .unwrap_or_default()
    }

    /// `dockless jobs --json`.
    pub fn jobs(&self) -> Vec<Value> {
        let out = self.dockless(&["jobs", "--json", "--limit", "10000"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        json_of(&out).as_array().unwrap().clone()
    }

    /// Submits the job file at `path`; returns the new job's id (the last word printed).
    pub fn submit(&self, path: &Path) -> i64 {
        let out = self.dockless(&["submit", path.to_str().unwrap()]);
        assert!(out.status.success(), "submit: {}", text(&out.stderr));
        let printed = text(&out.stdout);
        printed
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no job id in {printed:?}"))
    }

    /// Waits until every job has ended, at most `limit`; returns them.
    pub fn wait_all_ended(&self, expected: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let jobs = self.jobs();
            let ended = jobs
                .iter()
                .filter(|j| {
                    matches!(
                        j["status"].as_str(),
                        Some("success" | "error" | "terminated")
                    )
                })
                .count();
            if jobs.len() == expected && ended == expected {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "{ended} of {expected} jobs ended after {limit:?}: {jobs:#?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until job `id` has `status`, at most `limit`; returns the job.
    pub fn wait_status(&self, id: i64, status: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.dockless(&["job", &id.to_string(), "--json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let job = json_of(&out);
            if job["job"]["status"] == status {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is not {status} after {limit:?}: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Sends `signal` to the process group of `worker` (the worker and its jobs' processes).
pub fn signal_group(worker: &Spawned, signal: i32) {
    // SAFETY: kill(2) of a process group this test created.
    unsafe { libc::kill(-(worker.id() as i32), signal) };
}

/// The host of `worker` dies: the worker and every process below it (each job's process has a
/// process group of its own, and its containers are below it) stop at once, frozen first with
/// SIGSTOP so that none of them reacts, then SIGKILLed.
pub fn kill_host(worker: &Spawned) {
    let tree = descendants(worker.id() as i32);
    for signal in [libc::SIGSTOP, libc::SIGKILL] {
        for pid in &tree {
            // SAFETY: kill(2) of processes this test started (the worker and its children).
            unsafe { libc::kill(*pid, signal) };
        }
    }
}

/// `root` and every process below it, from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}
