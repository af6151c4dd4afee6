//! The job pipeline of `dockless run IMAGE --config FILE`: Keboola's Docker Bundle workflow
//! (contract §1) over the registry, runtime and staging crates.
//!
//! Order: validate the configuration (before anything runs) -> resolve and pull the image ->
//! working dir -> config.json, in/state.json, input mapping -> before-processors, main
//! image, after-processors (each its own container, `out/` rotated to `in/` in between) ->
//! classify the exit -> output mapping (only `write_always` tables on failure) and state
//! (success only) -> remove the working dir. Every failure on the way is classified as
//! Keboola does ([`Class`]) and every text that leaves the pipeline is redacted.

mod artifacts;
pub mod classify;
mod containers;
pub mod environment;
pub mod gelf;
pub mod output;
pub mod processors;
pub mod redact;
pub mod result;
pub mod rows;
pub mod workdir;

use std::time::{Duration, Instant};

use dockless_registry::Store;
use dockless_runtime::bundle::NetworkMode;
use dockless_staging::error::chain as error_chain;
use dockless_staging::{DataDir, Format, Job, JobSpec};
use serde_json::Value;

use crate::paths::Paths;
use crate::stages::pull::{PullDeadline, image_config, pull_and_unpack_until, unpack};
use classify::Class;
use containers::{Image, Step};
use processors::Position;
use redact::Secrets;
use result::{FileWritten, JobResult, TableWritten, ms};
use workdir::WorkDir;

/// Characters of stdout and stderr kept in the result.
pub const TAIL_CHARS: usize = 4000;

/// A job as the command line describes it: the image, the configuration and the component's
/// settings (Keboola keeps those in the component's spec).
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The main image reference.
    pub image: String,
    /// Platform to pull.
    pub platform: String,
    /// Registry access.
    pub registry: dockless_registry::Settings,
    /// The configuration (`storage`, `parameters`, `authorization`, `action`, `processors`...).
    pub configuration: Value,
    /// `KBC_COMPONENTID`, state key and default bucket.
    pub component_id: String,
    /// Configuration id: state is stored only with one.
    pub config_id: Option<String>,
    /// Row id.
    pub row_id: Option<String>,
    /// `KBC_RUNID`.
    pub run_id: String,
    /// `KBC_PROJECTID`.
    pub project_id: String,
    /// `KBC_STACKID`.
    pub stack_id: String,
    /// `KBC_BRANCHID`, when given.
    pub branch_id: Option<String>,
    /// The orchestration the job runs in (shared artifacts).
    pub orchestration_id: Option<String>,
    /// The stored configuration's version (`KBC_CONFIGVERSION`).
    pub config_version: Option<String>,
    /// Keboola's debug mode: `KBC_COMPONENT_RUN_MODE=debug`, the data folder stored as a zip
    /// before each container and after the last, no output mapping, no state.
    pub debug: bool,
    /// `KEY=VALUE` for every container of the job (`-e`); never a `KBC_*` name.
    pub extra_env: Vec<String>,
    /// The component's `image_parameters`.
    pub image_parameters: Value,
    /// `configuration_format`.
    pub format: Format,
    /// The component's default bucket.
    pub default_bucket: Option<String>,
    /// The component's data type support (`KBC_DATA_TYPE_SUPPORT`, typed input manifests,
    /// output mapping's rules unless the configuration sets its own).
    pub data_type_support: dockless_staging::DataTypeSupport,
    /// Memory limit in bytes and as written (`256m`, for the OOM message).
    pub memory: (i64, String),
    /// CPU quota.
    pub cpus: Option<f64>,
    /// The component's timeout: each processor's limit, the main image's unless the
    /// configuration sets its own, and (the longer of the two) the whole job's.
    pub timeout: Duration,
    /// Network of each container.
    pub network: NetworkMode,
    /// Maximum number of processes in each container.
    pub pids: i64,
    /// Each image's root filesystem read-only (`/data` and `/tmp` stay writable).
    pub read_only: bool,
    /// `--userns`: the host range the containers' ids map to.
    pub userns: Option<dockless_runtime::unpack::IdShift>,
    /// Stream the main container's stdout to our stdout (else to our stderr).
    pub stdout_to_stdout: bool,
    /// Processor images by component id (`--processor COMPONENT=IMAGE`).
    pub processor_images: Vec<(String, String)>,
    /// Processors' component specifications by component id (`--components`).
    pub processor_specs: Vec<(String, processors::ProcessorSpec)>,
    /// Hand the new state back in the result instead of storing it (a row of a
    /// configuration: see [`rows`]).
    pub defer_state: bool,
    /// More secrets to hide, as a document of `#` values (the vault's encrypted variables,
    /// which may have been rendered under keys without `#`).
    pub extra_secrets: Value,
    /// The main component's `logging` (GELF server, verbosity); processors log as
    /// `standard` components.
    pub logging: gelf::Logging,
    /// The claim of the queue worker running this job ([`dockless_staging::queue`]): the
    /// job's output transaction also ends it (or marks its row done).
    pub claim: Option<dockless_staging::queue::Claim>,
    /// Rows an earlier attempt of this queued job already stored, with their held-back
    /// states (unsealed): skipped, their states stored with the others' at the end.
    pub rows_done: Vec<(String, Option<Value>)>,
}

