//! OOM and peak-memory figures read from the container's cgroup before it is deleted.

use std::path::{Path, PathBuf};

/// What the memory controller says about a finished container.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStats {
    /// The OOM killer killed at least one task of the cgroup.
    pub oom_killed: bool,
    /// Highest memory use seen, if the kernel reports it.
    pub peak_bytes: Option<u64>,
}

/// Reads `memory.oom_control` and `memory.max_usage_in_bytes` on cgroup v1, or
/// `memory.events` and `memory.peak` on a unified (v2) host.
pub fn read_memory_stats(cgroups_path: &str) -> MemoryStats {
    let rel = cgroups_path.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (dir, events, peak): (PathBuf, &str, &str) = if v1.is_dir() {
        (
            v1.join(rel),
            "memory.oom_control",
            "memory.max_usage_in_bytes",
        )
    } else {
        (
            Path::new("/sys/fs/cgroup").join(rel),
            "memory.events",
            "memory.peak",
        )
    };
    let oom_killed = std::fs::read_to_string(dir.join(events))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        })
        .is_some_and(|n| n > 0);
    let peak_bytes = std::fs::read_to_string(dir.join(peak))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    MemoryStats {
        oom_killed,
        peak_bytes,
    }
}
