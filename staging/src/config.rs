//! The job configuration: strict normalization as Keboola's runner does it, and the typed view
//! of the mapping sections that input and output mapping work from.
//!
//! Normalization refuses unknown keys (at the root and in mapping entries), fills the defaults
//! the runner fills (`where_operator: "eq"`, `incremental: false`, `delimiter: ","`, ...;
//! `shared_code_row_ids: []` is added when `config.json` is written), and keeps every other
//! value and the order of the keys as written, so the `config.json` a component reads is the
//! one it reads under Keboola.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Root keys Keboola's `Container` configuration tree accepts.
const ROOT_KEYS: &[&str] = &[
    "storage",
    "parameters",
    "image_parameters",
    "authorization",
    "action",
    "shared_code_row_ids",
    "shared_code_id",
    "variables_id",
    "variables_values_id",
    "artifacts",
    "runtime",
    "processors",
];

const INPUT_TABLE_KEYS: &[&str] = &[
    "source",
    "destination",
    "columns",
    "column_types",
    "days",
    "changed_since",
    "where_column",
    "where_values",
    "where_operator",
    "limit",
    "overwrite",
    "load_type",
    "use_view",
    "keep_internal_timestamp_column",
    "source_branch_id",
    "file_type",
];

const INPUT_FILE_KEYS: &[&str] = &[
    "tags",
    "source",
    "query",
    "file_ids",
    "limit",
    "changed_since",
    "processed_tags",
    "overwrite",
];

/// Output table keys, shared by the mapping and by output manifests.
pub(crate) const OUTPUT_TABLE_KEYS: &[&str] = &[
    "source",
    "destination",
    "incremental",
    "primary_key",
    "columns",
    "distribution_key",
    "delimiter",
    "enclosure",
    "escaped_by",
    "delete_where_column",
    "delete_where_values",
    "delete_where_operator",
    "delete_where",
    "metadata",
    "column_metadata",
    "write_always",
    "tags",
    "deduplication_strategy",
    "unload_strategy",
    "manifest_type",
    "has_header",
    "description",
    "table_metadata",
    "schema",
];

/// Output file keys, shared by the mapping and by output file manifests.
pub(crate) const OUTPUT_FILE_KEYS: &[&str] = &[
    "source",
    "tags",
    "is_public",
    "is_permanent",
    "is_encrypted",
    "notify",
];

/// Written as `config.json` (the default) or `config.yml` (component setting
/// `configuration_format: yaml`); manifests and state files follow the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON, pretty-printed with 4 spaces as PHP's `JSON_PRETTY_PRINT`.
    #[default]
    Json,
    /// YAML.
    Yaml,
}

impl Format {
    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yml",
        }
    }
}

fn object<'a>(value: &'a mut Value, at: &str) -> Result<&'a mut Map<String, Value>> {
    value
        .as_object_mut()
        .ok_or_else(|| Error::config(at, "expected an object"))
}

fn check_keys(map: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<()> {
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::config(at, format!("unrecognized option {key:?}")));
    }
    Ok(())
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn array<'a>(map: &'a mut Map<String, Value>, key: &str, at: &str) -> Result<&'a mut Vec<Value>> {
    let entry = map.entry(key).or_insert_with(|| json!([]));
    if entry.is_null() {
        *entry = json!([]);
    }
    entry
        .as_array_mut()
        .ok_or_else(|| Error::config(format!("{at}.{key}"), "expected a list"))
}

fn string_list(map: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(Error::config(
                    format!("{at}.{key}"),
                    "expected a list of strings",
                )),
            })
            .collect(),
        Some(_) => Err(Error::config(
            format!("{at}.{key}"),
            "expected a list of strings",
        )),
    }
}

