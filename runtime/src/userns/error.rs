//! Why a rootless session could not be set up.

use std::path::PathBuf;

/// Why the runner could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The user has no subordinate range: without one, every file of an image would belong
    /// to the user, and the image's own users could not exist.
    #[error(
        "user {user:?} (uid {uid}) has no subordinate {kind} range in {file:?}; add one as root, \
         e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` \
         (or a line `{user}:100000:65536` in /etc/subuid and /etc/subgid)"
    )]
    NoSubordinateIds {
        /// The user's name (or uid when it has none).
        user: String,
        /// The user's uid.
        uid: u32,
        /// "uid" or "gid".
        kind: &'static str,
        /// The file searched.
        file: PathBuf,
    },
    /// The `--userns` range must start at the same non-zero id in both files.
    #[error(
        "the first ranges of {name:?} in /etc/subuid and /etc/subgid must start at the same \
         non-zero id and end below 4294967295"
    )]
    MismatchedRanges {
        /// The entry's name.
        name: String,
    },
    /// A subordinate id file could not be read.
    #[error("cannot read {path:?}")]
    ReadSubIds {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a subordinate id file is not `name:start:count`.
    #[error("{path:?} line {line}: expected NAME:START:COUNT with numbers that fit")]
    BadSubIdLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// Entering a user namespace changes the whole process; with other threads alive they
    /// would stay outside.
    #[error("cannot enter a user namespace: the process already runs {threads} threads")]
    NotSingleThreaded {
        /// Threads found.
        threads: usize,
    },
    /// A namespace or mount system call failed.
    #[error("{what}")]
    Sys {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Delegation needs cgroup v1 hierarchies or a cgroup2 mount, and this host has neither.
    #[error("this host has no cgroup v1 hierarchy to delegate")]
    NoV1Hierarchy,
    /// The cgroup2 root offers none of the memory, pids and cpu controllers.
    #[error("the cgroup2 root at /sys/fs/cgroup offers none of memory, pids, cpu to delegate")]
    NoV2Controllers,
    /// A cgroup directory could not be created, changed or removed.
    #[error("{what} {path:?}")]
    Cgroup {
        /// What was attempted.
        what: &'static str,
        /// Which directory or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap`/`newgidmap` is not installed.
    #[error("{tool} not found: install Debian's `uidmap` package to run as an ordinary user")]
    ToolMissing {
        /// The missing program.
        tool: &'static str,
    },
    /// `newuidmap`/`newgidmap` refused the mapping.
    #[error("{tool} {args} failed ({status}): {stderr}")]
    MapRefused {
        /// The program.
        tool: &'static str,
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
}
