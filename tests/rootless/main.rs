//! End-to-end, rootless: `dockless pull`, `run` and a Keboola job as an ordinary user with
//! subordinate id ranges (created by `scripts/test-env up`), through the real registry, real
//! containers in a user namespace and a real Storage file; and a user without ranges, who
//! must be told what to add. The test process is root only to switch users (`runuser`) and
//! to inspect the host side.
//!
//! A binary of its own, not a module of `tests/cli`: its tests run one at a time (`serial`)
//! and each asserts that the test user and its subordinate ids have no process left (killing
//! any when it ends). On a fresh machine the test user may well be uid 1000, the uid that root's
//! job tests run containers as: run in parallel with them, those would count as leftovers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use dockless_testkit::test_env;
use serde_json::Value;

// Shared with tests/cli; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

use support::text;

fn rootless_user() -> String {
    std::env::var("DOCKLESS_TEST_ROOTLESS_USER").unwrap_or_else(|_| "dockless-rl".into())
}

fn nosubid_user() -> String {
    std::env::var("DOCKLESS_TEST_NOSUBID_USER").unwrap_or_else(|_| "dockless-nosub".into())
}

/// One rootless test at a time: each checks afterwards that the user has no process left.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user of the host: name, uid, gid and the first subordinate uid/gid (if any).
struct User {
    name: String,
    uid: u32,
    gid: u32,
    subuid: Option<u32>,
    subgid: Option<u32>,
}

impl User {
    fn lookup(name: &str) -> User {
        support::require_root("the rootless tests switch users with runuser");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, name]).output().unwrap();
            assert!(
                out.status.success(),
                "test user {name} does not exist: run `scripts/test-env up` first"
            );
            text(&out.stdout).trim().parse().unwrap()
        };
        let first = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() == 3 && f[0] == name).then(|| f[1].parse().unwrap())
                })
        };
        User {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
            subuid: first("/etc/subuid"),
            subgid: first("/etc/subgid"),
        }
    }
}

