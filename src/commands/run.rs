//! `dockless run IMAGE [-- CMD...]`: one container from a stored (or freshly pulled) image.
//!
//! Steps: find or pull the image -> make sure its layers are unpacked -> a private rootfs for
//! this run (overlay over the snapshots) -> bundle + container through the runtime's helper
//! process -> stream output -> remove everything. The container's exit code becomes ours, as
//! with `docker run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use dockless_registry::Store;
use dockless_runtime::bundle::{ImageConfig, Limits, NetworkMode, RunSpec};
use dockless_runtime::container::{RunResult, Runner, Stream};
use dockless_runtime::rootfs::{MountMode, RootfsKind};

use super::Paths;
use super::pull::{pull_and_unpack, unpack};
use crate::settings::RegistryArgs;

/// Arguments of `dockless run` (plain mode).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image reference; pulled when it is not in the local store.
    pub image: String,

    /// Command and arguments replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,

    /// Host directory bound read-write at /data.
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Memory limit, Keboola's and docker's format (`256m`, `1g`, bytes); swap is not added.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,

    /// CPU quota in CPUs (`1.5`).
    #[arg(long)]
    pub cpus: Option<f64>,

    /// Maximum number of processes (podman's default 2048).
    #[arg(long, default_value_t = dockless_runtime::bundle::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Wall-clock limit (`30`, `30s`, `5m`, `1h`); everything the container started is killed.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// `none` (default: an empty network namespace with lo up) or `host`.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,

    /// Mount the image's root filesystem read-only (/data and /tmp stay writable).
    #[arg(long)]
    pub read_only: bool,

    /// Environment variable `KEY=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// User inside the container (`name`, `uid`, `uid:gid`), instead of the image's.
    #[arg(long, short)]
    pub user: Option<String>,

    /// Working directory inside the container, instead of the image's.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,

    /// Platform to pull when the image is not stored.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Print a JSON result (exit code, OOM, timeout, duration, output tails) instead of
    /// streaming the container's stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// An empty network namespace with only lo.
    None,
    /// The host's network.
    Host,
}

/// Runs the container and exits with its code.
pub fn run(args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    // Leftovers of killed runs must not stop this one: report and go on.
    if let Err(e) = super::gc::collect(paths) {
        tracing::warn!(
            error = format!("{e:#}"),
            "cleaning up after earlier runs failed; `dockless gc` retries"
        );
    }
    let store = Store::open(paths.store())?;
    let record = match store.find_image(&args.image)? {
        Some(record) => {
            unpack(&record, paths)?;
            record
        }
        None => {
            let progress = crate::progress::for_stderr(false);
            pull_and_unpack(&args.image, &args.platform, &args.registry, paths, progress)?.0
        }
    };
    let image = ImageConfig::from_image_config_json(&store.read_metadata(&record.config)?)
        .with_context(|| format!("image config of {}", record.name))?;

    let mut spec = RunSpec::new(image);
    spec.command = (!args.command.is_empty()).then(|| args.command.clone());
    spec.env = args.env.clone();
    spec.user = args.user.clone();
    spec.workdir = args.workdir.clone();
    spec.data_dir = args
        .data
        .as_ref()
        .map(|d| {
            d.canonicalize()
                .with_context(|| format!("--data {}", d.display()))
        })
        .transpose()?;
    spec.limits = Limits {
        memory_bytes: args.memory,
        cpus: args.cpus,
        pids: Some(args.pids_limit),
        ..Limits::default()
    };
    spec.timeout = args.timeout;
    spec.network = match args.network {
        Network::None => NetworkMode::None,
        Network::Host => NetworkMode::Host,
    };
    spec.read_only_rootfs = args.read_only;

    let result = run_container(paths, &record, &spec, !args.json)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary(&record.name, &result))?
        );
    } else {
        if result.timed_out {
            eprintln!(
                "dockless: {} timed out after {:?} and was killed",
                record.name,
                spec.timeout.unwrap_or_default()
            );
        }
        if result.oom_killed {
            eprintln!(
                "dockless: {} ran out of memory (limit {} bytes)",
                record.name,
                spec.limits.memory_bytes.unwrap_or(0)
            );
        }
    }
    Ok(ExitCode::from(result.exit_code.clamp(0, 255) as u8))
}

/// Gives the run its own rootfs, runs the container, removes the rootfs; shared with the job
/// pipeline. With `stream`, the container's output goes to ours as it arrives.
pub fn run_container(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    stream: bool,
) -> anyhow::Result<RunResult> {
    let chains = super::images::chains(record)?;
    let slot = super::gc::RootfsSlot::claim(paths)?;
    let rootfs = super::pull::snapshots(paths)?
        .mount_run(&chains, slot.dir(), MountMode::OverlayOrCopy)
        .context("cannot prepare the container's root filesystem")?;
    if let RootfsKind::Copy { reason } = rootfs.kind() {
        eprintln!(
            "dockless: overlay unavailable ({reason}); running on a flattened copy of the image"
        );
    }
    let exe = std::env::current_exe().context("cannot find the dockless executable")?;
    let runner = Runner::new(exe, [super::HELPER_COMMAND], paths.containers());
    let mut on_output = |which: Stream, bytes: &[u8]| {
        if !stream {
            return;
        }
        let _ = match which {
            Stream::Stdout => std::io::stdout().lock().write_all(bytes),
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    };
    let result = runner.run(rootfs.path(), spec, &mut on_output);
    let released = rootfs.release();
    let result = result.with_context(|| format!("cannot run {}", record.name))?;
    released.context("cannot remove the container's root filesystem")?;
    slot.release();
    Ok(result)
}

fn summary(image: &str, r: &RunResult) -> serde_json::Value {
    serde_json::json!({
        "image": image,
        "exit_code": r.exit_code,
        "oom_killed": r.oom_killed,
        "timed_out": r.timed_out,
        "duration_ms": r.duration.as_millis() as u64,
        "peak_memory_bytes": r.peak_memory_bytes,
        "stdout": r.stdout.to_string_lossy(),
        "stderr": r.stderr.to_string_lossy(),
    })
}

/// `256m`, `1g`, `512k`, `1024` (bytes); an optional trailing `b` as docker allows.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|s| !s.is_empty() && s.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => {
            return Err(format!(
                "{text:?}: expected a number with k, m or g (e.g. 256m)"
            ));
        }
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with k, m or g (e.g. 256m)"))?;
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{text:?}: out of range"))
}

/// `30` (seconds), `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected seconds or a number with s, m or h"))?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
