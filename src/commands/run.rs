//! `dockless run IMAGE [-- CMD...]`: one container from a stored (or freshly pulled) image.
//! With `--config FILE`, the whole Keboola job instead (see [`crate::pipeline`]).
//!
//! Steps: find or pull the image -> make sure its layers are unpacked -> a private rootfs for
//! this run (overlay over the snapshots) -> bundle + container through the runtime's helper
//! process -> stream output -> remove everything. The container's exit code becomes ours, as
//! with `docker run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use dockless_registry::Store;
use dockless_runtime::bundle::{ImageConfig, Limits, NetworkMode, RunSpec};
use dockless_runtime::container::{RunResult, Runner, Stream};
use dockless_runtime::rootfs::{MountMode, RootfsKind, SnapshotStore};

use dockless_staging::Format;

use super::Paths;
use super::pull::{pull_and_unpack, unpack};
use crate::pipeline::{self, JobSettings, classify::Class, result::JobResult};
use crate::settings::RegistryArgs;

/// Arguments of `dockless run` (plain mode).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image reference; pulled when it is not in the local store (may come from `--job`).
    #[arg(required_unless_present = "job_file")]
    pub image: Option<String>,

    /// Command and arguments replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,

    /// Host directory bound read-write at /data.
    #[arg(long, conflicts_with = "job_source")]
    pub data: Option<PathBuf>,

    /// Memory limit, Keboola's and docker's format (`256m`, `1g`, bytes); swap is not added.
    /// Default with --config: 256m.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,

    /// CPU quota in CPUs (`1.5`).
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Maximum number of processes (podman's default 2048).
    #[arg(long, default_value_t = dockless_runtime::bundle::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Wall-clock limit (`30`, `30s`, `5m`, `1h`); everything the container started is killed.
    /// Default with --config: 3600 s (30 s for a sync action); the configuration's
    /// `runtime.process_timeout` overrides it for the main image, as in Keboola.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// `none` (default: an empty network namespace with lo up) or `host`.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,

    /// Mount the image's root filesystem read-only (/data and /tmp stay writable).
    #[arg(long)]
    pub read_only: bool,

    /// As root: run the container in a user namespace of its own, its root mapped to the
    /// unprivileged host range of the `dockless` entry in /etc/subuid and /etc/subgid (its
    /// layers are kept shifted into that range; `--data` is chowned to it, as podman's `:U`).
    #[arg(long)]
    pub userns: bool,

    /// Environment variable `KEY=VALUE` (repeatable).
    #[arg(
        long = "env",
        short = 'e',
        value_name = "KEY=VALUE",
        conflicts_with = "job_source"
    )]
    pub env: Vec<String>,

    /// User inside the container (`name`, `uid`, `uid:gid`), instead of the image's.
    #[arg(long, short, conflicts_with = "job_source")]
    pub user: Option<String>,

    /// Working directory inside the container, instead of the image's.
    #[arg(long, short = 'w', conflicts_with = "job_source")]
    pub workdir: Option<String>,

    /// Platform to pull when the image is not stored.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Print a JSON result (exit code, OOM, timeout, duration, output tails) instead of
    /// streaming the container's stdout (with --config: the job result; the component's
    /// output is then streamed to stderr).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub job: JobArgs,
}