/// Keboola's cap on a configuration's own `runtime.process_timeout`.
pub const MAX_PROCESS_TIMEOUT: Duration = Duration::from_secs(86_400);

impl JobSettings {
    /// The main image's timeout: the configuration's `runtime.process_timeout` (a positive
    /// number of seconds, capped at a day) when set, else the component's. Processors always
    /// get the component's. An invalid value (refused before the job starts, see
    /// [`JobSettings::check_timeouts`]) counts as unset.
    pub fn main_timeout(&self) -> Duration {
        process_timeout(&self.configuration)
            .ok()
            .flatten()
            .unwrap_or(self.timeout)
    }

    /// The whole job's limit, from its start (pulls, staging, every container): the longer
    /// of the component's timeout and the main image's, so that neither is cut short by the
    /// other; each container gets what is left of it, at most its own timeout.
    pub fn job_timeout(&self) -> Duration {
        self.timeout.max(self.main_timeout())
    }

    /// Both timeouts are positive numbers of seconds (Keboola's rule for
    /// `runtime.process_timeout`; a zero `--timeout` would kill every container at once):
    /// anything else is the user's error, naming the setting.
    pub fn check_timeouts(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err(
                "--timeout must be a positive number of seconds (the component's timeout), not 0"
                    .into(),
            );
        }
        process_timeout(&self.configuration).map(drop)
    }

    /// The job as the owner of artifacts (Keboola's tags: branch, component, config, job).
    fn artifacts_owner(&self) -> dockless_staging::artifacts::Owner {
        dockless_staging::artifacts::Owner {
            branch_id: self
                .branch_id
                .clone()
                .unwrap_or_else(|| dockless_staging::artifacts::DEFAULT_BRANCH.to_string()),
            component_id: self.component_id.clone(),
            config_id: self.config_id.clone(),
            job_id: self.run_id.clone(),
            orchestration_id: self.orchestration_id.clone(),
            // `DOCKLESS_MAX_ARTIFACT_BYTES` lowers (or raises) Keboola's 1 GiB cap.
            max_archive_bytes: std::env::var("DOCKLESS_MAX_ARTIFACT_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(dockless_staging::artifacts::MAX_ARCHIVE_BYTES),
        }
    }

    fn action(&self) -> String {
        match self.configuration.get("action").and_then(Value::as_str) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => "run".to_string(),
        }
    }
}

/// The configuration's `runtime.process_timeout`: `None` when absent (or `null`), the number
/// of seconds (capped at [`MAX_PROCESS_TIMEOUT`], as Keboola caps it) when it is a positive
/// whole JSON number, and an error naming the key for anything else. A string such as `"2"`
/// is refused too: Keboola takes a positive int, the configuration is typed JSON, and a quoted
/// number is more often a template's mistake than an intent; refusing it shows the mistake
/// where silently running with the default hid it.
pub fn process_timeout(configuration: &Value) -> Result<Option<Duration>, String> {
    let Some(value) = configuration
        .get("runtime")
        .and_then(|r| r.get("process_timeout"))
    else {
        return Ok(None);
    };
    if value.is_null() {
        return Ok(None);
    }
    match value.as_u64() {
        Some(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs).min(MAX_PROCESS_TIMEOUT))),
        _ => Err(format!(
            "runtime.process_timeout must be a positive whole number of seconds, not {value}"
        )),
    }
}

