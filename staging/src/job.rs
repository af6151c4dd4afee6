//! One Keboola job's staging from start to end: the entry point for the pipeline.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::config::{self, Format};
use crate::error::{Error, Result};
use crate::id::BucketId;
use crate::input::{self, InputReport};
use crate::layout::DataDir;
use crate::out_dir;
use crate::output::{self, OutputReport, OutputSettings};
use crate::queue::{Claim, JobStatus, Step};
use crate::storage::{StateKey, Storage, Transaction};
use crate::time::now_micros;
use crate::types::DataTypeSupport;

/// Everything the runner knows about a job before it runs.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// The stored configuration (the Keboola config JSON: `storage`, `parameters`,
    /// `authorization`, `processors`, `runtime`, ...).
    pub configuration: Value,
    /// Component id, e.g. `keboola.ex-http`.
    pub component_id: String,
    /// Configuration id; state is kept only for jobs that have one.
    pub config_id: Option<String>,
    /// Row id when the job runs a configuration row.
    pub row_id: Option<String>,
    /// Run id, tagged on output files.
    pub run_id: Option<String>,
    /// The component's own `image_parameters` (configuration values are ignored).
    pub image_parameters: Value,
    /// `run`, or a sync action name (no mapping happens then).
    pub action: String,
    /// The component's `configuration_format`.
    pub format: Format,
    /// The component's computed default bucket (component setting `default_bucket`), used when
    /// the configuration has no `storage.output.default_bucket`.
    pub default_bucket: Option<String>,
    /// The component's `dataTypesConfiguration.dataTypesSupport` (`KBC_DATA_TYPE_SUPPORT`):
    /// input manifests are typed when it is `authoritative` or `hints`; output mapping uses
    /// it unless the configuration sets `storage.output.data_type_support`.
    pub data_type_support: DataTypeSupport,
    /// Keep the new state out of the output transaction: [`JobReport::deferred_state`]
    /// carries it, for [`store_states`] once every row of the configuration succeeded
    /// (Keboola's runner persists the rows' states only then).
    pub defer_state: bool,
    /// The queue claim of the worker running this job, when it came from a job queue: the
    /// output transaction then also ends the job (or, for a row with a deferred state, marks
    /// the row done), fenced by the claim ([`crate::queue`]).
    pub claim: Option<Claim>,
}

/// A job being staged: its normalized configuration and, after [`Job::stage`], what input
/// mapping did (needed to store the state after the run).
#[derive(Debug, Clone)]
pub struct Job {
    spec: JobSpec,
    normalized: Value,
    input: InputReport,
    output_types: DataTypeSupport,
}

/// What [`Job::finish`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobReport {
    /// Output mapping's tables and files.
    pub output: OutputReport,
    /// The component state was stored.
    pub state_stored: bool,
    /// The new state, not stored yet ([`JobSpec::defer_state`]).
    pub deferred_state: Option<(StateKey, Value)>,
    /// Storage files of the artifacts stored (`current`, then `shared`).
    pub artifacts: Vec<i64>,
}

impl Job {
    /// Normalizes the configuration; a bad one is a user error ([`Error::is_user_error`]).
    pub fn new(spec: JobSpec) -> Result<Job> {
        let normalized = config::normalize(&spec.configuration)?;
        config::refuse_cloud_only_at(&spec.image_parameters, "image_parameters")?;
        let output_types = output_data_type_support(&normalized)?.unwrap_or(spec.data_type_support);
        Ok(Job {
            spec,
            normalized,
            input: InputReport::default(),
            output_types,
        })
    }

    /// The data type support output mapping applies: the configuration's
    /// `storage.output.data_type_support`, else the component's (Keboola's rule; the
    /// container's `KBC_DATA_TYPE_SUPPORT` stays the component's).
    pub fn output_data_type_support(&self) -> DataTypeSupport {
        self.output_types
    }

    /// The configuration after normalization (defaults filled, `runtime` and `processors` kept).
    pub fn configuration(&self) -> &Value {
        &self.normalized
    }

