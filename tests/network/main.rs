//! End-to-end `--network none|bridge|host` in a world of network namespaces the test builds
//! (see `world`): what each mode reaches, as root, as an ordinary user and with `--userns`; a
//! Keboola job whose component downloads its table; a flooding component; a missing pasta; a
//! killed runner's leftovers for `gc`. Every test checks that nothing is left: no pasta, no
//! namespace it did not create, no mount, and the host namespace's addresses, routes and nft
//! ruleset as before. Needs root, `scripts/test-env up` (the registry, the test user, passt,
//! dnsmasq, nftables).
//!
//! A binary of its own whose tests run one at a time: each counts pasta processes, which a
//! test running alongside would start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use dockless_testkit::test_env;
use serde_json::Value;

#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;
mod world;

use support::text;
use world::*;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn busybox() -> String {
    format!("{}/busybox:latest", test_env().registry)
}

/// What a container tries, one line each: the outside by name and by address (wget, body
/// printed), the host namespace's loopback and own address (a raw HTTP request with nc, whose
/// answer would contain the host's body).
fn probe_script() -> String {
    // Each answer on one line (an HTTP response has several).
    let get = "printf 'GET /f.txt HTTP/1.0\\r\\n\\r\\n'";
    let one = "2>&1 | tr '\\r\\n' '  '";
    format!(
        "echo \"by-name:$(wget -q -O - http://{OUTSIDE_NAME}:{OUTSIDE_PORT}/f.txt {one})\"
         echo \"by-address:$(wget -q -O - http://{OUTSIDE_ADDR}:{OUTSIDE_PORT}/f.txt {one})\"
         echo \"host-loopback:$({get} | nc -w 2 127.0.0.1 {HOST_LOOPBACK_PORT} {one})\"
         echo \"host-address:$({get} | nc -w 2 {HOST_ADDR} {HOST_ADDR_PORT} {one})\"
         echo \"host-other:$({get} | nc -w 2 {HOST_OTHER_ADDR} {HOST_OTHER_PORT} {one})\"
         cat /etc/resolv.conf"
    )
}

/// The value of `key:` in the probe's output.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} line in {out}"))
}

/// Asserts what `bridge` reaches: the outside by name and address, not the host's loopback,
/// nor its own address, nor its other address.
fn assert_bridge_reach(out: &Output) {
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(line(&stdout, "by-name"), OUTSIDE_BODY, "{stdout}");
    assert_eq!(line(&stdout, "by-address"), OUTSIDE_BODY, "{stdout}");
    assert!(
        !line(&stdout, "host-loopback").contains(HOST_BODY),
        "{stdout}"
    );
    assert!(
        !line(&stdout, "host-address").contains(HOST_BODY),
        "{stdout}"
    );
    assert!(!line(&stdout, "host-other").contains(HOST_BODY), "{stdout}");
    assert!(
        stdout.contains(&format!("nameserver {GATEWAY}")),
        "{stdout}"
    );
}

/// The state a test must leave as it found it.
struct Before {
    host: String,
    netns: Vec<String>,
}

impl Before {
    fn take(world: &World) -> Before {
        assert_eq!(
            pasta_processes(),
            Vec::<String>::new(),
            "pasta running before the test"
        );
        Before {
            host: world.host_state(),
            netns: named_netns(),
        }
    }

    /// No pasta (given a moment to be reaped), no new namespace, the host namespace as
    /// before, no mount and no run state below `root`.
    fn assert_unchanged(&self, world: &World, root: &Path) {
        let until = Instant::now() + Duration::from_secs(5);
        while !pasta_processes().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            pasta_processes(),
            Vec::<String>::new(),
            "pasta left running"
        );
        assert_eq!(named_netns(), self.netns, "network namespaces changed");
        assert_eq!(
            self.host,
            world.host_state(),
            "the host namespace changed (before, after)"
        );
        dockless_testkit::assert_clean(
            root,
            &[
                "rootfs-v1",
                "jobs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
            ],
        );
    }
}

