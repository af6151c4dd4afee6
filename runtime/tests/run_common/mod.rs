//! Shared fixture for the container integration tests: a busybox rootfs built from Debian's
//! busybox-static, a private state root and cgroup parent per test, and the leftover checks
//! every test ends with. These tests need root and create real containers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dockless_runtime::bundle::{ImageConfig, RunSpec};
use dockless_runtime::container::{RunResult, Runner, Stream};

/// The probe binary of this crate; `__helper` makes it the runtime helper.
pub const PROBE: &str = env!("CARGO_BIN_EXE_dockless-runtime-probe");

/// Fails (never skips) when a prerequisite is missing.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "container tests must run as root (they create namespaces and cgroups)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing: apt-get install busybox-static"
    );
}

/// One test's world: a rootfs, a state root and a cgroup parent nobody else uses.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub state: PathBuf,
    pub cgroup_parent: String,
}

impl Fixture {
    /// Builds a fresh busybox rootfs for test `name`.
    pub fn new(name: &str) -> Self {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix(&format!("dockless-rt-{name}-"))
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        build_busybox_rootfs(&rootfs);
        let state = dir.path().join("state");
        Self {
            rootfs,
            state,
            cgroup_parent: format!("dockless-test-{}-{name}", std::process::id()),
            dir,
        }
    }

    /// A host directory inside the fixture (e.g. for /data).
    pub fn host_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn runner(&self) -> Runner {
        Runner::new(PROBE, ["__helper"], &self.state).with_cgroup_parent(&self.cgroup_parent)
    }

    /// A spec running `sh -c script`.
    pub fn sh(&self, script: &str) -> RunSpec {
        let mut spec = RunSpec::new(ImageConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]),
            ..Default::default()
        });
        spec.command = Some(vec!["sh".into(), "-c".into(), script.into()]);
        spec
    }

    /// Runs `spec`, collecting streamed chunks, and panics with the error chain on failure.
    pub fn run(&self, spec: &RunSpec) -> Outcome {
        self.run_with(&self.runner(), spec)
    }

    pub fn run_with(&self, runner: &Runner, spec: &RunSpec) -> Outcome {
        let mut streamed_out = Vec::new();
        let mut streamed_err = Vec::new();
        let result = runner
            .run(&self.rootfs, spec, &mut |s, chunk| match s {
                Stream::Stdout => streamed_out.extend_from_slice(chunk),
                Stream::Stderr => streamed_err.extend_from_slice(chunk),
            })
            .unwrap_or_else(|e| panic!("run failed: {}", error_chain(&e)));
        Outcome {
            streamed_out: String::from_utf8_lossy(&streamed_out).into_owned(),
            streamed_err: String::from_utf8_lossy(&streamed_err).into_owned(),
            result,
        }
    }

    /// Asserts that nothing of any run is left: no cgroup below our parent in any hierarchy,
    /// no process in those cgroups, no state or run directory, no mount under the fixture.
    /// Removes the (empty) parent cgroups afterwards.
    pub fn assert_clean(&self) {
        let parents = cgroup_parent_dirs(&self.cgroup_parent);
        for parent in &parents {
            let children: Vec<_> = std::fs::read_dir(parent)
                .unwrap()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect();
            assert!(children.is_empty(), "leftover cgroups: {children:?}");
            let procs = std::fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
            assert!(
                procs.trim().is_empty(),
                "processes left in {parent:?}: {procs}"
            );
        }
        let stray = processes_in_cgroup_parent(&self.cgroup_parent);
        assert!(stray.is_empty(), "leftover processes: {stray:?}");
        for sub in ["runs", "containers"] {
            let dir = self.state.join(sub);
            if dir.exists() {
                let left: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                assert!(left.is_empty(), "leftover state in {dir:?}: {left:?}");
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let ours = self.dir.path().to_string_lossy().into_owned();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&ours)).collect();
        assert!(leaked.is_empty(), "leftover mounts: {leaked:?}");
        for parent in parents {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for parent in cgroup_parent_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

pub struct Outcome {
    pub streamed_out: String,
    pub streamed_err: String,
    pub result: RunResult,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        self.result.stdout.to_string_lossy()
    }
    pub fn stderr(&self) -> String {
        self.result.stderr.to_string_lossy()
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// `/sys/fs/cgroup/<hierarchy>/<parent>` for every hierarchy that has it.
pub fn cgroup_parent_dirs(parent: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = e.path().join(parent);
        if d.is_dir() {
            dirs.push(d);
        }
    }
    let unified = Path::new("/sys/fs/cgroup").join(parent);
    if unified.is_dir() && !dirs.contains(&unified) {
        dirs.push(unified);
    }
    dirs
}

/// Pids of processes whose cgroup (in any hierarchy) lies below `/<parent>/`.
pub fn processes_in_cgroup_parent(parent: &str) -> Vec<i32> {
    let needle = format!(":/{parent}/");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup"))
            && cg.contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A minimal image root: busybox-static with one symlink per applet, /etc/passwd and
/// /etc/group with root, alice (1000, also in staff) and nobody.
pub fn build_busybox_rootfs(root: &Path) {
    for d in ["bin", "etc", "root", "home/alice", "tmp", "var/tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\nnogroup:x:65534:\n",
    )
    .unwrap();
    let alice_home = root.join("home/alice");
    nix::unistd::chown(&alice_home, Some(1000.into()), Some(1000.into())).unwrap();
}
