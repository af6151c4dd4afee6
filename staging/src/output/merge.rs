//! Keboola's merge of an output-table mapping entry with the component's manifest.

use serde_json::{Map, Value, json};

use crate::config::{self};
use crate::error::{Error, Result};

pub(super) fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "0",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

pub(super) fn key_values(list: Option<&Value>) -> Vec<(String, Value)> {
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

pub(super) fn union_by_key(base: Option<&Value>, over: Option<&Value>) -> Value {
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
pub(super) fn merge(
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
