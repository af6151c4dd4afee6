//! `dockless run --project DIR [PATH]`: a project directory as Keboola's `kbc` CLI
//! (keboola-as-code) pulls it: `.keboola/manifest.json` lists the branches (`{id, path}`) and
//! configurations (`{branchId, componentId, id, path, rows: [{id, path}], relations}`); a
//! configuration's folder (`<branch path>/<config path>`) holds `config.json` (its content),
//! `meta.json` (`name`, `isDisabled`) and `rows/<row>/` with the same two files; the
//! `keboola.variables` configuration related to it (`relations: [{"type": "variablesFor",
//! "componentId", "configId"}]`) sits in its `variables/` folder, its values rows in
//! `variables/values/<name>/`, the one marked `variablesValuesFor` being the default values.
//!
//! A transformation's code sits in its `blocks/` folder ([`blocks`]) and may link shared code
//! by `shared_code_path` ([`shared_code`]); `kbc` turns both back into `parameters.blocks`,
//! `shared_code_id` and `shared_code_row_ids` when it pushes, and so does this module.
//!
//! PATH selects a configuration; it becomes a configuration in the Storage API's form (with
//! its rows) for the job pipeline, the component, configuration and branch ids from the
//! manifest, the default variable values as `--variables`, the shared code it uses as
//! `--shared-code`. Without PATH the runnable configurations are listed. Every file is read
//! from inside the project ([`files`]).

mod blocks;
mod files;
mod scripts;
mod shared_code;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use self::files::Tree;
use self::shared_code::SharedCode;
use crate::cli::run::RunArgs;

/// Components that are not run as jobs of their own (their configurations belong to others).
const NOT_RUNNABLE: [&str; 3] = [
    "keboola.variables",
    "keboola.shared-code",
    "keboola.scheduler",
];

/// One configuration of the manifest, its folder resolved.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path from the project directory (`main/extractor/keboola.ex-http/orders`).
    pub path: String,
    /// Component id.
    pub component_id: String,
    /// Configuration id.
    pub id: String,
    /// Branch id.
    pub branch_id: String,
    /// Its branch's folder (`main`).
    pub branch_path: String,
    /// Rows: id and folder path relative to the configuration's folder.
    pub rows: Vec<(String, String)>,
    /// The manifest entry (for relations).
    raw: Value,
}

/// What `--project` asked for.
pub enum Outcome {
    /// The runnable configurations were listed (stdout): nothing to run.
    Listed,
    /// The job is filled in: run it.
    Run,
}

