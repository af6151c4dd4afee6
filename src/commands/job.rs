//! `dockless run IMAGE --config FILE`: the flags into [`JobSettings`], the job pipeline
//! ([`crate::pipeline`]), its result on stdout and stderr, its class as exit status.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use dockless_staging::Format;
use dockless_staging::components::ComponentSpec;

use crate::cli::run::{ConfigurationFormat, GelfServerArg, JobArgs, LoggingArg, Network, RunArgs};
use crate::paths::Paths;
use crate::pipeline::gelf::{Logging, LoggingType, ServerType};
use crate::pipeline::{self, JobSettings, classify::Class, result::JobResult};
use crate::units::limit_text;

use super::components;
use super::job_config::{self, Runs};

/// `dockless run IMAGE --config FILE`: flags into [`JobSettings`], the pipeline, the result.
/// Without IMAGE, the image is the one the specification of `--component-id` names.
pub fn run(args: RunArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let job = &args.job;
    // From a job file the configuration may come inline; it is JSON already.
    let (text, path) = match (&job.config_inline, job.config.as_deref()) {
        (Some(inline), _) => (
            inline.to_string(),
            job.config_label
                .clone()
                .or(job.job_file.clone())
                .unwrap_or_default(),
        ),
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
    let run_id = job.run_id.clone().unwrap_or_else(new_run_id);
    // The component's specification first: without IMAGE it names the image.
    let named = job
        .component_id
        .clone()
        .or_else(|| args.image.as_deref().map(repository_name))
        .unwrap_or_default();
    let refuse = |image: &str, message: String| {
        let mut result = JobResult::new(image, &named, &run_id, "run");
        result.fail(Class::User, message);
        report(&result, args.json)
    };
    let given = args.image.clone().unwrap_or_default();
    let loaded = match components::load(job, paths) {
        Ok(loaded) => loaded,
        Err(message) => return refuse(&given, message),
    };
    let spec = job
        .component_id
        .as_deref()
        .and_then(|id| loaded.find(id))
        .cloned();
    if spec.is_none()
        && let Some(id) = &job.component_id
        && (args.image.is_none() || loaded.explicit)
    {
        return refuse(&given, components::unknown(id, &loaded, paths));
    }
    let image =
        match (&args.image, &spec) {
            (Some(image), _) => image.clone(),
            (None, Some(spec)) => spec.definition.reference(),
            (None, None) => return refuse(
                "",
                "no image given (as IMAGE, in the job file or by --component-id with --components)"
                    .into(),
            ),
        };
    let image = image.as_str();
    let image_parameters = match (&job.image_parameters_inline, &job.image_parameters) {
        (Some(inline), _) => inline.clone(),
        (None, None) => spec
            .as_ref()
            .map_or_else(|| serde_json::json!({}), |s| s.image_parameters.clone()),
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
    // As Keboola's sync actions: only the actions the specification lists.
    if sync && let Some(spec) = &spec {
        let action = configuration["action"].as_str().unwrap_or_default();
        if !spec.synchronous_actions.iter().any(|a| a == action) {
            return user_error(format!(
                "Action \"{action}\" is not defined for component \"{}\" (its                  specification's data.synchronous_actions: {:?})",
                spec.id, spec.synchronous_actions
            ));
        }
    }
    let source = loaded
        .source
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    let logging = match logging(job, spec.as_ref(), &source) {
        Ok(l) => l,
        Err(e) => {
            let mut result = JobResult::new(image, &component_id, &run_id, "run");
            result.fail(Class::User, e);
            return report(&result, args.json);
        }
    };
    // Flags (and the job file) win over the specification, which wins over the defaults.
    let memory = match (args.memory, &spec) {
        (Some(m), _) => m,
        (None, Some(s)) => match components::memory(s, &loaded) {
            Ok(m) => m,
            Err(e) => return user_error(e),
        },
        (None, None) => 256 << 20,
    };
    let network = match (args.network, &spec) {
        (Some(n), _) => n,
        (None, Some(s)) => components::network(s),
        (None, None) => Network::None,
    };
    let default_bucket = match (&job.default_bucket, &spec) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(s)) => match components::default_bucket(s, plan.config_id.as_deref()) {
            Ok(b) => b,
            Err(e) => return user_error(e),
        },
        (None, None) => None,
    };
    let processor_specs = match components::processor_specs(&loaded) {
        Ok(p) => p,
        Err(e) => return user_error(e),
    };
    // The processors' `#` image parameters are hidden as the main component's are.
    let processor_secrets: serde_json::Map<String, serde_json::Value> = processor_specs
        .iter()
        .map(|(id, p)| (id.clone(), p.image_parameters.clone()))
        .collect();
    let format =
        match job
            .configuration_format
            .or(spec.as_ref().map(|s| match s.configuration_format {
                Format::Json => ConfigurationFormat::Json,
                Format::Yaml => ConfigurationFormat::Yaml,
            })) {
            Some(ConfigurationFormat::Yaml) => Format::Yaml,
            _ => Format::Json,
        };
    let data_type_support = match (job.data_type_support, &spec) {
        (Some(d), _) => d.into(),
        (None, Some(s)) => s.data_type_support,
        (None, None) => Default::default(),
    };
    let timeout = args
        .timeout
        .or_else(|| {
            spec.as_ref()
                .filter(|_| !sync)
                .map(|s| Duration::from_secs(s.process_timeout))
        })
        // Keboola gives a sync action 30 s.
        .unwrap_or(Duration::from_secs(if sync { 30 } else { 3600 }));
    let mut settings = JobSettings {
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
        format,
        default_bucket,
        data_type_support,
        memory: (memory, limit_text(memory)),
        cpus: args.cpus,
        timeout,
        network: network.into(),
        pids: args.pids_limit,
        read_only: args.read_only,
        userns: crate::rootless::userns_range(args.userns)?,
        stdout_to_stdout: !args.json,
        processor_images: job.processors.clone(),
        processor_specs,
        defer_state: false,
        extra_secrets: serde_json::json!({
            "#vault": sources.secrets,
            "processors": processor_secrets,
        }),
        logging,
        claim: job.queue_claim.clone(),
        rows_done: Vec::new(),
    };
    if let Some(claim) = &settings.claim {
        crate::signals::stop_when_orphaned();
        // A retried job skips the rows an earlier attempt stored.
        if claim.attempt > 1 && rows.is_some() {
            settings.rows_done = crate::stages::queue::rows_done(
                paths,
                claim,
                &settings.component_id,
                settings.config_id.as_deref(),
            )?;
        }
    }
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

/// A job refused before anything about it is known (a malformed project directory): the
/// user's error, reported as a job's.
pub fn refuse_early(message: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut result = JobResult::new("", "", &new_run_id(), "run");
    result.fail(Class::User, message.to_string());
    report(&result, json)
}

/// The component's `logging`: the job file's section, else the specification's (Keboola's
/// defaults for what it leaves out), then `--logging` and `--gelf-server-type`.
fn logging(job: &JobArgs, spec: Option<&ComponentSpec>, source: &str) -> Result<Logging, String> {
    let mut logging = match (&job.logging_inline, spec) {
        (Some(section), _) => Logging::from_spec(section)?,
        (None, Some(spec)) => Logging::from_spec(&spec.logging).map_err(|e| {
            format!(
                "component specifications {}: component {:?}: data.logging: {e}",
                source, spec.id
            )
        })?,
        (None, None) => Logging::default(),
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
