//! The job configuration: strict normalization as Keboola's runner does it, and the typed view
//! of the mapping sections that input and output mapping work from.
//!
//! Normalization follows Keboola's code, not its older docs: the `Container` configuration
//! tree refuses unknown keys and appends missing defaults in its definition order (input
//! tables get `columns`, `column_types`, `where_values`, `where_operator`, `overwrite`,
//! `keep_internal_timestamp_column`; output tables get `incremental` ... `schema`; empty
//! `tags`/`processed_tags` of input files are dropped), then the job definition makes sure
//! `storage`, `processors` and `parameters` exist. [`container_config`] replays the runner's
//! `ConfigFile` steps, so keys come out in the order Keboola writes them.

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

/// Appends `defaults` that `map` lacks (or holds as `null`), in the given order: Symfony's
/// config tree keeps the keys it was given in their order and appends missing defaults in
/// definition order.
fn defaults(map: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (key, value) in defaults {
        default(map, key, value.clone());
    }
}

/// Keboola's job configuration normalization: the `Container` configuration tree (strict
/// keys, defaults) followed by the job definition's own fix-ups (`storage`, `processors` and
/// `parameters` present, `[]` when empty). Unknown keys are a user error naming the path.
/// Old artefacts are tolerated: `image_parameters: []`, output `escaped_by`.
pub fn normalize(config: &Value) -> Result<Value> {
    let mut config = parse(config)?;
    if let Value::Object(root) = &mut config {
        for key in ["storage", "processors", "parameters"] {
            if root.get(key).is_none_or(is_empty_php) {
                root.insert(key.to_string(), json!([]));
            }
        }
    }
    Ok(config)
}

