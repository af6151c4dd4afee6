//! Variables, vault variables and shared code, resolved as Keboola's
//! `configuration-variables-resolver` resolves them, in its order: shared code first, then
//! vault variables (`{{ vault.NAME }}`, always), then configuration variables (`{{ NAME }}`,
//! Mustache, only when the configuration names a `variables_id` or values were given here).
//!
//! Like Keboola, the placeholders are replaced in the configuration's JSON text: an escaped
//! tag gets the value JSON-escaped (so it arrives exactly as given), an unescaped one
//! (`{{{ NAME }}}`, `{{& NAME }}`) the raw text, which may break the document (a user error,
//! as in Keboola). Of Mustache, comments are supported too; sections, partials and delimiter
//! changes are refused (no configuration variable is a list or a template).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Where the values of a run's placeholders come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Configuration variables by name (`--variables FILE`, `--var NAME=VALUE`), in order;
    /// a later entry of a name wins.
    pub variables: Vec<(String, String)>,
    /// Vault variables by key (`--vault FILE`).
    pub vault: Vec<(String, String)>,
    /// The shared code configuration (`--shared-code FILE`), if given.
    pub shared_code: Option<SharedCode>,
    /// Values to hide in everything a run shows, as `#` values are: the vault's variables
    /// flagged `encrypted` (their placeholders may sit under keys without `#`).
    pub secrets: Vec<String>,
}

/// A `keboola.shared-code` configuration: its id and each row's `code_content`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCode {
    /// The configuration id (what `shared_code_id` names).
    pub id: String,
    /// Row id and its code snippets, in order.
    pub rows: Vec<(String, Vec<Value>)>,
}

/// Reads Keboola's variable values (`{"values": [{"name", "value"}]}`, a `keboola.variables`
/// row's configuration, or such a row with the values under `configuration`).
pub fn parse_values(document: &Value) -> Result<Vec<(String, String)>> {
    let doc = match document.get("configuration") {
        Some(inner) if document.get("values").is_none() => inner,
        _ => document,
    };
    let values = match doc.get("values") {
        Some(Value::Array(values)) => values,
        _ => {
            return Err(Error::config(
                "values",
                "expected a list of {\"name\", \"value\"}",
            ));
        }
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("values[{i}]");
            let name = scalar_text(v.get("name"), &format!("{at}.name"))?;
            if name.is_empty() {
                return Err(Error::config(
                    format!("{at}.name"),
                    "Variable name cannot be empty.",
                ));
            }
            let value = scalar_text(v.get("value"), &format!("{at}.value"))?;
            refuse_cipher(&value, &format!("{at}.value"))?;
            Ok((name, value))
        })
        .collect()
}

/// The values of the vault's variables flagged `encrypted` (the Vault API's `flags`).
pub fn vault_secrets(document: &Value) -> Vec<String> {
    let encrypted = |v: &Value| {
        v.get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|f| f == "encrypted"))
    };
    document
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|v| encrypted(v))
                .filter_map(|v| v.get("value").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A value Keboola encrypted cannot be used here: the user must put the plain one in the file.
fn refuse_cipher(value: &str, at: &str) -> Result<()> {
    match super::cloud_only::cipher_prefix(value) {
        Some(prefix) => Err(Error::config(
            at,
            format!(
                "the value is encrypted by Keboola ({prefix}...) and only Keboola's stack can \
                 decrypt it; put the plain value in this file"
            ),
        )),
        None => Ok(()),
    }
}

/// Reads the Vault API's list of variables (`[{"key", "value", ...}]`).
pub fn parse_vault(document: &Value) -> Result<Vec<(String, String)>> {
    let entries = document
        .as_array()
        .ok_or_else(|| Error::config("root", "expected a list of {\"key\", \"value\"}"))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("[{i}]");
            let key = scalar_text(v.get("key"), &format!("{at}.key"))?;
            if key.is_empty() {
                return Err(Error::config(format!("{at}.key"), "cannot be empty"));
            }
            let value = scalar_text(v.get("value"), &format!("{at}.value"))?;
            refuse_cipher(&value, &format!("{at}.value"))?;
            Ok((key, value))
        })
        .collect()
}