/// Runs the job and returns its result; the working dir, containers and mounts are gone when
/// it returns, whatever happened.
pub fn run(settings: &JobSettings, paths: &Paths) -> JobResult {
    let started = Instant::now();
    let action = settings.action();
    let mut result = JobResult::new(
        &settings.image,
        &settings.component_id,
        &settings.run_id,
        &action,
    );
    result.config_id = settings.config_id.clone();
    result.row_id = settings.row_id.clone();
    result.network = settings.network.name();
    // Secrets of the configuration and image parameters are known before anything runs;
    // those of the state are added once it is read.
    let mut secrets = match Secrets::collect([
        &settings.configuration,
        &settings.image_parameters,
        &settings.extra_secrets,
    ]) {
        Ok(secrets) => secrets,
        Err(e) => {
            // Nothing could be redacted: the job does not start.
            result.fail(e.class(), error_chain(&e));
            result.timings.total_ms = ms(started.elapsed());
            return result;
        }
    };
    let outcome = Pipeline {
        settings,
        paths,
        deadline: started + settings.job_timeout(),
        action: &action,
        result: &mut result,
        secrets: &mut secrets,
    }
    .run();
    if let Err(failure) = outcome {
        let message = secrets.redact(&failure.message);
        result.retryable = failure.retryable;
        result.fail(failure.class, message);
    }
    if let Some(m) = result.message.take() {
        result.message = Some(secrets.redact(&m));
    }
    result.warnings = result.warnings.iter().map(|w| secrets.redact(w)).collect();
    result.timings.total_ms = ms(started.elapsed());
    result
}

/// A failure that ends the job early, with its class.
struct Failure {
    class: Class,
    message: String,
    /// The Storage could not be reached ([`JobResult::retryable`]).
    retryable: bool,
}

impl Failure {
    fn new(class: Class, message: String) -> Failure {
        Failure {
            class,
            message,
            retryable: false,
        }
    }

    fn user(message: impl Into<String>) -> Failure {
        Failure::new(Class::User, message.into())
    }

    fn application(err: &anyhow::Error) -> Failure {
        Failure::new(Class::Application, format!("{err:#}"))
    }

    /// Keboola's `terminated`: a signal ended the job `when`.
    fn terminated(signal: &crate::signals::Interrupted, when: &str) -> Failure {
        Failure::new(
            Class::Terminated,
            format!(
                "Job terminated by {} {when}: no output mapping, no state stored.",
                crate::signals::name(signal.signal)
            ),
        )
    }

    fn staging(err: dockless_staging::Error) -> Failure {
        let class = if err.is_user_error() {
            Class::User
        } else {
            Class::Application
        };
        Failure {
            retryable: err.is_unavailable(),
            ..Failure::new(class, error_chain(&err))
        }
    }
}

struct Pipeline<'a> {
    settings: &'a JobSettings,
    paths: &'a Paths,
    /// When the job's time is up ([`JobSettings::job_timeout`] from its start).
    deadline: Instant,
    action: &'a str,
    result: &'a mut JobResult,
    secrets: &'a mut Secrets,
}