fn is_empty_value(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// Normalizes a stored configuration the way the runner's configuration tree does: unknown
/// keys refused (a user error naming the path), defaults filled, old artefacts tolerated
/// (`image_parameters: []`, output `escaped_by`). Keeps `runtime` and `processors`; they are
/// dropped only when `config.json` is written.
pub fn normalize(config: &Value) -> Result<Value> {
    let mut config = config.clone();
    if config.as_array().is_some_and(Vec::is_empty) || config.is_null() {
        config = json!({});
    }
    let root = object(&mut config, "root")?;
    check_keys(root, ROOT_KEYS, "root")?;
    if root
        .get("image_parameters")
        .is_some_and(|v| v.as_array().is_some_and(Vec::is_empty))
    {
        root.insert("image_parameters".into(), json!({}));
    }
    if let Some(action) = root.get("action").filter(|v| !v.is_string()) {
        return Err(Error::config(
            "action",
            format!("expected a string, got {action}"),
        ));
    }
    if let Some(storage) = root.get_mut("storage") {
        if storage.as_array().is_some_and(Vec::is_empty) {
            *storage = json!({});
        }
        normalize_storage(storage)?;
    }
    Ok(config)
}

fn normalize_storage(storage: &mut Value) -> Result<()> {
    let storage = object(storage, "storage")?;
    check_keys(storage, &["input", "output"], "storage")?;
    if let Some(input) = storage.get_mut("input") {
        if input.as_array().is_some_and(Vec::is_empty) {
            *input = json!({});
        }
        let input = object(input, "storage.input")?;
        check_keys(
            input,
            &["tables", "files", "read_only_storage_access"],
            "storage.input",
        )?;
        if input.contains_key("tables") {
            for (i, t) in array(input, "tables", "storage.input")?
                .iter_mut()
                .enumerate()
            {
                normalize_input_table(t, &format!("storage.input.tables[{i}]"))?;
            }
        }
        if input.contains_key("files") {
            for (i, f) in array(input, "files", "storage.input")?
                .iter_mut()
                .enumerate()
            {
                normalize_input_file(f, &format!("storage.input.files[{i}]"))?;
            }
        }
    }
    if let Some(output) = storage.get_mut("output") {
        if output.as_array().is_some_and(Vec::is_empty) {
            *output = json!({});
        }
        let output = object(output, "storage.output")?;
        check_keys(
            output,
            &[
                "tables",
                "files",
                "default_bucket",
                "data_type_support",
                "table_modifications",
                "treat_values_as_null",
                "table_files",
            ],
            "storage.output",
        )?;
        if output.contains_key("tables") {
            for (i, t) in array(output, "tables", "storage.output")?
                .iter_mut()
                .enumerate()
            {
                normalize_output_table(t, &format!("storage.output.tables[{i}]"))?;
            }
        }
        if output.contains_key("files") {
            for (i, f) in array(output, "files", "storage.output")?
                .iter_mut()
                .enumerate()
            {
                normalize_output_file(f, &format!("storage.output.files[{i}]"))?;
            }
        }
    }
    Ok(())
}

fn normalize_input_table(table: &mut Value, at: &str) -> Result<()> {
    let t = object(table, at)?;
    check_keys(t, INPUT_TABLE_KEYS, at)?;
    match t.get("source") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(Error::config(
                format!("{at}.source"),
                "a non-empty table id is required",
            ));
        }
    }
    default(t, "columns", json!([]));
    default(t, "where_values", json!([]));
    default(t, "where_operator", json!("eq"));
    string_list(t, "columns", at)?;
    string_list(t, "where_values", at)?;
    match t.get("where_operator").and_then(Value::as_str) {
        Some("eq" | "ne") => {}
        _ => {
            return Err(Error::config(
                format!("{at}.where_operator"),
                "must be \"eq\" or \"ne\"",
            ));
        }
    }
    let has_column = !is_empty_value(t.get("where_column"));
    let has_values = !is_empty_value(t.get("where_values"));
    if has_column != has_values {
        return Err(Error::config(
            at,
            "where_column and where_values must be set together",
        ));
    }
    if !is_empty_value(t.get("days")) && !is_empty_value(t.get("changed_since")) {
        return Err(Error::config(
            at,
            "cannot set both parameters \"days\" and \"changed_since\"",
        ));
    }
    Ok(())
}

