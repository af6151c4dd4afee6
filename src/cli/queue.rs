//! `dockless submit`, `worker`, `jobs`, `job`, `logs`, `kill`: the job queue of a shared
//! PostgreSQL Storage (the global `--storage` / `DOCKLESS_STORAGE`).

use std::path::PathBuf;
use std::time::Duration;

use dockless_staging::queue::JobStatus;

use crate::units::parse_duration;

/// `dockless submit JOB.json`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job file (as `dockless run --job` takes it); the files it names are taken into
    /// the queued job, so any worker on any host can run it.
    pub job: PathBuf,
    /// How many times the job may be started when its worker is lost (host gone, killed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_attempts: i32,
}

/// `dockless worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Jobs run at once on this host.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub slots: u16,
    /// How long a job's claim holds without renewal (renewed every third of it); a job whose
    /// worker is gone is retried once it runs out.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// How often an idle worker looks for jobs besides the database's notifications.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll: Duration,
    /// This host's name in `dockless jobs` [default: the host name].
    #[arg(long)]
    pub host: Option<String>,
}

/// `dockless jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Only jobs in this status (waiting, processing, success, error, terminating,
    /// terminated).
    #[arg(long)]
    pub status: Option<JobStatus>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `dockless job ID`.
#[derive(Debug, clap::Args)]
pub struct ShowJobArgs {
    /// The job id.
    pub id: i64,
    /// Print the job and its result object (as `dockless run --json` prints it) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dockless logs ID`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job id.
    pub id: i64,
    /// Keep printing as the job goes on, until it ends.
    #[arg(short, long)]
    pub follow: bool,
}

/// `dockless kill ID`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// A queued job's id (with a PostgreSQL `--storage`), or a local run's name or run id
    /// as `dockless ps` shows it.
    pub id: String,
}

/// `dockless ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}
