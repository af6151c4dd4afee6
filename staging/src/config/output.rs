//! The `storage.output` section: which table and file mapping keys Keboola accepts (shared with
//! the output manifests), their defaults, and the combinations it refuses.

use serde_json::{Map, Value, json};

use super::tree::{array, check_keys, defaults, is_empty_php, object, strings};
use crate::error::{Error, Result};

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

/// Normalizes `storage.output`: its lists of table and file mappings, each entry checked and
/// given its defaults.
pub(super) fn normalize_section(output: &mut Value) -> Result<()> {
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
        normalize_table(t, &format!("storage.output.tables[{i}]"))?;
    }
    for (i, f) in array(output, "files", "storage.output")?
        .iter_mut()
        .enumerate()
    {
        normalize_file(f, &format!("storage.output.files[{i}]"))?;
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

fn normalize_table(table: &mut Value, at: &str) -> Result<()> {
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
    strings(t, "primary_key", at)?;
    strings(t, "columns", at)?;
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

fn normalize_file(file: &mut Value, at: &str) -> Result<()> {
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
    strings(f, "tags", at)?;
    Ok(())
}
