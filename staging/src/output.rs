//! Output mapping: `data/out` into Storage, in one transaction.
//!
//! Order: discover `out/tables` and `out/files` (refusing links and special files), resolve
//! every table load (merge mapping and manifest, destination, sanitized columns) and every
//! file, and only then open the Storage transaction and stream the data in. A malformed row
//! found while streaming drops the transaction, so Storage is left exactly as it was.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Map, Value, json};

use crate::config::{self, Format, OUTPUT_FILE_KEYS, OUTPUT_TABLE_KEYS};
use crate::error::{Error, Result};
use crate::id::{BucketId, TableId};
use crate::layout::DataDir;
use crate::out_dir::{self, Entry};
use crate::sanitize;
use crate::storage::{
    ColumnFilter, DeleteFilter, NewFile, Operator, RowSource, Slice, Storage, Transaction,
};
use crate::time::{now_micros, parse_time_expr};

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

/// A fully resolved table load; nothing left to validate but the CSV itself.
#[derive(Debug)]
struct TablePlan {
    source: String,
    entry: Entry,
    destination: TableId,
    declared: Option<Vec<String>>,
    skip_header: bool,
    primary_key: Vec<String>,
    incremental: bool,
    delimiter: u8,
    enclosure: Option<u8>,
    deletes: Vec<DeleteFilter>,
    metadata: Vec<(String, String)>,
    column_metadata: Vec<(String, Vec<(String, String)>)>,
    write_always: bool,
    progress: Option<Arc<AtomicU64>>,
}

fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn key_values(list: Option<&Value>) -> Vec<(String, Value)> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| {
                    Some((
                        m.get("key")?.as_str()?.to_string(),
                        m.get("value").cloned().unwrap_or(Value::Null),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn union_by_key(base: Option<&Value>, over: Option<&Value>) -> Value {
    let mut out = key_values(base);
    for (k, v) in key_values(over) {
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Value::Array(
        out.into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// Keboola's `ConfigurationMerger`: the manifest is the base, mapping keys override it, with
/// the documented quirks (a default `incremental`, `delimiter`, `enclosure` or
/// `delete_where_operator` in the mapping does not override the manifest; an array
/// `primary_key` in the mapping always does, even the empty default).
fn merge(
    manifest: &Map<String, Value>,
    mapping: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let mut out = manifest.clone();
    for (key, value) in mapping {
        match key.as_str() {
            "incremental" | "delete_where_operator" | "delimiter" | "enclosure" => {
                let default = match key.as_str() {
                    "incremental" => json!(false),
                    "delete_where_operator" => json!("eq"),
                    "delimiter" => json!(","),
                    _ => json!("\""),
                };
                if !out.contains_key(key) || (is_truthy(value) && *value != default) {
                    out.insert(key.clone(), value.clone());
                }
            }
            "metadata" => {
                let merged = union_by_key(out.get("metadata"), Some(value));
                out.insert(key.clone(), merged);
            }
            "column_metadata" => {
                let mut columns = out
                    .get("column_metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (column, list) in value.as_object().into_iter().flatten() {
                    let merged = union_by_key(columns.get(column), Some(list));
                    columns.insert(column.clone(), merged);
                }
                out.insert(key.clone(), Value::Object(columns));
            }
            "table_metadata" => {
                let mut map = out
                    .get(key)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in value.as_object().into_iter().flatten() {
                    map.insert(k.clone(), v.clone());
                }
                out.insert(key.clone(), Value::Object(map));
            }
            "primary_key" if out.get("schema").is_some_and(Value::is_array) => {
                let pk = config::strings(mapping, "primary_key", "mapping")?;
                if pk.is_empty() {
                    continue;
                }
                let schema = out
                    .get_mut("schema")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten();
                let mut seen = Vec::new();
                for column in schema {
                    let name = column
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let flag = pk.contains(&name);
                    if flag {
                        seen.push(name);
                    }
                    if let Some(obj) = column.as_object_mut() {
                        obj.insert("primary_key".into(), json!(flag));
                    }
                }
                if let Some(missing) = pk.iter().find(|k| !seen.contains(k)) {
                    return Err(Error::mapping(
                        "primary_key",
                        format!("column {missing:?} is not in the manifest schema"),
                    ));
                }
            }
            "primary_key" => {
                if value.is_array() {
                    out.insert(key.clone(), value.clone());
                }
            }
            "schema" => {
                let mut merged = out
                    .get("schema")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for column in value.as_array().into_iter().flatten() {
                    let name = column.get("name");
                    match merged.iter_mut().find(|c| c.get("name") == name) {
                        Some(existing) => {
                            if let (Some(e), Some(c)) =
                                (existing.as_object_mut(), column.as_object())
                            {
                                for (k, v) in c {
                                    e.insert(k.clone(), v.clone());
                                }
                            }
                        }
                        None => merged.push(column.clone()),
                    }
                }
                out.insert(key.clone(), Value::Array(merged));
            }
            _ => {
                if is_truthy(value) || !out.contains_key(key) {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Ok(out)
}

fn read_manifest(path: &Path, format: Format, allowed: &[&str]) -> Result<Map<String, Value>> {
    let bytes = out_dir::read_document(path)?;
    let what = path.display().to_string();
    let value = config::parse(&bytes, format, &what)?;
    let map = match value {
        Value::Object(map) => map,
        _ => return Err(Error::mapping(&what, "a manifest must be an object")),
    };
    if let Some(key) = map
        .keys()
        .find(|k| *k == "source" || !allowed.contains(&k.as_str()))
    {
        return Err(Error::mapping(
            &what,
            format!("unrecognized option {key:?}"),
        ));
    }
    Ok(map)
}

fn single_byte(value: Option<&Value>, default: u8, what: &str, key: &str) -> Result<Option<u8>> {
    match value {
        None | Some(Value::Null) => Ok(Some(default)),
        Some(Value::String(s)) if s.is_empty() && key == "enclosure" => Ok(None),
        Some(Value::String(s)) if s.len() == 1 => Ok(Some(s.as_bytes()[0])),
        Some(other) => Err(Error::mapping(
            what,
            format!("{key} must be a single character, got {other}"),
        )),
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn bool_key(map: &Map<String, Value>, key: &str, what: &str) -> Result<bool> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::mapping(
            what,
            format!("{key} must be a boolean, got {other}"),
        )),
    }
}

/// Sanitizes a column list, refusing `_timestamp`, empty and duplicate names.
fn clean_columns(
    columns: &[String],
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(columns.len());
    for c in columns {
        let clean = sanitize::column_name(c);
        if clean.eq_ignore_ascii_case("_timestamp") {
            return Err(Error::mapping(
                what,
                "_timestamp is a system column and cannot be written",
            ));
        }
        if clean.is_empty() {
            return Err(Error::Columns {
                what: what.to_string(),
                reason: format!("column {c:?} has no usable characters"),
            });
        }
        if out.contains(&clean) {
            return Err(Error::Columns {
                what: what.to_string(),
                reason: format!("column {clean:?} appears twice"),
            });
        }
        if clean != *c {
            warnings.push(format!("{what}: column {c:?} renamed to {clean:?}"));
        }
        out.push(clean);
    }
    Ok(out)
}

fn parse_deletes(map: &Map<String, Value>, what: &str) -> Result<Vec<DeleteFilter>> {
    let operator = |v: Option<&Value>| match v.and_then(Value::as_str).unwrap_or("eq") {
        "eq" => Ok(Operator::Eq),
        "ne" => Ok(Operator::Ne),
        other => Err(Error::mapping(
            what,
            format!("operator {other:?} is not eq or ne"),
        )),
    };
    let mut out = Vec::new();
    if let Some(column) = map
        .get("delete_where_column")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        let values = config::strings(map, "delete_where_values", what)?;
        if values.is_empty() {
            return Err(Error::mapping(
                what,
                "delete_where_column requires delete_where_values",
            ));
        }
        out.push(DeleteFilter {
            filters: vec![ColumnFilter {
                column: sanitize::column_name(column),
                values,
                operator: operator(map.get("delete_where_operator"))?,
            }],
            ..DeleteFilter::default()
        });
    }
    let now = now_micros();
    for (i, item) in map
        .get("delete_where")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{what} delete_where[{i}]");
        let item = item
            .as_object()
            .ok_or_else(|| Error::mapping(&at, "expected an object"))?;
        let time = |key: &str| -> Result<Option<i64>> {
            match item
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(expr) => parse_time_expr(expr, now).map(Some),
                None => Ok(None),
            }
        };
        let mut filter = DeleteFilter {
            changed_since: time("changed_since")?,
            changed_until: time("changed_until")?,
            filters: Vec::new(),
        };
        for f in item
            .get("where_filters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let f = f
                .as_object()
                .ok_or_else(|| Error::mapping(&at, "a where filter must be an object"))?;
            let column = f
                .get("column")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::mapping(&at, "a where filter needs a column"))?;
            if f.contains_key("values_from_workspace") || f.contains_key("values_from_storage") {
                return Err(Error::mapping(
                    &at,
                    "only values_from_set is supported by the embedded storage",
                ));
            }
            filter.filters.push(ColumnFilter {
                column: sanitize::column_name(column),
                values: config::strings(f, "values_from_set", &at)?,
                operator: operator(f.get("operator"))?,
            });
        }
        if filter.changed_since.is_none()
            && filter.changed_until.is_none()
            && filter.filters.is_empty()
        {
            return Err(Error::mapping(
                &at,
                "needs changed_since, changed_until or where_filters",
            ));
        }
        out.push(filter);
    }
    Ok(out)
}

fn resolve_destination(
    mapping: Option<&Map<String, Value>>,
    manifest: &Map<String, Value>,
    source: &str,
    settings: &OutputSettings,
    warnings: &mut Vec<String>,
) -> Result<TableId> {
    let what = format!("out/tables/{source}");
    let invalid = |e: Error| Error::mapping(&what, format!("invalid destination: {e}"));
    if let Some(dest) = mapping
        .and_then(|m| m.get("destination"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        return dest.parse().map_err(invalid);
    }
    let from_manifest = manifest
        .get("destination")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty());
    if let Some(dest) = from_manifest.filter(|d| TableId::looks_like_id(d)) {
        return dest.parse().map_err(invalid);
    }
    let name = from_manifest
        .map(str::to_string)
        .unwrap_or_else(|| source.strip_suffix(".csv").unwrap_or(source).to_string());
    if TableId::looks_like_id(&name) {
        warnings.push(format!(
            "{what}: destination taken from the file name {name:?} (deprecated)"
        ));
        return name.parse().map_err(invalid);
    }
    match &settings.default_bucket {
        Some(bucket) => TableId::new(bucket, &name).map_err(invalid),
        None => Err(Error::mapping(
            &what,
            format!("failed to resolve destination of {name:?}: no default bucket"),
        )),
    }
}

fn plan_table(
    source: &str,
    entry: &Entry,
    mapping: Option<&Map<String, Value>>,
    settings: &OutputSettings,
    warnings: &mut Vec<String>,
) -> Result<TablePlan> {
    let what = format!("out/tables/{source}");
    let manifest = match &entry.manifest {
        Some(path) => read_manifest(path, settings.format, OUTPUT_TABLE_KEYS)?,
        None => Map::new(),
    };
    let mut merged = match mapping {
        Some(m) => merge(&manifest, m)?,
        None => manifest.clone(),
    };
    merged.remove("source");
    let schema: Vec<Map<String, Value>> = match merged.get("schema") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| {
                c.as_object()
                    .cloned()
                    .ok_or_else(|| Error::mapping(&what, "schema entries must be objects"))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::mapping(&what, "schema must be a list")),
    };
    let columns = config::strings(&merged, "columns", &what)?;
    if !schema.is_empty() && !columns.is_empty() {
        return Err(Error::mapping(
            &what,
            "schema cannot be combined with columns",
        ));
    }
    let raw_declared: Vec<String> = if schema.is_empty() {
        columns
    } else {
        schema
            .iter()
            .map(|c| {
                c.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| Error::mapping(&what, "a schema column needs a name"))
            })
            .collect::<Result<_>>()?
    };
    for c in &raw_declared {
        if c.eq_ignore_ascii_case("_timestamp") {
            return Err(Error::mapping(
                &what,
                "_timestamp is a system column and cannot be written",
            ));
        }
    }
    let declared = if raw_declared.is_empty() {
        None
    } else {
        Some(clean_columns(&raw_declared, &what, warnings)?)
    };
    if entry.slices.is_some() && declared.is_none() {
        return Err(Error::mapping(
            &what,
            "sliced table has no columns specification",
        ));
    }
    let has_header = match merged.get("has_header") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => declared.is_none(),
        Some(other) => {
            return Err(Error::mapping(
                &what,
                format!("has_header must be a boolean, got {other}"),
            ));
        }
    };
    if entry.slices.is_some() && has_header {
        return Err(Error::mapping(
            &what,
            "slices of a sliced table have no header",
        ));
    }
    let raw_pk: Vec<String> = if schema.is_empty() {
        config::strings(&merged, "primary_key", &what)?
    } else {
        schema
            .iter()
            .filter(|c| c.get("primary_key").is_some_and(is_truthy))
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let primary_key: Vec<String> = raw_pk
        .iter()
        .map(|k| sanitize::column_name(k.trim()))
        .filter(|k| !k.is_empty())
        .collect();
    let mut metadata: Vec<(String, String)> = key_values(merged.get("metadata"))
        .into_iter()
        .map(|(k, v)| (k, as_text(&v)))
        .collect();
    for (k, v) in merged
        .get("table_metadata")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        metadata.push((k.clone(), as_text(v)));
    }
    if let Some(d) = merged
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        metadata.push(("KBC.description".into(), d.to_string()));
    }
    let mut column_metadata = Vec::new();
    for (column, list) in merged
        .get("column_metadata")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let clean = sanitize::column_name(column);
        if clean.eq_ignore_ascii_case("_timestamp") {
            return Err(Error::mapping(
                &what,
                "_timestamp is a system column and cannot have metadata",
            ));
        }
        let entries: Vec<(String, String)> = match list {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), as_text(v))).collect(),
            other => key_values(Some(other))
                .into_iter()
                .map(|(k, v)| (k, as_text(&v)))
                .collect(),
        };
        column_metadata.push((clean, entries));
    }
    for column in &schema {
        let name = sanitize::column_name(
            column
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let mut entries: Vec<(String, String)> = column
            .get("metadata")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), as_text(v)))
            .collect();
        if let Some(d) = column
            .get("description")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            entries.push(("KBC.description".into(), d.to_string()));
        }
        if let Some(base) = column.get("data_type").and_then(|d| d.get("base")) {
            for (key, field) in [
                ("KBC.datatype.basetype", "type"),
                ("KBC.datatype.length", "length"),
                ("KBC.datatype.default", "default"),
            ] {
                if let Some(v) = base.get(field) {
                    entries.push((key.into(), as_text(v)));
                }
            }
            if let Some(n) = column.get("nullable") {
                entries.push(("KBC.datatype.nullable".into(), as_text(n)));
            }
        }
        if !entries.is_empty() {
            column_metadata.push((name, entries));
        }
    }
    if let Some(e) = merged
        .get("escaped_by")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
    {
        return Err(Error::mapping(
            &what,
            format!("escaped_by {e:?} is not supported: storage csv has no escape character"),
        ));
    }
    let delimiter = single_byte(merged.get("delimiter"), b',', &what, "delimiter")?.unwrap_or(b',');
    let enclosure = single_byte(merged.get("enclosure"), b'"', &what, "enclosure")?;
    Ok(TablePlan {
        source: source.to_string(),
        entry: entry.clone(),
        destination: resolve_destination(mapping, &manifest, source, settings, warnings)?,
        skip_header: has_header && declared.is_some(),
        declared,
        primary_key,
        incremental: bool_key(&merged, "incremental", &what)?,
        delimiter,
        enclosure,
        deletes: parse_deletes(&merged, &what)?,
        metadata,
        column_metadata,
        write_always: bool_key(&merged, "write_always", &what)?,
        progress: None,
    })
}

