//! One file per verb; `dispatch` routes the parsed command line.

pub mod build;
pub mod gc;
pub mod images;
pub mod job_file;
pub mod pull;
pub mod run;
pub mod storage;

/// The hidden subcommand that makes this binary the runtime's single-threaded helper.
pub const HELPER_COMMAND: &str = "__runtime-helper";

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Paths every command may need, resolved once from flags and environment.
pub struct Paths {
    /// State directory: image store, snapshots, runtime state.
    pub root: PathBuf,
    /// The embedded Storage database file.
    pub storage: PathBuf,
    /// Runtime state of containers in progress (bundles, libcontainer state, locks).
    pub run_state: PathBuf,
}

impl Paths {
    /// The runtime's state: containers in progress, their bundles and locks.
    pub fn containers(&self) -> PathBuf {
        self.run_state.join("containers-v1")
    }

    /// Per-run root filesystems (overlay mounts) and their locks.
    pub fn rootfs_runs(&self) -> PathBuf {
        self.root.join("rootfs-v1")
    }

    /// The content store (blobs, manifests, image index).
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    fn resolve(cli: &Cli) -> Paths {
        let root = cli.root.clone().unwrap_or_else(default_root);
        let storage = cli
            .storage
            .clone()
            .unwrap_or_else(|| root.join("storage.db"));
        let run_state = std::env::var_os("DOCKLESS_RUN_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_run_state);
        Paths {
            root,
            storage,
            run_state,
        }
    }
}

/// `/var/lib/dockless` for root (as podman's /var/lib/containers); `$XDG_DATA_HOME/dockless`
/// (or `~/.local/share/dockless`) for everyone else.
fn default_root() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/dockless");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("dockless");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/dockless")
}

/// Runtime state lives on tmpfs where there is one (`/run/dockless` for root,
/// `$XDG_RUNTIME_DIR/dockless` otherwise), as podman's runroot: it is per boot by nature, and
/// writing bundles and container state there saves ~9 ms per run against this disk. A runner
/// killed mid-run leaves its entries there for `dockless gc`.
fn default_run_state() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/run/dockless");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("dockless"),
        None => std::env::temp_dir().join(format!("dockless-run-{}", euid())),
    }
}

fn nix_is_root() -> bool {
    euid() == 0
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Runs the parsed command; the returned code is the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::resolve(&cli);
    // Abandoned rootless containers are only reachable from outside any session (see
    // `kill_abandoned_inits`); as root, gc's own removal of each run kills them.
    if !nix_is_root()
        && matches!(cli.command, Command::Gc | Command::Run(_))
        && let Err(e) = dockless_runtime::container::kill_abandoned_inits(&paths.containers())
    {
        tracing::warn!(error = format!("{e:#}"), "cannot end abandoned containers");
    }
    // Still single-threaded here: the rootless session must be entered before any thread.
    if matches!(
        cli.command,
        Command::Pull(_)
            | Command::Rmi(_)
            | Command::Load(_)
            | Command::Run(_)
            | Command::Gc
            | Command::Build(_)
            | Command::Unshare(_)
    ) {
        crate::rootless::enter_session(&paths)?;
    }
    match cli.command {
        Command::Storage(cmd) => storage::run(cmd, &paths),
        Command::Build(args) => build::run(*args, &paths),
        Command::Pull(args) => pull::run(args, &paths),
        Command::Images(args) => images::list(args, &paths),
        Command::Rmi(args) => images::remove(args, &paths),
        Command::Load(args) => images::load(args, &paths),
        Command::Run(args) => run::run(*args, &paths),
        Command::Gc => gc::run(&paths),
        Command::Unshare(args) => crate::rootless::exec(args.command),
        Command::DelegateCgroups(args) => crate::rootless::delegate(&args.user, args.undo),
        Command::RuntimeHelper => unreachable!("main runs the helper before anything else"),
    }
}