impl Pipeline<'_> {
    /// A safe point: once SIGTERM, SIGINT or SIGHUP arrived the job ends here, `when`.
    fn check_signal(&self, when: &str) -> Result<(), Failure> {
        crate::signals::check().map_err(|i| Failure::terminated(&i, when))
    }

    fn run(&mut self) -> Result<(), Failure> {
        let s = self.settings;
        // A bad configuration is refused before any pull, mount or container.
        s.check_timeouts().map_err(Failure::user)?;
        let mut job = Job::new(JobSpec {
            configuration: s.configuration.clone(),
            component_id: s.component_id.clone(),
            config_id: s.config_id.clone(),
            row_id: s.row_id.clone(),
            run_id: Some(s.run_id.clone()),
            image_parameters: s.image_parameters.clone(),
            action: self.action.to_string(),
            format: s.format,
            default_bucket: s.default_bucket.clone(),
            data_type_support: s.data_type_support,
            defer_state: s.defer_state,
            claim: s.claim.clone(),
        })
        .map_err(Failure::staging)?;

        // A configuration may not carry the component's own secrets out (Keboola refuses a
        // `#` value equal to a secret image parameter).
        let component_secrets = redact::secret_values(&s.image_parameters);
        if redact::secret_values(&s.configuration)
            .iter()
            .any(|v| !v.is_empty() && component_secrets.contains(v))
        {
            return Err(Failure::user(
                "a secret value of the configuration equals a secret image parameter of the component",
            ));
        }

        // The artifacts the configuration asks for: its `artifacts` section is checked here,
        // before anything runs.
        let owner = s.artifacts_owner();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let wanted = if self.action == "run" {
            dockless_staging::artifacts::wanted(&s.configuration, &owner, now)
                .map_err(Failure::staging)?
        } else {
            None
        };
        if !s.configuration["artifacts"].is_null() && s.config_id.is_none() {
            // Keboola's words: artifacts belong to a configuration.
            self.result
                .warnings
                .push("Ignoring artifacts, configuration Id is not set".to_string());
        }

        // Sync actions run no processors (Keboola: no input loader, no processors).
        let processors = if self.action == "run" {
            processors::parse(job.configuration(), &s.processor_images, &s.processor_specs)
                .map_err(Failure::user)?
        } else {
            Vec::new()
        };

        // Every image is ready before any container runs.
        let main = self.resolve_image(&s.image)?;
        self.result.digest = Some(main.record.digest.to_string());
        let mut images = Vec::new();
        for p in &processors {
            images.push(self.resolve_image(&p.image)?);
        }
        let mut steps: Vec<Step> = Vec::new();
        for (p, image) in processors.iter().zip(images) {
            steps.push(Step::Processor(p, image));
        }
        let after = steps
            .iter()
            .position(|st| matches!(st, Step::Processor(p, _) if p.position == Position::After))
            .unwrap_or(steps.len());
        steps.insert(after, Step::Main(main));

        self.check_signal("before input mapping")?;
        let input_started = Instant::now();
        // Leftovers of killed runs must not fail this job.
        crate::stages::gc::collect_before_run(self.paths);
        let jobs = self.paths.jobs();
        workdir::collect_stale(&jobs);
        let work = WorkDir::create(&jobs, &job_dir_name(s), s.userns.map(|shift| shift.base))
            .map_err(|e| Failure::application(&e))?;
        work.describe(&serde_json::json!({
            "pid": std::process::id(),
            "run_id": s.run_id,
            "component_id": s.component_id,
            "config_id": s.config_id,
            "row_id": s.row_id,
            "image": s.image,
            "queue_job": s.claim.as_ref().map(|c| c.job_id),
            "started_at": dockless_staging::time::format_rfc3339(
                dockless_staging::time::now_micros()
            ),
        }))
        .map_err(|e| Failure::application(&e))?;
        let outcome = self.with_workdir(&mut job, &steps, &work, input_started, wanted.as_ref());
        let cleanup_started = Instant::now();
        if let Err(e) = work.remove() {
            self.result.cleanup_error = Some(self.secrets.redact(&format!("{e:#}")));
        }
        self.result.timings.cleanup_ms = ms(cleanup_started.elapsed());
        outcome
    }

    /// What is left of the job's time; a job whose time is up before `what` fails with
    /// Keboola's wording for a timeout.
    fn time_left(&mut self, what: &str) -> Result<Duration, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.result.timed_out = true;
            return Err(Failure::user(format!(
                "Job exceeded the timeout of {} seconds before {what}.",
                self.settings.job_timeout().as_secs()
            )));
        }
        Ok(left)
    }

    /// Finds `name` in the store (unpacking what is missing) or pulls it.
    fn resolve_image(&mut self, name: &str) -> Result<Image, Failure> {
        self.check_signal(&format!("before pulling {name}"))?;
        let s = self.settings;
        let pulled = Instant::now();
        let store = Store::open(self.paths.store()).map_err(|e| Failure::application(&e.into()))?;
        let found = store
            .find_image(name)
            .map_err(|e| self.pull_failure(name, e.into()))?;
        let record = match found {
            Some(record) => {
                self.result.timings.pull_ms += ms(pulled.elapsed());
                let unpacked = Instant::now();
                unpack(&record, self.paths).map_err(|e| Failure::application(&e))?;
                self.result.timings.unpack_ms += ms(unpacked.elapsed());
                record
            }
            None => {
                let progress = crate::progress::for_stderr(true);
                let (record, _) = pull_and_unpack_until(
                    name,
                    &s.platform,
                    &s.registry,
                    self.paths,
                    progress,
                    Some(self.deadline),
                )
                .map_err(|e| self.pull_failure(name, e))?;
                self.result.timings.pull_ms += ms(pulled.elapsed());
                record
            }
        };
        let image = image_config(&store, &record).map_err(|e| Failure::application(&e))?;
        Ok(Image {
            name: name.to_string(),
            record,
            config: image,
        })
    }

    /// Image not found or misnamed: the user's; anything else (unreachable registry, bad
    /// blobs, a failing disk): ours.
    fn pull_failure(&mut self, name: &str, err: anyhow::Error) -> Failure {
        if err.downcast_ref::<PullDeadline>().is_some() {
            // Keboola's job timeout: the user's limit, as a container's timeout is.
            self.result.timed_out = true;
            return Failure::user(format!(
                "Job exceeded the timeout of {} seconds while pulling {name}: {err:#}.",
                self.settings.job_timeout().as_secs()
            ));
        }
        let registry_error = err
            .chain()
            .find_map(|e| e.downcast_ref::<dockless_registry::Error>());
        match registry_error {
            Some(e) if e.is_not_found() => {
                Failure::user(format!("Image \"{name}\" not found in the registry."))
            }
            Some(
                dockless_registry::Error::InvalidReference { .. }
                | dockless_registry::Error::NoMatchingPlatform { .. },
            ) => Failure::user(format!("{err:#}")),
            _ => Failure::application(&err),
        }
    }

    fn with_workdir(
        &mut self,
        job: &mut Job,
        steps: &[Step<'_>],
        work: &WorkDir,
        input_started: Instant,
        artifacts_wanted: Option<&dockless_staging::artifacts::Wanted>,
    ) -> Result<(), Failure> {
        let s = self.settings;
        let dir = DataDir::create(work.path()).map_err(Failure::staging)?;
        let mut storage = crate::stages::storage::open(self.paths).map_err(Failure::staging)?;
        job.stage(&storage, &dir).map_err(Failure::staging)?;
        if let Some(wanted) = artifacts_wanted {
            let (downloads, warnings) = dockless_staging::artifacts::downloads(&storage, wanted)
                .map_err(Failure::staging)?;
            self.result.warnings.extend(warnings);
            for download in &downloads {
                artifacts::unpack(&storage, download, &dir.data())
                    .map_err(|e| Failure::application(&e))?;
                self.result.artifacts.downloaded.push(download.file_id);
            }
        }
        // The state's `#` values are secrets too.
        let state_path = dir
            .data()
            .join(format!("in/state.{}", s.format.extension()));
        let state = std::fs::read(&state_path)
            .ok()
            .and_then(|b| dockless_staging::config::parse_document(&b, s.format, "in/state").ok())
            .unwrap_or(Value::Null);
        *self.secrets = Secrets::collect([
            &s.configuration,
            &s.image_parameters,
            &s.extra_secrets,
            &state,
        ])
        .map_err(|e| Failure::new(e.class(), error_chain(&e)))?;
        self.result.timings.input_ms = ms(input_started.elapsed());
        self.check_signal("after input mapping, before any container")?;

        let run_started = Instant::now();
        let ran = self.run_steps(job, steps, &dir, work);
        self.result.timings.run_ms = ms(run_started.elapsed());
        let succeeded = match &ran {
            Ok(()) => self.result.class == Class::Success,
            Err(_) => false,
        };
        if let Err(f) = ran {
            self.result.fail(f.class, f.message);
        }
        if succeeded && self.action == "run" && s.config_id.is_none() {
            let state = format!("out/state.{}", s.format.extension());
            if std::fs::symlink_metadata(dir.data().join(&state)).is_ok() {
                self.result.warnings.push(format!(
                    "the component left {state} but its state was not stored: Keboola keeps \
                     state per configuration and this run has no configuration id (give \
                     --config-id ID, or config_id in a job file, to keep it)"
                ));
            }
        }
        if self.result.class == Class::Terminated {
            // Keboola's terminated job: no output mapping (not even write_always tables) and
            // no state.
            return Ok(());
        }
        if s.debug && self.action == "run" {
            // Keboola's debug job: the data folder as the containers left it instead of any
            // output mapping (not even write_always tables) or state.
            if succeeded && let Err(f) = self.store_debug_stage(&dir, "stage_output") {
                self.result.fail(f.class, f.message);
            }
            self.result
                .warnings
                .push("debug mode: no output mapping, no state stored".to_string());
            return Ok(());
        }

        let output_started = Instant::now();
        let owner = s.artifacts_owner();
        let finished = job.finish(&mut storage, &dir, succeeded, Some(&owner));
        self.result.timings.output_ms = ms(output_started.elapsed());
        match finished {
            Ok(report) => {
                self.result.tables = report
                    .output
                    .tables
                    .iter()
                    .map(|t| TableWritten {
                        destination: t.destination.to_string(),
                        source: t.source.clone(),
                        rows: t.rows,
                        incremental: t.incremental,
                        created: t.created,
                    })
                    .collect();
                self.result.files = report
                    .output
                    .files
                    .iter()
                    .map(|f| FileWritten {
                        id: f.id,
                        name: f.name.clone(),
                        tags: f.tags.clone(),
                    })
                    .collect();
                self.result.warnings.extend(report.output.warnings);
                self.result.state_stored = report.state_stored;
                self.result.deferred_state = report.deferred_state;
                self.result.artifacts.stored = report.artifacts;
                Ok(())
            }
            // A failed job keeps its own error; the write_always load's is only a warning.
            Err(e) if !succeeded => {
                self.result.warnings.push(format!(
                    "output mapping of the failed job (write_always tables) failed: {}",
                    error_chain(&e)
                ));
                Ok(())
            }
            Err(e) => {
                let f = Failure::staging(e);
                Err(Failure {
                    message: format!("Failed to process output mapping: {}", f.message),
                    ..f
                })
            }
        }
    }
}

