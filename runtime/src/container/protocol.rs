//! What the parent and the helper process tell each other: one JSON line each way.

use std::path::PathBuf;

/// fd (in the helper) of the pipe the container's stdout goes to.
pub const CONTAINER_STDOUT_FD: i32 = 3;
/// fd (in the helper) of the pipe the container's stderr goes to.
pub const CONTAINER_STDERR_FD: i32 = 4;
/// fd (in the helper) of the run directory, flocked for as long as the run may be alive.
pub const RUN_LOCK_FD: i32 = 5;
/// fd (in the helper) of the unix socket the sockets of [`HelperRequest::listen`] are sent
/// back on; open only when that list is not empty.
pub const LISTEN_FD: i32 = 6;
/// fd (in the helper, and inherited by the container's init, which joins it through
/// `/proc/self/fd/7`) of a bridged run's network namespace made by the runner beforehand.
pub const NETNS_FD: i32 = 7;

/// The parent's instructions, written to the helper's stdin as one line. The stdin pipe then
/// stays open: its closing tells the helper that the parent is gone, and a [`STOP_BYTE`] on it
/// asks for a graceful stop.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HelperRequest {
    /// Container id (also the run directory's name).
    pub id: String,
    /// libcontainer's state root (`<state_root>/containers`).
    pub container_root: PathBuf,
    /// The run directory holding `config.json` (`<state_root>/runs/<id>`).
    pub run_dir: PathBuf,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Bring `lo` up in the container's new network namespace.
    pub loopback_up: bool,
    /// `--network bridge`: the pasta executable to start on the container's namespace
    /// before the container starts.
    #[serde(default)]
    pub pasta: Option<PathBuf>,
    /// The container's network namespace is already on [`NETNS_FD`] (the bundle joins it):
    /// pasta starts on it before the container is created, in parallel with libcontainer.
    #[serde(default)]
    pub netns_on_fd: bool,
    /// Addresses made unreachable in the container's namespace (the host's own).
    #[serde(default)]
    pub unreachable: Vec<std::net::IpAddr>,
    /// The container's cgroup path (for OOM and peak memory).
    pub cgroups_path: String,
    /// After a stop request, how long the init has between SIGTERM and SIGKILL.
    #[serde(default)]
    pub stop_grace_ms: u64,
    /// Sockets to create in the container's network namespace after it is created and
    /// before it starts, sent back on [`LISTEN_FD`].
    #[serde(default)]
    pub listen: Vec<super::listen::ListenSocket>,
}

/// Written by the parent on the helper's stdin after the request: stop the container as
/// `podman stop` does (SIGTERM to its init, SIGKILL to all after the grace period).
pub const STOP_BYTE: u8 = b'T';

/// What the container did, as measured by the helper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HelperOutcome {
    /// `Exited(n)` -> n, `Signaled(s)` -> 128 + s.
    pub exit_code: i32,
    /// The kernel's OOM killer fired in the container's cgroup.
    pub oom_killed: bool,
    /// The timeout passed and the cgroup was killed.
    pub timed_out: bool,
    /// From `start()` to the init's exit, in nanoseconds.
    pub duration_ns: u64,
    /// Peak memory use of the cgroup, where the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
    /// Set when the parent went away and the helper killed the container on its own.
    pub aborted: bool,
    /// Set when the parent asked for a stop (see [`STOP_BYTE`]) before the init exited.
    #[serde(default)]
    pub stopped: bool,
}

/// The helper's single answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum HelperReport {
    /// The container ran (and was cleaned up).
    Finished(HelperOutcome),
    /// Something failed; the chain of error messages, outermost first.
    Failed(Vec<String>),
}