/// PHP's `empty()`: null, false, 0, "", "0", [] and {}.
pub(crate) fn is_empty_php(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The `Container` configuration tree alone: strict keys and defaults, nothing else.
pub fn parse(config: &Value) -> Result<Value> {
    let mut config = config.clone();
    if config.as_array().is_some_and(Vec::is_empty) || config.is_null() {
        config = json!({});
    }
    let root = object(&mut config, "root")?;
    check_keys(root, ROOT_KEYS, "root")?;
    if let Some(action) = root
        .get("action")
        .filter(|v| !v.is_string() && !v.is_null())
    {
        return Err(Error::config(
            "action",
            format!("expected a string, got {action}"),
        ));
    }
    if let Some(auth) = root.get("authorization").and_then(Value::as_object) {
        check_keys(
            auth,
            &["oauth_api", "workspace", "context", "app_proxy"],
            "authorization",
        )?;
    }
    defaults(root, &[("shared_code_row_ids", json!([]))]);
    if let Some(storage) = root.get_mut("storage") {
        if storage.as_array().is_some_and(Vec::is_empty) {
            *storage = json!({});
        }
        normalize_storage(storage)?;
    }
    if let Some(processors) = root.get_mut("processors").filter(|p| !is_empty_php(p)) {
        let p = object(processors, "processors")?;
        check_keys(p, &["before", "after"], "processors")?;
        defaults(p, &[("before", json!([])), ("after", json!([]))]);
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
            &["read_only_storage_access", "tables", "files"],
            "storage.input",
        )?;
        defaults(input, &[("tables", json!([])), ("files", json!([]))]);
        for (i, t) in array(input, "tables", "storage.input")?
            .iter_mut()
            .enumerate()
        {
            normalize_input_table(t, &format!("storage.input.tables[{i}]"))?;
        }
        for (i, f) in array(input, "files", "storage.input")?
            .iter_mut()
            .enumerate()
        {
            normalize_input_file(f, &format!("storage.input.files[{i}]"))?;
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
                "default_bucket",
                "data_type_support",
                "table_modifications",
                "treat_values_as_null",
                "tables",
                "files",
                "table_files",
            ],
            "storage.output",
        )?;
        defaults(output, &[("tables", json!([])), ("files", json!([]))]);
        for (i, t) in array(output, "tables", "storage.output")?
            .iter_mut()
            .enumerate()
        {
            normalize_output_table(t, &format!("storage.output.tables[{i}]"))?;
        }
        for (i, f) in array(output, "files", "storage.output")?
            .iter_mut()
            .enumerate()
        {
            normalize_output_file(f, &format!("storage.output.files[{i}]"))?;
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
    if t.get("days").is_some_and(Value::is_null) {
        t.insert("days".into(), json!(0));
    }
    if t.get("changed_since").is_some_and(Value::is_null) {
        t.insert("changed_since".into(), json!(""));
    }
    if t.get("where_operator")
        .is_some_and(|v| v.is_null() || v == "")
    {
        t.insert("where_operator".into(), json!("eq"));
    }
    defaults(
        t,
        &[
            ("columns", json!([])),
            ("column_types", json!([])),
            ("where_values", json!([])),
            ("where_operator", json!("eq")),
            ("overwrite", json!(false)),
            ("keep_internal_timestamp_column", json!(true)),
        ],
    );
    if t.get("file_type").is_some_and(is_empty_php) {
        t.remove("file_type");
    }
    if let Some(use_view) = t.remove("use_view")
        && use_view == json!(true)
        && !t.contains_key("load_type")
    {
        t.insert("load_type".into(), json!("VIEW"));
    }
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
    let has_column = !t.get("where_column").is_none_or(is_empty_php);
    let has_values = !t.get("where_values").is_none_or(is_empty_php);
    if has_column != has_values {
        return Err(Error::config(
            at,
            "where_column and where_values must be set together",
        ));
    }
    if !t.get("days").is_none_or(is_empty_php) && !t.get("changed_since").is_none_or(is_empty_php) {
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
    if let Some(source) = f.get_mut("source") {
        let source_at = format!("{at}.source");
        let source = object(source, &source_at)?;
        check_keys(source, &["tags"], &source_at)?;
        defaults(source, &[("tags", json!([]))]);
        for (j, tag) in array(source, "tags", &source_at)?.iter_mut().enumerate() {
            let tag_at = format!("{at}.source.tags[{j}]");
            let tag = object(tag, &tag_at)?;
            check_keys(tag, &["name", "match"], &tag_at)?;
            defaults(tag, &[("match", json!("include"))]);
        }
    }
    defaults(
        f,
        &[
            ("file_ids", json!([])),
            ("tags", json!([])),
            ("overwrite", json!(true)),
            ("processed_tags", json!([])),
        ],
    );
    for key in ["tags", "query", "processed_tags", "file_ids"] {
        if f.get(key).is_some_and(is_empty_php) {
            f.remove(key);
        }
    }
    string_list(f, "tags", at)?;
    string_list(f, "processed_tags", at)?;
    let has_tags = !f.get("tags").is_none_or(is_empty_php);
    let source_tags = f
        .get("source")
        .and_then(|s| s.get("tags"))
        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    if has_tags && source_tags {
        return Err(Error::config(
            at,
            "\"tags\" and \"source.tags\" cannot be combined",
        ));
    }
    if !has_tags
        && !source_tags
        && f.get("query").is_none_or(is_empty_php)
        && f.get("file_ids").is_none_or(is_empty_php)
    {
        return Err(Error::config(
            at,
            "at least one of \"tags\", \"source.tags\", \"query\" or \"file_ids\" is required",
        ));
    }
    if !f.get("query").is_none_or(is_empty_php) && !f.get("changed_since").is_none_or(is_empty_php)
    {
        return Err(Error::config(
            at,
            "\"changed_since\" cannot be combined with \"query\"",
        ));
    }
    Ok(())
}

/// Defaults of an output table mapping entry, in the order Keboola's tree appends them.
fn output_table_defaults(t: &mut Map<String, Value>) {
    if t.get("delete_where_operator")
        .is_some_and(|v| v.is_null() || v == "")
    {
        t.insert("delete_where_operator".into(), json!("eq"));
    }
    defaults(
        t,
        &[
            ("incremental", json!(false)),
            ("primary_key", json!([])),
            ("columns", json!([])),
            ("distribution_key", json!([])),
            ("delete_where_values", json!([])),
            ("delete_where_operator", json!("eq")),
            ("delete_where", json!([])),
            ("delimiter", json!(",")),
            ("enclosure", json!("\"")),
            ("metadata", json!([])),
            ("column_metadata", json!([])),
            ("write_always", json!(false)),
            ("tags", json!([])),
            ("schema", json!([])),
        ],
    );
    if t.get("delete_where").is_some_and(is_empty_php) {
        t.remove("delete_where");
    }
    for item in t
        .get_mut("delete_where")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(item) = item.as_object_mut() {
            defaults(item, &[("where_filters", json!([]))]);
            if item.get("where_filters").is_some_and(is_empty_php) {
                item.remove("where_filters");
            }
            for f in item
                .get_mut("where_filters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(f) = f.as_object_mut() {
                    defaults(
                        f,
                        &[("operator", json!("eq")), ("values_from_set", json!([]))],
                    );
                    if f.get("values_from_set").is_some_and(is_empty_php) {
                        f.remove("values_from_set");
                    }
                }
            }
        }
    }
    for column in t
        .get_mut("schema")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(c) = column.as_object_mut() {
            defaults(
                c,
                &[
                    ("nullable", json!(true)),
                    ("primary_key", json!(false)),
                    ("distribution_key", json!(false)),
                ],
            );
        }
    }
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
    output_table_defaults(t);
    string_list(t, "primary_key", at)?;
    string_list(t, "columns", at)?;
    if let Some(dest) = t.get("destination").and_then(Value::as_str)
        && !dest.is_empty()
        && !crate::id::TableId::looks_like_id(dest)
    {
        return Err(Error::config(
            format!("{at}.destination"),
            format!("{dest:?} is not a table id (stage.bucket.table)"),
        ));
    }
    if !t.get("delete_where_column").is_none_or(is_empty_php) && t.contains_key("delete_where") {
        return Err(Error::config(
            at,
            "\"delete_where_column\" cannot be combined with \"delete_where\"",
        ));
    }
    if !t.get("delete_where_column").is_none_or(is_empty_php)
        && t.get("delete_where_values").is_none_or(is_empty_php)
    {
        return Err(Error::config(
            at,
            "\"delete_where_column\" requires \"delete_where_values\"",
        ));
    }
    let schema = t.get("schema").is_some_and(|s| !is_empty_php(s));
    if schema && !t.get("primary_key").is_none_or(is_empty_php) {
        return Err(Error::config(
            at,
            "only one of \"primary_key\" or \"schema[].primary_key\" can be defined",
        ));
    }
    if schema && !t.get("columns").is_none_or(is_empty_php) {
        return Err(Error::config(
            at,
            "\"schema\" cannot be combined with \"columns\"",
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
    defaults(
        f,
        &[
            ("tags", json!([])),
            ("is_public", json!(false)),
            ("is_permanent", json!(false)),
            ("is_encrypted", json!(true)),
            ("notify", json!(false)),
        ],
    );
    string_list(f, "tags", at)?;
    Ok(())
}

/// Builds the `config.json` document of the main container the way the runner's `ConfigFile`
/// does, step by step: `runtime` and `processors` dropped; `image_parameters` set to the
/// component's; an empty `authorization` or `storage` dropped; `action` set; the tree parsed
/// again (which appends `shared_code_row_ids: []` when missing); finally `storage`,
/// `parameters`, `image_parameters` and `authorization` written as `{}` when empty (in place,
/// or appended). Values pass through PHP's decoding, so nested empty objects become `[]`.
/// Key order follows from these steps, as in Keboola.
pub fn container_config(config: &Value, image_parameters: &Value, action: &str) -> Result<Value> {
    let mut config = config.clone();
    crate::php_json::empty_objects_as_arrays(&mut config);
    let mut out = match config {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.remove("runtime");
    out.remove("processors");
    let mut image = image_parameters.clone();
    crate::php_json::empty_objects_as_arrays(&mut image);
    out.insert("image_parameters".into(), image);
    for key in ["authorization", "storage"] {
        if out.get(key).is_some_and(is_empty_php) {
            out.remove(key);
        }
    }
    out.insert("action".into(), json!(action));
    let mut out = match parse(&Value::Object(out))? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for key in ["storage", "parameters", "image_parameters", "authorization"] {
        if out.get(key).is_none_or(is_empty_php) {
            out.insert(key.to_string(), json!({}));
        }
    }
    Ok(Value::Object(out))
}

/// Builds the `config.json` of a processor: its `parameters`, its own `image_parameters`,
/// the action, then empty `storage` and `authorization`, as the runner writes it.
pub fn processor_config(
    parameters: &Value,
    image_parameters: &Value,
    action: &str,
) -> Result<Value> {
    container_config(
        &json!({ "parameters": parameters }),
        image_parameters,
        action,
    )
}

/// Serializes a document the way the runner writes its files: PHP's pretty-printed JSON
/// (see [`crate::php_json`]), or YAML.
pub fn render(
    value: &Value,
    format: Format,
) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    match format {
        Format::Json => Ok(crate::php_json::render(value)),
        Format::Yaml => Ok(serde_norway::to_string(value)?.into_bytes()),
    }
}

/// Parses a JSON or YAML document written by a component.
pub fn parse_document(bytes: &[u8], format: Format, what: &str) -> Result<Value> {
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
            json!({"source": "in.c-a.b", "columns": [], "column_types": [], "where_values": [],
                   "where_operator": "eq", "overwrite": false, "keep_internal_timestamp_column": true})
        );
        let written = container_config(&n, &json!({}), "run").unwrap();
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
