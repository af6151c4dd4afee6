//! Loading a single CSV file outside a job (`dockless storage import`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::plan::{TablePlan, load_table};
use super::{LoadedTable, OutputSettings};
use crate::error::Result;
use crate::id::TableId;
use crate::out_dir::Entry;
use crate::sanitize;
use crate::storage::Storage;

/// How [`import_file`] reads and loads a CSV.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Primary key of the table (the table's key follows it, as in output mapping).
    pub primary_key: Vec<String>,
    /// Upsert/append instead of replacing the rows.
    pub incremental: bool,
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character; `None` reads fields verbatim.
    pub enclosure: Option<u8>,
    /// Counts bytes read from the file (before decompression) for progress reports.
    pub progress: Option<Arc<AtomicU64>>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            primary_key: Vec::new(),
            incremental: false,
            delimiter: b',',
            enclosure: Some(b'"'),
            progress: None,
        }
    }
}

/// Loads one CSV file with a header (gzip when named `*.gz`) into a table, in its own
/// transaction, with the same rules as output mapping (sanitized columns, new columns added,
/// missing ones refused). Returns the load. Used by `dockless storage import`.
pub fn import_file(
    storage: &mut dyn Storage,
    path: &Path,
    id: &TableId,
    options: &ImportOptions,
    component: &str,
) -> Result<LoadedTable> {
    let mut warnings = Vec::new();
    let plan = TablePlan {
        source: path.display().to_string(),
        entry: Entry {
            path: path.to_path_buf(),
            slices: None,
            manifest: None,
        },
        destination: id.clone(),
        declared: None,
        skip_header: false,
        primary_key: options
            .primary_key
            .iter()
            .map(|k| sanitize::column_name(k.trim()))
            .collect(),
        incremental: options.incremental,
        delimiter: options.delimiter,
        enclosure: options.enclosure,
        deletes: Vec::new(),
        metadata: Vec::new(),
        column_metadata: Vec::new(),
        column_types: Vec::new(),
        types_from_schema: false,
        write_always: false,
        progress: options.progress.clone(),
    };
    let settings = OutputSettings {
        component_id: component.to_string(),
        ..OutputSettings::default()
    };
    let mut tx = storage.begin()?;
    let loaded = load_table(tx.as_mut(), &plan, &settings, &mut warnings)?;
    tx.commit()?;
    Ok(loaded)
}