/// Reads the project and fills `args` for the configuration at its path (the first
/// positional argument), or lists the configurations when there is none. Every error is the
/// user's, naming the file and the field.
pub fn apply(dir: &Path, args: &mut RunArgs) -> Result<Outcome, String> {
    let tree = Tree::open(dir)?;
    let entries = read(&tree, dir)?;
    let Some(wanted) = args.image.take() else {
        let mut out = String::new();
        for e in entries
            .iter()
            .filter(|e| !NOT_RUNNABLE.contains(&e.component_id.as_str()))
        {
            out.push_str(&format!(
                "{}\t{}\t{}\t{} rows\n",
                e.path,
                e.component_id,
                e.id,
                e.rows.len()
            ));
        }
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), "{out}");
        return Ok(Outcome::Listed);
    };
    let wanted = relative(dir, &wanted);
    let entry = entries.iter().find(|e| e.path == wanted).ok_or_else(|| {
        format!(
            "project {}: no configuration at {wanted:?} in .keboola/manifest.json (run \
                 `dockless run --project {}` to list them)",
            dir.display(),
            dir.display()
        )
    })?;
    if NOT_RUNNABLE.contains(&entry.component_id.as_str()) {
        return Err(format!(
            "project {}: {wanted} is a {} configuration, which belongs to another \
             configuration and is not run on its own",
            dir.display(),
            entry.component_id
        ));
    }
    let folder = dir.join(&entry.path);
    let config_file = folder.join("config.json");
    let mut configuration = tree.json(&config_file)?;
    let Some(content) = configuration.as_object_mut() else {
        return Err(format!("{}: expected an object", config_file.display()));
    };
    let code_path = content.remove("shared_code_path");
    if meta_disabled(&tree, &folder)? {
        return Err(format!(
            "{}: isDisabled: the configuration is disabled (as Keboola, it is not run)",
            folder.join("meta.json").display()
        ));
    }
    let shared = code_blocks(&tree, dir, &entries, entry, &mut configuration, code_path)?;
    let shared = match shared {
        Some(code) => Some(code),
        None if args.job.shared_code.is_none() => {
            shared_code_by_id(&tree, dir, &entries, entry, &configuration, &config_file)?
        }
        None => None,
    };
    if args.job.shared_code.is_none() {
        args.job.shared_code_inline = shared.map(|code| code.storage_form());
    }
    let mut rows = Vec::new();
    for (id, path) in &entry.rows {
        let row = folder.join(path);
        rows.push(json!({
            "id": id,
            "isDisabled": meta_disabled(&tree, &row)?,
            "configuration": tree.json(&row.join("config.json"))?,
        }));
    }
    // The variables configuration related to this one, its default values.
    if let Some(vars) = entries.iter().find(|v| {
        v.component_id == "keboola.variables"
            && v.raw["relations"].as_array().is_some_and(|rel| {
                rel.iter().any(|r| {
                    r["type"] == "variablesFor"
                        && r["componentId"] == entry.component_id.as_str()
                        && id_text(&r["configId"]).as_deref() == Some(entry.id.as_str())
                })
            })
    }) {
        configuration["variables_id"] = json!(vars.id);
        let vars_folder = dir.join(&vars.path);
        let default = vars.raw["rows"].as_array().and_then(|rows| {
            rows.iter().find(|r| {
                r["relations"]
                    .as_array()
                    .is_some_and(|rel| rel.iter().any(|x| x["type"] == "variablesValuesFor"))
            })
        });
        if let Some(row) = default {
            configuration["variables_values_id"] = json!(id_text(&row["id"]));
            let values = vars_folder
                .join(row["path"].as_str().unwrap_or_default())
                .join("config.json");
            if args.job.variables.is_none() {
                tree.resolve(&values)?;
                args.job.variables = Some(values);
            }
        }
    }
    let job = &mut args.job;
    job.config_inline = Some(json!({
        "id": entry.id,
        "configuration": configuration,
        "rows": rows,
    }));
    job.config_label = Some(config_file);
    job.component_id
        .get_or_insert_with(|| entry.component_id.clone());
    job.config_id.get_or_insert_with(|| entry.id.clone());
    job.branch_id.get_or_insert_with(|| entry.branch_id.clone());
    Ok(Outcome::Run)
}

/// A transformation's `blocks/` folder into `parameters.blocks` and its `shared_code_path`
/// (taken out of `configuration`, as `kbc` takes it out) into `shared_code_id`,
/// `shared_code_row_ids` and the linked scripts; the shared code read, when linked.
fn code_blocks(
    tree: &Tree,
    dir: &Path,
    entries: &[Entry],
    entry: &Entry,
    configuration: &mut Value,
    code_path: Option<Value>,
) -> Result<Option<SharedCode>, String> {
    let folder = dir.join(&entry.path);
    let config_file = folder.join("config.json");
    let blocks_dir = folder.join("blocks");
    if blocks_dir.symlink_metadata().is_err() {
        return match code_path {
            None => Ok(None),
            Some(_) => Err(format!(
                "{}: shared_code_path: shared code is linked by a transformation's code \
                 blocks, but {} has none",
                config_file.display(),
                blocks_dir.display()
            )),
        };
    }
    let mut blocks = blocks::read(tree, &folder, &entry.component_id)?;
    let shared = match code_path {
        Some(value) => {
            let at = shared_code::by_path(entries, entry, &value, &config_file)?;
            let code = shared_code::load(tree, dir, at, Some(&entry.component_id))?;
            let ids = code.link(&mut blocks, &entry.component_id)?;
            configuration["shared_code_id"] = json!(code.id);
            configuration["shared_code_row_ids"] = json!(ids);
            Some(code)
        }
        None => None,
    };
    if !configuration["parameters"].is_object() {
        configuration["parameters"] = json!({});
    }
    configuration["parameters"]["blocks"] = blocks::to_json(&blocks);
    Ok(shared)
}

