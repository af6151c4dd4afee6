//! The job result: what `--json` prints and what the human summary is made of. Every text in
//! it has been redacted before it got here.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::classify::Class;

/// Milliseconds each phase took (0 for a phase that did not run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Resolving and downloading the image (with the streamed unpack when it was pulled).
    pub pull_ms: f64,
    /// Making sure a stored image's layers are unpacked.
    pub unpack_ms: f64,
    /// Working dir, config.json, state and input mapping.
    pub input_ms: f64,
    /// The containers (processors and the main image), rootfs set-up included.
    pub run_ms: f64,
    /// Output mapping and state.
    pub output_ms: f64,
    /// Removing the working dir.
    pub cleanup_ms: f64,
    /// From start to end.
    pub total_ms: f64,
}

/// Milliseconds with microsecond precision, for the timings.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// One table output mapping wrote.
#[derive(Debug, Clone, Serialize)]
pub struct TableWritten {
    /// Destination table id.
    pub destination: String,
    /// Name in `out/tables`.
    pub source: String,
    /// Rows loaded.
    pub rows: u64,
    /// Upsert/append rather than replace.
    pub incremental: bool,
    /// The table was created by this job.
    pub created: bool,
}

/// One file output mapping stored.
#[derive(Debug, Clone, Serialize)]
pub struct FileWritten {
    /// Storage file id.
    pub id: i64,
    /// File name.
    pub name: String,
    /// Tags, system tags included.
    pub tags: Vec<String>,
}

/// One container the job ran.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRun {
    /// `before`, `main` or `after`.
    pub role: &'static str,
    /// The runtime's container id (also the name of its cgroup).
    pub id: String,
    /// Image as named.
    pub image: String,
    /// Its exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Milliseconds it ran.
    pub duration_ms: f64,
    /// Peak memory of its cgroup, where the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
}

/// Everything a job did, redacted.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// `success`, `error` or `terminated` (Keboola's job statuses).
    pub status: &'static str,
    /// Keboola's class.
    pub class: Class,
    /// The failure's message (Keboola's wording), none on success.
    pub message: Option<String>,
    /// The main container's exit code; none when it never ran.
    pub exit_code: Option<i32>,
    /// The main image as named.
    pub image: String,
    /// Its manifest digest, once resolved.
    pub digest: Option<String>,
    /// The containers' network: `none`, `bridge` or `host`.
    pub network: &'static str,
    /// How the containers' root filesystems were mounted: `fsconfig` (Linux 6.8+),
    /// `mount(2)` (older kernels), `mount(2), layers by fd` (options over a page), `copy`;
    /// none when no container ran.
    pub mount_api: Option<&'static str>,
    /// Who managed the containers' cgroups: `systemd` or `cgroupfs`.
    pub cgroup_manager: &'static str,
    /// Component id (`KBC_COMPONENTID`).
    pub component_id: String,
    /// Configuration id, if any.
    pub config_id: Option<String>,
    /// Row id, if any.
    pub row_id: Option<String>,
    /// Run id (`KBC_RUNID`).
    pub run_id: String,
    /// `run` or the sync action.
    pub action: String,
    /// Phase timings.
    pub timings: Timings,
    /// The containers run, in order.
    pub containers: Vec<ContainerRun>,
    /// The kernel's OOM killer fired in the main container.
    pub oom_killed: bool,
    /// The main container was killed at its timeout.
    pub timed_out: bool,
    /// Tables written by output mapping.
    pub tables: Vec<TableWritten>,
    /// Files written by output mapping.
    pub files: Vec<FileWritten>,
    /// The new state was stored.
    pub state_stored: bool,
    /// Non-fatal notes of output mapping (and a failed write_always load of a failed job).
    pub warnings: Vec<String>,
    /// The main container's GELF messages (Keboola's container events), in arrival order:
    /// level, message, timestamp; bounded (see `logging`).
    pub events: Vec<super::gelf::events::Event>,
    /// The main container's log server, when its logging is `gelf`: what it received,
    /// showed, hid, dropped and could not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<super::gelf::Summary>,
    /// A sync action's answer (its stdout, parsed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_result: Option<Value>,
    /// The last characters of the main container's stdout.
    pub stdout_tail: String,
    /// The last characters of the main container's stderr.
    pub stderr_tail: String,
    /// Artifacts unpacked before the run and stored after it (Storage file ids).
    pub artifacts: ArtifactFiles,
    /// The main image's usage metrics (`out/usage.json`), when it wrote any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Vec<dockless_staging::usage::Metric>>,
    /// Debug mode's archives of the data folder (Storage file ids: each stage, then the
    /// output).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub debug_files: Vec<i64>,
    /// The main image's `out/result.json`, when it wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_result: Option<Value>,
    /// Removing the working dir failed (dockless exits 125 then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// The new state, held back to be stored with the other rows' (never printed: it may
    /// hold secrets).
    #[serde(skip)]
    pub deferred_state: Option<(dockless_staging::StateKey, Value)>,
    /// The job failed because its Storage could not be reached: a queued job is given back
    /// to the queue for another attempt instead of ending.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

