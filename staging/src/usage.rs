//! What a component reports besides its data: usage metrics and a result document.
//!
//! The component's usage metrics: `out/usage.json` (or `.yml`), a list of
//! `{"metric": ..., "value": ...}` entries that Keboola adds to the job (billing and
//! reporting). The file is optional; one that is there but malformed is an application error,
//! as Keboola's runner treats it.

use serde::Serialize;
use serde_json::Value;

use crate::config::{Format, parse_document};
use crate::error::{Error, Result};
use crate::layout::DataDir;

/// One metric a component reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Its name (non-empty).
    pub metric: String,
    /// Its value, as the component wrote it (a number or a string, non-empty).
    pub value: Value,
}

/// The metrics of `out/usage.<ext>`, `None` when the component wrote no such file. The file
/// is read as any output document (never through a link, at most 16 MiB).
pub fn read(dir: &DataDir, format: Format) -> Result<Option<Vec<Metric>>> {
    let name = format!("out/usage.{}", format.extension());
    let path = dir.data().join(&name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = crate::out_dir::read_document(&path)?;
    let invalid = |reason: String| Error::Usage {
        what: name.clone(),
        reason,
    };
    let document = parse_document(&bytes, format, &name).map_err(|e| invalid(e.to_string()))?;
    let Value::Array(items) = document else {
        return Err(invalid(
            "must be a list of {\"metric\", \"value\"} entries".into(),
        ));
    };
    let mut metrics = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut entry) = item else {
            return Err(invalid(format!("entry {i} is not an object")));
        };
        let mut take = |key: &str| -> Result<Value> {
            match entry.remove(key) {
                None | Some(Value::Null) => Err(invalid(format!(
                    "the child config \"{key}\" under \"usage.{i}\" must be configured"
                ))),
                Some(Value::String(s)) if s.is_empty() => Err(invalid(format!(
                    "the path \"usage.{i}.{key}\" cannot contain an empty value"
                ))),
                Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Ok(v),
                Some(_) => Err(invalid(format!("usage.{i}.{key} must be a scalar"))),
            }
        };
        let metric = take("metric")?;
        let value = take("value")?;
        if let Some(extra) = entry.keys().next() {
            return Err(invalid(format!(
                "unrecognized option \"{extra}\" under \"usage.{i}\""
            )));
        }
        metrics.push(Metric {
            metric: match metric {
                Value::String(s) => s,
                other => other.to_string(),
            },
            value,
        });
    }
    Ok(Some(metrics))
}

/// The component's `out/result.json`, a free-form JSON document the job result carries along
/// (no Keboola rule is known for it beyond being JSON); `None` when absent.
pub fn read_result(dir: &DataDir) -> Result<Option<Value>> {
    let path = dir.data().join("out/result.json");
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bytes = crate::out_dir::read_document(&path)?;
    parse_document(&bytes, Format::Json, "out/result.json").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(text: Option<&str>) -> (tempfile::TempDir, DataDir) {
        let work = tempfile::tempdir().unwrap();
        let dir = DataDir::create(work.path()).unwrap();
        if let Some(text) = text {
            std::fs::write(dir.data().join("out/usage.json"), text).unwrap();
        }
        (work, dir)
    }

    #[test]
    fn metrics_are_read_and_bad_files_refused() {
        let (_w, dir) = dir_with(None);
        assert_eq!(read(&dir, Format::Json).unwrap(), None);
        let (_w, dir) = dir_with(Some(
            r#"[{"metric": "API calls", "value": 42}, {"metric": "kB", "value": "1.5"}]"#,
        ));
        let metrics = read(&dir, Format::Json).unwrap().unwrap();
        assert_eq!(metrics[0].metric, "API calls");
        assert_eq!(metrics[1].value, Value::from("1.5"));
        for (text, want) in [
            ("not json", "invalid usage file out/usage.json"),
            (r#"{"metric": "a"}"#, "must be a list"),
            (
                r#"[{"metric": "a"}]"#,
                "\"value\" under \"usage.0\" must be configured",
            ),
            (
                r#"[{"metric": "", "value": 1}]"#,
                "usage.0.metric\" cannot contain an empty value",
            ),
            (
                r#"[{"metric": "a", "value": 1, "x": 2}]"#,
                "unrecognized option \"x\"",
            ),
        ] {
            let (_w, dir) = dir_with(Some(text));
            let err = read(&dir, Format::Json).unwrap_err();
            assert!(!err.is_user_error(), "{text}: an application error");
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }
}