/// The dockless binary where any user can run it: the build's own path may sit below a
/// directory only root can enter (a CI clone in a private temp dir).
fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Copies left by earlier test runs are of no use any more.
        for old in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            if old
                .file_name()
                .to_string_lossy()
                .starts_with("dockless-rootless-bin-")
            {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        // A fresh, unpredictable, root-owned directory: nobody else can plant a binary there.
        let dir = tempfile::Builder::new()
            .prefix("dockless-rootless-bin-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dst = dir.join("dockless");
        std::fs::copy(env!("CARGO_BIN_EXE_dockless"), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Removed when the test process exits (the harness exits through `exit`, which runs
        // atexit handlers), so that a run leaves no copy behind.
        extern "C" fn remove_copy() {
            if let Some(bin) = BIN.get().and_then(|b| b.parent()) {
                let _ = std::fs::remove_dir_all(bin);
            }
        }
        // SAFETY: registers a plain function without arguments; it runs once, at exit.
        unsafe { libc::atexit(remove_copy) };
        dst
    })
}

/// One test's home and dockless root, owned by the test user (removed by root afterwards,
/// subordinate-owned files included).
struct Session {
    user: User,
    dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Session {
    fn new(user: &str) -> Session {
        let serial = serial();
        let user = User::lookup(user);
        let dir = tempfile::Builder::new()
            .prefix("dockless-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        let s = Session {
            user,
            dir,
            _serial: serial,
        };
        s.assert_no_processes();
        s
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `dockless args...` as the user, with a clean environment (no XDG_RUNTIME_DIR).
    fn dockless(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.dockless_env(
            args,
            stdin,
            &[
                ("DOCKLESS_ROOT", self.root().to_str().unwrap()),
                (
                    "DOCKLESS_RUN_ROOT",
                    self.root().join("run").to_str().unwrap(),
                ),
            ],
        )
    }

    fn dockless_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.user.name, "--", "env", "-i"])
            .arg(format!("HOME={}", self.dir.path().display()))
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("DOCKLESS_RETRY_BASE_MS=1");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        let mut child = cmd
            .arg(binary())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runuser");
        let input = child.stdin.take().unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut input = input;
                let _ = std::io::Write::write_all(&mut input, stdin.unwrap_or("").as_bytes());
            });
        });
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.dockless(args, None);
        assert!(
            out.status.success(),
            "dockless {args:?} failed ({}): {}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// A 2 s timeout for a tree that ignores SIGTERM, with a background child (`sleep
    /// <marker>` twice): all of it must die.
    fn run_past_timeout(&self, image: &str, marker: u32) -> Output {
        let script = format!("trap '' TERM; sleep {marker} & sleep {marker}");
        self.dockless(
            &["run", "--timeout", "2s", image, "--", "sh", "-c", &script],
            None,
        )
    }

    /// Processes of the user or of its subordinate ids (container users).
    fn processes(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            let uid = meta.uid();
            let sub = self
                .user
                .subuid
                .is_some_and(|s| (s..s + 65_536).contains(&uid));
            if uid == self.user.uid || sub {
                let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!("{pid}: {}", text(&cmd).replace('\0', " ")));
            }
        }
        found
    }

    fn assert_no_processes(&self) {
        // A process that is just exiting may still be listed for a moment.
        for _ in 0..50 {
            if self.processes().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "processes of {} left: {:?}",
            self.user.name,
            self.processes()
        );
    }

    /// Nothing of any run is left: containers, bundles, rootfs dirs, job dirs, processes.
    /// (The overlays lived in the session's own mount namespace; they ended with it.)
    fn assert_clean(&self) {
        self.assert_no_processes();
        dockless_testkit::assert_clean(
            &self.root(),
            &[
                "rootfs-v1",
                "jobs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
            ],
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Let a failing test's processes (the user's and its subordinate ids') not spill into
        // the next one.
        for p in self.processes() {
            if let Some(Ok(pid)) = p.split(':').next().map(str::parse::<i32>) {
                // SAFETY: kill(2) with a pid just read from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn image(name: &str) -> String {
    format!("{}/{name}:latest", test_env().registry)
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn image_owners_map_into_the_subordinate_range() {
    let s = Session::new(&rootless_user());
    let layered = image("layered");
    s.ok(&["pull", "-q", &layered]);
    let out = s.ok(&[
        "run",
        &layered,
        "--",
        "sh",
        "-c",
        "id -u; stat -c '%u:%g %n' /fixture/owned-1000.txt /fixture/home-1000 /fixture/hello.txt; \
         cat /proc/self/uid_map /proc/self/gid_map",
    ]);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0", "{stdout}");
    assert_eq!(lines[1], "1000:1000 /fixture/owned-1000.txt", "{stdout}");
    assert_eq!(lines[2], "1000:1000 /fixture/home-1000", "{stdout}");
    assert_eq!(lines[3], "0:0 /fixture/hello.txt", "{stdout}");
    let map: Vec<Vec<&str>> = lines[4..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (uid, gid) = (s.user.uid.to_string(), s.user.gid.to_string());
    let (subuid, subgid) = (
        s.user
            .subuid
            .expect("the rootless test user has subuids")
            .to_string(),
        s.user
            .subgid
            .expect("the rootless test user has subgids")
            .to_string(),
    );
    assert_eq!(map[0], ["0", uid.as_str(), "1"], "{stdout}");
    assert_eq!(map[1], ["1", subuid.as_str(), "65536"], "{stdout}");
    assert_eq!(map[2], ["0", gid.as_str(), "1"], "{stdout}");
    assert_eq!(map[3], ["1", subgid.as_str(), "65536"], "{stdout}");

    // On the host: image uid 0 is the user, image uid 1000 is subordinate id 999 after the
    // first; never every file flattened to the user.
    let mut owners = std::collections::BTreeMap::new();
    for snap in std::fs::read_dir(s.root().join("snapshots-v2"))
        .unwrap()
        .flatten()
    {
        for name in ["owned-1000.txt", "hello.txt"] {
            if let Ok(m) = std::fs::symlink_metadata(snap.path().join("fixture").join(name)) {
                owners.insert(name, (m.uid(), m.gid()));
            }
        }
    }
    let sub = s.user.subuid.unwrap();
    let subg = s.user.subgid.unwrap();
    assert_eq!(owners.get("owned-1000.txt"), Some(&(sub + 999, subg + 999)));
    assert_eq!(owners.get("hello.txt"), Some(&(s.user.uid, s.user.gid)));

    // `dockless unshare` reaches files only the namespace can remove.
    let victim = s.dir.path().join("made-by-1000");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::chown(&victim, Some(sub + 999), Some(subg + 999)).unwrap();
    std::fs::write(victim.join("f"), "x").unwrap();
    std::os::unix::fs::chown(victim.join("f"), Some(sub + 999), Some(subg + 999)).unwrap();
    s.ok(&["unshare", "rm", "-rf", victim.to_str().unwrap()]);
    assert!(!victim.exists());
    s.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn exit_codes_streams_and_an_empty_network() {
    let s = Session::new(&rootless_user());
    let busybox = image("busybox");
    let out = s.dockless(
        &[
            "run",
            &busybox,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    // Only lo, and it is up (flags 0x9 = UP|LOOPBACK); the host's registry is unreachable.
    let script = format!(
        "ls /sys/class/net; cat /sys/class/net/lo/flags; \
         if wget -q -T 3 -O- http://{}/v2/ >/dev/null 2>&1; then echo reached; else echo unreachable; fi",
        test_env().registry
    );
    let out = s.ok(&["run", &busybox, "--", "sh", "-c", &script]);
    assert_eq!(text(&out.stdout), "lo\n0x9\nunreachable\n");

    // Host networking is refused, and says why.
    let out = s.dockless(&["run", "--network", "host", &busybox, "--", "true"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("host networking is not available rootless"),
        "{}",
        text(&out.stderr)
    );
    s.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn limits_not_enforced_are_named_and_the_timeout_kills_everything() {
    let s = Session::new(&rootless_user());
    let busybox = image("busybox");
    let out = s.dockless(
        &[
            "run", "--memory", "64m", "--cpus", "0.5", &busybox, "--", "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not enforced: memory limit 64m, cpu limit 0.5, pids limit 2048"),
        "{stderr}"
    );

    // A tree that ignores SIGTERM, with a background child: all of it dies at the timeout.
    let started = std::time::Instant::now();
    let out = s.run_past_timeout(&busybox, 4321);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    s.assert_clean();
}

/// The demo component (examples/demo-component), built and pushed once per test binary.
fn demo_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_demo("rootless-test", None))
}

/// The demo component running as uid 1000 instead of root.
fn demo_image_as_1000() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_demo("rootless-test-1000", Some("1000:1000")))
}

fn build_demo(tag: &str, user: Option<&str>) -> String {
    let reference = format!("{}/demo-component:{tag}", test_env().registry);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/build-image");
    let mut cmd = Command::new(&script);
    cmd.arg(&reference);
    if let Some(user) = user {
        cmd.env("DEMO_USER", user);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    reference
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_keboola_job_runs_rootless_with_state_and_mapping() {
    let image = demo_image();
    let s = Session::new(&rootless_user());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component");
    // The user may not be able to enter the checkout: give it its own copies.
    let own = |name: &str, from: &Path| -> PathBuf {
        let to = s.dir.path().join(name);
        std::fs::copy(from, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(s.user.uid), Some(s.user.gid)).unwrap();
        to
    };
    let orders = own("orders-1.csv", &example.join("data/orders-1.csv"));
    let config = own("config.json", &example.join("config.json"));
    s.ok(&[
        "storage",
        "import",
        orders.to_str().unwrap(),
        "in.c-demo.orders",
        "--primary-key",
        "id",
    ]);
    let job = |run: u32| -> Value {
        let out = s.dockless(
            &[
                "run",
                image,
                "--config",
                config.to_str().unwrap(),
                "--json",
                "--component-id",
                "demo-component",
                "--config-id",
                "demo",
            ],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "job {run}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // The demo prints its token as Keboola would mask it.
        assert!(!text(&out.stdout).contains("demo-token-do-not-print"));
        assert!(!text(&out.stderr).contains("demo-token-do-not-print"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = job(1);
    assert_eq!(first["status"], "success", "{first}");
    let exported = s.ok(&["storage", "export", "out.c-demo.orders_enriched"]);
    let enriched = text(&exported.stdout);
    let rows_before = enriched.lines().count();
    assert!(rows_before > 1, "{enriched}");

    // The second run reads the first run's state: no order is processed twice.
    let second = job(2);
    assert_eq!(second["status"], "success", "{second}");
    let exported = s.ok(&["storage", "export", "out.c-demo.orders_enriched"]);
    assert_eq!(text(&exported.stdout).lines().count(), rows_before);
    let stderr = text(&s.dockless(&["storage", "tables"], None).stdout);
    assert!(stderr.contains("out.c-demo.customer_totals"), "{stderr}");

    // A component whose image runs as uid 1000 gets /data and /tmp as its own and its
    // outputs are loaded.
    let out = s.dockless(
        &[
            "run",
            demo_image_as_1000(),
            "--config",
            config.to_str().unwrap(),
            "--config-id",
            "demo-1000",
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "success", "{result}");

    // Keboola's exit classes, as for root: 1 for a user error, 2 for an application error.
    for (simulate, code, says) in [
        ("user-error", 1, "the orders do not add up"),
        ("application-error", 2, "simulated crash"),
    ] {
        let mut failing: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        failing["parameters"]["simulate"] = simulate.into();
        let file = s.dir.path().join(format!("{simulate}.json"));
        std::fs::write(&file, failing.to_string()).unwrap();
        std::os::unix::fs::chown(&file, Some(s.user.uid), Some(s.user.gid)).unwrap();
        let out = s.dockless(
            &[
                "run",
                image,
                "--config",
                file.to_str().unwrap(),
                "--config-id",
                "demo",
            ],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{simulate}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    s.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn default_paths_are_the_users_xdg_dirs() {
    let s = Session::new(&rootless_user());
    let home = s.dir.path();
    let runtime = home.join("xdg-runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&runtime, Some(s.user.uid), Some(s.user.gid)).unwrap();
    let out = s.dockless_env(
        &["run", &image("busybox"), "--", "true"],
        None,
        &[("XDG_RUNTIME_DIR", runtime.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data = home.join(".local/share/dockless");
    assert!(
        data.join("store").is_dir(),
        "no store under {}",
        data.display()
    );
    assert!(data.join("snapshots-v2").is_dir());
    assert!(runtime.join("dockless/containers-v1").is_dir());
    let meta = std::fs::metadata(data.join("store")).unwrap();
    assert_eq!(meta.uid(), s.user.uid, "the store belongs to the user");
    s.assert_no_processes();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_user_without_subordinate_ids_is_told_what_to_add() {
    let s = Session::new(&nosubid_user());
    assert_eq!(
        s.user.subuid, None,
        "{} must have no /etc/subuid range",
        s.user.name
    );
    let out = s.dockless(&["run", &image("busybox"), "--", "true"], None);
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has no subordinate uid range in \"/etc/subuid\"")
            && stderr.contains("usermod --add-subuids"),
        "{stderr}"
    );
    // Storage needs no namespace.
    s.ok(&["storage", "tables"]);
    s.assert_no_processes();
}

/// Root's one-time `dockless delegate-cgroups USER`, undone when dropped.
struct Delegation {
    user: String,
}

impl Delegation {
    fn new(user: &str) -> Delegation {
        let out = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .args(["delegate-cgroups", user])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("/sys/fs/cgroup/memory/dockless-u"),
            "{}",
            text(&out.stdout)
        );
        Delegation {
            user: user.to_owned(),
        }
    }

    fn undo(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dockless"))
            .args(["delegate-cgroups", &self.user, "--undo"])
            .output()
            .unwrap()
    }
}

impl Drop for Delegation {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn limits_apply_in_a_cgroup_subtree_root_delegated() {
    let s = Session::new(&rootless_user());
    let delegation = Delegation::new(&s.user.name);
    let parent = format!("dockless-u{}", s.user.uid);
    let busybox = image("busybox");

    // Memory: the hog is OOM-killed and reported, and no limit is said to be missing.
    let out = s.dockless(
        &[
            "run",
            "--memory",
            "32m",
            &busybox,
            "--",
            "sh",
            "-c",
            "x=a; while true; do x=$x$x; done",
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(stderr.contains("ran out of memory"), "{stderr}");
    assert!(!stderr.contains("not enforced"), "{stderr}");

    // pids: the 21st process cannot be forked (and the shell gives up).
    let out = s.dockless(
        &[
            "run",
            "--pids-limit",
            "20",
            &busybox,
            "--",
            "sh",
            "-c",
            "for i in $(seq 40); do sleep 3 & done; wait",
        ],
        None,
    );
    assert!(
        text(&out.stderr).contains("can't fork"),
        "{}",
        text(&out.stderr)
    );

    // CPU: the quota is in the run's cgroup while it lives (read from the host).
    let cpu_parent = Path::new("/sys/fs/cgroup/cpu").join(&parent);
    let quota = std::thread::scope(|sc| {
        let run = sc.spawn(|| s.ok(&["run", "--cpus", "0.5", &busybox, "--", "sleep", "2"]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = None;
        while seen.is_none() && std::time::Instant::now() < deadline {
            for e in std::fs::read_dir(&cpu_parent)
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(q) = std::fs::read_to_string(e.path().join("cpu.cfs_quota_us")) {
                    seen = Some(q.trim().to_owned());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = run.join().unwrap();
        assert!(!text(&out.stderr).contains("not enforced"));
        seen
    });
    assert_eq!(quota.as_deref(), Some("50000"));

    // The timeout kills the whole tree through the delegated freezer.
    let out = s.run_past_timeout(&busybox, 4322);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    s.assert_clean();

    // Every run's cgroup is gone; only the delegated parents remain until undone.
    for (mount, _) in dockless_runtime::userns::v1_hierarchies() {
        let dir = mount.join(&parent);
        let children: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name())
            .collect();
        assert!(children.is_empty(), "{}: {children:?}", dir.display());
    }
    let out = delegation.undo();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!Path::new("/sys/fs/cgroup/memory").join(&parent).exists());
}

/// The container's own process (`sleep 4711` exec'd), not the runner whose command line
/// merely mentions it, nor the init before its exec.
fn is_the_container(process: &str) -> bool {
    process
        .split_once(": ")
        .is_some_and(|(_, cmdline)| cmdline.starts_with("sleep 4711"))
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_killed_rootless_runner_leaves_nothing_after_gc() {
    let s = Session::new(&rootless_user());
    let busybox = image("busybox");
    s.ok(&["pull", "-q", &busybox]);
    // setpriv execs (no intermediate process): the child is dockless itself.
    let mut child = Command::new("setpriv")
        .args([
            format!("--reuid={}", s.user.uid),
            format!("--regid={}", s.user.gid),
            "--clear-groups".to_owned(),
            "env".to_owned(),
            "-i".to_owned(),
            format!("HOME={}", s.dir.path().display()),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            format!("DOCKLESS_ROOT={}", s.root().display()),
            format!("DOCKLESS_RUN_ROOT={}", s.root().join("run").display()),
        ])
        .arg(binary())
        // As uid 1000: a subordinate id on the host, which only the user's own processes
        // outside any session may signal.
        .args(["run", "--user", "1000", &busybox, "--", "sleep", "4711"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let containers = s.root().join("run/containers-v1/containers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&containers).map_or(0, |d| d.count()) == 0
        || !s.processes().iter().any(|p| is_the_container(p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Runner and helper die (as from a signal to both): nothing is left that could end the
    // container, which has no cgroup rootless. gc must find and kill it. Both are stopped
    // first so that neither can see the other go and end the container itself (the runner
    // cleans up after a dead helper). The helper dies first: were it stopped when its runner
    // died, its process group (the container's too) would be orphaned with a stopped member,
    // and the kernel would SIGHUP the container.
    let helpers: Vec<i32> = s
        .processes()
        .iter()
        .filter(|p| p.contains("__runtime-helper"))
        .map(|p| p.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(!helpers.is_empty(), "no helper among {:?}", s.processes());
    let runner = child.id() as i32;
    let stopped = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|st| st.lines().any(|l| l.starts_with("State:\tT")))
    };
    for pid in std::iter::once(&runner).chain(&helpers) {
        // SAFETY: kill(2) with a pid we just read (the runner is our child, not reaped).
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::iter::once(&runner)
        .chain(&helpers)
        .all(|p| stopped(*p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "runner and helper never stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for pid in &helpers {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let states: Vec<String> = s
        .processes()
        .iter()
        .map(|p| {
            let pid = p.split(':').next().unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(k))
                    .unwrap_or_default()
                    .to_owned()
            };
            format!(
                "{p} [{} {} {}]",
                field("Name:"),
                field("State:"),
                field("PPid:")
            )
        })
        .collect();
    assert!(
        s.processes().iter().any(|p| is_the_container(p)),
        "the container should outlive its runner and helper here: {states:?}"
    );

    // gc (from outside any session) kills the recorded init, and with it its pid namespace;
    // the overlay went with the dead session's mount namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        s.ok(&["gc"]);
        let runs =
            std::fs::read_dir(s.root().join("run/containers-v1/runs")).map_or(0, |d| d.count());
        let rootfs = std::fs::read_dir(s.root().join("rootfs-v1")).map_or(0, |d| d.count());
        if runs == 0 && rootfs == 0 && s.processes().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gc never cleaned up: {runs} runs, {rootfs} rootfs entries, {:?}",
            s.processes()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    s.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_refused_id_mapping_and_a_foreign_run_state_dir_are_clear_errors() {
    let s = Session::new(&rootless_user());
    let busybox = image("busybox");

    // newuidmap that refuses (as it does for ranges the user does not own): its status and
    // message are reported, not ignored.
    let fake = s.dir.path().join("fake-bin");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(
        fake.join("newuidmap"),
        "#!/bin/sh\necho 'newuidmap: write to uid_map failed: refused by the test' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        fake.join("newuidmap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!("PATH={}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
    let (key, value) = path.split_once('=').unwrap();
    let out = s.dockless_env(
        &["run", &busybox, "--", "true"],
        None,
        &[
            ("DOCKLESS_ROOT", s.root().to_str().unwrap()),
            ("DOCKLESS_RUN_ROOT", s.root().join("run").to_str().unwrap()),
            (key, value),
        ],
    );
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("newuidmap")
            && stderr.contains("refused by the test")
            && stderr.contains("exit status: 1"),
        "{stderr}"
    );

    // A runtime state dir that is not the user's own (here: root's) is refused.
    let foreign = s.dir.path().join("roots-run");
    std::fs::create_dir(&foreign).unwrap();
    let out = s.dockless_env(
        &["run", &busybox, "--", "true"],
        None,
        &[
            ("DOCKLESS_ROOT", s.root().to_str().unwrap()),
            ("DOCKLESS_RUN_ROOT", foreign.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("is not a directory of uid"),
        "{}",
        text(&out.stderr)
    );
    s.assert_no_processes();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn sigterm_to_a_rootless_run_stops_the_container_and_leaves_nothing() {
    let s = Session::new(&rootless_user());
    let busybox = image("busybox");
    s.ok(&["pull", "-q", &busybox]);
    // setpriv execs: the child is dockless itself, the process a terminal or systemd
    // signals (it enters its user namespace in place, without a fork).
    let child = Command::new("setpriv")
        .args([
            format!("--reuid={}", s.user.uid),
            format!("--regid={}", s.user.gid),
            "--clear-groups".to_owned(),
            "env".to_owned(),
            "-i".to_owned(),
            format!("HOME={}", s.dir.path().display()),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            format!("DOCKLESS_ROOT={}", s.root().display()),
            format!("DOCKLESS_RUN_ROOT={}", s.root().join("run").display()),
        ])
        .arg(binary())
        .args(["run", "--stop-timeout", "1", &busybox, "--"])
        .args(["sh", "-c", "trap '' TERM; sleep 4711"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !s.processes().iter().any(|p| is_the_container(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let signalled = std::time::Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
    s.assert_clean();
}

/// Copies a folder tree, giving every entry to `user`.
fn copy_tree_to(from: &Path, to: &Path, user: &User) {
    std::fs::create_dir_all(to).unwrap();
    std::os::unix::fs::chown(to, Some(user.uid), Some(user.gid)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree_to(&entry.path(), &target, user);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            std::os::unix::fs::chown(&target, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn functional_tests_run_rootless_with_an_image_user_of_its_own() {
    let image = demo_image_as_1000();
    let s = Session::new(&rootless_user());
    let cases = s.dir.path().join("cases");
    let demo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/tests/functional");
    copy_tree_to(&demo, &cases, &s.user);
    // One case that fails: an expected line the component does not write.
    copy_tree_to(&demo.join("next-run"), &cases.join("wrong"), &s.user);
    let state = cases.join("wrong/expected/data/out/state.json");
    std::fs::write(&state, r#"{"last_id": 7, "runs": 2, "totals": "x"}"#).unwrap();
    let out = s.dockless(
        &[
            "test",
            image,
            cases.to_str().unwrap(),
            "--json",
            "--keep",
            "--jobs",
            "2",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&result["passed"], &result["failed"]),
        (&Value::from(3), &Value::from(1)),
        "{result:#}"
    );
    let wrong = result["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wrong")
        .unwrap();
    assert_eq!(
        wrong["message"], "out/state.json at \"/last_id\": expected 7, got 6",
        "{result:#}"
    );
    // Kept under the user's own root, owned (in the namespace) by the image's user.
    let kept = PathBuf::from(wrong["kept"].as_str().unwrap());
    assert!(kept.starts_with(s.root().join("tests-kept")), "{kept:?}");
    let owner = std::fs::metadata(kept.join("out/state.json"))
        .unwrap()
        .uid();
    assert_eq!(
        Some(owner),
        s.user.subuid.map(|sub| sub + 999),
        "image uid 1000 is subordinate id 999"
    );
    s.ok(&["unshare", "rm", "-rf", kept.to_str().unwrap()]);
    s.assert_clean();
}

/// A busybox component that logs two GELF messages over TCP (busybox `nc` waits for the
/// server to hang up, which a GELF server never does: it is stopped once the data is out).
const GELF_TCP_SENDER: &str = r#"#!/bin/sh
printf '{"host":"c","short_message":"rootless warning","level":4,"timestamp":1700000000}\0{"host":"c","short_message":"rootless info","level":6,"timestamp":1700000001}\0' \
	| nc "$KBC_LOGGER_ADDR" "$KBC_LOGGER_PORT" &
sleep 1
kill $! 2>/dev/null
echo sent
"#;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn gelf_logging_works_rootless_with_no_network() {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), GELF_TCP_SENDER).unwrap();
    let reference = format!("{}/gelf-tcp-sender:rootless-test", test_env().registry);
    let out = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/build-image"),
    )
    .arg(&reference)
    .arg(script.path())
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let s = Session::new(&rootless_user());
    let config = s.dir.path().join("config.json");
    std::fs::write(&config, r#"{"parameters": {}}"#).unwrap();
    std::os::unix::fs::chown(&config, Some(s.user.uid), Some(s.user.gid)).unwrap();
    let out = s.dockless(
        &[
            "run",
            &reference,
            "--config",
            config.to_str().unwrap(),
            "--logging",
            "gelf",
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let events: Vec<(&str, &str)> = result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["level"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [("warning", "rootless warning"), ("info", "rootless info")],
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("WARNING: rootless warning"));
    assert_eq!(result["logging"]["server_type"], "tcp");
    s.assert_clean();
}