/// Reads a `keboola.shared-code` configuration in the Storage API's form
/// (`{"id", "rows": [{"id", "configuration": {"code_content": [...] | "..."}}]}`).
pub fn parse_shared_code(document: &Value) -> Result<SharedCode> {
    let id = scalar_text(document.get("id"), "id")?;
    let rows = match document.get("rows") {
        Some(Value::Array(rows)) => rows,
        _ => return Err(Error::config("rows", "expected the shared code's rows")),
    };
    let rows = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let at = format!("rows[{i}]");
            let row_id = scalar_text(row.get("id"), &format!("{at}.id"))?;
            let code = match row.get("configuration").and_then(|c| c.get("code_content")) {
                Some(Value::String(s)) => vec![Value::String(s.clone())],
                Some(Value::Array(items)) if items.iter().all(is_scalar) => items.clone(),
                _ => {
                    return Err(Error::config(
                        format!("{at}.configuration.code_content"),
                        "expected a string or a list of strings",
                    ));
                }
            };
            Ok((row_id, code))
        })
        .collect::<Result<_>>()?;
    Ok(SharedCode { id, rows })
}

fn scalar_text(value: Option<&Value>, at: &str) -> Result<String> {
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(true)) => Ok("1".into()),
        Some(Value::Bool(false)) | Some(Value::Null) => Ok(String::new()),
        None => Err(Error::config(at, "missing")),
        Some(_) => Err(Error::config(at, "expected a string")),
    }
}

