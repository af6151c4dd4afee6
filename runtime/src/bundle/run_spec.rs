//! What the caller asks for: the CLI-independent description of one run.

use std::path::PathBuf;
use std::time::Duration;

use super::image_config::ImageConfig;

/// The pids limit podman applies by default; a fork bomb stops there instead of at the host's.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// Default `RLIMIT_NOFILE` (soft, hard): enough for data tools, far below the host's.
pub const DEFAULT_NOFILE: (u64, u64) = (1024, 524_288);

/// Everything one run needs besides the rootfs directory; the binary fills it from its flags.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    /// The image's runtime config (Entrypoint, Cmd, Env, WorkingDir, User).
    pub image: ImageConfig,
    /// Replaces the image's Cmd (Entrypoint stays), like `docker run IMAGE CMD...`.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` pairs added to (and overriding) the image's Env.
    pub env: Vec<String>,
    /// Overrides the image's User (`name`, `uid`, `name:group`, `uid:gid`).
    pub user: Option<String>,
    /// Overrides the image's WorkingDir.
    pub workdir: Option<String>,
    /// Host directory bound read-write at `/data`; `None` means no `/data` mount.
    pub data_dir: Option<PathBuf>,
    /// What backs `/tmp` inside the container.
    pub tmp: TmpMount,
    /// Resource limits applied through the container's cgroup.
    pub limits: Limits,
    /// Wall-clock limit; the whole cgroup is SIGKILLed when it passes.
    pub timeout: Option<Duration>,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Mount the rootfs read-only (`/data` and `/tmp` stay writable).
    pub read_only_rootfs: bool,
    /// Hostname inside the container's UTS namespace.
    pub hostname: String,
    /// A seccomp profile file in moby/podman format, evaluated for the granted capabilities;
    /// `None`: dockless' built-in profile.
    pub seccomp_profile: Option<PathBuf>,
    /// Let the seccomp filter admit 32-bit ABIs (x86, x32 on x86_64). Off by default: data
    /// components are 64-bit, the compat ABIs are extra attack surface, and each one adds
    /// ~8 ms to every start (libseccomp builds the filter per architecture). When off, a
    /// 32-bit syscall kills the calling thread.
    pub seccomp_compat_arches: bool,
    /// Run in a user namespace mapping the container's ids `0..count` to the host's
    /// `base..base+count` (root's `--userns`): a process that breaks out is an unprivileged
    /// host user. The rootfs must come from a store shifted the same way
    /// ([`SnapshotStore::open_shifted`](crate::rootfs::SnapshotStore::open_shifted)); the
    /// runner hands `/data` and a host `/tmp` to the container's root (`base`) before start.
    pub userns: Option<crate::unpack::IdShift>,
    /// Give `data_dir` and a host `/tmp` (their whole trees) to the container's user before
    /// it starts, so a component whose image runs as a non-root user can write its outputs
    /// (Keboola's runner makes the data folder the container user's in the same way).
    pub hand_over_data: bool,
    /// Host files bound read-only into the container (a build's CA bundle): never part of
    /// the rootfs, so never part of a layer made from it.
    pub read_only_files: Vec<ReadOnlyFile>,
}

/// One host file bound read-only at `destination` (absolute, inside the container).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadOnlyFile {
    /// The host file (absolute).
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: String,
}

impl RunSpec {
    /// A run of `image` with the hardened defaults: no network, tmpfs `/tmp`, podman's pids
    /// limit, no timeout and no `/data`.
    pub fn new(image: ImageConfig) -> Self {
        Self {
            image,
            command: None,
            entrypoint: None,
            env: Vec::new(),
            user: None,
            workdir: None,
            data_dir: None,
            tmp: TmpMount::Tmpfs,
            limits: Limits::default(),
            timeout: None,
            network: NetworkMode::None,
            read_only_rootfs: false,
            hostname: "dockless".to_owned(),
            seccomp_profile: None,
            seccomp_compat_arches: false,
            userns: None,
            hand_over_data: false,
            read_only_files: Vec::new(),
        }
    }
}

/// Where `/tmp` comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TmpMount {
    /// A fresh tmpfs (charged to the container's memory cgroup).
    Tmpfs,
    /// A host directory chosen by the caller, bound read-write.
    HostDir(PathBuf),
}

/// Network namespace choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// A new, empty network namespace with only `lo`, brought up by the runner.
    None,
    /// The host's network namespace (only when the caller asks for it).
    Host,
    /// A new network namespace with outbound access through a user-mode network stack
    /// (`pasta`, Debian's `passt` package) started by the runtime on that namespace: an
    /// interface, a default route and the host's resolvers, with no gateway mapping and no
    /// port forwarding, so neither the host's loopback services nor the host's own address
    /// are reachable; no bridge, veth, firewall rule or sysctl of the host is touched. For
    /// root, rootless and `--userns` runs alike.
    Bridge,
}

impl NetworkMode {
    /// The mode's name as the CLI spells it (`none`, `host`, `bridge`).
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Bridge => "bridge",
        }
    }

    /// Whether the container gets a network namespace of its own.
    pub fn own_namespace(self) -> bool {
        self != NetworkMode::Host
    }
}

/// cgroup limits; `None` leaves a resource unlimited.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes; swap is limited to the same value (no swap on top).
    pub memory_bytes: Option<i64>,
    /// CPU quota in CPUs (1.5 = one and a half cores).
    pub cpus: Option<f64>,
    /// Maximum number of tasks in the container.
    pub pids: Option<i64>,
    /// `RLIMIT_NOFILE` as (soft, hard).
    pub nofile: (u64, u64),
}

impl Limits {
    /// Refuses limits no kernel would take (zero, negative, not finite), whichever way they
    /// are applied (the OCI spec, or written by the runner into a delegated cgroup).
    pub fn validate(&self) -> Result<(), super::BundleError> {
        for (what, value) in [("memory", self.memory_bytes), ("pids", self.pids)] {
            if let Some(value) = value
                && value <= 0
            {
                return Err(super::BundleError::InvalidLimit { what, value });
            }
        }
        if let Some(cpus) = self.cpus {
            // CFS takes a quota of at least 1 ms per 100 ms period, and one beyond the host's
            // CPUs limits nothing (a huge one is refused by the kernel with a bare EINVAL).
            let host = host_cpus();
            if !(cpus.is_finite() && (0.01..=host as f64).contains(&cpus)) {
                return Err(super::BundleError::InvalidCpus { cpus, host });
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: None,
            cpus: None,
            pids: Some(DEFAULT_PIDS_LIMIT),
            nofile: DEFAULT_NOFILE,
        }
    }
}

/// CPUs this process may run on (its affinity mask), as docker counts them for `--cpus`.
fn host_cpus() -> usize {
    rustix::thread::sched_getaffinity(None)
        .map(|set| set.count() as usize)
        .ok()
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}
