//! End-to-end: `dockless run` (plain mode) and `dockless gc` with real containers from the
//! local test registry. Needs root (scripts/test runs as root).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dockless_testkit::{mounts_below, test_env};

use crate::support::{self, text};

fn dockless(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root)
        .env("DOCKLESS_RUN_ROOT", root.join("run"))
        .args(args)
        .output()
        .expect("run dockless")
}

fn require_root() {
    support::require_root("dockless run needs root here");
}

/// Asserts that a root has no run left: no mount, no container state, no rootfs dir.
fn assert_clean(root: &Path) {
    dockless_testkit::assert_clean(
        root,
        &[
            "rootfs-v1",
            "run/containers-v1/runs",
            "run/containers-v1/containers",
        ],
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn exit_codes_streams_and_data_round_trip() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the host\n").unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    let out = dockless(
        root.path(),
        &[
            "run",
            "--data",
            data.path().to_str().unwrap(),
            &image,
            "--",
            "sh",
            "-c",
            "cat /data/in.txt; echo to-stderr >&2; echo written > /data/out.txt; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host\n");
    assert!(
        text(&out.stderr).ends_with("to-stderr\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("out.txt")).unwrap(),
        "written\n"
    );
    for code in [0, 1] {
        let out = dockless(
            root.path(),
            &["run", &image, "--", "sh", "-c", &format!("exit {code}")],
        );
        assert_eq!(out.status.code(), Some(code));
    }
    assert_clean(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn no_network_but_loopback_and_the_image_cmd_by_default() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    let out = dockless(
        root.path(),
        &[
            "run",
            &image,
            "--",
            "sh",
            "-c",
            "ls /sys/class/net; cat /sys/class/net/lo/operstate",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert_eq!(listing.lines().next(), Some("lo"), "only lo: {listing}");
    assert_eq!(listing.lines().count(), 2, "{listing}");
    // The registry on the host's loopback is not reachable from the container's.
    let out = dockless(
        root.path(),
        &[
            "run",
            &image,
            "--",
            "sh",
            "-c",
            &format!("wget -q -T 2 -O- http://{}/v2/", env.registry),
        ],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "the host's registry must be unreachable"
    );
    assert_clean(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn timeout_kills_and_is_reported() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    let started = Instant::now();
    let out = dockless(
        root.path(),
        &[
            "run",
            "--timeout",
            "1",
            &image,
            "--",
            "sh",
            "-c",
            "sleep 100 & sleep 100",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "did not wait for sleep 100"
    );
    let json = dockless(
        root.path(),
        &[
            "run",
            "--json",
            "--timeout",
            "1s",
            &image,
            "--",
            "sleep",
            "100",
        ],
    );
    let result: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(result["timed_out"], true);
    assert_clean(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn gc_removes_what_a_killed_runner_left() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    assert!(
        dockless(root.path(), &["pull", "-q", &image])
            .status
            .success()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root.path())
        .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
        .args(["run", &image, "--", "sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let containers = root.path().join("run/containers-v1/containers");
    while std::fs::read_dir(&containers)
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
        || mounts_below(root.path()).is_empty()
    {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !mounts_below(root.path()).is_empty(),
        "the killed runner left its overlay mounted"
    );

    // The helper may still be tearing down on its own; gc must leave nothing either way.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = dockless(root.path(), &["gc"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let left = std::fs::read_dir(root.path().join("run/containers-v1/runs"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 && mounts_below(root.path()).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gc never cleaned up: {}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_clean(root.path());
}

#[test]
fn a_systemd_cgroup_manager_is_refused_where_pid_1_is_not_systemd() {
    // This host boots without systemd; the guests (scripts/test-guest) test the other case.
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test needs a host whose PID 1 is not systemd"
    );
    let root = tempfile::tempdir().unwrap();
    for set_by in ["flag", "env"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockless"));
        cmd.env("DOCKLESS_ROOT", root.path())
            .env("DOCKLESS_RUN_ROOT", root.path().join("run"));
        if set_by == "flag" {
            cmd.args(["--cgroup-manager", "systemd"]);
        } else {
            cmd.env("DOCKLESS_CGROUP_MANAGER", "systemd");
        }
        let out = cmd.args(["run", "busybox", "--", "true"]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{set_by}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--cgroup-manager systemd: PID 1 is not systemd"),
            "{set_by}: {stderr}"
        );
    }
    let out = dockless(root.path(), &["--cgroup-manager", "docker", "gc"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn usage_errors_exit_125_not_a_job_class() {
    let root = tempfile::tempdir().unwrap();
    let out = dockless(root.path(), &["run", "--no-such-flag", "busybox"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(dockless(root.path(), &["--help"]).status.success());
    // A URL of a backend dockless does not have is never taken as a file name (issue 18):
    // refused, and nothing created (postgres:// is a backend, tested in tests/cli/postgres.rs).
    for storage in ["mysql://u@127.0.0.1/db", "sqlite://x.db"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .current_dir(root.path())
            .env("DOCKLESS_ROOT", root.path())
            .args(["--storage", storage, "storage", "tables"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{storage}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("is not a Storage backend dockless has"),
            "{stderr}"
        );
        let made: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
        assert!(made.is_empty(), "{storage}: {made:?}");
    }
}

/// The committed snapshots (chain ids) of a root's plain store.
fn snapshots(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("snapshots-v2"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Issue 18, item 9: an image removed while a container of it runs keeps its unpacked layers
/// for that run; once the run is over, `gc` removes them (they used to stay for good).
#[test]
#[ignore = "needs root and scripts/test-env"]
fn layers_of_an_image_removed_during_a_run_are_collected_after_it() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let layered = format!("{}/layered:latest", env.registry);
    let busybox = format!("{}/busybox:latest", env.registry);
    for image in [&layered, &busybox] {
        let out = dockless(root.path(), &["pull", "-q", image]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let before = snapshots(root.path());
    assert!(before.len() > 1, "{before:?}");
    let child = crate::support::Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", root.path())
            .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
            .args(["run", "--data", data.path().to_str().unwrap(), &layered])
            .args([
                "--",
                "sh",
                "-c",
                "until [ -e /data/go ]; do sleep 0.05; done",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while mounts_below(&root.path().join("rootfs-v1")).is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = dockless(root.path(), &["rmi", &layered]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kept while a container uses them"),
        "{}",
        text(&out.stderr)
    );
    // Busybox's layer is shared and still referenced; layered's own are in use.
    assert_eq!(snapshots(root.path()), before);
    std::fs::write(data.path().join("go"), "").unwrap();
    let out = child.wait_with_output();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = dockless(root.path(), &["gc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let removed = before.len() - 1;
    assert!(
        text(&out.stdout).contains(&format!(
            "removed {removed} unpacked layer(s) no image references (0 kept"
        )),
        "{}",
        text(&out.stdout)
    );
    // Only busybox's layer is left, and busybox still runs.
    assert_eq!(snapshots(root.path()).len(), 1);
    let out = dockless(root.path(), &["run", &busybox, "--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean(root.path());
}

/// Sends `signal` (a name for kill(1), e.g. `TERM`) to `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// `dockless run` of a TERM-ignoring container stopped by `signal` once it runs: the
/// container gets SIGKILL after the grace period (1 s), nothing is left, and dockless exits
/// 128 + the signal.
fn stop_a_plain_run_with(signal: &str, expected: i32) {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    let child = crate::support::Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", root.path())
            .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
            .args(["run", "--stop-timeout", "1", "--data"])
            .arg(data.path())
            .args([
                &image,
                "--",
                "sh",
                "-c",
                "trap '' TERM INT HUP; touch /data/ready; sleep 1000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let ready = data.path().join("ready");
    let started = Instant::now();
    while !ready.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    send_signal(child.id(), signal);
    let out = child.wait_with_output();
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(expected), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("stopped by SIG{signal}")),
        "{}",
        text(&out.stderr)
    );
    assert!(took >= Duration::from_secs(1), "no grace period: {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_clean(root.path());
    assert!(mounts_below(root.path()).is_empty());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn sigterm_stops_the_container_removes_everything_and_exits_143() {
    stop_a_plain_run_with("TERM", 143);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn sigint_stops_the_container_removes_everything_and_exits_130() {
    stop_a_plain_run_with("INT", 130);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn sighup_stops_the_container_removes_everything_and_exits_129() {
    stop_a_plain_run_with("HUP", 129);
}

/// Issue 18: a `--cpus` no host could give and a working directory that is a file are named,
/// not a raw EINVAL or libcontainer's "failed to unix syscall"; a missing working directory is
/// made, as docker and podman make it.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn bad_cpus_and_working_directories_are_named() {
    require_root();
    let env = test_env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", env.registry);
    for (args, expected) in [
        (
            &["--cpus", "1e308"][..],
            "invalid cpu limit 1e308: the range of CPUs is from 0.01 to",
        ),
        (&["--cpus", "0.001"][..], "invalid cpu limit 0.001"),
        (
            &["-w", "/etc/passwd"][..],
            "working directory \"/etc/passwd\" is not a directory in the image",
        ),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[&image, "--", "true"]);
        let out = dockless(root.path(), &all);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = dockless(
        root.path(),
        &["run", "-w", "/made/for/me", &image, "--", "pwd"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/made/for/me\n");
    assert_clean(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn the_built_in_seccomp_profile_needs_no_file_of_another_package() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/busybox:latest", test_env().registry);
    // A host without podman's profile: /usr/share/containers hidden in a private mount
    // namespace (as on a fresh Debian without golang-github-containers-common).
    let script = "set -e; mount -t tmpfs none /usr/share/containers; \
                  test ! -e /usr/share/containers/seccomp.json; exec \"$@\"";
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_dockless"))
        .args([
            "run",
            &image,
            "--",
            "sh",
            "-c",
            // The filter is on (mode 2), an allowed call works, a refused one fails.
            "grep '^Seccomp:' /proc/self/status; echo fine > /tmp/x && cat /tmp/x; \
             if unshare -U true 2>/dev/null; then echo unshare-allowed; else echo unshare-refused; fi",
        ])
        .env("DOCKLESS_ROOT", root.path())
        .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Seccomp:\t2\nfine\nunshare-refused\n",
        "{}",
        text(&out.stderr)
    );
    assert_clean(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_image_of_sixty_layers_runs_through_the_legacy_overlay_mount() {
    require_root();
    // A long state directory: sixty layer paths under it far exceed the one page of options
    // mount(2) takes (the path of kernels before 6.8, forced here).
    let top = tempfile::tempdir().unwrap();
    let root = top
        .path()
        .join("a-state-directory-with-a-rather-long-name-as-some-hosts-have-them")
        .join("and-one-more-level-of-it-to-make-every-layer-path-longer");
    std::fs::create_dir_all(&root).unwrap();
    let repo = top.path().join("repo");
    support::commit_repo(&repo, &[("main.sh", "cat /layers/*\n")]);
    let base = format!("{}/busybox:latest", test_env().registry);
    let commands: Vec<String> = (1..=58)
        .map(|i| format!("mkdir -p /layers && echo {i} > /layers/{i:02}"))
        .collect();
    let mut args = vec![
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
        "localhost/sixty:1",
        "--json",
        "-q",
    ];
    for c in &commands {
        args.extend(["--command", c.as_str()]);
    }
    let out = dockless(&root, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The layers the build made: the code and one per command (60 with the base's).
    assert_eq!(built["layers"].as_array().unwrap().len(), 59);
    let expected: String = (1..=58).map(|i| format!("{i}\n")).collect();
    for api in ["legacy", "new"] {
        let out = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", &root)
            .env("DOCKLESS_RUN_ROOT", root.join("run"))
            .env("DOCKLESS_OVERLAY_API", api)
            .env("DOCKLESS_LOG", "dockless_runtime=debug")
            .args(["run", "--json", "localhost/sixty:1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{api}: {}", text(&out.stderr));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["stdout"], expected, "{api}");
        let stderr = text(&out.stderr);
        let (named, json_name) = if api == "legacy" {
            ("layers named by descriptor", "mount(2), layers by fd")
        } else {
            ("with the new mount API", "fsconfig")
        };
        assert!(stderr.contains(named), "{api}: {stderr}");
        // Issue 12: the run's result names the fallback it took, and the cgroup manager (this
        // host has no systemd: cgroupfs).
        assert_eq!(result["mount_api"], json_name, "{api}");
        assert_eq!(result["cgroup_manager"], "cgroupfs", "{api}");
    }
    assert_clean(&root);
}
