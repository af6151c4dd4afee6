//! `dockless run IMAGE [-- CMD...]`: one container from a stored (or freshly pulled) image.
//! With `--config FILE`, the whole Keboola job instead (see [`crate::pipeline`]).
//!
//! Steps: find or pull the image -> make sure its layers are unpacked -> a private rootfs for
//! this run (overlay over the snapshots) -> bundle + container through the runtime's helper
//! process -> stream output -> remove everything. The container's exit code becomes ours, as
//! with `docker run`.

use std::process::ExitCode;

use anyhow::Context as _;
use dockless_registry::Store;
use dockless_runtime::bundle::{ImageConfig, Limits, RunSpec};
use dockless_runtime::container::RunResult;

use crate::cli::run::RunArgs;
use crate::paths::Paths;
use crate::stages::container::run_container;
use crate::stages::pull::{image_config, pull_and_unpack, unpack};

/// Runs the container and exits with its code (or, with `--config`, the job and exits with
/// its class).
pub fn run(mut args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    if let Some(file) = args.job.job_file.clone() {
        super::job_file::apply(&file, &mut args, paths)?;
    }
    if let Some(grace) = args.stop_timeout {
        crate::signals::set_grace(grace);
    }
    if let Some(dir) = args.job.project.clone() {
        match super::project::apply(&dir, &mut args) {
            Ok(super::project::Outcome::Listed) => return Ok(ExitCode::SUCCESS),
            Ok(super::project::Outcome::Run) => {}
            Err(message) => return super::job::refuse_early(&message, args.json),
        }
    }
    if args.job.config.is_some() || args.job.config_inline.is_some() {
        // The image may come from the component's specification.
        return super::job::run(args, paths);
    }
    let image = args
        .image
        .clone()
        .context("no image given (as IMAGE or in the job file)")?;
    // Leftovers of killed runs must not stop this one.
    crate::stages::gc::collect_before_run(paths);
    let store = Store::open(paths.store())?;
    let record = match store.find_image(&image)? {
        Some(record) => {
            unpack(&record, paths)?;
            record
        }
        None => {
            let progress = crate::progress::for_stderr(false);
            let registry = args.registry.resolve()?;
            pull_and_unpack(&image, &args.platform, &registry, paths, progress)?.0
        }
    };
    let spec = run_spec(&args, image_config(&store, &record)?)?;
    // A signal during the pull: no container is started.
    crate::signals::check()?;
    let result = run_container(paths, &record, &spec, !args.json)?;
    let network = spec.network.name();
    if result.stopped {
        // Stopped by a signal: the container and its rootfs are gone; exit 128 + signal.
        crate::signals::check()?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary(&record.name, network, &result))?
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

/// The container as the flags describe it, on the image's config.
fn run_spec(args: &RunArgs, image: ImageConfig) -> anyhow::Result<RunSpec> {
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
    // As for a job: a zero limit would kill the container at once.
    anyhow::ensure!(
        args.timeout.is_none_or(|t| !t.is_zero()),
        "--timeout must be a positive number of seconds, not 0"
    );
    spec.timeout = args.timeout;
    spec.network = args
        .network
        .unwrap_or(crate::cli::run::Network::None)
        .into();
    spec.read_only_rootfs = args.read_only;
    spec.userns = crate::rootless::userns_range(args.userns)?;
    Ok(spec)
}

fn summary(image: &str, network: &str, r: &RunResult) -> serde_json::Value {
    serde_json::json!({
        "image": image,
        "network": network,
        "mount_api": crate::stages::container::mount_api(),
        "cgroup_manager": crate::cgroups::name(),
        "exit_code": r.exit_code,
        "oom_killed": r.oom_killed,
        "timed_out": r.timed_out,
        "duration_ms": r.duration.as_millis() as u64,
        "peak_memory_bytes": r.peak_memory_bytes,
        "stdout": r.stdout.to_string_lossy(),
        "stderr": r.stderr.to_string_lossy(),
    })
}