/// Streams the records of one table source: a single file (maybe gzipped, maybe with a
/// header) or the slices of a folder one after the other.
struct CsvRows {
    pending: std::vec::IntoIter<PathBuf>,
    current: Option<(csv::Reader<Box<dyn std::io::Read>>, PathBuf)>,
    delimiter: u8,
    enclosure: Option<u8>,
    width: usize,
    progress: Option<Arc<AtomicU64>>,
}

impl CsvRows {
    fn reader(&self, path: &Path) -> Result<csv::Reader<Box<dyn std::io::Read>>> {
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .double_quote(true)
            .escape(None)
            .buffer_capacity(1 << 18);
        match self.enclosure {
            Some(q) => builder.quote(q),
            None => builder.quoting(false),
        };
        Ok(builder.from_reader(out_dir::open_data(path, self.progress.clone())?))
    }

    /// Opens the source; returns the header when the first line is one.
    fn open(plan: &TablePlan, header: bool) -> Result<(CsvRows, Option<Vec<String>>)> {
        let parts = match &plan.entry.slices {
            Some(slices) => slices.clone(),
            None => vec![plan.entry.path.clone()],
        };
        let mut rows = CsvRows {
            pending: parts.into_iter(),
            current: None,
            delimiter: plan.delimiter,
            enclosure: plan.enclosure,
            width: 0,
            progress: plan.progress.clone(),
        };
        let mut names = None;
        if header {
            let path = rows.pending.next().unwrap_or_default();
            let mut reader = rows.reader(&path)?;
            let mut record = csv::StringRecord::new();
            let got = reader
                .read_record(&mut record)
                .map_err(|source| Error::Csv {
                    line: source.position().map_or(1, |p| p.line()),
                    path: path.clone(),
                    source,
                })?;
            if !got {
                return Err(Error::mapping(
                    path.display().to_string(),
                    "the file is empty: a header row is required",
                ));
            }
            let mut list: Vec<String> = record.iter().map(str::to_string).collect();
            if let Some(first) = list.first_mut()
                && let Some(rest) = first.strip_prefix('\u{feff}')
            {
                *first = rest.to_string();
            }
            names = Some(list);
            rows.current = Some((reader, path));
        }
        Ok((rows, names))
    }
}

