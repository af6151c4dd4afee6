//! Reading a project directory's files and folders, never outside it: every path is resolved
//! (symlinks followed) and must stay inside the project, so a link out of the project is the
//! user's error naming it, not a file quietly read from elsewhere. Every error names the path
//! as the user gave it.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A folder `kbc` skips when reading a project: it holds `kbcdir.json` with
/// `"isIgnored": true` (keboola-as-code's file loader).
const KBC_DIR_FILE: &str = "kbcdir.json";

/// The project directory, as given and resolved.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// The project at `dir`.
    pub fn open(dir: &Path) -> Result<Tree, String> {
        let root = dir
            .canonicalize()
            .map_err(|e| format!("project {}: cannot open: {e}", dir.display()))?;
        Ok(Tree { root })
    }

    /// `path` resolved; an error when it does not exist or lies outside the project.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
        let real = path
            .canonicalize()
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if !real.starts_with(&self.root) {
            return Err(format!(
                "{}: is a link out of the project (to {}); a project's files must be inside \
                 its directory",
                path.display(),
                real.display()
            ));
        }
        Ok(real)
    }

    /// The file's text.
    pub fn text(&self, path: &Path) -> Result<String, String> {
        let real = self.resolve(path)?;
        std::fs::read_to_string(real).map_err(|e| format!("{}: cannot read: {e}", path.display()))
    }

    /// The file's JSON.
    pub fn json(&self, path: &Path) -> Result<Value, String> {
        let text = self.text(path)?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
    }

    /// The names of the folders in `path`, sorted by name (as `kbc` reads them), without those
    /// `kbc` ignores.
    pub fn subdirs(&self, path: &Path) -> Result<Vec<String>, String> {
        let real = self.resolve(path)?;
        let entries = std::fs::read_dir(&real)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let shown = path.join(entry.file_name());
            if !shown.is_dir() {
                continue;
            }
            self.resolve(&shown)?;
            if self.ignored(&shown)? {
                continue;
            }
            let name = entry.file_name().into_string().map_err(|name| {
                format!("{}: the folder name {name:?} is not UTF-8", path.display())
            })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// The names of the files in `path` (sorted).
    pub fn files(&self, path: &Path) -> Result<Vec<String>, String> {
        let real = self.resolve(path)?;
        let entries = std::fs::read_dir(&real)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            if path.join(entry.file_name()).is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn ignored(&self, folder: &Path) -> Result<bool, String> {
        let file = folder.join(KBC_DIR_FILE);
        if !file.exists() {
            return Ok(false);
        }
        Ok(self.json(&file)?.get("isIgnored") == Some(&Value::Bool(true)))
    }
}

/// `rel` joined to `base` (both `/`-separated, relative to the project), `.` and `..` applied
/// as `kbc` cleans its paths; `None` when the result would leave the project or `rel` is
/// absolute.
pub fn join(base: &str, rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(rel.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_may_not_leave_the_project() {
        assert_eq!(
            join("main", "_shared/keboola.python-transformation-v2").as_deref(),
            Some("main/_shared/keboola.python-transformation-v2")
        );
        assert_eq!(
            join("main/_shared/x", "./codes/../codes/a/").as_deref(),
            Some("main/_shared/x/codes/a")
        );
        assert_eq!(join("main", "../../etc"), None);
        assert_eq!(join("main", "/etc"), None);
    }

    #[test]
    fn a_link_out_of_the_project_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/ok"), "fine").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("a/link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::fs::create_dir(dir.path().join("skipped")).unwrap();
        std::fs::write(
            dir.path().join("skipped/kbcdir.json"),
            r#"{"isIgnored": true}"#,
        )
        .unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        assert_eq!(tree.text(&dir.path().join("a/ok")).unwrap(), "fine");
        let err = tree.text(&dir.path().join("a/link")).unwrap_err();
        assert!(
            err.contains("a/link: is a link out of the project"),
            "{err}"
        );
        let err = tree.subdirs(dir.path()).unwrap_err();
        assert!(err.contains("/out: is a link out of the project"), "{err}");
        std::fs::remove_file(dir.path().join("out")).unwrap();
        assert_eq!(tree.subdirs(dir.path()).unwrap(), ["a"]);
        assert_eq!(tree.files(&dir.path().join("a")).unwrap(), ["link", "ok"]);
    }
}
