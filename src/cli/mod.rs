//! Command-line surface: clap structs and their value parsers only, no behaviour; one file
//! per verb group. Only `main` and `commands` use it: everything below takes its own types.

pub mod build;
pub mod images;
pub mod login;
pub mod pull;
pub mod queue;
pub mod registry;
pub mod run;
pub mod storage;
pub mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dockless_staging::StorageLocation;

/// Runs containerised data components without a Docker daemon.
#[derive(Debug, Parser)]
#[command(name = "dockless", version, about)]
pub struct Cli {
    /// State directory (image store, snapshots); default /var/lib/dockless as root, the XDG
    /// data dir otherwise.
    #[arg(long, global = true, env = "DOCKLESS_ROOT")]
    pub root: Option<PathBuf>,

    /// The Storage: a SQLite file (default `storage.db` in the state directory) or a
    /// PostgreSQL database (`postgres://user@host:port/db`, completed from the PG* variables
    /// and ~/.pgpass as libpq does).
    #[arg(long, global = true, env = "DOCKLESS_STORAGE", value_parser = StorageLocation::parse)]
    pub storage: Option<StorageLocation>,

    /// Who manages the runs' cgroups: `systemd` (a transient scope per run; rootless, one
    /// delegated scope of the user's systemd) or `cgroupfs` (written directly); default:
    /// systemd when PID 1 is systemd on a cgroup v2 host and its D-Bus answers.
    #[arg(long, global = true, env = "DOCKLESS_CGROUP_MANAGER", value_enum)]
    pub cgroup_manager: Option<CgroupManager>,

    #[command(subcommand)]
    pub command: Command,
}

/// `--cgroup-manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupManager {
    /// Transient scopes of systemd, with `Delegate=yes`.
    Systemd,
    /// Cgroups written by dockless itself.
    Cgroupfs,
}

/// One verb per subcommand; each lives in its own file under `commands/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a container from an image (pulled when not stored).
    Run(Box<run::RunArgs>),
    /// Remove what killed runs left behind (containers, mounts, state).
    Gc,
    /// The runtime's helper process (internal).
    #[command(name = crate::stages::container::HELPER_COMMAND, hide = true)]
    RuntimeHelper,
    /// Build a component image from a base image and a git repository.
    Build(Box<build::BuildArgs>),
    /// Run a component's functional test folders (Keboola's datadirtest layout) against its
    /// image, each case in a container, and compare what it left with what it should have.
    Test(Box<test::TestArgs>),
    /// Pull an image from a registry into the local store.
    Pull(pull::PullArgs),
    /// List images in the local store.
    Images(images::ImagesArgs),
    /// Import a `docker save` archive or an OCI layout (air-gapped hosts).
    Load(images::LoadArgs),
    /// Remove images from the local store.
    Rmi(images::RmiArgs),
    /// Check a registry's credentials and store them in podman's auth file.
    Login(login::LoginArgs),
    /// Remove a registry's credentials from podman's auth file.
    Logout(login::LogoutArgs),
    /// Tables and files of the Storage (SQLite or PostgreSQL).
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// Put a job (a job file as `run --job` takes it) into the queue of a PostgreSQL
    /// Storage; prints its id.
    Submit(queue::SubmitArgs),
    /// Run the queued jobs of a PostgreSQL Storage on this host, until SIGTERM or SIGINT.
    Worker(queue::WorkerArgs),
    /// List the queued jobs of a PostgreSQL Storage.
    Jobs(queue::JobsArgs),
    /// Show one queued job and its result.
    Job(queue::ShowJobArgs),
    /// Print a queued job's stored output.
    Logs(queue::LogsArgs),
    /// Stop a queued job wherever it runs (or a local run).
    Kill(queue::KillArgs),
    /// List the runs and jobs running on this host.
    Ps(queue::PsArgs),
    /// Run a command inside the rootless user namespace (as podman unshare): e.g. remove
    /// files a container left owned by a subordinate uid. Root runs it as is.
    Unshare(UnshareArgs),
    /// As root, once per boot: give USER a subtree of every cgroup v1 hierarchy (or, on a
    /// cgroup v2 host without systemd, one delegated cgroup), so that its rootless runs get
    /// memory, CPU and pids limits (`--undo` takes it back).
    DelegateCgroups(DelegateArgs),
}

/// `dockless delegate-cgroups USER [--undo]`.
#[derive(Debug, clap::Args)]
pub struct DelegateArgs {
    /// The user that runs dockless rootless.
    pub user: String,
    /// Remove the delegated directories instead (fails while a run of the user lives).
    #[arg(long)]
    pub undo: bool,
}

/// `dockless unshare [COMMAND...]`.
#[derive(Debug, clap::Args)]
pub struct UnshareArgs {
    /// The command and its arguments (default: $SHELL).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
