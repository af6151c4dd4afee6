//! Input mapping: Storage tables and files into `data/in`, with their manifests.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::config::{self, Format};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::layout::DataDir;
use crate::storage::{ColumnFilter, ExportOptions, FileQuery, Operator, Storage, TableInfo};
use crate::time::{format_iso, format_precise, parse_time_expr};

/// One table written to `in/tables`.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedTable {
    /// Source table.
    pub source: TableId,
    /// File written.
    pub path: PathBuf,
    /// Rows written.
    pub rows: u64,
}

/// One file written to `in/files`.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedFile {
    /// Storage file id.
    pub id: i64,
    /// File (or slice folder) written.
    pub path: PathBuf,
}

/// What input mapping staged, and the input part of the state to store after success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputReport {
    /// Tables written.
    pub tables: Vec<StagedTable>,
    /// Files written.
    pub files: Vec<StagedFile>,
    /// `storage.input` of the next state: `{"tables": [{source, lastImportDate}], "files": [...]}`.
    pub state: Value,
    /// Tags to add to input files after a successful job (`processed_tags`), by file id.
    pub processed_tags: Vec<(i64, Vec<String>)>,
}

/// A destination must be a plain file name: no folders, nothing hidden above `in/tables`.
fn safe_name(name: &str, at: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::config(
            at,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

fn write_doc(path: &Path, value: &Value, format: Format) -> Result<()> {
    let bytes = config::render(value, format).map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, bytes).map_err(Error::io(path))
}

fn previous_import(state: &Value, source: &str) -> Option<String> {
    state["tables"]
        .as_array()?
        .iter()
        .find(|t| t["source"] == source)?
        .get("lastImportDate")?
        .as_str()
        .map(str::to_string)
}

/// How input table manifests are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ManifestForm {
    /// JSON or YAML (the component's `configuration_format`).
    pub format: Format,
    /// Add the typed form's `schema` (the component supports data types: `authoritative` or
    /// `hints`); without it the manifest has the legacy keys only.
    pub typed: bool,
}

fn table_manifest(info: &TableInfo, columns: &[String], typed: bool) -> Value {
    let meta = |m: &crate::storage::Metadata, i: usize| json!({"id": i.to_string(), "key": m.key, "value": m.value, "provider": m.provider, "timestamp": m.timestamp});
    let mut column_metadata = Map::new();
    let mut n = info.metadata.len();
    for c in columns {
        let entries: Vec<Value> = info
            .column_metadata
            .iter()
            .find(|(name, _)| name == c)
            .map(|(_, list)| {
                list.iter()
                    .map(|m| {
                        n += 1;
                        meta(m, n)
                    })
                    .collect()
            })
            .unwrap_or_default();
        column_metadata.insert(c.clone(), Value::Array(entries));
    }
    let mut manifest = json!({
        "id": info.id.to_string(),
        "name": info.id.name(),
        "primary_key": info.primary_key,
        "distribution_key": [],
        "created": format_iso(info.created),
        "last_change_date": format_iso(info.last_change),
        "last_import_date": format_iso(info.last_import),
        "columns": columns,
        "metadata": info.metadata.iter().enumerate().map(|(i, m)| meta(m, i + 1)).collect::<Vec<_>>(),
        "column_metadata": column_metadata,
    });
    if typed && let Some(map) = manifest.as_object_mut() {
        map.insert("schema".into(), table_schema(info, columns));
    }
    manifest
}

/// The typed form's `schema`, as Keboola's input mapping builds it from a table definition:
/// one entry per exported column, in export order, with `name`, `data_type` and `nullable`
/// (typed columns only), `primary_key`, and `description` when the column has a
/// `KBC.description`.
fn table_schema(info: &TableInfo, columns: &[String]) -> Value {
    let description = |column: &str| {
        info.column_metadata
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, list)| list.iter().rev().find(|m| m.key == "KBC.description"))
            .map(|m| m.value.clone())
            .filter(|d| !d.is_empty())
    };
    let entries: Vec<Value> = columns
        .iter()
        .map(|c| {
            let mut entry = Map::new();
            entry.insert("name".into(), json!(c));
            if let Some(t) = info.column_type(c) {
                entry.insert("data_type".into(), t.data_type());
                entry.insert("nullable".into(), json!(t.nullable));
            }
            entry.insert("primary_key".into(), json!(info.primary_key.contains(c)));
            if let Some(d) = description(c) {
                entry.insert("description".into(), json!(d));
            }
            Value::Object(entry)
        })
        .collect();
    Value::Array(entries)
}

