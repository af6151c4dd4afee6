//! `dockless test`: a component's functional test folders (Keboola's datadirtest layout) run
//! against its image, each case in a real container as a job would run it, no Docker.
//!
//! Per case: copy `source/data` into a fresh job directory ([`stage`]) -> run the image with
//! it at `/data` and the `KBC_*` variables a job sets -> compare `/data/out` with
//! `expected/data/out` ([`compare`]) and the exit code with `expected-code` -> remove the
//! directory (or keep it, with `--keep`, when the case did not pass). A case that cannot run
//! is reported and the others still run.

pub mod cases;
pub mod compare;
pub mod report;
pub mod stage;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dockless_registry::ImageRecord;
use dockless_runtime::bundle::{ImageConfig, Limits, NetworkMode, RunSpec, TmpMount};
use dockless_runtime::container::Stream;
use dockless_runtime::unpack::IdShift;
use serde::Serialize;

use crate::paths::Paths;
use crate::pipeline::environment::{self, Identity};
use crate::pipeline::output::Kept;
use crate::pipeline::workdir::WorkDir;
use cases::Case;
use compare::Difference;

/// Characters of each output stream kept in a case's result.
const TAIL_CHARS: usize = 4000;

/// Differences listed per case in the result (the first is what the case line shows).
const MAX_DIFFERENCES: usize = 100;

/// How every case runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `KBC_COMPONENTID`.
    pub component_id: String,
    /// `KEY=VALUE` added to the `KBC_*` variables, or replacing one of them.
    pub env: Vec<String>,
    /// `KBC_RUNID` stem; each case gets `<run id>.<case number>`.
    pub run_id: String,
    /// Per case.
    pub memory: i64,
    /// Per case.
    pub cpus: Option<f64>,
    /// Per case.
    pub pids: i64,
    /// Per case.
    pub timeout: Duration,
    /// The cases' network.
    pub network: NetworkMode,
    /// Root's `--userns` range.
    pub userns: Option<IdShift>,
    /// Keep the data folder of a case that did not pass.
    pub keep: bool,
    /// Cases at once.
    pub jobs: usize,
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Output and exit code as expected.
    Pass,
    /// It ran; output or exit code differ, or it timed out or ran out of memory.
    Fail,
    /// It could not be run (a malformed case, an image that cannot start).
    Error,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The case folder's name.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Why it did not pass, in one line (the first difference, the exit code, the error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The component's exit code, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The exit code expected (`expected-code`, else 0).
    pub expected_code: i32,
    /// Killed by the timeout.
    pub timed_out: bool,
    /// Killed for memory.
    pub oom_killed: bool,
    /// Differences of the output, in path order (at most 100).
    pub differences: Vec<Difference>,
    /// Where its data folder was kept (`--keep`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<PathBuf>,
    /// Wall time of the case, staging and comparison included.
    pub duration_ms: u64,
    /// The end of the component's stdout.
    pub stdout_tail: String,
    /// The end of the component's stderr.
    pub stderr_tail: String,
}

impl Outcome {
    fn new(name: &str) -> Outcome {
        Outcome {
            name: name.to_string(),
            status: Status::Error,
            message: None,
            exit_code: None,
            expected_code: 0,
            timed_out: false,
            oom_killed: false,
            differences: Vec::new(),
            kept: None,
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }

    fn error(mut self, message: String) -> Outcome {
        self.status = Status::Error;
        self.message = Some(message);
        self
    }
}

/// The outcome of a case that could not run at all (say, its image cannot be found).
pub fn not_run(name: &str, message: &str) -> Outcome {
    Outcome::new(name).error(message.to_string())
}

/// Runs `cases` on `image` (`jobs` at a time), calling `done` as each ends; the outcomes come
/// back in the cases' order. A signal (SIGTERM, SIGINT, SIGHUP) stops the running containers
/// and starts no further case.
pub fn run(
    settings: &Settings,
    cases: &[Case],
    image: &ImageRecord,
    config: &ImageConfig,
    paths: &Paths,
    done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Option<Outcome>>> = cases.iter().map(|_| Mutex::new(None)).collect();
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(case) = cases.get(i) else { break };
            let outcome = match crate::signals::received() {
                Some(signal) => Outcome::new(&case.name)
                    .error(format!("not run: {}", crate::signals::name(signal.signal))),
                None => run_case(settings, case, i, image, config, paths),
            };
            done(&outcome);
            *outcomes[i].lock().expect("no panic holds it") = Some(outcome);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..settings.jobs.min(cases.len()) {
            s.spawn(worker);
        }
        worker();
    });
    outcomes
        .into_iter()
        .map(|o| {
            o.into_inner()
                .expect("no panic holds it")
                .expect("every case ran")
        })
        .collect()
}