impl Pipeline<'_> {
    /// Debug mode: `/data` as it is now, zipped (secrets of config and state redacted) and
    /// stored as `<name>.zip` with Keboola's debug tags.
    fn store_debug_stage(&mut self, dir: &DataDir, name: &str) -> Result<(), Failure> {
        use dockless_staging::debug_archive;
        let s = self.settings;
        dir.check_dirs().map_err(Failure::staging)?;
        let archive = dir.root().join(format!("{name}.zip"));
        let secrets = &*self.secrets;
        let redact = |b: &[u8]| secrets.redact(&String::from_utf8_lossy(b)).into_bytes();
        let stored = debug_archive::pack(&dir.data(), &archive, &redact).and_then(|()| {
            let mut storage = crate::stages::storage::open(self.paths)?;
            debug_archive::store(
                &mut storage,
                &archive,
                name,
                debug_archive::tags(&s.component_id, &s.run_id, s.row_id.as_deref()),
            )
        });
        let _ = std::fs::remove_file(&archive);
        let id = stored.map_err(Failure::staging)?;
        self.result.debug_files.push(id);
        Ok(())
    }
}

/// The working dir's name: the run id and our pid (two jobs of one run id never share one).
fn job_dir_name(s: &JobSettings) -> String {
    let run: String = s
        .run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{run}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn process_timeout_is_a_positive_whole_number_capped_at_a_day() {
        let with = |v: Value| json!({"runtime": {"process_timeout": v}});
        assert_eq!(process_timeout(&json!({})), Ok(None));
        assert_eq!(process_timeout(&with(Value::Null)), Ok(None));
        assert_eq!(
            process_timeout(&with(json!(2))),
            Ok(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            process_timeout(&with(json!(100_000))),
            Ok(Some(MAX_PROCESS_TIMEOUT))
        );
        for bad in [json!("2"), json!("abc"), json!(-5), json!(0), json!(1.5)] {
            let err = process_timeout(&with(bad.clone())).unwrap_err();
            assert!(err.contains("runtime.process_timeout"), "{bad}: {err}");
        }
    }
}
