//! Resolving one table source into a load plan, and running that plan in a transaction.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::{Map, Value};

use super::merge::{is_truthy, key_values, merge};
use super::rows::CsvRows;
use super::{LoadedTable, OutputSettings};
use crate::config::{self, Format, OUTPUT_TABLE_KEYS};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::out_dir::{self, Entry};
use crate::sanitize;
use crate::storage::{ColumnFilter, DeleteFilter, Operator, Transaction};
use crate::time::{now_micros, parse_time_expr};
use crate::types::{self, BaseType, ColumnType, DataTypeSupport};

/// A fully resolved table load; nothing left to validate but the CSV itself.
#[derive(Debug)]
pub(super) struct TablePlan {
    pub(super) source: String,
    pub(super) entry: Entry,
    pub(super) destination: TableId,
    pub(super) declared: Option<Vec<String>>,
    pub(super) skip_header: bool,
    pub(super) primary_key: Vec<String>,
    pub(super) incremental: bool,
    pub(super) delimiter: u8,
    pub(super) enclosure: Option<u8>,
    pub(super) deletes: Vec<DeleteFilter>,
    pub(super) metadata: Vec<(String, String)>,
    pub(super) column_metadata: Vec<(String, Vec<(String, String)>)>,
    pub(super) column_types: Vec<(String, ColumnType)>,
    /// The types come from a `schema` (they update a typed table's columns), not from legacy
    /// `KBC.datatype.*` metadata (which only types columns that have no type yet).
    pub(super) types_from_schema: bool,
    pub(super) write_always: bool,
    pub(super) progress: Option<Arc<AtomicU64>>,
}

