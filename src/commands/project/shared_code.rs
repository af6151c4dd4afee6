//! Shared code as `kbc` keeps it, back into what the Storage API holds (keboola-as-code's
//! `sharedcode` mappers): a `keboola.shared-code` configuration in
//! `<branch>/_shared/<target component>/` whose `config.json` names the target component
//! (`componentId`), its codes as rows (`codes/<name>/`, the code in `code.<ext>` of the target
//! component, split into scripts as the target's code is: the row's `code_content`). A
//! transformation links it with `shared_code_path` (relative to its branch folder) in its
//! `config.json` and uses a code as a whole script `-- {{:codes/<name>}}` (the path relative to
//! the shared code, after the code's comment marker); that becomes `shared_code_id`, the
//! `{{<row id>}}` script and the row id in `shared_code_row_ids` (each once, in kbc's order), which
//! the variables resolver then replaces as Keboola's does.

use std::path::Path;

use serde_json::{Value, json};

use super::Entry;
use super::blocks::Block;
use super::files::{self, Tree};
use super::scripts;

/// The component of shared code configurations.
pub const COMPONENT: &str = "keboola.shared-code";

/// A shared code configuration read from the project.
#[derive(Debug)]
pub struct SharedCode {
    /// Configuration id.
    pub id: String,
    /// Its folder, relative to the project.
    pub path: String,
    /// The component whose code it holds (`componentId` of its `config.json`).
    pub target: String,
    /// Rows: id, folder relative to the project, configuration with `code_content`.
    rows: Vec<(String, String, Value)>,
}

/// The shared code configuration `shared_code_path` (the value in `file`) names: relative to
/// the branch folder of `user`, in its branch.
pub fn by_path<'a>(
    entries: &'a [Entry],
    user: &Entry,
    value: &Value,
    file: &Path,
) -> Result<&'a Entry, String> {
    let at = |why: String| format!("{}: shared_code_path: {why}", file.display());
    let Value::String(rel) = value else {
        return Err(at(format!("expected a path, not {value}")));
    };
    let path = files::join(&user.branch_path, rel)
        .ok_or_else(|| at(format!("{rel:?} points outside the project")))?;
    let entry = entries.iter().find(|e| e.path == path).ok_or_else(|| {
        at(format!(
            "no shared code at {path:?}: .keboola/manifest.json has no configuration there"
        ))
    })?;
    if entry.component_id != COMPONENT {
        return Err(at(format!(
            "{path} is a {} configuration, not shared code ({COMPONENT})",
            entry.component_id
        )));
    }
    if entry.branch_id != user.branch_id {
        return Err(at(format!(
            "{path} is shared code of branch {}, not of this configuration's branch {}",
            entry.branch_id, user.branch_id
        )));
    }
    Ok(entry)
}

/// The shared code configuration `id` in the branch of `user`, if the project has it.
pub fn by_id<'a>(entries: &'a [Entry], user: &Entry, id: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| e.component_id == COMPONENT && e.id == id && e.branch_id == user.branch_id)
}

/// Reads the shared code configuration of `entry` (every row's code file); with `expected`,
/// shared code of another component is refused, as `kbc` refuses it for a transformation.
pub fn load(
    tree: &Tree,
    dir: &Path,
    entry: &Entry,
    expected: Option<&str>,
) -> Result<SharedCode, String> {
    let folder = dir.join(&entry.path);
    let file = folder.join("config.json");
    let config = tree.json(&file)?;
    let target = match config.get("componentId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return Err(format!(
                "{}: componentId: expected the component whose code this shared code holds",
                file.display()
            ));
        }
    };
    if let Some(component_id) = expected.filter(|c| *c != target) {
        return Err(format!(
            "{}: componentId: the shared code is for {target}, the configuration linking it \
             is of {component_id}",
            file.display()
        ));
    }
    let mut rows = Vec::new();
    for (id, rel) in &entry.rows {
        let row = folder.join(rel);
        let row_file = row.join("config.json");
        let mut configuration = if row_file.exists() {
            tree.json(&row_file)?
        } else {
            json!({})
        };
        if !configuration.is_object() {
            return Err(format!("{}: expected an object", row_file.display()));
        }
        let code = row.join(format!("code.{}", scripts::extension(&target)));
        configuration["code_content"] = json!(scripts::split(&tree.text(&code)?, &target));
        rows.push((id.clone(), format!("{}/{rel}", entry.path), configuration));
    }
    Ok(SharedCode {
        id: entry.id.clone(),
        path: entry.path.clone(),
        target,
        rows,
    })
}

impl SharedCode {
    /// Replaces each link script in `blocks` by its row's `{{<row id>}}`; the linked row ids,
    /// each once, in the order `kbc` writes them.
    pub fn link(&self, blocks: &mut [Block], component_id: &str) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        for code in blocks.iter_mut().flat_map(|b| b.codes.iter_mut()) {
            for script in &mut code.scripts {
                let Some(rel) = scripts::link(script, component_id) else {
                    continue;
                };
                let at = |why: String| format!("{}: {{{{:{rel}}}}}: {why}", code.file.display());
                let path = files::join(&self.path, rel)
                    .ok_or_else(|| at("points outside the project".into()))?;
                let (id, _, _) = self.rows.iter().find(|(_, p, _)| *p == path).ok_or_else(
                    || {
                        at(format!(
                            "no code of the shared code {} at {path:?} in .keboola/manifest.json",
                            self.path
                        ))
                    },
                )?;
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(at(format!("the row id {id:?} cannot be a placeholder")));
                }
                *script = format!("{{{{{id}}}}}");
                ids.push(id.clone());
            }
        }
        // kbc orders them by its row keys' text, which ends `<id>_config_row`.
        ids.sort_by_cached_key(|id| format!("{id}_config_row"));
        ids.dedup();
        Ok(ids)
    }

    /// The configuration as the Storage API returns it (what `--shared-code` takes).
    pub fn storage_form(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|(id, _, configuration)| json!({"id": id, "configuration": configuration}))
            .collect();
        json!({"id": self.id, "configuration": {"componentId": self.target}, "rows": rows})
    }
}