/// The Keboola job mode of `dockless run`: the configuration and the component's settings.
#[derive(Debug, Args)]
#[group(skip)]
pub struct JobArgs {
    /// Run the whole Keboola job with this configuration (JSON; `-` reads standard input):
    /// input mapping, the container, output mapping, state. Exits 0 / 1 / 2 for success /
    /// user error / application error, 125 when dockless itself failed.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with = "command",
        group = "job_source"
    )]
    pub config: Option<PathBuf>,

    /// A job file (JSON): the image, the configuration (inline as `configuration` or as a
    /// `config_file` path relative to the job file) and the component's settings under the
    /// names of the flags (`component_id`, `config_id`, `row_id`, `memory`, `timeout`,
    /// `network`, `cpus`, `configuration_format`, `default_bucket`, `image_parameters`,
    /// `processors` as `{"component": "image"}`). Flags given as well win.
    #[arg(
        long = "job",
        value_name = "FILE",
        conflicts_with = "command",
        group = "job_source"
    )]
    pub job_file: Option<PathBuf>,

    /// The configuration given inline by a job file.
    #[arg(skip)]
    pub config_inline: Option<serde_json::Value>,

    /// The image parameters given inline by a job file.
    #[arg(skip)]
    pub image_parameters_inline: Option<serde_json::Value>,

    /// Component id (`KBC_COMPONENTID`, state key, default bucket); default: the image's
    /// repository name.
    #[arg(long, requires = "job_source")]
    pub component_id: Option<String>,

    /// Configuration id: state is kept per configuration (none without one).
    #[arg(long, requires = "job_source")]
    pub config_id: Option<String>,

    /// Configuration row id.
    #[arg(long, requires = "job_source")]
    pub row_id: Option<String>,

    /// Run id (`KBC_RUNID`); default: generated.
    #[arg(long, requires = "job_source")]
    pub run_id: Option<String>,

    /// Project id (`KBC_PROJECTID`).
    #[arg(long, default_value = "0", requires = "job_source")]
    pub project_id: String,

    /// Branch id (`KBC_BRANCHID`), when the job runs in one.
    #[arg(long, requires = "job_source")]
    pub branch_id: Option<String>,

    /// The component's `configuration_format`: config, state and manifests as json or yaml.
    #[arg(long, value_enum, default_value_t = ConfigurationFormat::Json, requires = "job_source")]
    pub configuration_format: ConfigurationFormat,

    /// The component's default bucket for outputs named by file name only
    /// (`stage.c-bucket`).
    #[arg(long, requires = "job_source")]
    pub default_bucket: Option<String>,

    /// The component's `image_parameters` (a JSON file; `#` values are secrets).
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub image_parameters: Option<PathBuf>,

    /// The image of a processor component (repeatable); a processor without one is run from
    /// the image its component id names.
    #[arg(long = "processor", value_name = "COMPONENT=IMAGE", value_parser = parse_processor, requires = "job_source")]
    pub processors: Vec<(String, String)>,
}

fn parse_processor(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
        _ => Err(format!("{text:?}: expected COMPONENT=IMAGE")),
    }
}

/// `--configuration-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigurationFormat {
    /// config.json
    Json,
    /// config.yml
    Yaml,
}

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// An empty network namespace with only lo.
    None,
    /// The host's network.
    Host,
}