pub(super) fn read_manifest(
    path: &Path,
    format: Format,
    allowed: &[&str],
) -> Result<Map<String, Value>> {
    let bytes = out_dir::read_document(path)?;
    let what = path.display().to_string();
    let value = config::parse_document(&bytes, format, &what)?;
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

pub(super) fn single_byte(
    value: Option<&Value>,
    default: u8,
    what: &str,
    key: &str,
) -> Result<Option<u8>> {
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

pub(super) fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn bool_key(map: &Map<String, Value>, key: &str, what: &str) -> Result<bool> {
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
pub(super) fn clean_columns(
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

pub(super) fn parse_deletes(map: &Map<String, Value>, what: &str) -> Result<Vec<DeleteFilter>> {
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

pub(super) fn resolve_destination(
    mapping: Option<&Map<String, Value>>,
    manifest: &Map<String, Value>,
    source: &str,
    settings: &OutputSettings,
    warnings: &mut Vec<String>,
) -> Result<TableId> {
    let what = format!("out/tables/{source}");
    let invalid = |source: Error| Error::Destination {
        what: what.clone(),
        source: Box::new(source),
    };
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

pub(super) fn plan_table(
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
        // The type as `KBC.datatype.*` metadata, as Keboola's `hints` mode keeps it (and as
        // its Storage describes a typed column): legacy readers of the table see it there.
        if let Some(base) = column.get("data_type").and_then(|d| d.get("base")) {
            for (key, field) in [
                ("KBC.datatype.basetype", "type"),
                ("KBC.datatype.length", "length"),
                ("KBC.datatype.default", "default"),
            ] {
                if let Some(v) = base.get(field).and_then(types::scalar_text) {
                    let v = match field {
                        "type" => types::BaseType::parse(&v)
                            .map(|t| t.as_str().to_string())
                            .unwrap_or(v),
                        _ => v,
                    };
                    entries.push((key.into(), v));
                }
            }
            let nullable = !matches!(column.get("nullable"), Some(Value::Bool(false)));
            entries.push((
                "KBC.datatype.nullable".into(),
                if nullable { "1" } else { "0" }.into(),
            ));
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
    let destination = resolve_destination(mapping, &manifest, source, settings, warnings)?;
    let mut column_types = column_types(
        &schema,
        &merged,
        &column_metadata,
        settings.data_type_support,
        &what,
        &destination.to_string(),
    )?;
    // A key column holds no NULL (Keboola's hints rule; libraries leave `nullable` out of a
    // key column's schema entry, which would default it to nullable).
    for (column, column_type) in &mut column_types {
        if primary_key.contains(column) {
            column_type.nullable = false;
        }
    }
    Ok(TablePlan {
        source: source.to_string(),
        entry: entry.clone(),
        destination,
        skip_header: has_header && declared.is_some(),
        declared,
        primary_key,
        incremental: bool_key(&merged, "incremental", &what)?,
        delimiter,
        enclosure,
        deletes: parse_deletes(&merged, &what)?,
        metadata,
        column_metadata,
        column_types,
        types_from_schema: !schema.is_empty(),
        write_always: bool_key(&merged, "write_always", &what)?,
        progress: None,
    })
}

/// The column types a resolved table configuration declares, after Keboola's checks for the
/// job's data type support: with `authoritative` or `hints` the configuration must have a
/// `schema` ("Configuration schema is missing."), with `authoritative` every schema column a
/// `data_type.base` ("Missing data type for columns: ..."); with `hints` the columns are
/// created as `STRING` (the declared types stay as `KBC.datatype.*` metadata) and a key column
/// is not nullable. Without a schema the legacy `KBC.datatype.*` column metadata gives the
/// types. Every base type is checked, whatever the support.
fn column_types(
    schema: &[Map<String, Value>],
    merged: &Map<String, Value>,
    column_metadata: &[(String, Vec<(String, String)>)],
    support: DataTypeSupport,
    what: &str,
    table: &str,
) -> Result<Vec<(String, ColumnType)>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for column in schema {
        let raw = column
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = sanitize::column_name(raw);
        match types::from_schema_column(column, what, table)? {
            Some(mut column_type) => {
                if support == DataTypeSupport::Hints {
                    column_type = ColumnType::of(BaseType::String);
                    column_type.nullable = !column.get("primary_key").is_some_and(is_truthy);
                }
                out.push((name, column_type));
            }
            // Keboola names the columns after sanitizing them, as here.
            None => missing.push(name),
        }
    }
    if support.is_typed() && schema.is_empty() {
        return Err(Error::mapping(what, "Configuration schema is missing."));
    }
    if support == DataTypeSupport::Authoritative && !missing.is_empty() {
        return Err(Error::mapping(
            what,
            format!("Missing data type for columns: {}", missing.join(", ")),
        ));
    }
    if schema.is_empty() {
        let backend = key_values(merged.get("metadata"))
            .into_iter()
            .chain(
                merged
                    .get("table_metadata")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .filter(|(k, _)| k == "KBC.datatype.backend")
            .map(|(_, v)| as_text(&v))
            .next_back();
        for (column, entries) in column_metadata {
            if let Some(column_type) =
                types::from_column_metadata(entries, backend.as_deref(), what, table, column)?
            {
                out.retain(|(c, _)| c != column);
                out.push((column.clone(), column_type));
            }
        }
    }
    Ok(out)
}

pub(super) fn load_table(
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
    let before = tx.table(&plan.destination)?;
    let existed = before.is_some();
    // Types are part of a table's definition: a new table takes them, a typed one keeps the
    // base type of each typed column (Keboola's check and wording) and takes the rest from a
    // schema (length, default, nullable, new columns; legacy metadata only types new
    // columns); an untyped table stays untyped (the types remain as metadata), as in Keboola.
    let mut types = plan.column_types.clone();
    let store_types = match &before {
        None => !types.is_empty(),
        Some(table) if table.is_typed() => {
            for (column, wanted) in &plan.column_types {
                if let Some(stored) = table.column_type(column)
                    && stored.base != wanted.base
                {
                    return Err(Error::mapping(
                        &what,
                        format!(
                            "Table \"{}\" column \"{column}\" has different type than the schema. Table type: \"{}\", schema type: \"{}\".",
                            plan.destination, stored.base, wanted.base
                        ),
                    ));
                }
            }
            if !plan.types_from_schema {
                types.retain(|(column, _)| table.column_type(column).is_none());
            }
            !types.is_empty()
        }
        Some(_) => {
            if !plan.column_types.is_empty() {
                warnings.push(format!(
                    "{what}: table {} is not typed; the column types are kept as metadata only",
                    plan.destination
                ));
            }
            false
        }
    };
    let prepared = tx.prepare_table(&plan.destination, &columns, &plan.primary_key)?;
    warnings.extend(prepared.warnings);
    if store_types {
        tx.set_column_types(&plan.destination, &types)?;
    }
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