/// One case, start to end; whatever happens, its job directory is gone (or kept) after.
fn run_case(
    settings: &Settings,
    case: &Case,
    index: usize,
    image: &ImageRecord,
    config: &ImageConfig,
    paths: &Paths,
) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::new(&case.name);
    let source = case.source();
    let expected = case.expected();
    if !source.is_dir() {
        return timed(
            outcome.error(format!("no source/data folder ({})", source.display())),
            started,
        );
    }
    if !expected.is_dir() {
        return timed(
            outcome.error(format!(
                "no expected/data/out folder ({}): say what the component must leave",
                expected.display()
            )),
            started,
        );
    }
    outcome.expected_code = match expected_code(&case.expected_code_file()) {
        Ok(code) => code,
        Err(message) => return timed(outcome.error(message), started),
    };
    let run_id = format!("{}.{}", settings.run_id, index + 1);
    let work = match WorkDir::create(
        &paths.jobs(),
        &format!("test-{run_id}"),
        settings.userns.map(|shift| shift.base),
    ) {
        Ok(work) => work,
        Err(e) => return timed(outcome.error(format!("{e:#}")), started),
    };
    let data = work.path().join("data");
    let ran = stage::stage(&source, &data)
        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
        .and_then(|()| {
            let tmp = work.path().join("tmp");
            std::fs::create_dir(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            run_component(
                settings,
                &run_id,
                image,
                config,
                &data,
                &tmp,
                paths,
                &mut outcome,
            )
        });
    match ran {
        Err(message) => outcome = outcome.error(message),
        Ok(()) => judge(&mut outcome, &expected, &data.join("out")),
    }
    if settings.keep && outcome.status != Status::Pass {
        match keep(&data, paths, &case.name, &run_id) {
            Ok(kept) => outcome.kept = Some(kept),
            Err(e) => {
                tracing::warn!(case = %case.name, error = format!("{e:#}"), "cannot keep the data folder")
            }
        }
    }
    if let Err(e) = work.remove() {
        tracing::warn!(case = %case.name, error = format!("{e:#}"), "cannot remove the case's directory");
    }
    timed(outcome, started)
}

fn timed(mut outcome: Outcome, started: Instant) -> Outcome {
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    outcome
}