/// Runs the container and exits with its code (or, with `--config`, the job and exits with
/// its class).
pub fn run(mut args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    if let Some(file) = args.job.job_file.clone() {
        super::job_file::apply(&file, &mut args, paths)?;
    }
    let image = args
        .image
        .clone()
        .context("no image given (as IMAGE or in the job file)")?;
    if args.job.config.is_some() || args.job.config_inline.is_some() {
        return run_job(&image, args, paths);
    }
    // Leftovers of killed runs must not stop this one: report and go on.
    if let Err(e) = super::gc::collect(paths) {
        tracing::warn!(
            error = format!("{e:#}"),
            "cleaning up after earlier runs failed; `dockless gc` retries"
        );
    }
    let store = Store::open(paths.store())?;
    let record = match store.find_image(&image)? {
        Some(record) => {
            unpack(&record, paths)?;
            record
        }
        None => {
            let progress = crate::progress::for_stderr(false);
            pull_and_unpack(&image, &args.platform, &args.registry, paths, progress)?.0
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
    spec.userns = crate::rootless::userns_range(args.userns)?;

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

/// `dockless run IMAGE --config FILE`: flags into [`JobSettings`], the pipeline, the result.
fn run_job(image: &str, args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let job = &args.job;
    // From a job file the configuration may come inline; it is JSON already.
    let (text, path) = match (&job.config_inline, job.config.as_deref()) {
        (Some(inline), _) => (inline.to_string(), job.job_file.clone().unwrap_or_default()),
        (None, Some(path)) if path == Path::new("-") => (
            std::io::read_to_string(std::io::stdin()).context("cannot read the configuration")?,
            path.to_path_buf(),
        ),
        (None, Some(path)) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration {}", path.display()))?,
            path.to_path_buf(),
        ),
        (None, None) => anyhow::bail!("no configuration given"),
    };
    let image_parameters = match (&job.image_parameters_inline, &job.image_parameters) {
        (Some(inline), _) => inline.clone(),
        (None, None) => serde_json::json!({}),
        (None, Some(p)) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("--image-parameters {}: not JSON", p.display()))?
        }
    };
    let component_id = match &job.component_id {
        Some(id) => id.clone(),
        None => repository_name(image),
    };
    let run_id = job.run_id.clone().unwrap_or_else(new_run_id);
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
    let configuration = match parsed {
        Ok(value) => value,
        Err(e) => {
            // Not even JSON: refused as Keboola refuses a bad configuration, before anything.
            let mut result = JobResult::new(image, &component_id, &run_id, "run");
            result.fail(
                Class::User,
                format!("configuration {} is not valid JSON: {e}", path.display()),
            );
            return report(&result, args.json);
        }
    };
    let sync = configuration
        .get("action")
        .and_then(|a| a.as_str())
        .is_some_and(|a| !a.is_empty() && a != "run");
    let memory = args.memory.unwrap_or(256 << 20);
    let settings = JobSettings {
        image: image.to_string(),
        platform: args.platform.clone(),
        registry: args.registry.clone(),
        configuration,
        component_id,
        config_id: job.config_id.clone(),
        row_id: job.row_id.clone(),
        run_id,
        project_id: job.project_id.clone(),
        stack_id: "local".to_string(),
        branch_id: job.branch_id.clone(),
        image_parameters,
        format: match job.configuration_format {
            ConfigurationFormat::Json => Format::Json,
            ConfigurationFormat::Yaml => Format::Yaml,
        },
        default_bucket: job.default_bucket.clone(),
        memory: (memory, size_text(memory)),
        cpus: args.cpus,
        // Keboola gives a sync action 30 s.
        timeout: args
            .timeout
            .unwrap_or(Duration::from_secs(if sync { 30 } else { 3600 })),
        network: match args.network {
            Network::None => NetworkMode::None,
            Network::Host => NetworkMode::Host,
        },
        pids: args.pids_limit,
        read_only: args.read_only,
        userns: crate::rootless::userns_range(args.userns)?,
        stdout_to_stdout: !args.json,
        processor_images: job.processors.clone(),
    };
    let result = pipeline::run(&settings, paths);
    if !args.json
        && let Some(answer) = &result.action_result
    {
        print_stdout(&serde_json::to_string_pretty(answer)?);
    }
    report(&result, args.json)
}

/// Prints the summary (stderr) and, with `json`, the result (stdout); the exit status is the
/// class's, or 125 when the job's directory could not be removed.
fn report(result: &JobResult, json: bool) -> anyhow::Result<ExitCode> {
    eprint!("{}", result.summary());
    if json {
        print_stdout(&serde_json::to_string_pretty(result)?);
    }
    if result.cleanup_error.is_some() {
        return Ok(ExitCode::from(125));
    }
    Ok(ExitCode::from(result.class.exit_status()))
}

/// The last path segment of an image reference without tag or digest
/// (`127.0.0.1:5000/team/demo:1` -> `demo`).
/// The last path segment of an image reference without tag or digest: the default component
/// id of a job.
pub fn repository_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

/// A numeric run id as Keboola's: milliseconds since the epoch and three digits of our pid.
fn new_run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis}{:03}", std::process::id() % 1000)
}

