//! `dockless run IMAGE --config FILE`: the flags into [`JobSettings`], the job pipeline
//! ([`crate::pipeline`]), its result on stdout and stderr, its class as exit status.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use dockless_staging::Format;

use crate::cli::run::{ConfigurationFormat, GelfServerArg, JobArgs, LoggingArg, RunArgs};
use crate::paths::Paths;
use crate::pipeline::gelf::{Logging, LoggingType, ServerType};
use crate::pipeline::{self, JobSettings, classify::Class, result::JobResult};
use crate::units::limit_text;

use super::job_config::{self, Runs};

/// `dockless run IMAGE --config FILE`: flags into [`JobSettings`], the pipeline, the result.
pub fn run(image: &str, args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
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
    let user_error = |message: String| {
        let mut result = JobResult::new(image, &component_id, &run_id, "run");
        result.fail(Class::User, message);
        report(&result, args.json)
    };
    // `-e` adds to a job's environment; the `KBC_*` names are the runner's, as in Keboola.
    if let Some(bad) = args.env.iter().find(|e| match e.split_once('=') {
        Some((key, _)) => key.is_empty() || key.starts_with("KBC_"),
        None => true,
    }) {
        return user_error(format!(
            "-e {bad:?}: expected KEY=VALUE with a name not starting with KBC_ (the runner \
             sets those)"
        ));
    }
    let (plan, sources) = match job_config::sources(job).and_then(|sources| {
        job_config::plan(&configuration, &path, job, &sources).map(|plan| (plan, sources))
    }) {
        Ok(planned) => planned,
        Err(message) => return user_error(message),
    };
    let (configuration, row_id, rows) = match plan.runs {
        Runs::Single {
            configuration,
            row_id,
        } => (configuration, row_id, None),
        Runs::Rows(rows) => (serde_json::Value::Null, None, Some(rows)),
    };
    let sync = configuration
        .get("action")
        .and_then(|a| a.as_str())
        .is_some_and(|a| !a.is_empty() && a != "run");
    let logging = match logging(job) {
        Ok(l) => l,
        Err(e) => {
            let mut result = JobResult::new(image, &component_id, &run_id, "run");
            result.fail(Class::User, e);
            return report(&result, args.json);
        }
    };
    let memory = args.memory.unwrap_or(256 << 20);
    let settings = JobSettings {
        image: image.to_string(),
        platform: args.platform.clone(),
        registry: args.registry.resolve()?,
        configuration,
        component_id,
        config_id: plan.config_id,
        row_id,
        run_id,
        project_id: job.project_id.clone(),
        stack_id: "local".to_string(),
        branch_id: job.branch_id.clone(),
        orchestration_id: job.orchestration_id.clone(),
        config_version: job.config_version.clone().or(plan.config_version.clone()),
        debug: job.debug,
        extra_env: args.env.clone(),
        image_parameters,
        format: match job.configuration_format {
            ConfigurationFormat::Json => Format::Json,
            ConfigurationFormat::Yaml => Format::Yaml,
        },
        default_bucket: job.default_bucket.clone(),
        data_type_support: job.data_type_support.unwrap_or_default().into(),
        memory: (memory, limit_text(memory)),
        cpus: args.cpus,
        // Keboola gives a sync action 30 s.
        timeout: args
            .timeout
            .unwrap_or(Duration::from_secs(if sync { 30 } else { 3600 })),
        network: args.network.into(),
        pids: args.pids_limit,
        read_only: args.read_only,
        userns: crate::rootless::userns_range(args.userns)?,
        stdout_to_stdout: !args.json,
        processor_images: job.processors.clone(),
        defer_state: false,
        extra_secrets: serde_json::json!({ "#vault": sources.secrets }),
        logging,
    };
    if let Some(rows) = rows {
        let result = pipeline::rows::run_rows(&settings, rows, paths);
        if !args.json {
            for row in &result.rows {
                if let Some(answer) = row.result.as_ref().and_then(|r| r.action_result.as_ref()) {
                    print_stdout(&serde_json::to_string_pretty(answer)?);
                }
            }
        }
        let _ = write!(std::io::stderr().lock(), "{}", result.summary());
        if args.json {
            print_stdout(&serde_json::to_string_pretty(&result)?);
        }
        return Ok(exit_code(result.class, result.cleanup_failed()));
    }
    let result = pipeline::run(&settings, paths);
    if !args.json
        && let Some(answer) = &result.action_result
    {
        print_stdout(&serde_json::to_string_pretty(answer)?);
    }
    report(&result, args.json)
}

/// The component's `logging`: the job file's section (Keboola's defaults for what it leaves
/// out), then `--logging` and `--gelf-server-type`.
fn logging(job: &JobArgs) -> Result<Logging, String> {
    let mut logging = match &job.logging_inline {
        Some(section) => Logging::from_spec(section)?,
        None => Logging::default(),
    };
    if let Some(kind) = job.logging {
        logging.kind = match kind {
            LoggingArg::Standard => LoggingType::Standard,
            LoggingArg::Gelf => LoggingType::Gelf,
        };
    }
    if let Some(server) = job.gelf_server_type {
        logging.gelf_server_type = match server {
            GelfServerArg::Tcp => ServerType::Tcp,
            GelfServerArg::Udp => ServerType::Udp,
            GelfServerArg::Http => ServerType::Http,
        };
    }
    Ok(logging)
}

/// Prints the summary (stderr) and, with `json`, the result (stdout); the exit status is the
/// class's (128 + the signal for a terminated job), or 125 when the job's directory could not
/// be removed.
fn report(result: &JobResult, json: bool) -> anyhow::Result<ExitCode> {
    // After a hangup (a terminated job) stderr may be gone: no panic over the summary.
    let _ = write!(std::io::stderr().lock(), "{}", result.summary());
    if json {
        print_stdout(&serde_json::to_string_pretty(result)?);
    }
    Ok(exit_code(result.class, result.cleanup_error.is_some()))
}

/// The class's exit status (128 + the signal for a terminated job), or 125 when a job's
/// directory could not be removed.
fn exit_code(class: Class, cleanup_failed: bool) -> ExitCode {
    if cleanup_failed {
        return ExitCode::from(125);
    }
    if class == Class::Terminated
        && let Some(signal) = crate::signals::received()
    {
        return ExitCode::from(signal.exit_status());
    }
    ExitCode::from(class.exit_status())
}

/// The last path segment of an image reference without tag or digest
/// (`127.0.0.1:5000/team/demo:1` -> `demo`): the default component id of a job.
pub fn repository_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

/// A numeric run id as Keboola's: milliseconds since the epoch and three digits of our pid.
pub fn new_run_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis}{:03}", std::process::id() % 1000)
}

/// Prints a line on stdout; a reader that went away (`| head`) is not a failure of the job,
/// whose Storage changes are already committed.
fn print_stdout(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_defaults() {
        assert_eq!(repository_name("127.0.0.1:5000/team/demo:1"), "demo");
        assert_eq!(repository_name("busybox@sha256:ab"), "busybox");
    }
}