    /// Input mapping's report (empty before [`Job::stage`]).
    pub fn input(&self) -> &InputReport {
        &self.input
    }

    fn state_key(&self) -> Option<StateKey> {
        Some(StateKey {
            component: self.spec.component_id.clone(),
            config: self.spec.config_id.clone()?,
            row: self.spec.row_id.clone(),
        })
    }

    fn is_run(&self) -> bool {
        self.spec.action.is_empty() || self.spec.action == "run"
    }

    /// Writes `data/config.json` (or `config.yml`) as the main container must see it.
    pub fn write_config(&self, dir: &DataDir) -> Result<PathBuf> {
        let action = if self.spec.action.is_empty() {
            "run"
        } else {
            &self.spec.action
        };
        let doc = config::container_config(&self.normalized, &self.spec.image_parameters, action)?;
        let path = dir
            .data()
            .join(format!("config.{}", self.spec.format.extension()));
        write(&path, &doc, self.spec.format)?;
        Ok(path)
    }

    /// Writes the `config.json` of a processor (an image run before or after the main one):
    /// only its `parameters`, its own component's `image_parameters`, the action,
    /// `shared_code_row_ids: []`, an empty `storage` and an empty `authorization`, as
    /// Keboola's runner does.
    pub fn write_processor_config(
        &self,
        dir: &DataDir,
        parameters: &Value,
        image_parameters: &Value,
    ) -> Result<PathBuf> {
        let action = if self.spec.action.is_empty() {
            "run"
        } else {
            &self.spec.action
        };
        let doc = config::processor_config(parameters, image_parameters, action)?;
        let path = dir
            .data()
            .join(format!("config.{}", self.spec.format.extension()));
        write(&path, &doc, self.spec.format)?;
        Ok(path)
    }

    /// Writes `config.json`, `in/state.json` and, for a `run` action, stages the input tables
    /// and files. On error the data folder may hold part of the inputs; Storage is unchanged.
    pub fn stage(&mut self, storage: &dyn Storage, dir: &DataDir) -> Result<&InputReport> {
        self.write_config(dir)?;
        // Sync actions never touch Storage (Keboola sends them no state either).
        let stored = match self.state_key().filter(|_| self.is_run()) {
            Some(key) => storage.state(&key)?.unwrap_or(Value::Null),
            None => Value::Null,
        };
        // Keboola hands the component its state after a PHP round trip: nested empty objects
        // come out as `[]`; an empty or missing state is always written as `{}`.
        let component = match &stored["component"] {
            Value::Object(map) if !map.is_empty() => {
                let mut state = stored["component"].clone();
                crate::php_json::empty_objects_as_arrays(&mut state);
                state
            }
            Value::Array(list) if !list.is_empty() => stored["component"].clone(),
            _ => json!({}),
        };
        let state_path = dir
            .data()
            .join(format!("in/state.{}", self.spec.format.extension()));
        write(&state_path, &component, self.spec.format)?;
        let mut report = InputReport::default();
        if self.is_run() {
            let previous = &stored["storage"]["input"];
            let now = now_micros();
            let section = &self.normalized["storage"]["input"];
            let empty = Vec::new();
            let tables = section["tables"].as_array().unwrap_or(&empty);
            let files = section["files"].as_array().unwrap_or(&empty);
            let table_state = input::stage_tables(
                storage,
                tables,
                dir,
                input::ManifestForm {
                    format: self.spec.format,
                    typed: self.spec.data_type_support.is_typed(),
                },
                previous,
                now,
                &mut report,
            )?;
            let file_state = input::stage_files(
                storage,
                files,
                dir,
                self.spec.format,
                previous,
                now,
                &mut report,
            )?;
            report.state = json!({"tables": table_state, "files": file_state});
        }
        self.input = report;
        Ok(&self.input)
    }