/// The shared code a configuration names by `shared_code_id` (as `kbc` keeps it for
/// components other than transformations with code blocks), from the project: the
/// configuration of that id in the same branch. None when the configuration uses none; an
/// error when it uses one the project does not have.
fn shared_code_by_id(
    tree: &Tree,
    dir: &Path,
    entries: &[Entry],
    entry: &Entry,
    configuration: &Value,
    config_file: &Path,
) -> Result<Option<SharedCode>, String> {
    let Some(id) = configuration.get("shared_code_id").filter(|v| !empty(v)) else {
        return Ok(None);
    };
    let id = id_text(id).ok_or_else(|| {
        format!(
            "{}: shared_code_id: expected a configuration id, not {id}",
            config_file.display()
        )
    })?;
    match shared_code::by_id(entries, entry, &id) {
        Some(at) => shared_code::load(tree, dir, at, None).map(Some),
        None if configuration.get("shared_code_row_ids").is_none_or(empty) => Ok(None),
        None => Err(format!(
            "{}: shared_code_id: the shared code configuration {id} is not in the project's \
             branch {} (.keboola/manifest.json); pull it with kbc or give it with \
             --shared-code FILE",
            config_file.display(),
            entry.branch_id
        )),
    }
}

/// Empty as PHP's `empty()` sees a JSON value (how Keboola tests these keys).
fn empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty() || s == "0",
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// PATH as the manifest writes it: relative to the project, without `./` or a trailing `/`.
fn relative(dir: &Path, wanted: &str) -> String {
    let path = Path::new(wanted);
    let inside = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) if p.starts_with(&d) => p.strip_prefix(&d).map(Path::to_path_buf).ok(),
        _ => None,
    };
    let text = inside
        .unwrap_or_else(|| PathBuf::from(wanted))
        .to_string_lossy()
        .into_owned();
    text.trim_start_matches("./")
        .trim_end_matches('/')
        .to_string()
}

