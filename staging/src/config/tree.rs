//! Helpers for walking a configuration as Symfony's config tree does: strict keys, defaults
//! appended in definition order, PHP's notion of "empty". The leaf of the config module: the
//! input, output and root sections are all checked with these.

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The object at `at`, or a configuration error naming that path.
pub(super) fn object<'a>(value: &'a mut Value, at: &str) -> Result<&'a mut Map<String, Value>> {
    value
        .as_object_mut()
        .ok_or_else(|| Error::config(at, "expected an object"))
}

/// Refuses the first key not in `allowed`, naming it and the path.
pub(super) fn check_keys(map: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<()> {
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

/// The list under `key`, created empty when missing or `null`.
pub(super) fn array<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a mut Vec<Value>> {
    let entry = map.entry(key).or_insert_with(|| json!([]));
    if entry.is_null() {
        *entry = json!([]);
    }
    entry
        .as_array_mut()
        .ok_or_else(|| Error::config(format!("{at}.{key}"), "expected a list"))
}

/// A string list from a JSON value (`null` or missing means empty); numbers are taken as their
/// text, as PHP does.
pub(crate) fn strings(map: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>> {
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
pub(super) fn defaults(map: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (key, value) in defaults {
        default(map, key, value.clone());
    }
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
