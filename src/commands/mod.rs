//! One file per verb; `dispatch` routes the parsed command line.

pub mod gc;
pub mod images;
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
}

impl Paths {
    /// The runtime's state: containers in progress, their bundles and locks.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers-v1")
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
        Paths { root, storage }
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

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the parsed command; the returned code is the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::resolve(&cli);
    match cli.command {
        Command::Storage(cmd) => storage::run(cmd, &paths),
        Command::Pull(args) => pull::run(args, &paths),
        Command::Images(args) => images::list(args, &paths),
        Command::Rmi(args) => images::remove(args, &paths),
        Command::Load(args) => images::load(args, &paths),
        Command::Run(args) => run::run(*args, &paths),
        Command::Gc => gc::run(&paths),
        Command::RuntimeHelper => unreachable!("main runs the helper before anything else"),
    }
}
