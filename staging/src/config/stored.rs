//! A configuration as the Storage API returns it (`{"id", "version", "configuration",
//! "rows": [...]}`) and the runs it makes, as Keboola's job runner (`JobDefinitionParser`)
//! makes them: without rows, one run of `configuration`; with rows, one run per row of
//! `array_replace_recursive(configuration, row.configuration)`, in the document's order,
//! disabled rows skipped unless asked for by id, processors in the configuration or in rows
//! but not in both.

use serde_json::{Map, Value};

use super::tree::is_empty_php;
use crate::error::{Error, Result};

/// Keys of a configuration in the Storage API's answer.
const CONFIGURATION_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "created",
    "creatorToken",
    "version",
    "changeDescription",
    "isDisabled",
    "isDeleted",
    "configuration",
    "rowsSortOrder",
    "rows",
    "state",
    "currentVersion",
];

/// Keys of a configuration row in the Storage API's answer.
const ROW_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "isDisabled",
    "version",
    "created",
    "creatorToken",
    "changeDescription",
    "configuration",
    "state",
];

/// A stored configuration: its id (when the document has one), its own configuration and its
/// rows in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The configuration id (`id`), when given.
    pub id: Option<String>,
    /// Its version (`version`, `KBC_CONFIGVERSION`), when given.
    pub version: Option<String>,
    /// The configuration itself (`configuration`; `{}` when null).
    pub configuration: Value,
    /// The rows, in the document's order (the Storage API returns them in `rowsSortOrder`).
    pub rows: Vec<Row>,
}

/// One configuration row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Row id.
    pub id: String,
    /// `isDisabled`.
    pub disabled: bool,
    /// The row's configuration (`{}` when null).
    pub configuration: Value,
}

/// One entry of a configuration's plan: a run, or a row skipped because it is disabled.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Run this configuration (a row's merged over the configuration's), as this row.
    Run {
        /// The row id; none for a configuration without rows.
        row_id: Option<String>,
        /// The configuration the run gets.
        configuration: Value,
    },
    /// A disabled row, not run.
    Skipped {
        /// The row id.
        row_id: String,
    },
}

/// A document is in the Storage API's form when it is an object with a `configuration` key
/// (a job configuration has no such key: its root keys are `storage`, `parameters`, ...).
pub fn is_stored_form(document: &Value) -> bool {
    document
        .as_object()
        .is_some_and(|m| m.contains_key("configuration"))
}

/// Reads the Storage API's form; unknown keys and wrong types are user errors naming the key.
pub fn parse_stored(document: &Value) -> Result<Stored> {
    let root = document
        .as_object()
        .ok_or_else(|| Error::config("root", "expected an object"))?;
    check_keys(root, CONFIGURATION_KEYS, "")?;
    let id = match root.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(id_text(v, "id")?),
    };
    let version = match root.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(id_text(v, "version")?),
    };
    let configuration = configuration_of(root, "configuration")?;
    let rows = match root.get("rows") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows
            .iter()
            .enumerate()
            .map(|(i, row)| parse_row(row, &format!("rows[{i}]")))
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::config("rows", "expected a list of rows")),
    };
    Ok(Stored {
        id,
        version,
        configuration,
        rows,
    })
}

fn parse_row(row: &Value, at: &str) -> Result<Row> {
    let map = row
        .as_object()
        .ok_or_else(|| Error::config(at, "expected an object"))?;
    check_keys(map, ROW_KEYS, &format!("{at}."))?;
    let id = match map.get("id") {
        None | Some(Value::Null) => return Err(Error::config(format!("{at}.id"), "missing")),
        Some(v) => id_text(v, &format!("{at}.id"))?,
    };
    let disabled = match map.get("isDisabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Error::config(
                format!("{at}.isDisabled"),
                "expected true or false",
            ));
        }
    };
    Ok(Row {
        id,
        disabled,
        configuration: configuration_of(map, &format!("{at}.configuration"))?,
    })
}