/// The artifacts of a job, as Storage file ids.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArtifactFiles {
    /// Unpacked into `/data/artifacts/in/...` before the run.
    pub downloaded: Vec<i64>,
    /// Stored from `/data/artifacts/out/...` (on success).
    pub stored: Vec<i64>,
}

impl JobResult {
    /// A result before anything ran: success until a step says otherwise.
    pub fn new(image: &str, component_id: &str, run_id: &str, action: &str) -> JobResult {
        JobResult {
            status: "success",
            class: Class::Success,
            message: None,
            exit_code: None,
            image: image.to_string(),
            digest: None,
            network: "none",
            mount_api: None,
            cgroup_manager: crate::cgroups::name(),
            component_id: component_id.to_string(),
            config_id: None,
            row_id: None,
            run_id: run_id.to_string(),
            action: action.to_string(),
            timings: Timings::default(),
            containers: Vec::new(),
            oom_killed: false,
            timed_out: false,
            tables: Vec::new(),
            files: Vec::new(),
            state_stored: false,
            artifacts: ArtifactFiles::default(),
            usage: None,
            component_result: None,
            debug_files: Vec::new(),
            warnings: Vec::new(),
            events: Vec::new(),
            logging: None,
            action_result: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            cleanup_error: None,
            deferred_state: None,
            retryable: false,
        }
    }

    /// Marks the job failed (the first failure wins: later ones do not conceal it).
    pub fn fail(&mut self, class: Class, message: String) {
        if self.class != Class::Success {
            return;
        }
        self.status = if class == Class::Terminated {
            "terminated"
        } else {
            "error"
        };
        self.class = class;
        self.message = Some(message);
    }

    /// A few lines for a person, on stderr.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let code = match self.exit_code {
            Some(c) => format!("exit code {c}"),
            None => "not run".to_string(),
        };
        let outcome = match self.class {
            Class::Success => "success".to_string(),
            Class::User => "user error".to_string(),
            Class::Application => "application error".to_string(),
            Class::Terminated => "terminated".to_string(),
        };
        let _ = writeln!(
            s,
            "dockless: {} ({}, network {}): {code}: {outcome}",
            self.image,
            self.digest.as_deref().unwrap_or("digest unknown"),
            self.network
        );
        if let Some(message) = &self.message {
            let _ = writeln!(s, "dockless:   {message}");
        }
        for t in &self.tables {
            let how = if t.incremental { "incremental" } else { "full" };
            let _ = writeln!(
                s,
                "dockless:   table {} <- {}: {} rows ({how} load{})",
                t.destination,
                t.source,
                t.rows,
                if t.created { ", created" } else { "" }
            );
        }
        for f in &self.files {
            let _ = writeln!(
                s,
                "dockless:   file {} {} [{}]",
                f.id,
                f.name,
                f.tags.join(", ")
            );
        }
        if !self.artifacts.downloaded.is_empty() {
            let _ = writeln!(
                s,
                "dockless:   artifacts unpacked: files {:?}",
                self.artifacts.downloaded
            );
        }
        for id in &self.artifacts.stored {
            let _ = writeln!(s, "dockless:   artifact stored: file {id}");
        }
        for m in self.usage.iter().flatten() {
            let _ = writeln!(s, "dockless:   usage: {} = {}", m.metric, m.value);
        }
        for w in &self.warnings {
            let _ = writeln!(s, "dockless:   warning: {w}");
        }
        if let Some(l) = &self.logging {
            let c = &l.counts;
            let _ = writeln!(
                s,
                "dockless:   GELF ({} {}:{}): {} messages, {} shown, {} hidden, {} camouflaged, \
                 {} not kept, {} invalid, {} incomplete",
                l.server_type.name(),
                l.address,
                l.port,
                c.received,
                c.shown,
                c.hidden,
                c.camouflaged,
                c.events_dropped,
                c.malformed,
                c.incomplete_chunked
            );
        }
        if self.state_stored {
            let _ = writeln!(s, "dockless:   state stored");
        }
        let t = &self.timings;
        let _ = writeln!(
            s,
            "dockless:   pull {:.1} ms, unpack {:.1} ms, input {:.1} ms, run {:.1} ms, output {:.1} ms, cleanup {:.1} ms, total {:.1} ms",
            t.pull_ms, t.unpack_ms, t.input_ms, t.run_ms, t.output_ms, t.cleanup_ms, t.total_ms
        );
        if let Some(e) = &self.cleanup_error {
            let _ = writeln!(s, "dockless:   cleanup failed: {e}");
        }
        s
    }
}
