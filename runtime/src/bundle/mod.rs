//! The hardened OCI runtime bundle for one run: `config.json` built through
//! `libcontainer::oci_spec` from the image config and the caller's [`RunSpec`].
//!
//! Isolation is the default: new pid, ipc, uts, mount, cgroup and (unless host networking is
//! asked for) network namespaces; podman's 11 capabilities for root and none for other users;
//! no_new_privileges; masked and read-only kernel paths; podman's seccomp profile evaluated
//! for the granted capabilities; deny-all devices; memory (swap = memory), CPU and pids limits.

mod handover;
mod hardening;
mod image_config;
mod run_spec;
mod seccomp;
mod seccomp_builtin;
mod spec;
mod user;
mod workdir;

use std::path::{Path, PathBuf};

pub use handover::{chown_tree, hand_over};
pub use hardening::DEFAULT_CAPABILITIES;
pub use image_config::ImageConfig;
pub use run_spec::{
    DEFAULT_NOFILE, DEFAULT_PIDS_LIMIT, Limits, NetworkMode, ReadOnlyFile, RunSpec, TmpMount,
};
pub use seccomp::PODMAN_PROFILE_PATH;
pub(crate) use spec::CPU_PERIOD_US;
pub use spec::{DEFAULT_PATH, build_spec};
pub use user::{ResolvedUser, resolve_user};

/// Why a bundle could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The image configuration blob is not valid JSON of the expected shape.
    #[error("invalid image configuration")]
    ImageConfig(#[source] serde_json::Error),
    /// Neither the image nor the caller gave a command.
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// The rootfs must be given as an absolute path.
    #[error("rootfs path {path:?} is not absolute")]
    RelativeRootfs {
        /// The offending path.
        path: PathBuf,
    },
    /// Bind-mount sources must be absolute host paths.
    #[error("bind source {path:?} is not absolute")]
    RelativeBindSource {
        /// The offending path.
        path: PathBuf,
    },
    /// The working directory must be absolute.
    #[error("working directory {workdir:?} is not absolute")]
    RelativeWorkdir {
        /// The offending value.
        workdir: String,
    },
    /// A rootless run cannot join the host's network namespace: it belongs to the host's
    /// user namespace, so the container could not mount its own /sys there; `bridge` gives
    /// it outbound access through a user-mode network stack instead.
    #[error(
        "host networking is not available rootless: the host's network namespace belongs to \
         the host's user namespace; use --network bridge (outbound access through pasta), the \
         default --network none, or run as root"
    )]
    RootlessHostNetwork,
    /// `/data` or `/tmp` could not be given to the container's user.
    #[error("cannot give {path:?} to the container's user")]
    HandOver {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--userns` cannot be combined with this run.
    #[error("a user namespace of its own is not available for this run: {reason}")]
    UsernsUnavailable {
        /// Why.
        reason: &'static str,
    },
    /// Limits were asked for but a rootless run has no cgroup to enforce them in.
    #[error(
        "{limits} limits cannot be enforced rootless on this host (no delegated cgroup); \
         leave them unset"
    )]
    RootlessLimits {
        /// The limits asked for.
        limits: String,
    },
    /// cgroups paths are absolute (relative ones land somewhere surprising).
    #[error("cgroups path {path:?} is not absolute")]
    CgroupsPath {
        /// The offending value.
        path: String,
    },
    /// `--cpus` outside what this host can give (docker's rule: 0.01 up to its CPUs).
    #[error(
        "invalid cpu limit {}: the range of CPUs is from 0.01 to {host}, as this host has \
         {host} CPUs",
        if cpus.abs() >= 1e6 { format!("{cpus:e}") } else { cpus.to_string() }
    )]
    InvalidCpus {
        /// The offending value.
        cpus: f64,
        /// CPUs this process may run on.
        host: usize,
    },
    /// Something other than a directory is where the working directory should be.
    #[error("working directory {workdir:?} is not a directory in the image")]
    WorkdirNotADirectory {
        /// The working directory as configured.
        workdir: String,
    },
    /// A memory or pids limit that is zero or negative.
    #[error("invalid {what} limit {value}")]
    InvalidLimit {
        /// Which limit.
        what: &'static str,
        /// The offending value.
        value: i64,
    },
    /// An environment entry that is not `KEY=VALUE` with a non-empty key.
    #[error("invalid environment entry {entry:?} (expected KEY=VALUE)")]
    InvalidEnv {
        /// The offending entry.
        entry: String,
    },
    /// A user name that the rootfs' /etc/passwd does not list.
    #[error("user {user:?} not found in {rootfs:?}/etc/passwd")]
    UnknownUser {
        /// The name asked for.
        user: String,
        /// The rootfs searched.
        rootfs: PathBuf,
    },
    /// A group name that the rootfs' /etc/group does not list.
    #[error("group {group:?} not found in {rootfs:?}/etc/group")]
    UnknownGroup {
        /// The name asked for.
        group: String,
        /// The rootfs searched.
        rootfs: PathBuf,
    },
    /// Reading a file inside the rootfs failed.
    #[error("cannot read {path:?} inside the rootfs")]
    ReadInRootfs {
        /// The file (as a host path, for the message).
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// /etc/passwd or /etc/group is not a regular file.
    #[error("{path:?} is not a regular file")]
    NotARegularFile {
        /// The file.
        path: PathBuf,
    },
    /// /etc/passwd or /etc/group is implausibly large.
    #[error("{path:?} exceeds {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The seccomp profile could not be read.
    #[error("cannot read seccomp profile {path:?}")]
    SeccompRead {
        /// The profile path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The seccomp profile is not in the moby/podman format.
    #[error("invalid seccomp profile {path:?}")]
    SeccompParse {
        /// The profile path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// oci-spec refused a value while building a section.
    #[error("cannot build the {what} section of the runtime spec")]
    Spec {
        /// The section.
        what: &'static str,
        /// The cause.
        #[source]
        source: libcontainer::oci_spec::OciSpecError,
    },
    /// Writing config.json failed.
    #[error("cannot write the bundle at {path:?}")]
    Write {
        /// The bundle directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `spec` as `<dir>/config.json`, the only file libcontainer reads from a bundle
/// (the rootfs is referenced by absolute path, so it may live elsewhere).
pub fn write_bundle(
    dir: &Path,
    spec: &libcontainer::oci_spec::runtime::Spec,
) -> Result<(), BundleError> {
    let err = |source| BundleError::Write {
        path: dir.to_owned(),
        source,
    };
    let json = serde_json::to_vec(spec).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(dir.join("config.json"), json).map_err(err)
}