fn check_keys(map: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(Error::config(
            format!("{prefix}{key}"),
            format!(
                "not a key of a configuration as the Storage API returns it (known: {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn id_text(value: &Value, at: &str) -> Result<String> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::config(at, "expected a non-empty string or a number")),
    }
}

fn configuration_of(map: &Map<String, Value>, at: &str) -> Result<Value> {
    let key = at.rsplit('.').next().unwrap_or(at);
    match map.get(key) {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::Array(a)) if a.is_empty() => Ok(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(Error::config(at, "expected an object")),
    }
}

/// The runs of `stored`, in order. `row_ids` (when not empty) selects rows by id, disabled
/// ones included, as Keboola's `rowIds` do; without it, disabled rows are [`Planned::Skipped`].
pub fn plan(stored: &Stored, row_ids: &[String]) -> Result<Vec<Planned>> {
    let has_processors = |config: &Value| {
        ["before", "after"]
            .iter()
            .any(|k| !config["processors"][k].is_null() && !is_empty_php(&config["processors"][k]))
    };
    if has_processors(&stored.configuration)
        && let Some(i) = stored
            .rows
            .iter()
            .position(|r| has_processors(&r.configuration))
    {
        return Err(Error::config(
            format!("rows[{i}].configuration.processors"),
            "Processors may be set either in configuration or in configuration row, but not \
             in both places.",
        ));
    }
    if stored.rows.is_empty() {
        if !row_ids.is_empty() {
            return Err(Error::config(
                "rows",
                format!(
                    "the configuration has no rows, so row {:?} cannot be run",
                    row_ids.join(",")
                ),
            ));
        }
        return Ok(vec![Planned::Run {
            row_id: None,
            configuration: stored.configuration.clone(),
        }]);
    }
    let selected: Vec<&Row> = if row_ids.is_empty() {
        stored.rows.iter().collect()
    } else {
        let chosen: Vec<&Row> = stored
            .rows
            .iter()
            .filter(|r| row_ids.contains(&r.id))
            .collect();
        if chosen.is_empty() {
            return Err(Error::config(
                "rows",
                format!("None of rows \"{}\" was found.", row_ids.join(",")),
            ));
        }
        chosen
    };
    Ok(selected
        .into_iter()
        .map(|row| {
            if row.disabled && row_ids.is_empty() {
                Planned::Skipped {
                    row_id: row.id.clone(),
                }
            } else {
                Planned::Run {
                    row_id: Some(row.id.clone()),
                    configuration: replace_recursive(&stored.configuration, &row.configuration),
                }
            }
        })
        .collect())
}

/// PHP's `array_replace_recursive` over JSON: a key of `over` replaces the same key of `base`
/// unless both values are arrays (objects or lists), which are merged the same way; lists are
/// merged by index. Keys keep `base`'s order, new keys are appended. A list merged with an
/// object becomes an object unless its keys stay `0..n` in order, as PHP's arrays encode.
pub fn replace_recursive(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Array(b), Value::Array(o)) => {
            let mut out = b.clone();
            for (i, v) in o.iter().enumerate() {
                match out.get_mut(i) {
                    Some(slot) => *slot = merged_value(slot, v),
                    None => out.push(v.clone()),
                }
            }
            Value::Array(out)
        }
        (Value::Object(_), _) | (_, Value::Object(_))
            if is_container(base) && is_container(over) =>
        {
            let mut out = as_map(base);
            for (k, v) in as_map(over) {
                let merged = match out.get(&k) {
                    Some(slot) => merged_value(slot, &v),
                    None => v,
                };
                out.insert(k, merged);
            }
            from_php_keys(out)
        }
        _ => over.clone(),
    }
}

fn merged_value(slot: &Value, over: &Value) -> Value {
    if is_container(slot) && is_container(over) {
        replace_recursive(slot, over)
    } else {
        over.clone()
    }
}

fn is_container(v: &Value) -> bool {
    v.is_array() || v.is_object()
}

fn as_map(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect(),
        _ => Map::new(),
    }
}