    /// Output mapping after the container ran, in one Storage transaction: all outputs (only
    /// `write_always` tables when `succeeded` is false), then, on success, processed tags and
    /// the new state (`out/state.json`; a missing file clears the state). On error Storage is
    /// left exactly as it was. With `artifacts` (the job's owner tags), a successful job's
    /// `artifacts/out/current` (and in an orchestration `out/shared`) is stored in the same
    /// transaction ([`crate::artifacts`]).
    pub fn finish(
        &self,
        storage: &mut dyn Storage,
        dir: &DataDir,
        succeeded: bool,
        artifacts: Option<&crate::artifacts::Owner>,
    ) -> Result<JobReport> {
        if !self.is_run() {
            return Ok(JobReport::default());
        }
        let output_section = self.normalized["storage"]["output"].clone();
        let default_bucket = output_section["default_bucket"]
            .as_str()
            .filter(|b| !b.is_empty())
            .map(str::to_string)
            .or_else(|| self.spec.default_bucket.clone())
            .map(|b| b.parse::<BucketId>())
            .transpose()
            .map_err(Error::config_id("storage.output.default_bucket"))?;
        let settings = OutputSettings {
            component_id: self.spec.component_id.clone(),
            config_id: self.spec.config_id.clone(),
            row_id: self.spec.row_id.clone(),
            run_id: self.spec.run_id.clone(),
            default_bucket,
            format: self.spec.format,
            data_type_support: self.output_types,
        };
        let mut new_state = match (succeeded, self.state_key()) {
            (true, Some(key)) => {
                let previous = storage.state(&key)?.unwrap_or(Value::Null);
                Some((key, self.next_state(dir, previous)?))
            }
            _ => None,
        };
        let deferred_state = if self.spec.defer_state {
            new_state.take()
        } else {
            None
        };
        let processed = if succeeded {
            self.input.processed_tags.clone()
        } else {
            Vec::new()
        };
        // Packed before the transaction opens (the archives sit beside /data, out of the
        // container's reach); stored inside it.
        let mut archives = Vec::new();
        // As Keboola's runner: an artifact that cannot be stored (too big, a link planted in
        // it) is a warning; the job's data and state are stored all the same.
        let mut artifact_warnings = Vec::new();
        if let Some(owner) = artifacts.filter(|o| succeeded && o.config_id.is_some()) {
            let out = dir.data().join("artifacts/out");
            let mut kinds = vec![("current", false)];
            if owner.orchestration_id.is_some() {
                kinds.push(("shared", true));
            }
            for (kind, shared) in kinds {
                let archive = dir.root().join(format!("artifacts-{kind}.tar.gz"));
                match crate::artifacts::pack(&out.join(kind), &archive, owner.max_archive_bytes) {
                    Ok(true) => archives.push((archive, crate::artifacts::new_file(owner, shared))),
                    Ok(false) => {}
                    Err(e) => {
                        let _ = std::fs::remove_file(&archive);
                        artifact_warnings.push(format!(
                            "Error uploading artifacts \"{}\"",
                            crate::error::chain(&e)
                        ));
                    }
                }
            }
        }
        let mut stored_artifacts = Vec::new();
        let claim = self.spec.claim.as_ref();
        let row_done = match (&self.spec.row_id, self.spec.defer_state) {
            // A row that failed ends the job: the rows after it do not run.
            (Some(row), true) if succeeded => Some(row.as_str()),
            _ => None,
        };
        let mut before_commit = |tx: &mut dyn Transaction| -> Result<()> {
            if let Some(claim) = claim {
                let step = match row_done {
                    Some(row_id) => Step::RowDone {
                        row_id,
                        state: deferred_state.as_ref().map(|(k, v)| (k, v)),
                    },
                    None if succeeded => Step::End(JobStatus::Success),
                    None => Step::End(JobStatus::Error),
                };
                tx.queue_step(claim, step)?;
            }
            for (id, tags) in &processed {
                tx.add_file_tags(*id, tags)?;
            }
            if let Some((key, state)) = &new_state {
                tx.set_state(key, state)?;
            }
            for (archive, file) in &archives {
                let reader = std::fs::File::open(archive).map_err(Error::io(archive))?;
                let mut slice = std::iter::once(crate::storage::Slice {
                    name: file.name.clone(),
                    reader: Box::new(reader),
                    origin: archive.clone(),
                });
                stored_artifacts.push(tx.add_file(file, &mut slice)?);
            }
            Ok(())
        };
        let output = output::load(
            storage,
            dir,
            &output_section,
            &settings,
            succeeded,
            &mut before_commit,
        )?;
        for (archive, _) in &archives {
            let _ = std::fs::remove_file(archive);
        }
        let mut output = output;
        output.warnings.extend(artifact_warnings);
        Ok(JobReport {
            output,
            state_stored: new_state.is_some(),
            deferred_state,
            artifacts: stored_artifacts,
        })
    }

