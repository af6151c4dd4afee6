//! Real containers (as root): cleanup on every path — errors, a panicking caller, a parent
//! killed mid-run, a whole runner killed mid-run (then `gc`), and gc sparing live runs.

#[path = "run_common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fixture, PROBE, processes_in_cgroup_parent, wait_for};
use dockless_runtime::container::{RunError, gc};

fn spawn_probe(fx: &Fixture, data: &std::path::Path, own_group: bool) -> std::process::Child {
    let mut cmd = Command::new(PROBE);
    cmd.args(["run", "--rootfs"])
        .arg(&fx.rootfs)
        .arg("--state")
        .arg(&fx.state)
        .args(["--cgroup-parent", &fx.cgroup_parent, "--data"])
        .arg(data)
        .args(["--", "sh", "-c", "echo ready > /data/ready; sleep 1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if own_group {
        cmd.process_group(0);
    }
    cmd.spawn().unwrap()
}

/// The child processes of `pid` (from every thread's `children` list).
fn children(pid: u32) -> Vec<nix::unistd::Pid> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(nix::unistd::Pid::from_raw),
        );
    }
    out
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn runner_killed_with_sigkill_leaves_a_container_that_gc_removes() {
    let fx = Fixture::new("gckill");
    let data = fx.host_dir("data");
    let mut probe = spawn_probe(&fx, &data, true);
    assert!(
        wait_for(Duration::from_secs(20), || data.join("ready").exists()),
        "container never started"
    );
    // SIGKILL the runner and its helper (which has a process group of its own, so that a
    // signal for the runner's group spares it; stopped first, so that it cannot notice its
    // runner go and end the container itself); the container's init is in a session of its
    // own and survives.
    let helpers = children(probe.id());
    assert!(!helpers.is_empty(), "the runner has no helper process");
    for &pid in &helpers {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    }
    let pgid = nix::unistd::Pid::from_raw(-(probe.id() as i32));
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    for &pid in &helpers {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    probe.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_in_cgroup_parent(&fx.cgroup_parent);
    assert!(!left.is_empty(), "expected a leftover container to collect");
    assert_eq!(std::fs::read_dir(fx.state.join("runs")).unwrap().count(), 1);

    let report = gc(&fx.state).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(report.alive.is_empty());
    assert!(
        wait_for(Duration::from_secs(5), || processes_in_cgroup_parent(
            &fx.cgroup_parent
        )
        .is_empty()),
        "processes survived gc"
    );
    fx.assert_clean();
    // A second gc finds nothing.
    assert_eq!(gc(&fx.state).unwrap(), Default::default());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn helper_cleans_up_when_its_parent_dies() {
    let fx = Fixture::new("orphan");
    let data = fx.host_dir("data");
    let mut probe = spawn_probe(&fx, &data, false);
    assert!(
        wait_for(Duration::from_secs(20), || data.join("ready").exists()),
        "container never started"
    );
    // Only the parent dies; the helper notices its stdin closing and ends the container.
    probe.kill().unwrap();
    probe.wait().unwrap();
    let state_empty = || {
        ["runs", "containers"]
            .iter()
            .all(|d| std::fs::read_dir(fx.state.join(d)).map_or(true, |mut r| r.next().is_none()))
    };
    assert!(
        wait_for(Duration::from_secs(20), || state_empty()
            && processes_in_cgroup_parent(&fx.cgroup_parent).is_empty()),
        "helper did not clean up"
    );
    assert_eq!(gc(&fx.state).unwrap(), Default::default());
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn gc_spares_runs_in_progress() {
    let fx = Fixture::new("gclive");
    let runner = fx.runner();
    std::thread::scope(|s| {
        let run = s.spawn(|| fx.run_with(&runner, &fx.sh("sleep 1; echo survived")));
        assert!(wait_for(Duration::from_secs(20), || {
            std::fs::read_dir(fx.state.join("containers")).is_ok_and(|mut r| r.next().is_some())
        }));
        let report = gc(&fx.state).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert_eq!(report.alive.len(), 1, "{report:?}");
        let out = run.join().unwrap();
        assert_eq!(out.stdout(), "survived\n");
        assert_eq!(out.result.exit_code, 0);
    });
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_panicking_output_callback_still_cleans_up() {
    let fx = Fixture::new("panic");
    let runner = fx.runner();
    let spec = fx.sh("echo first; sleep 1000");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runner.run(&fx.rootfs, &spec, &mut |_, _| panic!("caller bug"))
    }));
    assert!(caught.is_err());
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_failing_start_is_an_error_and_leaves_nothing() {
    let fx = Fixture::new("nocmd");
    let runner = fx.runner();
    let mut spec = fx.sh("true");
    spec.command = Some(vec!["/no/such/binary".into()]);
    let err = runner.run(&fx.rootfs, &spec, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, RunError::Helper { .. }), "{err:?}");
    let text = common::error_chain(&err);
    assert!(text.contains("cannot create the container"), "{text}");
    fx.assert_clean();

    // A user the image does not know fails before any helper starts.
    let mut spec = fx.sh("true");
    spec.user = Some("mallory".into());
    let err = runner.run(&fx.rootfs, &spec, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, RunError::Bundle(_)), "{err:?}");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_unresponsive_helper_is_killed_after_timeout_plus_grace() {
    let fx = Fixture::new("stuck");
    // A "helper" that never answers stands in for one stuck inside libcontainer.
    let runner = dockless_runtime::container::Runner::new("/bin/sleep", ["1000"], &fx.state)
        .with_cgroup_parent(&fx.cgroup_parent)
        .with_helper_grace(Duration::from_millis(500));
    let mut spec = fx.sh("true");
    spec.timeout = Some(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let err = runner.run(&fx.rootfs, &spec, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(err, RunError::HelperUnresponsive { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn gc_running_alongside_runs_never_disturbs_them() {
    let fx = Fixture::new("gcrace");
    let runner = fx.runner();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let report = gc(&fx.state).unwrap();
                assert!(
                    report.removed.is_empty(),
                    "gc removed a live run: {report:?}"
                );
                rounds += 1;
            }
            rounds
        });
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let (fx, runner) = (&fx, &runner);
                s.spawn(move || {
                    for round in 0..3 {
                        let out =
                            fx.run_with(runner, &fx.sh(&format!("echo {i}-{round}; exit {i}")));
                        assert_eq!(out.stdout(), format!("{i}-{round}\n"));
                        assert_eq!(out.result.exit_code, i);
                    }
                })
            })
            .collect();
        for run in runs {
            run.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(collector.join().unwrap() > 0);
    });
    fx.assert_clean();
}
