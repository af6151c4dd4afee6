//! Output mapping: `data/out` into Storage, in one transaction.
//!
//! Order: discover `out/tables` and `out/files` (refusing links and special files), resolve
//! every table load (merge mapping and manifest, destination, sanitized columns) and every
//! file, and only then open the Storage transaction and stream the data in. A malformed row
//! found while streaming drops the transaction, so Storage is left exactly as it was.

use serde_json::{Map, Value};

mod files;
mod import;
mod merge;
mod plan;
mod rows;

pub use import::{ImportOptions, import_file};

use files::plan_files;
use plan::{TablePlan, load_table, plan_table};

use crate::config::Format;
use crate::error::{Error, Result};
use crate::id::{BucketId, TableId};
use crate::layout::DataDir;
use crate::out_dir::{self};
use crate::storage::{Slice, Storage, Transaction};

/// Who ran the job, for system tags and metadata, and how the outputs are resolved.
#[derive(Debug, Clone, Default)]
pub struct OutputSettings {
    /// Component id (metadata provider, `componentId:` file tag).
    pub component_id: String,
    /// Configuration id, if the job runs a stored configuration.
    pub config_id: Option<String>,
    /// Row id, if the job runs a row.
    pub row_id: Option<String>,
    /// Run id (`runId:` file tag).
    pub run_id: Option<String>,
    /// Bucket for outputs named only by file name (`storage.output.default_bucket` or the
    /// component's computed default bucket).
    pub default_bucket: Option<BucketId>,
    /// Manifest format.
    pub format: Format,
    /// The job's data type support for its outputs: the configuration's
    /// `storage.output.data_type_support`, else the component's.
    pub data_type_support: crate::types::DataTypeSupport,
}

/// One table load done by output mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTable {
    /// Name in `out/tables`.
    pub source: String,
    /// Destination table.
    pub destination: TableId,
    /// Rows read from the file.
    pub rows: u64,
    /// The table was created by this load.
    pub created: bool,
    /// Incremental load (upsert or append) rather than replace.
    pub incremental: bool,
}

/// One file stored by output mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    /// New Storage file id.
    pub id: i64,
    /// File name.
    pub name: String,
    /// Tags, system tags included.
    pub tags: Vec<String>,
}

/// What output mapping wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputReport {
    /// Tables loaded, in load order.
    pub tables: Vec<LoadedTable>,
    /// Files stored.
    pub files: Vec<StoredFile>,
    /// Non-fatal notes: renamed columns, primary-key changes, deprecated forms.
    pub warnings: Vec<String>,
}

/// Loads `data/out` into Storage in one transaction.
///
/// `mapping` is the normalized `storage.output` section (or `null`). With `succeeded ==
/// false` only tables whose resolved configuration has `write_always` load; errors in any
/// other source are ignored and no files are stored. `before_commit` runs inside the same
/// transaction after the last load (the job stores state and processed tags there). On any
/// error nothing is written.
pub fn load(
    storage: &mut dyn Storage,
    dir: &DataDir,
    mapping: &Value,
    settings: &OutputSettings,
    succeeded: bool,
    before_commit: &mut dyn FnMut(&mut dyn Transaction) -> Result<()>,
) -> Result<OutputReport> {
    let mut report = OutputReport::default();
    out_dir::require_dir(&dir.data().join("out"))?;
    let table_mappings: Vec<Map<String, Value>> = mapping
        .get("tables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_object().cloned())
        .collect();
    let found = match out_dir::scan(&dir.out_tables(), true, "table") {
        Ok(found) => found,
        Err(e) if succeeded || !matches!(e, Error::OrphanedManifest { .. }) => return Err(e),
        Err(_) => return Ok(report),
    };
    let mut plans = Vec::new();
    let mut missing = Vec::new();
    for m in &table_mappings {
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        match found.get(source) {
            Some(entry) => {
                let plan = plan_table(source, entry, Some(m), settings, &mut report.warnings);
                push_plan(&mut plans, plan, succeeded)?;
            }
            None => missing.push(source.to_string()),
        }
    }
    if succeeded && !missing.is_empty() {
        return Err(Error::SourceNotFound {
            kind: "table",
            source_name: missing.join(", "),
            dir: dir.out_tables(),
        });
    }
    for (name, entry) in &found {
        if table_mappings
            .iter()
            .any(|m| m.get("source").and_then(Value::as_str) == Some(name))
        {
            continue;
        }
        let plan = plan_table(name, entry, None, settings, &mut report.warnings);
        push_plan(&mut plans, plan, succeeded)?;
    }
    let files = if succeeded {
        let file_mappings = mapping
            .get("files")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        plan_files(dir, &file_mappings, settings)?
    } else {
        Vec::new()
    };
    let mut tx = storage.begin()?;
    for plan in &plans {
        let loaded = load_table(tx.as_mut(), plan, settings, &mut report.warnings)?;
        report.tables.push(loaded);
    }
    for plan in files {
        let path = plan.entry.path.clone();
        let reader = out_dir::open_data_raw(&path)?;
        let mut slices = std::iter::once(Slice {
            name: plan.file.name.clone(),
            reader,
            origin: path,
        });
        let id = tx.add_file(&plan.file, &mut slices)?;
        report.files.push(StoredFile {
            id,
            name: plan.file.name.clone(),
            tags: plan.file.tags.clone(),
        });
    }
    before_commit(tx.as_mut())?;
    tx.commit()?;
    Ok(report)
}

/// Keeps a plan; in failed-job mode only `write_always` plans, ignoring the others' errors.
fn push_plan(plans: &mut Vec<TablePlan>, plan: Result<TablePlan>, succeeded: bool) -> Result<()> {
    match plan {
        Ok(plan) if succeeded || plan.write_always => plans.push(plan),
        Ok(_) => {}
        Err(e) if succeeded => return Err(e),
        Err(_) => {}
    }
    Ok(())
}