/// Shared code, then vault variables, then configuration variables, as Keboola resolves a
/// configuration before a run; a placeholder left without a value is a user error naming it.
pub fn resolve(configuration: &Value, sources: &Sources) -> Result<Value> {
    let configuration = resolve_shared_code(configuration, sources.shared_code.as_ref())?;
    let mut missing = BTreeSet::new();
    let text = serde_json::to_string(&configuration).map_err(|e| Error::Parse {
        what: "configuration".into(),
        source: e,
    })?;
    let text = render_vault(&text, &sources.vault, &mut missing);
    let variables_id = configuration
        .get("variables_id")
        .filter(|v| !super::tree::is_empty_php(v));
    let text = match (variables_id, sources.variables.is_empty()) {
        (None, true) => text,
        (Some(id), true) => {
            return Err(Error::config(
                "variables_id",
                format!(
                    "the configuration uses the variables of configuration {id}, whose values \
                     are not available locally: give them with --variables FILE or --var \
                     NAME=VALUE"
                ),
            ));
        }
        (_, false) => render_mustache(&text, &sources.variables, &mut missing)?,
    };
    if !missing.is_empty() {
        return Err(Error::config(
            "variables",
            format!(
                "Missing values for placeholders: {} (give them with --var NAME=VALUE or \
                 --variables FILE, vault values with --vault FILE)",
                missing.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    serde_json::from_str(&text).map_err(|e| {
        Error::config(
            "variables",
            format!("Variable replacement resulted in invalid configuration, error: {e}"),
        )
    })
}

/// `{{ vault.NAME }}` (not after a third `{`), replaced JSON-escaped; unknown names are kept
/// and recorded as missing.
fn render_vault(text: &str, vault: &[(String, String)], missing: &mut BTreeSet<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let after_third = out.ends_with('{');
        let parsed = tag[2..].find("}}").and_then(|end| {
            let inner = &tag[2..2 + end];
            let name = inner.trim().strip_prefix("vault.")?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            ok.then_some((name, 2 + end + 2))
        });
        match parsed {
            Some((name, len)) if !after_third => {
                match vault.iter().rev().find(|(k, _)| k == name) {
                    Some((_, value)) => out.push_str(&json_escaped(value)),
                    None => {
                        missing.insert(format!("vault.{name}"));
                        out.push_str(&tag[..len]);
                    }
                }
                rest = &tag[len..];
            }
            _ => {
                out.push_str("{{");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Mustache's variables and comments over the JSON text; values JSON-escaped unless the tag
/// is unescaped.
fn render_mustache(
    text: &str,
    values: &[(String, String)],
    missing: &mut BTreeSet<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let (inner, len, escaped) = if let Some(body) = tag.strip_prefix("{{{") {
            match body.find("}}}") {
                Some(end) => (&body[..end], 3 + end + 3, false),
                None => (tag, 0, true),
            }
        } else {
            match tag[2..].find("}}") {
                Some(end) => (&tag[2..2 + end], 2 + end + 2, true),
                None => (tag, 0, true),
            }
        };
        if len == 0 {
            // An opening without a closing: text, as Mustache leaves it.
            out.push_str(rest.get(start..).unwrap_or_default());
            return Ok(out);
        }
        let inner = inner.trim();
        let (sigil, name) = match inner.chars().next() {
            Some(c @ ('&' | '!' | '#' | '^' | '/' | '>' | '<' | '=' | '$')) if escaped => {
                (Some(c), inner[1..].trim())
            }
            _ => (None, inner),
        };
        match sigil {
            Some('!') => {}
            Some('&') | None if !name.is_empty() => {
                let raw = sigil == Some('&') || !escaped;
                match values.iter().rev().find(|(n, _)| n == name) {
                    Some((_, value)) if raw => out.push_str(value),
                    Some((_, value)) => out.push_str(&json_escaped(value)),
                    None => {
                        missing.insert(name.to_string());
                    }
                }
            }
            Some(other) => {
                return Err(Error::config(
                    "variables",
                    format!(
                        "the Mustache tag {{{{{other}{name}}}}} (a section, partial or delimiter \
                         change) is not supported: configuration variables are plain values"
                    ),
                ));
            }
            None => out.push_str(&tag[..len]),
        }
        rest = &tag[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value as it sits inside a JSON string: JSON-escaped, without the quotes.
fn json_escaped(value: &str) -> String {
    let quoted = Value::String(value.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Keboola's shared code: with `shared_code_id` and `shared_code_row_ids` set, every list of
/// scalars in the configuration has each element holding `{{ rowId }}` replaced by that row's
/// code (all of its snippets, spliced into the list); an element without a placeholder of a
/// linked row stays as it is (its other placeholders are variables).
fn resolve_shared_code(configuration: &Value, code: Option<&SharedCode>) -> Result<Value> {
    let id = configuration
        .get("shared_code_id")
        .filter(|v| !super::tree::is_empty_php(v));
    let row_ids = configuration
        .get("shared_code_row_ids")
        .filter(|v| !super::tree::is_empty_php(v));
    let (Some(id), Some(row_ids)) = (id, row_ids) else {
        return Ok(configuration.clone());
    };
    let id = id.as_str().map_or_else(|| id.to_string(), str::to_string);
    let Some(code) = code else {
        return Err(Error::config(
            "shared_code_id",
            format!(
                "the configuration uses shared code {id:?}, which is not available locally: \
                 give its configuration (as the Storage API returns it) with --shared-code FILE"
            ),
        ));
    };
    if code.id != id {
        return Err(Error::config(
            "shared_code_id",
            format!(
                "is {id:?} but the shared code given is configuration {:?}",
                code.id
            ),
        ));
    }
    let row_ids = row_ids
        .as_array()
        .ok_or_else(|| Error::config("shared_code_row_ids", "expected a list of row ids"))?;
    let mut context: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, row_id) in row_ids.iter().enumerate() {
        let row_id = scalar_text(Some(row_id), &format!("shared_code_row_ids[{i}]"))?;
        let Some((_, snippets)) = code.rows.iter().find(|(r, _)| *r == row_id) else {
            return Err(Error::config(
                format!("shared_code_row_ids[{i}]"),
                format!(
                    "Shared code configuration cannot be read: row {row_id:?} is not in shared \
                     code configuration {id:?}"
                ),
            ));
        };
        context.push((row_id, snippets.clone()));
    }
    let mut out = configuration.clone();
    if let Value::Object(map) = &mut out {
        walk_object(map, &context);
    }
    Ok(out)
}

fn walk_object(map: &mut Map<String, Value>, context: &[(String, Vec<Value>)]) {
    for value in map.values_mut() {
        walk_value(value, context);
    }
}

fn walk_value(value: &mut Value, context: &[(String, Vec<Value>)]) {
    match value {
        Value::Array(items) if items.iter().all(is_scalar) => {
            *items = splice_shared_code(items, context);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| walk_value(v, context)),
        Value::Object(map) => walk_object(map, context),
        _ => {}
    }
}

/// One list of scalars, as Keboola's resolver splices it: an element naming no row of the
/// context (no `{{ id }}` of a linked row) stays as it is; one that names rows is replaced by
/// those rows' snippets, in the context's order, each row once (the rest of its text dropped).
fn splice_shared_code(items: &[Value], context: &[(String, Vec<Value>)]) -> Vec<Value> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(text) = item else {
            out.push(item.clone());
            continue;
        };
        let names = shared_code_placeholders(text);
        let mut used: Vec<&str> = Vec::new();
        for (id, snippets) in context {
            if names.contains(&id.as_str()) && !used.contains(&id.as_str()) {
                used.push(id);
                out.extend(snippets.iter().cloned());
            }
        }
        if used.is_empty() {
            out.push(item.clone());
        }
    }
    out
}

/// `{{NAME}}` with NAME of spaces, letters, digits, `_` and `-`: each name, trimmed.
fn shared_code_placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{{").map(|i| from + i) {
        let body = &text[start + 2..];
        let len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == '_' || c == '-'))
            .unwrap_or(body.len());
        if len > 0 && body[len..].starts_with("}}") {
            found.push(body[..len].trim());
            from = start + 2 + len + 2;
        } else {
            from = start + 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn variables_are_rendered_json_escaped_and_missing_ones_named() {
        let sources = Sources {
            variables: vars(&[("foo", "special \" ' { } chars\n"), ("n", "5")]),
            vault: vars(&[("key1", "v\\1")]),
            ..Default::default()
        };
        let config = json!({"parameters": {"p": "foo is {{ foo }} and {{foo}}",
            "q": "{{ vault.key1 }}", "{{ n }}": "{{! a comment }}x"}});
        let out = resolve(&config, &sources).unwrap();
        assert_eq!(
            out,
            json!({"parameters": {"p": "foo is special \" ' { } chars\n and special \" ' { } chars\n",
                "q": "v\\1", "5": "x"}})
        );
        let err = resolve(
            &json!({"variables_id": "1", "parameters": {"p": "{{ a }} {{ vault.b }} {{ foo }}"}}),
            &sources,
        )
        .unwrap_err();
        assert!(err.is_user_error());
        assert!(
            err.to_string()
                .contains("Missing values for placeholders: a, vault.b"),
            "{err}"
        );
        // Unescaped: the raw text, which may break the document, as in Keboola.
        let err = resolve(&json!({"p": "{{{ foo }}}"}), &sources).unwrap_err();
        assert!(
            err.to_string()
                .contains("resulted in invalid configuration"),
            "{err}"
        );
        let raw = resolve(
            &json!({"p": "{{& n }}"}),
            &Sources {
                variables: vars(&[("n", "a\\\"b")]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(raw, json!({"p": "a\"b"}));
        let err = resolve(&json!({"p": "{{# foo }}x{{/ foo }}"}), &sources).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn without_variables_id_or_values_placeholders_stay_but_vault_is_always_resolved() {
        let none = Sources::default();
        let config = json!({"p": "{{ name }}"});
        assert_eq!(resolve(&config, &none).unwrap(), config);
        let err = resolve(&json!({"p": "{{ vault.x }}"}), &none).unwrap_err();
        assert!(err.to_string().contains("vault.x"), "{err}");
        let err = resolve(&json!({"variables_id": "77", "p": "x"}), &none).unwrap_err();
        assert!(err.to_string().contains("--variables"), "{err}");
        // A third brace is not a vault tag.
        let vault = Sources {
            vault: vars(&[("x", "1")]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&json!({"p": "{{{ vault.x }}}"}), &vault).unwrap(),
            json!({"p": "{{{ vault.x }}}"})
        );
    }

    #[test]
    fn shared_code_is_spliced_into_lists_before_variables_are_rendered() {
        let code = parse_shared_code(&json!({"id": "sc", "rows": [
            {"id": "r1", "configuration": {"code_content": ["SELECT 1;", "SELECT {{ v }};"]}},
            {"id": "r2", "configuration": {"code_content": "ONE"}},
        ]}))
        .unwrap();
        let sources = Sources {
            variables: vars(&[("v", "2")]),
            shared_code: Some(code),
            ..Default::default()
        };
        let config = json!({"shared_code_id": "sc", "shared_code_row_ids": ["r1", "r2"],
            "parameters": {"blocks": [{"script": ["start", "{{r1}}", "{{ r2 }}", "{{ r3 }}", 7]}],
                           "not_a_list": "{{ r1 }}"}});
        let out = resolve(&config, &sources);
        // {{ r3 }} is no row: kept, and then a missing variable.
        assert!(out.unwrap_err().to_string().contains("r3"));
        let mut config = config;
        config["parameters"]["blocks"][0]["script"] = json!(["start", "{{r1}}", "{{ r2 }}", 7]);
        // Outside a list a shared code placeholder is a variable like any other.
        assert!(
            resolve(&config, &sources)
                .unwrap_err()
                .to_string()
                .contains("r1")
        );
        config["parameters"]
            .as_object_mut()
            .unwrap()
            .remove("not_a_list");
        let out = resolve(&config, &sources).unwrap();
        assert_eq!(
            out["parameters"]["blocks"][0]["script"],
            json!(["start", "SELECT 1;", "SELECT 2;", "ONE", 7])
        );
        // As Keboola's resolver: an element naming a linked row becomes the rows' code in
        // the order of shared_code_row_ids (its other text dropped); one naming none stays,
        // its placeholders left to the variables.
        config["parameters"]["blocks"][0]["script"] =
            json!(["x {{ r2 }} y {{r1}} {{r2}}", "SELECT {{ v }};", "{{ v }}"]);
        let out = resolve(&config, &sources).unwrap();
        assert_eq!(
            out["parameters"]["blocks"][0]["script"],
            json!(["SELECT 1;", "SELECT 2;", "ONE", "SELECT 2;", "2"])
        );
        let err = resolve(
            &json!({"shared_code_id": "other", "shared_code_row_ids": ["r1"]}),
            &sources,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
        let err = resolve(
            &json!({"shared_code_id": "sc", "shared_code_row_ids": ["nope"]}),
            &sources,
        )
        .unwrap_err();
        assert!(err.to_string().contains("shared_code_row_ids[0]"), "{err}");
        let err = resolve(
            &json!({"shared_code_id": "sc", "shared_code_row_ids": ["r1"]}),
            &Sources::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--shared-code"), "{err}");
    }

    #[test]
    fn value_files_in_keboolas_forms() {
        assert_eq!(
            parse_values(
                &json!({"values": [{"name": "a", "value": 1}, {"name": "b", "value": "x"}]})
            )
            .unwrap(),
            vars(&[("a", "1"), ("b", "x")])
        );
        assert!(parse_values(&json!({"values": [{"name": "", "value": 1}]})).is_err());
        assert!(parse_values(&json!({"vals": []})).is_err());
        assert_eq!(
            parse_vault(&json!([{"key": "k", "value": "v", "flags": ["encrypted"]}])).unwrap(),
            vars(&[("k", "v")])
        );
        assert!(parse_vault(&json!({"key": "k"})).is_err());
        let vault = json!([{"key": "a", "value": "plain"}, {"key": "b", "value": "s", "flags": ["encrypted"]}]);
        assert_eq!(vault_secrets(&vault), ["s"]);
        let err = parse_vault(&json!([{"key": "k", "value": "KBC::SecureKV::x"}])).unwrap_err();
        assert!(err.to_string().contains("[0].value"), "{err}");
        assert!(
            parse_values(&json!({"values": [{"name": "a", "value": "KBC::ProjectSecure::x"}]}))
                .is_err()
        );
    }
}