impl RowSource for CsvRows {
    fn next_record(&mut self, record: &mut csv::StringRecord) -> Result<bool> {
        loop {
            if self.current.is_none() {
                match self.pending.next() {
                    Some(path) => {
                        let reader = self.reader(&path)?;
                        self.current = Some((reader, path));
                    }
                    None => return Ok(false),
                }
            }
            let Some((reader, path)) = self.current.as_mut() else {
                return Ok(false);
            };
            let got = reader.read_record(record).map_err(|source| Error::Csv {
                line: source.position().map_or(0, |p| p.line()),
                path: path.clone(),
                source,
            })?;
            if !got {
                self.current = None;
                continue;
            }
            if record.len() != self.width {
                return Err(Error::RowWidth {
                    path: path.clone(),
                    line: record.position().map_or(0, |p| p.line()),
                    found: record.len(),
                    expected: self.width,
                });
            }
            return Ok(true);
        }
    }
}

fn load_table(
    tx: &mut dyn Transaction,
    plan: &TablePlan,
    settings: &OutputSettings,
    warnings: &mut Vec<String>,
) -> Result<LoadedTable> {
    let what = format!("out/tables/{}", plan.source);
    let header = plan.declared.is_none() || plan.skip_header;
    let (mut rows, names) = CsvRows::open(plan, header)?;
    let columns = match (&plan.declared, names) {
        (Some(declared), _) => declared.clone(),
        (None, Some(names)) => clean_columns(&names, &what, warnings)?,
        (None, None) => return Err(Error::mapping(&what, "no columns and no header")),
    };
    rows.width = columns.len();
    if let Some(k) = plan.primary_key.iter().find(|k| !columns.contains(k)) {
        return Err(Error::mapping(
            &what,
            format!("primary key column {k:?} is not among the columns"),
        ));
    }
    let existed = tx.table(&plan.destination)?.is_some();
    let prepared = tx.prepare_table(&plan.destination, &columns, &plan.primary_key)?;
    warnings.extend(prepared.warnings);
    if existed {
        for delete in &plan.deletes {
            tx.delete_rows(&plan.destination, delete)?;
        }
    }
    let count = tx.load_rows(&plan.destination, &columns, plan.incremental, &mut rows)?;
    if !plan.metadata.is_empty() {
        tx.set_table_metadata(&plan.destination, &settings.component_id, &plan.metadata)?;
    }
    for (column, entries) in &plan.column_metadata {
        tx.set_column_metadata(&plan.destination, column, &settings.component_id, entries)?;
    }
    let verb = if prepared.created {
        "createdBy"
    } else {
        "lastUpdatedBy"
    };
    let mut system = vec![(
        format!("KBC.{verb}.component.id"),
        settings.component_id.clone(),
    )];
    if let Some(c) = &settings.config_id {
        system.push((format!("KBC.{verb}.configuration.id"), c.clone()));
    }
    if let Some(r) = &settings.row_id {
        system.push((format!("KBC.{verb}.configurationRow.id"), r.clone()));
    }
    tx.set_table_metadata(&plan.destination, "system", &system)?;
    Ok(LoadedTable {
        source: plan.source.clone(),
        destination: plan.destination.clone(),
        rows: count,
        created: prepared.created,
        incremental: plan.incremental,
    })
}

