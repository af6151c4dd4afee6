//! Real containers (as root): a run stopped through the runner's stop fd (SIGTERM, SIGKILL
//! after the grace period), and a helper killed with SIGKILL, which the runner notices at
//! once and cleans up after instead of leaving the container unsupervised.

#[path = "run_common/mod.rs"]
mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, processes_in_cgroup_parent, wait_for};
use dockless_runtime::container::RunError;

/// A started container of this fixture: its state directory exists.
fn container_started(fx: &Fixture) -> bool {
    std::fs::read_dir(fx.state.join("containers")).is_ok_and(|mut r| r.next().is_some())
        && !processes_in_cgroup_parent(&fx.cgroup_parent).is_empty()
}

/// A stop fd: the read end, and the write end that fires it.
fn stop_pipe() -> (Arc<OwnedFd>, UnixStream) {
    let (read, write) = UnixStream::pair().unwrap();
    (Arc::new(OwnedFd::from(read)), write)
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_stop_gets_sigterm_to_the_init_then_sigkill_after_the_grace() {
    let fx = Fixture::new("stopkill");
    let (fd, mut fire) = stop_pipe();
    let runner = fx.runner().with_stop(fd, Duration::from_millis(800));
    // A TERM-ignoring init: only the SIGKILL after the grace period ends it.
    let mut spec = fx.sh("trap '' TERM; echo up; sleep 1000");
    spec.timeout = Some(Duration::from_secs(600));
    std::thread::scope(|s| {
        let run = s.spawn(|| fx.run_with(&runner, &spec));
        assert!(wait_for(Duration::from_secs(20), || container_started(&fx)));
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        fire.write_all(b"x").unwrap();
        let out = run.join().unwrap();
        let took = asked.elapsed();
        assert!(out.result.stopped);
        assert!(!out.result.timed_out);
        assert_eq!(out.result.exit_code, 137);
        assert!(took >= Duration::from_millis(800), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    });
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_stop_lets_an_init_that_handles_sigterm_exit_by_itself() {
    let fx = Fixture::new("stopterm");
    let (fd, mut fire) = stop_pipe();
    let runner = fx.runner().with_stop(fd, Duration::from_secs(30));
    let spec = fx.sh("trap 'echo bye; exit 7' TERM; sleep 1000 & wait");
    std::thread::scope(|s| {
        let run = s.spawn(|| fx.run_with(&runner, &spec));
        assert!(wait_for(Duration::from_secs(20), || container_started(&fx)));
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        fire.write_all(b"x").unwrap();
        let out = run.join().unwrap();
        assert!(out.result.stopped);
        assert_eq!(out.result.exit_code, 7);
        assert_eq!(out.stdout(), "bye\n");
        assert!(asked.elapsed() < Duration::from_secs(10));
    });
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_stop_fd_readable_before_the_run_stops_it_as_soon_as_it_starts() {
    let fx = Fixture::new("stopearly");
    let (fd, mut fire) = stop_pipe();
    fire.write_all(b"x").unwrap();
    let runner = fx.runner().with_stop(fd, Duration::ZERO);
    let started = Instant::now();
    let out = fx.run_with(&runner, &fx.sh("sleep 1000"));
    assert!(out.result.stopped);
    assert_eq!(out.result.exit_code, 137);
    assert!(started.elapsed() < Duration::from_secs(20));
    fx.assert_clean();
}

/// This process's children that are the helper of a run of `fx` (their run lock, fd 5, is
/// a run directory under its state root).
fn helpers_of(fx: &Fixture) -> Vec<nix::unistd::Pid> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let lock = std::fs::read_link(format!("/proc/{pid}/fd/5")).unwrap_or_default();
            if lock.starts_with(&fx.state) {
                out.push(nix::unistd::Pid::from_raw(pid));
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_helper_killed_with_sigkill_is_noticed_at_once_and_its_run_removed() {
    let fx = Fixture::new("helperkill");
    let runner = fx.runner();
    let mut spec = fx.sh("sleep 1000");
    spec.timeout = Some(Duration::from_secs(600));
    std::thread::scope(|s| {
        let run = s.spawn(|| runner.run(&fx.rootfs, &spec, &mut |_, _| {}));
        assert!(wait_for(Duration::from_secs(20), || container_started(&fx)));
        let helpers = helpers_of(&fx);
        assert_eq!(helpers.len(), 1, "{helpers:?}");
        let killed = Instant::now();
        nix::sys::signal::kill(helpers[0], nix::sys::signal::Signal::SIGKILL).unwrap();
        let err = run.join().unwrap().unwrap_err();
        let took = killed.elapsed();
        assert!(matches!(err, RunError::HelperDied { .. }), "{err:?}");
        let text = common::error_chain(&err);
        assert!(text.contains("SIGKILL"), "{text}");
        // Well under the timeout (and under the 30 s helper grace).
        assert!(took < Duration::from_secs(10), "{took:?}");
    });
    fx.assert_clean();
}

/// A stop signal sent to the whole group or cgroup (`systemctl stop`) reaches the helper too:
/// it must not die of it (that would SIGKILL the container with no grace); only the runner
/// stops a run.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn the_helper_survives_signals_meant_for_its_runner() {
    let fx = Fixture::new("helperterm");
    let runner = fx.runner();
    let mut spec = fx.sh("sleep 1; echo done");
    spec.timeout = Some(Duration::from_secs(60));
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            let mut out = Vec::new();
            let result = runner.run(&fx.rootfs, &spec, &mut |_, chunk| {
                out.extend_from_slice(chunk)
            });
            (result, out)
        });
        assert!(wait_for(Duration::from_secs(20), || container_started(&fx)));
        let helpers = helpers_of(&fx);
        assert_eq!(helpers.len(), 1, "{helpers:?}");
        for sig in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGHUP,
        ] {
            nix::sys::signal::kill(helpers[0], sig).unwrap();
        }
        let (result, out) = run.join().unwrap();
        let result = result.unwrap();
        assert_eq!((result.exit_code, result.stopped), (0, false), "{result:?}");
        assert_eq!(String::from_utf8_lossy(&out), "done\n");
    });
    fx.assert_clean();
}
