//! Runs a bundle through youki's libcontainer in a single-threaded helper process and
//! reports what happened: exit code, OOM, timeout, duration, peak memory and bounded output.
//!
//! The parent ([`Runner`]) writes the bundle, spawns the helper (the embedding binary
//! re-executed with a hidden subcommand that calls [`helper_main`], from a read-only overlay
//! or a sealed in-memory copy that no container can write through: see [`SealError`]),
//! streams the container's stdout and stderr from two pipes, and removes everything of the
//! run when it ends. Runs killed mid-way are found and removed by [`gc()`].
//!
//! Embedding (what the `dockless` binary does):
//!
//! ```no_run
//! use std::process::ExitCode;
//! use dockless_runtime::bundle::{ImageConfig, RunSpec};
//! use dockless_runtime::container::{Runner, Stream, gc, helper_main};
//!
//! fn main() -> ExitCode {
//!     // First thing, before any thread exists: the hidden helper subcommand.
//!     if std::env::args().nth(1).as_deref() == Some("__runtime-helper") {
//!         return helper_main();
//!     }
//!     let state = std::path::PathBuf::from("/run/dockless/runtime");
//!     gc(&state).expect("gc");
//!     let exe = std::env::current_exe().expect("current_exe");
//!     let runner = Runner::new(exe, ["__runtime-helper"], &state);
//!     let image = ImageConfig::from_image_config_json(br#"{"config":{"Cmd":["true"]}}"#)
//!         .expect("image config");
//!     let mut spec = RunSpec::new(image);
//!     spec.timeout = Some(std::time::Duration::from_secs(60));
//!     let rootfs = std::path::Path::new("/var/lib/dockless/runs/1/rootfs"); // a private copy
//!     let result = runner
//!         .run(rootfs, &spec, &mut |stream, chunk| {
//!             let _ = (stream == Stream::Stdout, chunk); // forward live output here
//!         })
//!         .expect("run");
//!     ExitCode::from(result.exit_code.clamp(0, 255) as u8)
//! }
//! ```

mod capture;
mod cgroup_stats;
mod gc;
mod helper;
mod init_record;
mod listen;
mod loopback;
mod protocol;
mod pump;
mod runner;
mod sealed;

use std::path::PathBuf;

pub use capture::{BoundedCapture, Captured, Stream};
pub use gc::{GcReport, gc, kill_abandoned_inits};
pub use helper::helper_main;
pub use listen::{ListenKind, ListenSocket, MAX_LISTEN_SOCKETS};
pub use runner::{
    DEFAULT_CAPTURE_LIMIT, DEFAULT_HELPER_GRACE, DEFAULT_STOP_GRACE, RunResult, Runner,
};
pub use sealed::SealError;

use crate::bundle::BundleError;
use crate::userns::UsernsError;

/// The messages of `err` and of its sources, outermost first.
fn error_messages(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        out.push(e.to_string());
        source = e.source();
    }
    out
}

/// Why a run could not be carried out (a container that fails is a [`RunResult`], not this).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bundle could not be built or written.
    #[error("cannot prepare the bundle")]
    Bundle(#[from] BundleError),
    /// `--network bridge` cannot be set up on this host (no pasta, or its files).
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// A filesystem operation on the runner's state failed.
    #[error("{what} {path:?}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call without a path failed.
    #[error("{what}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The helper process could not be started.
    #[error("cannot start the runtime helper {program:?}")]
    Spawn {
        /// The helper executable.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No write-proof view of the helper executable could be made (see [`SealError`]); no
    /// helper is ever run from its path.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The request could not be encoded.
    #[error("cannot encode the request for run {id}")]
    Protocol {
        /// The run.
        id: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The run's cgroup limits could not be written (rootless with a delegated v1 subtree,
    /// where the runner writes them itself).
    #[error("run {id} failed: cannot set the run's cgroup limits")]
    Limits {
        /// The run.
        id: String,
        /// The cause.
        #[source]
        source: UsernsError,
    },
    /// systemd could not give the run its scope (`--cgroup-manager systemd`).
    #[error("run {id} failed: cannot get a systemd scope for it")]
    Systemd {
        /// The run.
        id: String,
        /// The cause.
        #[source]
        source: crate::systemd::SystemdError,
    },
    /// The helper reported a failure (its error chain, outermost first).
    #[error("run {id} failed: {}", messages.join(": "))]
    Helper {
        /// The run.
        id: String,
        /// The helper's error chain.
        messages: Vec<String>,
    },
    /// The helper ended without a report.
    #[error("runtime helper for run {id} ended without a report ({status}); its stderr: {stderr}")]
    HelperCrashed {
        /// The run.
        id: String,
        /// Its exit status.
        status: String,
        /// The tail of its stderr.
        stderr: String,
        /// Why its exit status could not be read, if it could not.
        #[source]
        wait_error: Option<std::io::Error>,
    },
    /// The helper died without a report (e.g. SIGKILL): the runner noticed at once (its
    /// report pipe closed), killed the container and removed the run, as `gc` removes an
    /// abandoned one, instead of leaving the container unsupervised.
    #[error(
        "runtime helper for run {id} died without a report ({status}); its container, if \
         any, was killed and the run removed; the helper's stderr: {stderr}"
    )]
    HelperDied {
        /// The run.
        id: String,
        /// The helper's exit status.
        status: String,
        /// The tail of its stderr.
        stderr: String,
        /// Why its exit status could not be read, if it could not.
        #[source]
        wait_error: Option<std::io::Error>,
    },
    /// The helper did not report within the run's timeout plus the grace period; it was
    /// killed and the run removed.
    #[error("runtime helper for run {id} did not report within the timeout plus {grace:?}")]
    HelperUnresponsive {
        /// The run.
        id: String,
        /// The grace period that passed.
        grace: std::time::Duration,
    },
    /// A leftover run could not be removed.
    #[error("cannot remove leftover run {path:?}: {reason}")]
    Leftover {
        /// The run directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A leftover run's container could neither be deleted through libcontainer nor found in
    /// its bundle to be killed through its cgroup.
    #[error("cannot remove leftover run {path:?}")]
    LeftoverContainer {
        /// The run directory.
        path: PathBuf,
        /// Why libcontainer could not delete it (boxed: the error is large).
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
}
