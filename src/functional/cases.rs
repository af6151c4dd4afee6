//! Finding the cases of a functional test folder, laid out as Keboola's datadirtest lays them
//! out: `<case>/source/data` (what the component starts with) and `<case>/expected/data/out`
//! (what it must leave), optionally `<case>/expected-code`.

use std::path::{Path, PathBuf};

/// One case folder.
#[derive(Debug, Clone)]
pub struct Case {
    /// The folder's name (what `--case` selects).
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
}

impl Case {
    /// What the component starts with (copied, never changed).
    pub fn source(&self) -> PathBuf {
        self.dir.join("source").join("data")
    }

    /// What the component must leave in `/data/out`.
    pub fn expected(&self) -> PathBuf {
        self.dir.join("expected").join("data").join("out")
    }

    /// The exit code file, when the case expects one other than 0.
    pub fn expected_code_file(&self) -> PathBuf {
        self.dir.join("expected-code")
    }
}

/// Why no cases could be listed.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The folder cannot be read.
    #[error("cannot read the test folder {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Nothing in it looks like a case.
    #[error("{} holds no test case (a folder with source/data, or folders of such)", path.display())]
    Empty { path: PathBuf },
    /// `--case` named a folder that is not there.
    #[error("no case named {name:?} in {} (cases: {known})", path.display())]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
}

/// The cases under `dir` in name order: `dir` itself when it has `source/`, else each
/// folder in it whose name does not start with `_` or `.` (datadirtest skips `_` folders).
/// A folder without `source/data` is still listed: running it reports what is missing.
/// `only` (from `--case`) narrows the list; a name that is not there is an error.
pub fn discover(dir: &Path, only: &[String]) -> Result<Vec<Case>, CasesError> {
    let read_err = |source| CasesError::Read {
        path: dir.to_path_buf(),
        source,
    };
    if dir.join("source").is_dir() {
        let name = dir
            .canonicalize()
            .map_err(read_err)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "case".to_string());
        let case = Case {
            name,
            dir: dir.to_path_buf(),
        };
        return select(vec![case], dir, only);
    }
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        if entry.path().is_dir() {
            cases.push(Case {
                name,
                dir: entry.path(),
            });
        }
    }
    if cases.is_empty() {
        return Err(CasesError::Empty {
            path: dir.to_path_buf(),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    select(cases, dir, only)
}

fn select(cases: Vec<Case>, dir: &Path, only: &[String]) -> Result<Vec<Case>, CasesError> {
    if only.is_empty() {
        return Ok(cases);
    }
    for name in only {
        if !cases.iter().any(|c| &c.name == name) {
            return Err(CasesError::Unknown {
                name: name.clone(),
                path: dir.to_path_buf(),
                known: cases
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(cases
        .into_iter()
        .filter(|c| only.contains(&c.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_cases_one_case_and_selection() {
        let root = tempfile::tempdir().unwrap();
        for name in ["b", "a", "_shared", ".git"] {
            std::fs::create_dir_all(root.path().join(name).join("source/data")).unwrap();
        }
        std::fs::write(root.path().join("README.md"), "").unwrap();
        let names = |cases: Vec<Case>| cases.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(discover(root.path(), &[]).unwrap()), ["a", "b"]);
        assert_eq!(names(discover(root.path(), &["b".into()]).unwrap()), ["b"]);
        let err = discover(root.path(), &["c".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no case named \"c\"") && err.contains("a, b"),
            "{err}"
        );
        // A case folder given directly.
        assert_eq!(names(discover(&root.path().join("a"), &[]).unwrap()), ["a"]);
        let empty = tempfile::tempdir().unwrap();
        let err = discover(empty.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("holds no test case"), "{err}");
    }
}