fn normalize_input_file(file: &mut Value, at: &str) -> Result<()> {
    let f = object(file, at)?;
    check_keys(f, INPUT_FILE_KEYS, at)?;
    default(f, "processed_tags", json!([]));
    string_list(f, "tags", at)?;
    string_list(f, "processed_tags", at)?;
    let has_tags = !is_empty_value(f.get("tags"));
    let source_tags = f
        .get("source")
        .and_then(|s| s.get("tags"))
        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    if let Some(source) = f.get("source") {
        let ok = source
            .as_object()
            .is_some_and(|s| s.keys().all(|k| k == "tags"));
        if !ok {
            return Err(Error::config(
                format!("{at}.source"),
                "only \"tags\" is allowed",
            ));
        }
    }
    if has_tags && source_tags {
        return Err(Error::config(
            at,
            "\"tags\" and \"source.tags\" cannot be combined",
        ));
    }
    if !has_tags
        && !source_tags
        && is_empty_value(f.get("query"))
        && is_empty_value(f.get("file_ids"))
    {
        return Err(Error::config(
            at,
            "at least one of \"tags\", \"source.tags\", \"query\" or \"file_ids\" is required",
        ));
    }
    if !is_empty_value(f.get("query")) && !is_empty_value(f.get("changed_since")) {
        return Err(Error::config(
            at,
            "\"changed_since\" cannot be combined with \"query\"",
        ));
    }
    Ok(())
}

fn normalize_output_table(table: &mut Value, at: &str) -> Result<()> {
    let t = object(table, at)?;
    check_keys(t, OUTPUT_TABLE_KEYS, at)?;
    match t.get("source") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(Error::config(
                format!("{at}.source"),
                "a non-empty file name is required",
            ));
        }
    }
    default(t, "incremental", json!(false));
    default(t, "primary_key", json!([]));
    default(t, "delete_where_values", json!([]));
    default(t, "delete_where_operator", json!("eq"));
    default(t, "delimiter", json!(","));
    default(t, "enclosure", json!("\""));
    let pk = string_list(t, "primary_key", at)?;
    // Keboola trims, drops empty names and de-duplicates the key.
    let mut clean: Vec<String> = Vec::new();
    for k in pk.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
        if !clean.iter().any(|c| c == k) {
            clean.push(k.to_string());
        }
    }
    t.insert("primary_key".into(), json!(clean));
    if let Some(dest) = t.get("destination").and_then(Value::as_str)
        && !dest.is_empty()
        && !crate::id::TableId::looks_like_id(dest)
    {
        return Err(Error::config(
            format!("{at}.destination"),
            format!("{dest:?} is not a table id (stage.bucket.table)"),
        ));
    }
    if !is_empty_value(t.get("delete_where_column")) && !is_empty_value(t.get("delete_where")) {
        return Err(Error::config(
            at,
            "\"delete_where_column\" cannot be combined with \"delete_where\"",
        ));
    }
    if !is_empty_value(t.get("delete_where_column")) && is_empty_value(t.get("delete_where_values"))
    {
        return Err(Error::config(
            at,
            "\"delete_where_column\" requires \"delete_where_values\"",
        ));
    }
    Ok(())
}

fn normalize_output_file(file: &mut Value, at: &str) -> Result<()> {
    let f = object(file, at)?;
    check_keys(f, OUTPUT_FILE_KEYS, at)?;
    match f.get("source") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(Error::config(
                format!("{at}.source"),
                "a non-empty file name is required",
            ));
        }
    }
    default(f, "tags", json!([]));
    default(f, "is_public", json!(false));
    default(f, "is_permanent", json!(false));
    default(f, "is_encrypted", json!(true));
    default(f, "notify", json!(false));
    string_list(f, "tags", at)?;
    Ok(())
}