/// `256m` for 256 MiB, `1g` for 1 GiB, else bytes (the OOM message quotes it).
pub fn size_text(bytes: i64) -> String {
    if bytes % (1 << 30) == 0 {
        format!("{}g", bytes >> 30)
    } else if bytes % (1 << 20) == 0 {
        format!("{}m", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Gives the run its own rootfs, runs the container, removes the rootfs; shared with the job
/// pipeline. With `stream`, the container's output goes to ours as it arrives.
pub fn run_container(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    stream: bool,
) -> anyhow::Result<RunResult> {
    run_container_with(paths, record, spec, &mut |which: Stream, bytes: &[u8]| {
        if !stream {
            return;
        }
        let _ = match which {
            Stream::Stdout => std::io::stdout().lock().write_all(bytes),
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    })
}

/// [`run_container`] with the output handed to `on_output` chunk by chunk as it arrives.
pub fn run_container_with(
    paths: &Paths,
    record: &dockless_registry::ImageRecord,
    spec: &RunSpec,
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> anyhow::Result<RunResult> {
    let chains = super::images::chains(record)?;
    let snapshots = match spec.userns {
        Some(shift) => {
            // Everything that could refuse the run first: the user's --data is only handed
            // to the range (by the runtime, just before the container starts) for a run that
            // goes ahead.
            anyhow::ensure!(
                spec.network != NetworkMode::Host,
                "--userns cannot be combined with --network host: the host's network \
                 namespace belongs to the host's user namespace"
            );
            // The run dir's parents (the same for every slot).
            let slot_example = paths.rootfs_runs().join("run");
            for dir in [
                Some(slot_example.as_path()),
                spec.data_dir.as_deref(),
                host_tmp(spec),
            ]
            .into_iter()
            .flatten()
            {
                crate::rootless::check_searchable(dir, shift.base)?;
            }
            // The same layers with owners shifted into the namespace's range, once per range.
            super::pull::unpack_shifted(record, paths, shift)?;
            SnapshotStore::open_shifted(&paths.root, shift)?
        }
        None => super::pull::snapshots(paths)?,
    };
    let slot = super::gc::RootfsSlot::claim(paths)?;
    let rootfs = snapshots
        .mount_run(&chains, slot.dir(), MountMode::OverlayOrCopy)
        .context("cannot prepare the container's root filesystem")?;
    if let RootfsKind::Copy { reason } = rootfs.kind() {
        eprintln!(
            "dockless: overlay unavailable ({reason}); running on a flattened copy of the image"
        );
    }
    let result = runner(paths)?.run(
        rootfs.path(),
        &crate::rootless::enforceable(spec),
        on_output,
    );
    let released = rootfs.release();
    if released.is_ok() {
        // Also when the run failed: the rootfs is gone, so the slot is free.
        slot.release();
    }
    let result = result.with_context(|| format!("cannot run {}", record.name))?;
    released.context("cannot remove the container's root filesystem")?;
    Ok(result)
}

/// The runtime's runner for this process: the binary re-executed as the helper, and, in a
/// rootless session with a delegated cgroup subtree, its cgroups placed there. Pair every
/// spec with [`crate::rootless::enforceable`].
pub fn runner(paths: &Paths) -> anyhow::Result<Runner> {
    let exe = std::env::current_exe().context("cannot find the dockless executable")?;
    let runner = Runner::new(exe, [super::HELPER_COMMAND], paths.containers());
    Ok(match crate::rootless::delegated_cgroup_parent() {
        Some(parent) => runner.with_cgroup_parent(parent).with_own_v1_limits(true),
        None => runner,
    })
}

/// The host directory bound at `/tmp`, if any.
fn host_tmp(spec: &RunSpec) -> Option<&Path> {
    match &spec.tmp {
        dockless_runtime::bundle::TmpMount::HostDir(dir) => Some(dir),
        dockless_runtime::bundle::TmpMount::Tmpfs => None,
    }
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

/// Prints a line on stdout; a reader that went away (`| head`) is not a failure of the job,
/// whose Storage changes are already committed.
fn print_stdout(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A positive, finite number of CPUs.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a positive number of CPUs (e.g. 1.5)"
        )),
    }
}

/// `30` (seconds), `30s`, `5m`, `1h`; at most a year (a deadline must stay computable).
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
    const YEAR: u64 = 365 * 24 * 3600;
    match n.checked_mul(mult) {
        Some(secs) if secs <= YEAR => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{text:?}: longer than a year")),
    }
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
    fn job_defaults() {
        assert_eq!(repository_name("127.0.0.1:5000/team/demo:1"), "demo");
        assert_eq!(repository_name("busybox@sha256:ab"), "busybox");
        assert_eq!(size_text(256 << 20), "256m");
        assert_eq!(size_text(2 << 30), "2g");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
    }
}