/// Exports every `storage.input.tables` entry of a normalized configuration into
/// `in/tables/<destination>` plus its manifest (`form`: JSON or YAML, legacy or typed). `previous` is the stored `storage.input` state
/// (for `changed_since: adaptive`); `now` anchors relative time expressions.
pub fn stage_tables(
    storage: &dyn Storage,
    mappings: &[Value],
    dir: &DataDir,
    form: ManifestForm,
    previous: &Value,
    now: i64,
    report: &mut InputReport,
) -> Result<Vec<Value>> {
    let mut state = Vec::new();
    for (i, mapping) in mappings.iter().enumerate() {
        let at = format!("storage.input.tables[{i}]");
        let map = mapping.as_object().cloned().unwrap_or_default();
        let source_text = map
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let source: TableId = source_text
            .parse()
            .map_err(Error::config_id(format!("{at}.source")))?;
        let destination = map
            .get("destination")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .unwrap_or(source_text)
            .to_string();
        safe_name(&destination, &format!("{at}.destination"))?;
        let info = storage.table(&source)?.ok_or_else(|| {
            Error::config(format!("{at}.source"), format!("table {source} not found"))
        })?;
        let mut options = ExportOptions {
            columns: config::strings(&map, "columns", &at)?,
            ..ExportOptions::default()
        };
        for c in &options.columns {
            if !info.columns.contains(c) {
                return Err(Error::config(
                    format!("{at}.columns"),
                    format!("column {c:?} not found in table {source}"),
                ));
            }
        }
        let changed_since = map
            .get("changed_since")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let days = map.get("days").and_then(Value::as_i64).unwrap_or(0);
        if changed_since == "adaptive" {
            if let Some(last) = previous_import(previous, source_text) {
                // Strictly after the last import: rows changed exactly then were already read.
                options.changed_since = Some(parse_time_expr(&last, now)? + 1);
            }
        } else if !changed_since.is_empty() {
            options.changed_since = Some(parse_time_expr(changed_since, now)?);
        } else if days > 0 {
            options.changed_since = Some(now - days * 86_400_000_000);
        }
        if let Some(column) = map
            .get("where_column")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            options.filter = Some(ColumnFilter {
                column: column.to_string(),
                values: config::strings(&map, "where_values", &at)?,
                operator: if map.get("where_operator").and_then(Value::as_str) == Some("ne") {
                    Operator::Ne
                } else {
                    Operator::Eq
                },
            });
        }
        options.limit = map.get("limit").and_then(Value::as_u64).filter(|l| *l > 0);
        let path = dir.in_tables().join(&destination);
        let file = File::create(&path).map_err(Error::io(&path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let exported = storage.export_table(&source, &options, &mut out)?;
        out.flush().map_err(Error::io(&path))?;
        let manifest = table_manifest(&info, &exported.columns, form.typed);
        write_doc(&manifest_path(&path), &manifest, form.format)?;
        state.push(
            json!({"source": source_text, "lastImportDate": format_precise(info.last_import)}),
        );
        report.tables.push(StagedTable {
            source,
            path,
            rows: exported.rows,
        });
    }
    Ok(state)
}

fn manifest_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".manifest");
    PathBuf::from(p)
}

/// Tag filter of a file mapping as `(include, exclude, state key)`.
fn tag_filter(map: &Map<String, Value>, at: &str) -> Result<(Vec<String>, Vec<String>, Value)> {
    let tags = config::strings(map, "tags", at)?;
    if !tags.is_empty() {
        let key: Vec<Value> = tags
            .iter()
            .map(|t| json!({"name": t, "match": "include"}))
            .collect();
        return Ok((tags, Vec::new(), Value::Array(key)));
    }
    let (mut include, mut exclude, mut key) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(list) = map
        .get("source")
        .and_then(|s| s.get("tags"))
        .and_then(Value::as_array)
    {
        for (j, t) in list.iter().enumerate() {
            let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
                Error::config(
                    format!("{at}.source.tags[{j}].name"),
                    "a tag name is required",
                )
            })?;
            let matching = t.get("match").and_then(Value::as_str).unwrap_or("include");
            match matching {
                "include" => include.push(name.to_string()),
                "exclude" => exclude.push(name.to_string()),
                other => {
                    return Err(Error::config(
                        format!("{at}.source.tags[{j}].match"),
                        format!("{other:?} is not include or exclude"),
                    ));
                }
            }
            key.push(json!({"name": name, "match": matching}));
        }
    }
    Ok((include, exclude, Value::Array(key)))
}

