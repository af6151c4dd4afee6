//! The whole job configuration: the root of Keboola's `Container` configuration tree and the
//! job definition's fix-ups; the `storage` sections are left to [`super::input`] and
//! [`super::output`].

use serde_json::{Value, json};

use super::tree::{check_keys, defaults, is_empty_php, object};
use super::{cloud_only, input, output};
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

/// Keboola's job configuration normalization: the `Container` configuration tree (strict
/// keys, defaults) followed by the job definition's own fix-ups (`storage`, `processors` and
/// `parameters` present, `[]` when empty). Unknown keys are a user error naming the path.
/// Old artefacts are tolerated: `image_parameters: []`, output `escaped_by`. A value only
/// Keboola's stack could resolve (a ciphertext, an OAuth Broker reference) is refused too.
pub fn normalize(config: &Value) -> Result<Value> {
    let mut config = parse(config)?;
    cloud_only::refuse(&config)?;
    if let Value::Object(root) = &mut config {
        for key in ["storage", "processors", "parameters"] {
            if root.get(key).is_none_or(is_empty_php) {
                root.insert(key.to_string(), json!([]));
            }
        }
    }
    Ok(config)
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
        input::normalize_section(input)?;
    }
    if let Some(output) = storage.get_mut("output") {
        output::normalize_section(output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::container_config;

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