/// The case's `expected-code` (a number and nothing else), 0 without the file.
fn expected_code(file: &Path) -> Result<i32, String> {
    match std::fs::read_to_string(file) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{}: not an exit code: {:?}", file.display(), text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// The container, with the case's data folder at `/data`; its end goes into `outcome`.
#[allow(clippy::too_many_arguments)]
fn run_component(
    settings: &Settings,
    run_id: &str,
    image: &ImageRecord,
    config: &ImageConfig,
    data: &Path,
    tmp: &Path,
    paths: &Paths,
    outcome: &mut Outcome,
) -> Result<(), String> {
    let mut spec = RunSpec::new(config.clone());
    spec.env = environment_of(settings, run_id, data);
    spec.data_dir = Some(data.to_path_buf());
    spec.tmp = TmpMount::HostDir(tmp.to_path_buf());
    spec.limits = Limits {
        memory_bytes: Some(settings.memory),
        cpus: settings.cpus,
        pids: Some(settings.pids),
        ..Limits::default()
    };
    spec.timeout = Some(settings.timeout);
    spec.network = settings.network;
    spec.userns = settings.userns;
    // As a job: the data folder belongs to whoever the component runs as.
    spec.hand_over_data = true;
    let (mut stdout, mut stderr) = (Kept::default(), Kept::default());
    let end =
        crate::stages::container::run_container_with(paths, image, &spec, &mut |which, bytes| {
            match which {
                Stream::Stdout => stdout.push(bytes),
                Stream::Stderr => stderr.push(bytes),
            }
        })
        .map_err(|e| format!("{e:#}"))?;
    outcome.stdout_tail = stdout.last_chars(TAIL_CHARS);
    outcome.stderr_tail = stderr.last_chars(TAIL_CHARS);
    outcome.exit_code = Some(end.exit_code);
    outcome.timed_out = end.timed_out;
    outcome.oom_killed = end.oom_killed;
    if end.stopped {
        let signal =
            crate::signals::received().map_or("a signal", |s| crate::signals::name(s.signal));
        return Err(format!("stopped by {signal}"));
    }
    Ok(())
}

/// The `KBC_*` variables of a job (the configuration's parameters stand in for its id), then
/// `-e` on top: the runtime keeps the last of a key given twice, so `-e` replaces the job's.
fn environment_of(settings: &Settings, run_id: &str, data: &Path) -> Vec<String> {
    let parameters = std::fs::read(data.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .map(|config| config["parameters"].clone())
        .unwrap_or_default();
    let who = Identity {
        run_id,
        project_id: "0",
        stack_id: "local",
        config_id: None,
        row_id: None,
        branch_id: None,
        config_version: None,
        run_mode: "run",
        data_type_support: Default::default(),
    };
    let mut env = environment::variables(&who, &settings.component_id, &parameters);
    env.extend(settings.env.iter().cloned());
    env
}

/// Pass or fail, from how the component ended and what it left.
fn judge(outcome: &mut Outcome, expected: &Path, got: &Path) {
    outcome.status = Status::Fail;
    let code = outcome.exit_code.unwrap_or(-1);
    if outcome.timed_out {
        outcome.message = Some("timed out and was killed".to_string());
        return;
    }
    if outcome.oom_killed {
        outcome.message = Some("ran out of memory and was killed".to_string());
        return;
    }
    if code != outcome.expected_code {
        let last = outcome.stderr_tail.trim_end().lines().last().unwrap_or("");
        outcome.message = Some(format!(
            "exit code {code}, expected {}{}",
            outcome.expected_code,
            if last.is_empty() {
                String::new()
            } else {
                format!(" (stderr: {last})")
            }
        ));
        return;
    }
    let mut differences = compare::compare(expected, got);
    if let Some(first) = differences.first() {
        let more = differences.len() - 1;
        outcome.message = Some(if more == 0 {
            first.to_string()
        } else {
            format!(
                "{first} (and {more} more difference{})",
                if more == 1 { "" } else { "s" }
            )
        });
        differences.truncate(MAX_DIFFERENCES);
        outcome.differences = differences;
        return;
    }
    outcome.status = Status::Pass;
}

/// Moves a case's data folder to `<root>/tests-kept/<case>-<run id>` (same file system: a
/// rename), out of reach of the collector of dead jobs' directories.
fn keep(data: &Path, paths: &Paths, case: &str, run_id: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    use std::os::unix::fs::DirBuilderExt as _;
    let parent = paths.root.join("tests-kept");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let kept = parent.join(format!("{case}-{run_id}"));
    std::fs::rename(data, &kept)
        .with_context(|| format!("cannot move {} to {}", data.display(), kept.display()))?;
    Ok(kept)
}