/// A resolved output file.
struct FilePlan {
    entry: Entry,
    file: NewFile,
}

fn plan_files(
    dir: &DataDir,
    mappings: &[Value],
    settings: &OutputSettings,
) -> Result<Vec<FilePlan>> {
    let found = out_dir::scan(&dir.out_files(), false, "file")?;
    for m in mappings {
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        if !found.contains_key(source) {
            return Err(Error::SourceNotFound {
                kind: "file",
                source_name: source.to_string(),
                dir: dir.out_files(),
            });
        }
    }
    let mut plans = Vec::new();
    for (name, entry) in found {
        let what = format!("out/files/{name}");
        let config = match mappings
            .iter()
            .find(|m| m.get("source").and_then(Value::as_str) == Some(&name))
        {
            // A mapping entry replaces the manifest completely.
            Some(m) => m.as_object().cloned().unwrap_or_default(),
            None => match &entry.manifest {
                Some(path) => read_manifest(path, settings.format, OUTPUT_FILE_KEYS)?,
                None => Map::new(),
            },
        };
        let mut tags = config::strings(&config, "tags", &what)?;
        tags.push(format!("componentId: {}", settings.component_id));
        if let Some(c) = &settings.config_id {
            tags.push(format!("configurationId: {c}"));
        }
        if let Some(r) = &settings.row_id {
            tags.push(format!("configurationRowId: {r}"));
        }
        if let Some(r) = &settings.run_id {
            tags.push(format!("runId: {r}"));
        }
        let flag = |key: &str, default: bool| match config.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::mapping(
                &what,
                format!("{key} must be a boolean, got {other}"),
            )),
        };
        let file = NewFile {
            name: name.clone(),
            tags,
            is_public: flag("is_public", false)?,
            is_permanent: flag("is_permanent", false)?,
            is_encrypted: flag("is_encrypted", true)?,
        };
        plans.push(FilePlan { entry, file });
    }
    Ok(plans)
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
