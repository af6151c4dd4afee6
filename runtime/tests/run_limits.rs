//! Real containers (as root): memory, pids and time limits, and that nothing survives them.

#[path = "run_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Fixture;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn memory_hog_is_oom_killed_and_reported() {
    let fx = Fixture::new("oom");
    // Holds ever more memory in a shell variable until the 32 MiB limit stops it.
    let mut spec = fx.sh("x=a; while true; do x=$x$x; done");
    spec.limits.memory_bytes = Some(32 << 20);
    spec.timeout = Some(Duration::from_secs(60));
    let out = fx.run(&spec);
    assert!(out.result.oom_killed, "OOM not reported: {:?}", out.result);
    assert_eq!(out.result.exit_code, 137);
    assert!(!out.result.timed_out);
    let peak = out.result.peak_memory_bytes.expect("peak memory reported");
    assert!(peak <= 32 << 20 && peak > 16 << 20, "peak {peak}");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_run_within_limits_is_not_reported_as_oom() {
    let fx = Fixture::new("nooom");
    let mut spec = fx.sh("echo fine");
    spec.limits.memory_bytes = Some(64 << 20);
    spec.limits.cpus = Some(0.5);
    let out = fx.run(&spec);
    assert_eq!(out.result.exit_code, 0, "{}", out.stderr());
    assert!(!out.result.oom_killed);
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    let fx = Fixture::new("forkbomb");
    let mut spec = fx.sh("b() { b | b & }; b; sleep 100");
    spec.limits.pids = Some(64);
    spec.timeout = Some(Duration::from_secs(3));
    // Watch the container's pids cgroup from the host while the bomb runs.
    // cgroup v1 (this host) keeps pids in its own hierarchy; v2 has one tree.
    let pids_parent = [
        std::path::Path::new("/sys/fs/cgroup/pids").join(&fx.cgroup_parent),
        std::path::Path::new("/sys/fs/cgroup").join(&fx.cgroup_parent),
    ];
    let done = AtomicBool::new(false);
    let max_seen = AtomicU64::new(0);
    let limit_hits = AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                for dir in &pids_parent {
                    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
                        if let Some(n) = read("pids.current").and_then(|v| v.trim().parse().ok()) {
                            max_seen.fetch_max(n, Ordering::Relaxed);
                        }
                        if let Some(n) = read("pids.events").and_then(|v| {
                            v.lines()
                                .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                        }) {
                            limit_hits.fetch_max(n, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let out = fx.run(&spec);
        done.store(true, Ordering::Relaxed);
        out
    });
    assert!(out.result.timed_out);
    assert_eq!(out.result.exit_code, 137);
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max > 0 && max <= 64, "pids.current peaked at {max}");
    assert!(limit_hits.load(Ordering::Relaxed) > 0, "pids.max never hit");
    assert!(
        out.stderr().contains("can't fork"),
        "stderr: {}",
        out.stderr()
    );
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn timeout_kills_and_is_reported() {
    let fx = Fixture::new("timeout");
    let mut spec = fx.sh("echo started; sleep 100");
    spec.timeout = Some(Duration::from_secs(1));
    let out = fx.run(&spec);
    assert!(out.result.timed_out);
    assert_eq!(out.result.exit_code, 137);
    assert_eq!(out.stdout(), "started\n");
    assert!(out.result.duration >= Duration::from_secs(1));
    assert!(
        out.result.duration < Duration::from_secs(30),
        "{:?}",
        out.result.duration
    );
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn processes_ignoring_sigterm_with_children_are_all_gone_after_timeout() {
    let fx = Fixture::new("sigterm");
    let data = fx.host_dir("data");
    let mut spec = fx.sh(
        "trap '' TERM; for i in 1 2 3 4 5; do (trap '' TERM; sleep 1000 & sleep 1000) & done; \
         setsid sh -c 'trap \"\" TERM; sleep 1000' & echo ready > /data/ready; sleep 1000",
    );
    spec.data_dir = Some(data.clone());
    spec.timeout = Some(Duration::from_secs(2));
    let out = fx.run(&spec);
    assert!(
        data.join("ready").exists(),
        "script did not get going: {}",
        out.stderr()
    );
    assert!(out.result.timed_out);
    assert_eq!(out.result.exit_code, 137);
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn limits_land_in_the_container_cgroup() {
    let fx = Fixture::new("cglimits");
    let data = fx.host_dir("data");
    // Runs until /data/stop appears (or the 30 s timeout).
    let mut spec = fx.sh(
        "echo ready > /data/ready; i=0; while [ ! -e /data/stop ] && [ $i -lt 600 ]; do \
         sleep 0.05; i=$((i+1)); done",
    );
    spec.data_dir = Some(data.clone());
    spec.limits.memory_bytes = Some(48 << 20);
    spec.limits.cpus = Some(0.5);
    spec.limits.pids = Some(77);
    spec.timeout = Some(Duration::from_secs(30));
    let runner = fx.runner();
    std::thread::scope(|s| {
        let run = s.spawn(|| fx.run_with(&runner, &spec));
        assert!(common::wait_for(Duration::from_secs(20), || data
            .join("ready")
            .exists()));
        // The one container cgroup below our parent, per controller (cgroup v1 here).
        let leaf = |ctrl: &str| {
            let parent = std::path::Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(&fx.cgroup_parent);
            let mut dirs: Vec<_> = std::fs::read_dir(&parent)
                .unwrap_or_else(|e| panic!("{parent:?}: {e}"))
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            assert_eq!(dirs.len(), 1, "{dirs:?}");
            dirs.pop().unwrap()
        };
        let read = |ctrl: &str, file: &str| {
            std::fs::read_to_string(leaf(ctrl).join(file))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            read("memory", "memory.memsw.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(read("pids", "pids.max"), "77");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        let devices = read("devices", "devices.list");
        assert!(
            !devices.contains("a *:* rwm"),
            "devices cgroup allows everything: {devices}"
        );
        assert!(
            devices.contains("c 1:3 rwm"),
            "/dev/null missing: {devices}"
        );
        std::fs::write(data.join("stop"), "").unwrap();
        let out = run.join().unwrap();
        assert_eq!(out.result.exit_code, 0, "{}", out.stderr());
        assert!(!out.result.timed_out);
    });
    fx.assert_clean();
}
