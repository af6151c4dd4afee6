//! The `storage.input` section: which table and file mapping keys Keboola accepts, their
//! defaults, and the combinations it refuses.

use serde_json::{Value, json};

use super::tree::{array, check_keys, defaults, is_empty_php, object, strings};
use crate::error::{Error, Result};

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

/// Normalizes `storage.input`: its lists of table and file mappings, each entry checked and
/// given its defaults.
pub(super) fn normalize_section(input: &mut Value) -> Result<()> {
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
        normalize_table(t, &format!("storage.input.tables[{i}]"))?;
    }
    for (i, f) in array(input, "files", "storage.input")?
        .iter_mut()
        .enumerate()
    {
        normalize_file(f, &format!("storage.input.files[{i}]"))?;
    }
    Ok(())
}

fn normalize_table(table: &mut Value, at: &str) -> Result<()> {
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
    strings(t, "columns", at)?;
    strings(t, "where_values", at)?;
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

fn normalize_file(file: &mut Value, at: &str) -> Result<()> {
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
    strings(f, "tags", at)?;
    strings(f, "processed_tags", at)?;
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