/// The manifest's configurations with their folders from the project directory.
pub fn read(tree: &Tree, dir: &Path) -> Result<Vec<Entry>, String> {
    let file = dir.join(".keboola/manifest.json");
    let manifest = tree.json(&file)?;
    let at = |field: &str, why: &str| format!("{}: {field}: {why}", file.display());
    let mut branches = Vec::new();
    for (i, b) in manifest["branches"]
        .as_array()
        .ok_or_else(|| at("branches", "expected a list"))?
        .iter()
        .enumerate()
    {
        let id =
            id_text(&b["id"]).ok_or_else(|| at(&format!("branches[{i}].id"), "expected an id"))?;
        let path = b["path"]
            .as_str()
            .ok_or_else(|| at(&format!("branches[{i}].path"), "expected a path"))?;
        branches.push((id, path.to_string()));
    }
    let configs = manifest["configurations"]
        .as_array()
        .ok_or_else(|| at("configurations", "expected a list"))?;
    // First every configuration's own folder (relative to its branch), then the variables
    // configurations' (relative to the configuration they belong to).
    let mut entries: Vec<Entry> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let field = |name: &str| format!("configurations[{i}].{name}");
        let branch_id =
            id_text(&c["branchId"]).ok_or_else(|| at(&field("branchId"), "expected an id"))?;
        let branch_path = branches
            .iter()
            .find(|(id, _)| *id == branch_id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                at(
                    &field("branchId"),
                    &format!("no branch {branch_id} in branches"),
                )
            })?;
        let component_id = c["componentId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at(&field("componentId"), "expected a component id"))?;
        let id = id_text(&c["id"]).ok_or_else(|| at(&field("id"), "expected an id"))?;
        let path = c["path"]
            .as_str()
            .filter(|s| !s.is_empty() && !s.contains(".."))
            .ok_or_else(|| at(&field("path"), "expected a relative path"))?;
        let mut rows = Vec::new();
        for (j, r) in c["rows"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let rid = id_text(&r["id"])
                .ok_or_else(|| at(&field(&format!("rows[{j}].id")), "expected an id"))?;
            let rpath = r["path"]
                .as_str()
                .filter(|s| !s.is_empty() && !s.contains(".."))
                .ok_or_else(|| {
                    at(
                        &field(&format!("rows[{j}].path")),
                        "expected a relative path",
                    )
                })?;
            rows.push((rid, rpath.to_string()));
        }
        entries.push(Entry {
            path: format!("{branch_path}/{path}"),
            branch_path,
            component_id: component_id.to_string(),
            id,
            branch_id,
            rows,
            raw: c.clone(),
        });
    }
    // A variables configuration sits in the folder of what it belongs to: a configuration
    // (`variablesFor`) or a shared code's row (`sharedCodeVariablesFor`).
    let parents: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e.branch_id.clone(),
                e.component_id.clone(),
                e.id.clone(),
                e.path.clone(),
            )
        })
        .collect();
    let rows: Vec<(String, String, String, String)> = entries
        .iter()
        .filter(|e| e.component_id == shared_code::COMPONENT)
        .flat_map(|e| {
            e.rows.iter().map(|(id, path)| {
                (
                    e.branch_id.clone(),
                    e.id.clone(),
                    id.clone(),
                    format!("{}/{path}", e.path),
                )
            })
        })
        .collect();
    for e in entries
        .iter_mut()
        .filter(|e| e.component_id == "keboola.variables")
    {
        let relations = e.raw["relations"].as_array().cloned().unwrap_or_default();
        let parent = relations.iter().find_map(|r| match r["type"].as_str() {
            Some("variablesFor") => parents
                .iter()
                .find(|(b, c, id, _)| {
                    *b == e.branch_id
                        && r["componentId"] == c.as_str()
                        && id_text(&r["configId"]).as_deref() == Some(id.as_str())
                })
                .map(|p| p.3.clone()),
            Some("sharedCodeVariablesFor") => rows
                .iter()
                .find(|(b, config, row, _)| {
                    *b == e.branch_id
                        && id_text(&r["configId"]).as_deref() == Some(config.as_str())
                        && id_text(&r["rowId"]).as_deref() == Some(row.as_str())
                })
                .map(|p| p.3.clone()),
            _ => None,
        });
        if let Some(parent_path) = parent {
            let own = e.raw["path"].as_str().unwrap_or_default();
            e.path = format!("{parent_path}/{own}");
        }
    }
    Ok(entries)
}