/// An object whose keys are `0..n` in order is a PHP list; anything else stays an object.
fn from_php_keys(map: Map<String, Value>) -> Value {
    let is_list = !map.is_empty() && map.keys().enumerate().all(|(i, k)| *k == i.to_string());
    if is_list {
        Value::Array(map.into_iter().map(|(_, v)| v).collect())
    } else {
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored(doc: Value) -> Stored {
        parse_stored(&doc).unwrap()
    }

    #[test]
    fn rows_are_merged_over_the_configuration_as_php_does() {
        let merged = replace_recursive(
            &json!({"parameters": {"a": 1, "list": [1, 2, 3], "o": {"x": 1}},
                    "storage": {"input": {"tables": [{"source": "in.c-a.b", "destination": "b.csv"}]}}}),
            &json!({"parameters": {"b": 2, "list": [9], "o": "flat"},
                    "storage": {"input": {"tables": [{"destination": "c.csv"}]}}}),
        );
        assert_eq!(
            merged,
            json!({"parameters": {"a": 1, "list": [9, 2, 3], "o": "flat", "b": 2},
                   "storage": {"input": {"tables": [{"source": "in.c-a.b", "destination": "c.csv"}]}}})
        );
        assert_eq!(
            replace_recursive(&json!([1]), &json!({"1": 2})),
            json!([1, 2])
        );
        assert_eq!(
            replace_recursive(&json!([1]), &json!({"x": 2})),
            json!({"0": 1, "x": 2})
        );
        assert_eq!(
            replace_recursive(&json!({"a": [1]}), &json!({"a": null})),
            json!({"a": null})
        );
    }

    #[test]
    fn enabled_rows_run_in_order_and_disabled_ones_are_skipped() {
        let s = stored(json!({"id": 12, "version": 3, "name": "x",
        "configuration": {"parameters": {"p": 1}},
        "rows": [
            {"id": "r1", "isDisabled": false, "configuration": {"parameters": {"q": 1}}},
            {"id": "r2", "isDisabled": true, "configuration": null},
            {"id": 3, "configuration": {"parameters": {"p": 2}}},
        ]}));
        assert_eq!(s.id.as_deref(), Some("12"));
        let plan = plan(&s, &[]).unwrap();
        assert_eq!(
            plan,
            vec![
                Planned::Run {
                    row_id: Some("r1".into()),
                    configuration: json!({"parameters": {"p": 1, "q": 1}})
                },
                Planned::Skipped {
                    row_id: "r2".into()
                },
                Planned::Run {
                    row_id: Some("3".into()),
                    configuration: json!({"parameters": {"p": 2}})
                },
            ]
        );
        // Asked for by id, a disabled row runs; an unknown id is refused.
        let only = super::plan(&s, &["r2".to_string()]).unwrap();
        assert!(matches!(&only[..], [Planned::Run { row_id: Some(r), .. }] if r == "r2"));
        let err = super::plan(&s, &["nope".to_string()]).unwrap_err();
        assert!(err.to_string().contains("None of rows \"nope\" was found."));
        // No rows: one run of the configuration.
        let single = stored(json!({"configuration": {"parameters": {}}}));
        assert_eq!(super::plan(&single, &[]).unwrap().len(), 1);
        assert!(super::plan(&single, &["r1".to_string()]).is_err());
    }

    #[test]
    fn processors_in_both_places_and_bad_documents_are_refused() {
        let processors = json!({"before": [{"definition": {"component": "p"}}]});
        let s = stored(json!({"configuration": {"processors": processors},
            "rows": [{"id": "a", "configuration": {}}, {"id": "b", "configuration": {"processors": processors}}]}));
        let err = plan(&s, &[]).unwrap_err();
        assert!(
            err.to_string().contains("rows[1].configuration.processors"),
            "{err}"
        );
        assert!(err.to_string().contains("not in both places"), "{err}");

        for (doc, key) in [
            (json!({"configuration": {}, "row": []}), "row"),
            (json!({"configuration": 5}), "configuration"),
            (
                json!({"configuration": {}, "rows": [{"configuration": {}}]}),
                "rows[0].id",
            ),
            (
                json!({"configuration": {}, "rows": [{"id": "a", "isDisabled": "no"}]}),
                "rows[0].isDisabled",
            ),
            (
                json!({"configuration": {}, "rows": [{"id": "a", "bogus": 1}]}),
                "rows[0].bogus",
            ),
        ] {
            let err = parse_stored(&doc).unwrap_err();
            assert!(err.is_user_error());
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        assert!(is_stored_form(&json!({"configuration": {}})));
        assert!(!is_stored_form(&json!({"parameters": {}})));
    }
}
