//! A transformation's code as `kbc` keeps it, back into `parameters.blocks` as the Storage
//! API holds it: `blocks/<NNN-block>/meta.json` (`name`) and `blocks/<NNN-block>/<NNN-code>/`
//! with `meta.json` (`name`) and one `code.<ext>` file, read in folder-name order (keboola-as-
//! code's transformation mapper), each code's text split into scripts ([`super::scripts`]).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::files::Tree;
use super::scripts;

/// One code of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    /// `meta.json`'s `name`.
    pub name: String,
    /// Its code file, for messages.
    pub file: PathBuf,
    /// Its scripts (SQL statements, or the whole code).
    pub scripts: Vec<String>,
}

/// One block of codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// `meta.json`'s `name`.
    pub name: String,
    /// Its codes, in order.
    pub codes: Vec<Code>,
}

/// The blocks under `folder/blocks` of a configuration of `component_id`.
pub fn read(tree: &Tree, folder: &Path, component_id: &str) -> Result<Vec<Block>, String> {
    let dir = folder.join("blocks");
    let mut blocks = Vec::new();
    for block_name in tree.subdirs(&dir)? {
        let block_dir = dir.join(&block_name);
        let mut block = Block {
            name: meta_name(tree, &block_dir)?,
            codes: Vec::new(),
        };
        for code_name in tree.subdirs(&block_dir)? {
            let code_dir = block_dir.join(&code_name);
            let name = meta_name(tree, &code_dir)?;
            let file = code_file(tree, &code_dir)?;
            let scripts = scripts::split(&tree.text(&file)?, component_id);
            block.codes.push(Code {
                name,
                file,
                scripts,
            });
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// The blocks as `parameters.blocks`: `[{"name", "codes": [{"name", "script": [...]}]}]`.
pub fn to_json(blocks: &[Block]) -> Value {
    blocks
        .iter()
        .map(|b| {
            let codes: Vec<Value> = b
                .codes
                .iter()
                .map(|c| json!({"name": c.name, "script": c.scripts}))
                .collect();
            json!({"name": b.name, "codes": codes})
        })
        .collect()
}

/// A block's or code's `meta.json` `name`, which `kbc` requires.
fn meta_name(tree: &Tree, folder: &Path) -> Result<String, String> {
    let file = folder.join("meta.json");
    match tree.json(&file)?.get("name") {
        Some(Value::String(name)) if !name.is_empty() => Ok(name.clone()),
        _ => Err(format!(
            "{}: name: expected the block's or code's name",
            file.display()
        )),
    }
}

/// The one `code.*` file of a code's folder.
fn code_file(tree: &Tree, folder: &Path) -> Result<PathBuf, String> {
    let found: Vec<String> = tree
        .files(folder)?
        .into_iter()
        .filter(|n| n.starts_with("code."))
        .collect();
    match found.as_slice() {
        [one] => Ok(folder.join(one)),
        [] => Err(format!(
            "{}: missing code file (code.sql, code.py, ... as kbc writes it)",
            folder.display()
        )),
        many => Err(format!(
            "{}: expected one code file, found {}",
            folder.display(),
            many.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, path: &str, text: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn blocks_and_codes_are_read_in_folder_order() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        put(t, "blocks/002-b/meta.json", r#"{"name": "Second"}"#);
        put(t, "blocks/002-b/001-z/meta.json", r#"{"name": "Z"}"#);
        put(t, "blocks/002-b/001-z/code.sql", "SELECT 3;");
        put(t, "blocks/001-a/meta.json", r#"{"name": "First"}"#);
        put(t, "blocks/001-a/002-y/meta.json", r#"{"name": "Y"}"#);
        put(t, "blocks/001-a/002-y/code.sql", "SELECT 2;");
        put(t, "blocks/001-a/001-x/meta.json", r#"{"name": "X"}"#);
        put(
            t,
            "blocks/001-a/001-x/code.sql",
            "SELECT 1;\nSELECT 'a;b';\n",
        );
        put(t, "blocks/.gitkeep", "");
        let tree = Tree::open(t).unwrap();
        let blocks = read(&tree, t, "keboola.snowflake-transformation").unwrap();
        assert_eq!(
            to_json(&blocks),
            json!([
                {"name": "First", "codes": [
                    {"name": "X", "script": ["SELECT 1;", "SELECT 'a;b';"]},
                    {"name": "Y", "script": ["SELECT 2;"]}]},
                {"name": "Second", "codes": [{"name": "Z", "script": ["SELECT 3;"]}]}
            ])
        );

        std::fs::remove_file(t.join("blocks/001-a/002-y/code.sql")).unwrap();
        let err = read(&tree, t, "x").unwrap_err();
        assert!(
            err.contains("blocks/001-a/002-y: missing code file"),
            "{err}"
        );
        put(t, "blocks/001-a/002-y/code.sql", "");
        put(t, "blocks/001-a/002-y/code.py", "");
        let err = read(&tree, t, "x").unwrap_err();
        assert!(err.contains("found code.py, code.sql"), "{err}");
        std::fs::remove_file(t.join("blocks/001-a/002-y/code.py")).unwrap();
        put(t, "blocks/002-b/meta.json", r#"{"title": "no name"}"#);
        let err = read(&tree, t, "x").unwrap_err();
        assert!(err.contains("blocks/002-b/meta.json: name"), "{err}");
    }
}