/// Downloads every `storage.input.files` entry into `in/files/<id>_<name>` plus its manifest.
pub fn stage_files(
    storage: &dyn Storage,
    mappings: &[Value],
    dir: &DataDir,
    format: Format,
    previous: &Value,
    now: i64,
    report: &mut InputReport,
) -> Result<Vec<Value>> {
    let mut state = Vec::new();
    for (i, mapping) in mappings.iter().enumerate() {
        let at = format!("storage.input.files[{i}]");
        let map = mapping.as_object().cloned().unwrap_or_default();
        if map
            .get("query")
            .and_then(Value::as_str)
            .is_some_and(|q| !q.is_empty())
        {
            return Err(Error::config(
                format!("{at}.query"),
                "elasticsearch queries are not supported; use tags",
            ));
        }
        let (include, exclude, key) = tag_filter(&map, &at)?;
        let ids: Vec<i64> = match map.get("file_ids") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .collect::<Option<_>>()
                .ok_or_else(|| Error::config(format!("{at}.file_ids"), "expected integer ids"))?,
            _ => Vec::new(),
        };
        let mut query = FileQuery {
            include_tags: include,
            exclude_tags: exclude,
            ids,
            limit: Some(
                map.get("limit")
                    .and_then(Value::as_u64)
                    .filter(|l| *l > 0)
                    .unwrap_or(100),
            ),
            ..FileQuery::default()
        };
        let changed_since = map
            .get("changed_since")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if changed_since == "adaptive" {
            query.since_id = previous["files"].as_array().and_then(|list| {
                list.iter()
                    .find(|f| f["tags"] == key)
                    .and_then(|f| f["lastImportId"].as_i64())
            });
        } else if !changed_since.is_empty() {
            query.created_since = Some(parse_time_expr(changed_since, now)?);
        }
        let processed = config::strings(&map, "processed_tags", &at)?;
        let files = storage.files(&query)?;
        let mut last_id = query.since_id.unwrap_or(0);
        for info in files {
            last_id = last_id.max(info.id);
            safe_name(&info.name, &format!("file {}", info.id))?;
            let name = format!("{}_{}", info.id, info.name);
            let path = dir.in_files().join(&name);
            if !processed.is_empty() {
                report.processed_tags.push((info.id, processed.clone()));
            }
            if report.files.iter().any(|f| f.id == info.id) {
                continue;
            }
            let readers = storage.open_file(info.id)?;
            if info.is_sliced {
                std::fs::create_dir_all(&path).map_err(Error::io(&path))?;
                for (slice, mut reader) in info.slices.iter().zip(readers) {
                    safe_name(slice, &format!("file {} slice", info.id))?;
                    let target = path.join(slice);
                    let mut out = File::create(&target).map_err(Error::io(&target))?;
                    std::io::copy(&mut reader, &mut out).map_err(Error::io(&target))?;
                }
            } else {
                let mut out = File::create(&path).map_err(Error::io(&path))?;
                for mut reader in readers {
                    std::io::copy(&mut reader, &mut out).map_err(Error::io(&path))?;
                }
            }
            let manifest = json!({
                "id": info.id,
                "name": info.name,
                "created": format_iso(info.created),
                "is_public": info.is_public,
                "is_encrypted": info.is_encrypted,
                "is_sliced": info.is_sliced,
                "tags": info.tags,
                "max_age_days": if info.is_permanent { 0 } else { 15 },
                "size_bytes": info.size,
            });
            write_doc(&manifest_path(&path), &manifest, format)?;
            report.files.push(StagedFile { id: info.id, path });
        }
        if key.as_array().is_some_and(|k| !k.is_empty()) {
            state.push(json!({"tags": key, "lastImportId": last_id}));
        }
    }
    Ok(state)
}