/// Builds the `config.json` document of the main container from a normalized configuration:
/// `runtime` and `processors` removed, the component's `image_parameters` and the job's
/// `action` set, empty `storage`, `parameters`, `image_parameters` and `authorization` as `{}`.
/// Keys keep their order; missing ones are appended in the order Keboola's runner writes them.
pub fn container_config(normalized: &Value, image_parameters: &Value, action: &str) -> Value {
    let mut out = normalized.as_object().cloned().unwrap_or_default();
    out.remove("runtime");
    out.remove("processors");
    let image = match image_parameters {
        Value::Object(_) => image_parameters.clone(),
        _ => json!({}),
    };
    out.insert("image_parameters".into(), image);
    out.insert("action".into(), json!(action));
    // The runner's configuration tree adds this default; it lands after `action`.
    out.entry("shared_code_row_ids").or_insert(json!([]));
    for key in ["storage", "authorization"] {
        out.entry(key).or_insert(Value::Null);
    }
    for key in ["storage", "parameters", "image_parameters", "authorization"] {
        if let Some(v) = out.get_mut(key)
            && (v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        {
            *v = json!({});
        }
    }
    Value::Object(out)
}

/// Builds the `config.json` of a processor: its `parameters`, its own `image_parameters`,
/// the action, an empty `storage` and an empty `authorization`.
pub fn processor_config(parameters: &Value, image_parameters: &Value, action: &str) -> Value {
    let object_or_empty = |v: &Value| match v {
        Value::Object(map) if !map.is_empty() => v.clone(),
        _ => json!({}),
    };
    json!({
        "parameters": object_or_empty(parameters),
        "image_parameters": object_or_empty(image_parameters),
        "action": action,
        "storage": {},
        "authorization": {},
    })
}

/// Serializes a document the way the runner writes its files: JSON pretty-printed with four
/// spaces and a final newline, or YAML.
pub fn render(
    value: &Value,
    format: Format,
) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            serde::Serialize::serialize(value, &mut ser)?;
            buf.push(b'\n');
            Ok(buf)
        }
        Format::Yaml => Ok(serde_norway::to_string(value)?.into_bytes()),
    }
}

/// Parses a JSON or YAML document written by a component.
pub fn parse(bytes: &[u8], format: Format, what: &str) -> Result<Value> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|source| Error::Parse {
            what: what.to_string(),
            source,
        }),
        Format::Yaml => serde_norway::from_slice(bytes)
            .map_err(|e| Error::mapping(what, format!("invalid yaml: {e}"))),
    }
}

/// A string list from a JSON value (`null` or missing means empty).
pub(crate) fn strings(map: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>> {
    string_list(map, key, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_root_keys_and_fills_defaults() {
        let err = normalize(&json!({"parameters": {}, "bogus": 1})).unwrap_err();
        assert!(err.is_user_error());
        assert!(err.to_string().contains("bogus"), "{err}");
        let n = normalize(&json!({"storage": {"input": {"tables": [{"source": "in.c-a.b"}]}}}))
            .unwrap();
        assert_eq!(
            n["storage"]["input"]["tables"][0],
            json!({"source": "in.c-a.b", "columns": [], "where_values": [], "where_operator": "eq"})
        );
        let written = container_config(&n, &json!({}), "run");
        assert_eq!(written["shared_code_row_ids"], json!([]));
    }

    #[test]
    fn refuses_days_with_changed_since() {
        let c = json!({"storage": {"input": {"tables": [
            {"source": "in.c-a.b", "days": 2, "changed_since": "-1 days"}]}}});
        let err = normalize(&c).unwrap_err();
        assert!(err.to_string().contains("storage.input.tables[0]"), "{err}");
    }
}
