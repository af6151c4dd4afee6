//! Resolving `out/files` into files to store.

use serde_json::{Map, Value};

use super::OutputSettings;
use super::plan::read_manifest;
use crate::config::{self, OUTPUT_FILE_KEYS};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::out_dir::{self, Entry};
use crate::storage::NewFile;

/// A resolved output file.
pub(super) struct FilePlan {
    pub(super) entry: Entry,
    pub(super) file: NewFile,
}

pub(super) fn plan_files(
    dir: &DataDir,
    mappings: &[Value],
    settings: &OutputSettings,
) -> Result<Vec<FilePlan>> {
    let found = out_dir::scan(&dir.out_files(), false, "file")?;
    for m in mappings {
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        if !found.contains_key(source) {
            return Err(Error::SourceNotFound {
                kind: "file",
                source_name: source.to_string(),
                dir: dir.out_files(),
            });
        }
    }
    let mut plans = Vec::new();
    for (name, entry) in found {
        let what = format!("out/files/{name}");
        let config = match mappings
            .iter()
            .find(|m| m.get("source").and_then(Value::as_str) == Some(&name))
        {
            // A mapping entry replaces the manifest completely.
            Some(m) => m.as_object().cloned().unwrap_or_default(),
            None => match &entry.manifest {
                Some(path) => read_manifest(path, settings.format, OUTPUT_FILE_KEYS)?,
                None => Map::new(),
            },
        };
        let mut tags = config::strings(&config, "tags", &what)?;
        tags.push(format!("componentId: {}", settings.component_id));
        if let Some(c) = &settings.config_id {
            tags.push(format!("configurationId: {c}"));
        }
        if let Some(r) = &settings.row_id {
            tags.push(format!("configurationRowId: {r}"));
        }
        if let Some(r) = &settings.run_id {
            tags.push(format!("runId: {r}"));
        }
        let flag = |key: &str, default: bool| match config.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::mapping(
                &what,
                format!("{key} must be a boolean, got {other}"),
            )),
        };
        let file = NewFile {
            name: name.clone(),
            tags,
            is_public: flag("is_public", false)?,
            is_permanent: flag("is_permanent", false)?,
            is_encrypted: flag("is_encrypted", true)?,
        };
        plans.push(FilePlan { entry, file });
    }
    Ok(plans)
}