    /// The state document to store: `component` from `out/state.json` (`{}` when the file is
    /// missing: Keboola clears the state then), `storage.input` from this job's input mapping,
    /// other root keys of the previous state kept.
    fn next_state(&self, dir: &DataDir, previous: Value) -> Result<Value> {
        let path = dir
            .data()
            .join(format!("out/state.{}", self.spec.format.extension()));
        let component = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
            Err(source) => return Err(Error::Io { path, source }),
            Ok(_) => {
                let bytes = out_dir::read_document(&path)?;
                config::parse_document(&bytes, self.spec.format, &path.display().to_string())?
            }
        };
        let mut state = match previous {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        state.insert("component".into(), component);
        state.insert("storage".into(), json!({"input": self.input.state}));
        Ok(Value::Object(state))
    }
}

/// `storage.output.data_type_support` of a normalized configuration, if set; a value other
/// than `authoritative`, `hints` or `none` is refused as Keboola's configuration tree does.
fn output_data_type_support(normalized: &Value) -> Result<Option<DataTypeSupport>> {
    const AT: &str = "storage.output.data_type_support";
    match &normalized["storage"]["output"]["data_type_support"] {
        Value::Null => Ok(None),
        Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|reason: String| Error::config(AT, reason)),
        other => Err(Error::config(
            AT,
            format!("{other} is not one of \"authoritative\", \"hints\", \"none\""),
        )),
    }
}

/// Stores states held back by [`JobSpec::defer_state`], all in one transaction: all of them
/// or, on error, none.
pub fn store_states(storage: &mut dyn Storage, states: &[(StateKey, Value)]) -> Result<()> {
    store_states_ending(storage, states, None)
}

/// [`store_states`] that also ends the queued job `claim` holds with success, in the same
/// transaction: the last write of a configuration whose rows all succeeded.
pub fn store_states_ending(
    storage: &mut dyn Storage,
    states: &[(StateKey, Value)],
    claim: Option<&Claim>,
) -> Result<()> {
    let mut tx = storage.begin()?;
    for (key, state) in states {
        tx.set_state(key, state)?;
    }
    if let Some(claim) = claim {
        tx.queue_step(claim, Step::End(JobStatus::Success))?;
    }
    tx.commit()
}

/// Writes a document the runner owns into the data folder, which a previous container (a
/// processor) may have written to: whatever is at `path` is unlinked (never followed), and the
/// file is created anew (`O_EXCL|O_NOFOLLOW`), 0644 as Keboola's runner writes it (images
/// that start as root and drop to another user must read it; the job dir itself is the
/// runner's alone).
fn write(path: &std::path::Path, doc: &Value, format: Format) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = config::render(doc, format).map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path)(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all(&bytes).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::write;
    use crate::Format;

    #[test]
    fn a_planted_link_is_replaced_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "host file").unwrap();
        let path = tmp.path().join("config.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(
            &path,
            &json!({"parameters": {"#secret": "s"}}),
            Format::Json,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(std::fs::read_to_string(&path).unwrap().contains("#secret"));
    }
}