/// A root test's dockless root with busybox pulled (from the machine's own namespace, where
/// the test registry listens).
fn root_with_busybox(userns: bool) -> support::Root {
    let root = support::Root::new("the network tests build namespaces");
    if userns {
        // The range's root must pass through to its rootfs.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let out = root.dockless_with(&["pull", "-q", &busybox()], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    root
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn bridge_reaches_the_outside_and_not_the_host_none_reaches_nothing_host_everything() {
    let _serial = serial();
    let root = root_with_busybox(false);
    let world = World::new();
    let before = Before::take(&world);
    let who = As::Root(root.path());
    let script = probe_script();

    let out = world.dockless(
        &who,
        &[
            "run",
            "--network",
            "bridge",
            &busybox(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
        "",
    );
    assert_bridge_reach(&out);

    // The same probe without a network: nothing answers (the bridge above is the control).
    let out = world.dockless(
        &who,
        &["run", &busybox(), "--", "sh", "-c", &script],
        &[],
        "",
    );
    let stdout = text(&out.stdout);
    for key in [
        "by-name",
        "by-address",
        "host-loopback",
        "host-address",
        "host-other",
    ] {
        let got = line(&stdout, key);
        assert!(
            !got.contains(OUTSIDE_BODY) && !got.contains(HOST_BODY),
            "{key}: {stdout}"
        );
    }

    // The host's network, as root only: everything the host namespace reaches.
    let out = world.dockless(
        &who,
        &[
            "run",
            "--network",
            "host",
            &busybox(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(line(&stdout, "by-name"), OUTSIDE_BODY, "{stdout}");
    assert!(
        line(&stdout, "host-loopback").contains(HOST_BODY),
        "{stdout}"
    );
    assert!(line(&stdout, "host-other").contains(HOST_BODY), "{stdout}");

    // --json names the mode.
    let out = world.dockless(
        &who,
        &[
            "run",
            "--json",
            "--network",
            "bridge",
            &busybox(),
            "--",
            "true",
        ],
        &[],
        "",
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["network"], "bridge", "{json}");
    assert_eq!(json["exit_code"], 0, "{json}");

    before.assert_unchanged(&world, root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn bridge_with_userns_reaches_the_outside_and_not_the_host() {
    let _serial = serial();
    let root = root_with_busybox(true);
    let world = World::new();
    let before = Before::take(&world);
    let script = probe_script() + "\ncat /proc/self/uid_map";
    let out = world.dockless(
        &As::Root(root.path()),
        &[
            "run",
            "--userns",
            "--network",
            "bridge",
            &busybox(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
        "",
    );
    assert_bridge_reach(&out);
    // Really in a user namespace of its own: uid 0 is not the host's root.
    let uid_map = text(&out.stdout);
    assert!(
        !uid_map
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]),
        "{uid_map}"
    );
    before.assert_unchanged(&world, root.path());
}

/// The rootless test user's home (owned by it) and a copy of the binary it may execute.
struct Rootless {
    name: String,
    home: tempfile::TempDir,
    binary: PathBuf,
}

impl Rootless {
    fn new() -> Rootless {
        support::require_root("the rootless network test switches users with runuser");
        let name =
            std::env::var("DOCKLESS_TEST_ROOTLESS_USER").unwrap_or_else(|_| "dockless-rl".into());
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            assert!(
                out.status.success(),
                "no user {name}: run scripts/test-env up"
            );
            text(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = tempfile::Builder::new()
            .prefix("dockless-net-rl-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin_dir = home.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        let binary = bin_dir.join("dockless");
        std::fs::copy(env!("CARGO_BIN_EXE_dockless"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let user_home = home.path().join("home");
        std::fs::create_dir(&user_home).unwrap();
        std::os::unix::fs::chown(&user_home, Some(uid), Some(gid)).unwrap();
        Rootless { name, home, binary }
    }

    fn home(&self) -> PathBuf {
        self.home.path().join("home")
    }

    fn who<'a>(&'a self, home: &'a Path, tun_mode: &'a str) -> As<'a> {
        As::User {
            name: &self.name,
            home,
            binary: &self.binary,
            tun_mode,
        }
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        // Files of subordinate ids are root's to remove; processes of the user must be gone.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn rootless_bridge_reaches_the_outside_and_not_the_host() {
    let _serial = serial();
    let user = Rootless::new();
    let home = user.home();
    // Pull as the user in the machine's namespace (the registry is on its loopback).
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--", "env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("DOCKLESS_ROOT={}", home.join("root").display()))
        .arg(format!(
            "DOCKLESS_RUN_ROOT={}",
            home.join("root/run").display()
        ))
        .arg(&user.binary)
        .args(["pull", "-q", &busybox()])
        .current_dir(&home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let world = World::new();
    let before = Before::take(&world);

    let args = [
        "run",
        "--network",
        "bridge",
        &busybox(),
        "--",
        "sh",
        "-c",
        &probe_script(),
    ];
    // pasta opens /dev/net/tun as the user: Debian's 0666 node works...
    let out = world.dockless(&user.who(&home, "666"), &args, &[], "");
    assert_bridge_reach(&out);
    // ... and a host whose node is root's alone gets an error that says so, not another mode.
    let out = world.dockless(&user.who(&home, "600"), &args, &[], "");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/dev/net/tun is not open to this user"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains(OUTSIDE_BODY));

    before.assert_unchanged(&world, &home.join("root"));
    let left = Command::new("pgrep")
        .args(["-u", &user.name])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes of {} left: {}",
        user.name,
        text(&left.stdout)
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_missing_pasta_is_an_error_naming_the_package() {
    let _serial = serial();
    let root = root_with_busybox(false);
    let world = World::new();
    let before = Before::take(&world);
    let out = world.dockless(
        &As::Root(root.path()),
        &[
            "run",
            "--network",
            "bridge",
            &busybox(),
            "--",
            "echo",
            "ran",
        ],
        &[("DOCKLESS_PASTA", "/nonexistent/pasta")],
        "",
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(!text(&out.stdout).contains("ran"), "it ran anyway");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("apt-get install passt"), "{stderr}");
    before.assert_unchanged(&world, root.path());
}

/// The job test's component: busybox + tests/network/download.sh, pushed once.
fn download_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let reference = format!("{}/net-download:test", test_env().registry);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(repo.join("examples/demo-component/build-image"))
            .arg(&reference)
            .arg("../../tests/network/download.sh")
            .output()
            .unwrap();
        assert!(out.status.success(), "build-image: {}", text(&out.stderr));
        reference
    })
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_jobs_component_downloads_its_table_through_the_bridge() {
    let _serial = serial();
    let image = download_image();
    let root = support::Root::new("the network tests build namespaces");
    let out = root.dockless_with(&["pull", "-q", image], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let world = World::new();
    let before = Before::take(&world);
    let config = serde_json::json!({
        "storage": {"output": {"tables": [
            {"source": "downloaded.csv", "destination": "out.c-net.downloaded"}
        ]}},
        "parameters": {}
    });
    let job = |network: &str| {
        let out = world.dockless(
            &As::Root(root.path()),
            &[
                "run",
                image,
                "--config",
                "-",
                "--json",
                "--network",
                network,
            ],
            &[],
            &config.to_string(),
        );
        let result: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out.stderr)));
        (result, text(&out.stderr))
    };
    // Without a network the component cannot download: a failed job, nothing loaded.
    let (result, stderr) = job("none");
    assert_eq!(result["status"], "error", "{result}");
    assert_eq!(result["network"], "none", "{result}");
    assert!(stderr.contains("network none"), "{stderr}");
    let (result, stderr) = job("bridge");
    assert_eq!(result["status"], "success", "{result} {stderr}");
    assert_eq!(result["network"], "bridge", "{result}");
    assert!(stderr.contains("network bridge"), "{stderr}");
    let out = root.dockless_with(&["storage", "export", "out.c-net.downloaded"], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = text(&out.stdout);
    for row in ["alpha", "beta"] {
        assert!(exported.contains(row), "{exported}");
    }
    before.assert_unchanged(&world, root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_flooding_component_is_bounded_by_pids_and_timeout() {
    let _serial = serial();
    let root = root_with_busybox(false);
    let world = World::new();
    let before = Before::take(&world);
    // Connection loops until the pids limit refuses more forks (the spawning subshell dies
    // of it, not the init), then the init waits for the timeout.
    let flood = format!(
        "( for i in $(seq 64); do \
             ( while :; do nc -w 1 {OUTSIDE_ADDR} {OUTSIDE_PORT} </dev/null >/dev/null 2>&1; done ) & \
           done ) 2>/dev/null; exec sleep 100"
    );
    let started = Instant::now();
    let out = world.dockless(
        &As::Root(root.path()),
        &[
            "run",
            "--json",
            "--network",
            "bridge",
            "--pids-limit",
            "32",
            "--timeout",
            "3s",
            &busybox(),
            "--",
            "sh",
            "-c",
            &flood,
        ],
        &[],
        "",
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", text(&out.stderr)));
    assert_eq!(json["timed_out"], true, "{json}");
    assert_eq!(json["exit_code"], 137, "{json}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // The outside still serves, and nothing of the run is left.
    world.wait_for(
        &format!("http://{OUTSIDE_ADDR}:{OUTSIDE_PORT}/f.txt"),
        OUTSIDE_BODY,
    );
    before.assert_unchanged(&world, root.path());
}

/// Pids of processes whose command line contains `needle` (as separate arguments or not).
fn pids_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if text(&cmdline).replace('\0', " ").contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Pids of processes whose command line is exactly `marker` (`sleep N`: the container's).
fn sleeping(marker: &str) -> Vec<i32> {
    let want: Vec<u8> = marker.replace(' ', "\0").into_bytes();
    pids_with(marker)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.strip_suffix(b"\0").unwrap_or(&cmdline) == want.as_slice()
        })
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_killed_runners_bridge_is_gone_and_gc_removes_the_rest() {
    let _serial = serial();
    let root = root_with_busybox(false);
    let world = World::new();
    let before = Before::take(&world);
    let marker = format!("sleep 7{}", std::process::id() % 100000);
    let run_dir = root.path().join("run");
    let bg = {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", world.host))
            .arg(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", root.path())
            .env("DOCKLESS_RUN_ROOT", &run_dir)
            .args([
                "run",
                "--network",
                "bridge",
                &busybox(),
                "--",
                "sh",
                "-c",
                &marker,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        support::Spawned::new(cmd.spawn().unwrap())
    };
    let until = Instant::now() + Duration::from_secs(20);
    // Until the container runs: killed between create and start, the helper would leave an
    // init that holds the run's lock until it is started (not this test's subject).
    while (pasta_processes().is_empty() || sleeping(&marker).is_empty()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pasta_processes().is_empty(), "pasta never started");
    // The runner and its helper die at once, as with the OOM killer or `kill -9`.
    let runtime_procs: Vec<i32> = pids_with("__runtime-helper")
        .into_iter()
        .chain([bg.id() as i32])
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .contains(&run_dir.display().to_string())
        })
        .collect();
    assert!(
        runtime_procs.len() >= 2,
        "runner and helper not found: {runtime_procs:?}"
    );
    for pid in &runtime_procs {
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    drop(bg);
    // pasta dies with its helper; the container is left for gc.
    let until = Instant::now() + Duration::from_secs(5);
    while !pasta_processes().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        pasta_processes(),
        Vec::<String>::new(),
        "pasta outlived its helper"
    );
    let out = world.dockless(&As::Root(root.path()), &["gc"], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let until = Instant::now() + Duration::from_secs(5);
    while !sleeping(&marker).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sleeping(&marker),
        Vec::<i32>::new(),
        "the container outlived gc"
    );
    before.assert_unchanged(&world, root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_build_command_downloads_through_the_bridge() {
    let _serial = serial();
    let root = root_with_busybox(false);
    let repo = root.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("main.sh"), "cat /home/got.txt\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "v1",
        ],
    ] {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    }
    let world = World::new();
    let before = Before::take(&world);
    let get = format!("wget -q -O /home/got.txt http://{OUTSIDE_NAME}:{OUTSIDE_PORT}/f.txt");
    let build = |network: &str| {
        world.dockless(
            &As::Root(root.path()),
            &[
                "build",
                "--json",
                "--base",
                &busybox(),
                "--repo",
                repo.to_str().unwrap(),
                "--ref",
                "main",
                "--entrypoint",
                "sh /home/main.sh",
                "--tag",
                &format!("localhost/net-build:{network}"),
                "--network",
                network,
                "--command",
                &get,
            ],
            &[],
            "",
        )
    };
    // Without a network the command cannot download: the build fails (the control).
    let out = build("none");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let out = build("bridge");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["network"], "bridge", "{built}");
    // The downloaded file is in the image; a run without network shows it.
    let out = world.dockless(
        &As::Root(root.path()),
        &["run", "localhost/net-build:bridge"],
        &[],
        "",
    );
    assert_eq!(
        text(&out.stdout).trim(),
        OUTSIDE_BODY,
        "{}",
        text(&out.stderr)
    );
    before.assert_unchanged(&world, root.path());
}