/// An id as text: the manifest writes branch ids as numbers, configuration ids as strings.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `meta.json`'s `isDisabled` (false when the file is absent).
fn meta_disabled(tree: &Tree, folder: &Path) -> Result<bool, String> {
    let file = folder.join("meta.json");
    if !file.exists() {
        return Ok(false);
    }
    match tree.json(&file)?.get("isDisabled") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!(
            "{}: isDisabled: expected true or false, not {v}",
            file.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, doc: &Value) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, doc.to_string()).unwrap();
    }

    #[test]
    fn the_manifest_gives_paths_ids_and_the_variables_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            ".keboola/manifest.json",
            &json!({"version": 2, "project": {"id": 1, "apiHost": "x"},
            "branches": [{"id": 10, "path": "main"}],
            "configurations": [
                {"branchId": 10, "componentId": "demo", "id": "11", "path": "app/demo/a",
                 "rows": [{"id": "101", "path": "rows/one"}]},
                {"branchId": 10, "componentId": "keboola.variables", "id": "13",
                 "path": "variables",
                 "relations": [{"componentId": "demo", "configId": "11", "type": "variablesFor"}],
                 "rows": [{"id": "105", "path": "values/default",
                           "relations": [{"type": "variablesValuesFor"}]}]}
            ]}),
        );
        let entries = read(&Tree::open(dir.path()).unwrap(), dir.path()).unwrap();
        assert_eq!(entries[0].path, "main/app/demo/a");
        assert_eq!(entries[0].branch_id, "10");
        assert_eq!(
            entries[0].rows,
            [("101".to_string(), "rows/one".to_string())]
        );
        assert_eq!(entries[1].path, "main/app/demo/a/variables");
        assert_eq!(
            relative(dir.path(), "./main/app/demo/a/"),
            "main/app/demo/a"
        );

        write(
            dir.path(),
            ".keboola/manifest.json",
            &json!({"branches": [{"id": 10, "path": "main"}],
                    "configurations": [{"branchId": 11, "componentId": "d", "id": "1", "path": "p"}]}),
        );
        let err = read(&Tree::open(dir.path()).unwrap(), dir.path()).unwrap_err();
        assert!(
            err.contains("manifest.json: configurations[0].branchId"),
            "{err}"
        );
    }

    fn put(dir: &Path, path: &str, text: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `dockless run --project DIR PATH` parsed, then [`apply`]d.
    fn applied(dir: &Path, path: &str) -> Result<RunArgs, String> {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            run: RunArgs,
        }
        let mut args = <Cmd as clap::Parser>::try_parse_from([
            "run",
            "--project",
            dir.to_str().unwrap(),
            path,
        ])
        .unwrap()
        .run;
        apply(dir, &mut args).map(|_| args)
    }

    const SF: &str = "keboola.snowflake-transformation";

    /// A snowflake transformation with two blocks linking two codes of its shared code, and
    /// an application naming the shared code by id.
    fn transformation_project(dir: &Path) {
        let manifest = json!({"version": 2,
        "branches": [{"id": 7, "path": "main"}, {"id": 8, "path": "dev"}],
        "configurations": [
            {"branchId": 7, "componentId": "keboola.shared-code", "id": "sc",
             "path": format!("_shared/{SF}"),
             "rows": [{"id": "12", "path": "codes/twelve"}, {"id": "2", "path": "codes/two"},
                      {"id": "30", "path": "codes/unused"}]},
            {"branchId": 7, "componentId": "keboola.variables", "id": "scv", "path": "variables",
             "relations": [{"type": "sharedCodeVariablesFor", "configId": "sc", "rowId": "2"}]},
            {"branchId": 7, "componentId": SF, "id": "t1", "path": "transformation/t",
             "rows": []},
            {"branchId": 7, "componentId": "app", "id": "a1", "path": "application/a"},
            {"branchId": 8, "componentId": SF, "id": "t2", "path": "transformation/t"}
        ]});
        put(dir, ".keboola/manifest.json", &manifest.to_string());
        let shared = format!("main/_shared/{SF}");
        put(
            dir,
            &format!("{shared}/config.json"),
            &json!({"componentId": SF}).to_string(),
        );
        put(
            dir,
            &format!("{shared}/codes/twelve/code.sql"),
            "SELECT 12;\nSELECT '12;';\n",
        );
        put(dir, &format!("{shared}/codes/twelve/config.json"), "{}");
        put(
            dir,
            &format!("{shared}/codes/two/code.sql"),
            "SELECT {{ n }};",
        );
        put(
            dir,
            &format!("{shared}/codes/unused/code.sql"),
            "SELECT 30;",
        );
        let t = "main/transformation/t";
        put(
            dir,
            &format!("{t}/config.json"),
            &json!({
            "parameters": {"keep": true, "blocks": "replaced"},
            "shared_code_path": format!("_shared/{SF}"),
            "shared_code_row_ids": ["30"]})
            .to_string(),
        );
        put(
            dir,
            &format!("{t}/blocks/001-one/meta.json"),
            r#"{"name": "One"}"#,
        );
        put(
            dir,
            &format!("{t}/blocks/001-one/001-a/meta.json"),
            r#"{"name": "A"}"#,
        );
        put(
            dir,
            &format!("{t}/blocks/001-one/001-a/code.sql"),
            "CREATE TABLE x (a int);\n\n-- {{:codes/two}}",
        );
        put(
            dir,
            &format!("{t}/blocks/001-one/002-b/meta.json"),
            r#"{"name": "B"}"#,
        );
        put(
            dir,
            &format!("{t}/blocks/001-one/002-b/code.sql"),
            "  --   {{:codes/twelve}}  \n",
        );
        put(
            dir,
            &format!("{t}/blocks/002-two/meta.json"),
            r#"{"name": "Two"}"#,
        );
        put(
            dir,
            &format!("{t}/blocks/002-two/001-c/meta.json"),
            r#"{"name": "C"}"#,
        );
        put(
            dir,
            &format!("{t}/blocks/002-two/001-c/code.sql"),
            "SELECT 1;\n-- {{:./codes/../codes/two}}",
        );
        put(
            dir,
            "main/application/a/config.json",
            &json!({
            "shared_code_id": "sc", "shared_code_row_ids": ["2"],
            "parameters": {"script": ["{{ 2 }}"]}})
            .to_string(),
        );
        put(
            dir,
            "dev/transformation/t/config.json",
            &json!({"shared_code_path": format!("../main/_shared/{SF}")}).to_string(),
        );
        put(dir, "dev/transformation/t/blocks/.gitkeep", "");
    }

    #[test]
    fn a_transformations_blocks_and_shared_code_become_the_stored_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        transformation_project(d);
        let args = applied(d, "main/transformation/t").unwrap();
        let config = args.job.config_inline.unwrap();
        assert_eq!(
            config["configuration"],
            json!({
                "parameters": {"keep": true, "blocks": [
                    {"name": "One", "codes": [
                        {"name": "A", "script": ["CREATE TABLE x (a int);", "{{2}}"]},
                        {"name": "B", "script": ["{{12}}"]}]},
                    {"name": "Two", "codes": [
                        {"name": "C", "script": ["SELECT 1;", "{{2}}"]}]}
                ]},
                "shared_code_id": "sc",
                // kbc's order: by "<id>_config_row".
                "shared_code_row_ids": ["12", "2"]
            })
        );
        let shared = args.job.shared_code_inline.unwrap();
        assert_eq!(shared["id"], "sc");
        assert_eq!(
            shared["rows"],
            json!([
                {"id": "12", "configuration": {"code_content": ["SELECT 12;", "SELECT '12;';"]}},
                {"id": "2", "configuration": {"code_content": ["SELECT {{ n }};"]}},
                {"id": "30", "configuration": {"code_content": ["SELECT 30;"]}}
            ])
        );
        // It resolves as Keboola's resolver would.
        let sources = dockless_staging::config::Sources {
            shared_code: Some(dockless_staging::config::parse_shared_code(&shared).unwrap()),
            variables: vec![("n".into(), "5".into())],
            ..Default::default()
        };
        let resolved =
            dockless_staging::config::resolve(&config["configuration"], &sources).unwrap();
        assert_eq!(
            resolved["parameters"]["blocks"][0]["codes"][0]["script"],
            json!(["CREATE TABLE x (a int);", "SELECT 5;"])
        );

        // By id, for a configuration that is no transformation.
        let args = applied(d, "main/application/a").unwrap();
        assert_eq!(args.job.shared_code_inline.unwrap()["id"], "sc");
        // The shared code's variables sit in its row's folder.
        let entries = read(&Tree::open(d).unwrap(), d).unwrap();
        let vars = entries.iter().find(|e| e.id == "scv").unwrap();
        assert_eq!(vars.path, format!("main/_shared/{SF}/codes/two/variables"));

        // Shared code of another branch is refused.
        let err = applied(d, "dev/transformation/t").unwrap_err();
        assert!(
            err.contains("dev/transformation/t/config.json: shared_code_path"),
            "{err}"
        );
        assert!(
            err.contains("not of this configuration's branch 8"),
            "{err}"
        );
    }

    #[test]
    fn malformed_transformations_and_shared_code_are_refused_naming_the_file() {
        type Change = dyn Fn(&Path);
        let cases: &[(&str, &Change, &str)] = &[
            (
                "a missing code file",
                &|d| {
                    std::fs::remove_file(
                        d.join("main/transformation/t/blocks/002-two/001-c/code.sql"),
                    )
                    .unwrap()
                },
                "main/transformation/t/blocks/002-two/001-c: missing code file",
            ),
            (
                "a missing shared code file",
                &|d| {
                    std::fs::remove_file(d.join(format!("main/_shared/{SF}/codes/unused/code.sql")))
                        .unwrap()
                },
                "codes/unused/code.sql: cannot read",
            ),
            (
                "a shared code path out of the project",
                &|d| {
                    put(
                        d,
                        "main/transformation/t/config.json",
                        r#"{"shared_code_path": "../../../etc"}"#,
                    )
                },
                "config.json: shared_code_path: \"../../../etc\" points outside the project",
            ),
            (
                "a shared code path at nothing",
                &|d| {
                    put(
                        d,
                        "main/transformation/t/config.json",
                        r#"{"shared_code_path": "_shared/nothing"}"#,
                    )
                },
                "config.json: shared_code_path: no shared code at \"main/_shared/nothing\"",
            ),
            (
                "a shared code path at another configuration",
                &|d| {
                    put(
                        d,
                        "main/transformation/t/config.json",
                        r#"{"shared_code_path": "application/a"}"#,
                    )
                },
                "application/a is a app configuration, not shared code",
            ),
            (
                "a link to no code",
                &|d| {
                    put(
                        d,
                        "main/transformation/t/blocks/001-one/002-b/code.sql",
                        "-- {{:codes/nope}}",
                    )
                },
                "002-b/code.sql: {{:codes/nope}}: no code of the shared code",
            ),
            (
                "a link out of the project",
                &|d| {
                    put(
                        d,
                        "main/transformation/t/blocks/001-one/002-b/code.sql",
                        "-- {{:../../../../x}}",
                    )
                },
                "002-b/code.sql: {{:../../../../x}}: points outside the project",
            ),
            (
                "a symlink out of the project",
                &|d| {
                    let code = d.join("main/transformation/t/blocks/001-one/002-b/code.sql");
                    std::fs::remove_file(&code).unwrap();
                    std::os::unix::fs::symlink("/etc/hostname", &code).unwrap();
                },
                "002-b/code.sql: is a link out of the project",
            ),
            (
                "shared code for another component",
                &|d| {
                    put(
                        d,
                        &format!("main/_shared/{SF}/config.json"),
                        r#"{"componentId": "keboola.python-transformation-v2"}"#,
                    )
                },
                "componentId: the shared code is for keboola.python-transformation-v2",
            ),
            (
                "shared_code_path without blocks",
                &|d| std::fs::remove_dir_all(d.join("main/transformation/t/blocks")).unwrap(),
                "config.json: shared_code_path: shared code is linked by a transformation's code blocks",
            ),
        ];
        for (what, change, words) in cases {
            let dir = tempfile::tempdir().unwrap();
            transformation_project(dir.path());
            change(dir.path());
            let err = applied(dir.path(), "main/transformation/t")
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(err.contains(words), "{what}: {err}");
        }
        // An id the project does not have.
        let dir = tempfile::tempdir().unwrap();
        transformation_project(dir.path());
        put(
            dir.path(),
            "main/application/a/config.json",
            r#"{"shared_code_id": "other", "shared_code_row_ids": ["1"]}"#,
        );
        let err = applied(dir.path(), "main/application/a").unwrap_err();
        assert!(err.contains("a/config.json: shared_code_id: the shared code configuration other is not in the project"), "{err}");
    }
}
