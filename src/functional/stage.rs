//! A case's data folder for its run: `source/data` copied (the case folder itself is never
//! written), the standard folders a job has created where the case left them out (git keeps
//! no empty folder), and `in/state.json` as `{}` when the case has none (a job always has
//! one).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

/// Folders every job's data folder has.
const STANDARD_DIRS: [&str; 4] = ["in/tables", "in/files", "out/tables", "out/files"];

/// Why a case could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading the case or writing the copy failed.
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: std::path::PathBuf,
        to: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, socket or device in the case folder.
    #[error("{}: not a file, folder or link; a test case holds only those", path.display())]
    Special { path: std::path::PathBuf },
}

/// Copies `source` (a case's `source/data`) to `data` (a fresh, absent folder) and completes
/// it as a job's data folder. Links are copied as links, never followed (they resolve inside
/// the container).
pub fn stage(source: &Path, data: &Path) -> Result<(), StageError> {
    copy_tree(source, data)?;
    for dir in STANDARD_DIRS {
        let path = data.join(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .map_err(|source| copy_err(Path::new(dir), &path, source))?;
    }
    let state = data.join("in").join("state.json");
    if std::fs::symlink_metadata(&state).is_err() {
        std::fs::write(&state, "{}").map_err(|e| copy_err(Path::new("{}"), &state, e))?;
    }
    Ok(())
}

fn copy_err(from: &Path, to: &Path, source: std::io::Error) -> StageError {
    StageError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), StageError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(to)
        .map_err(|e| copy_err(from, to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| copy_err(from, to, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| copy_err(from, to, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| copy_err(&src, &dst, e))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| copy_err(&src, &dst, e))?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| copy_err(&src, &dst, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| copy_err(&src, &dst, e))?;
        } else {
            return Err(StageError::Special { path: src });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_completes_a_data_folder() {
        let case = tempfile::tempdir().unwrap();
        let source = case.path().join("data");
        std::fs::create_dir_all(source.join("in/tables")).unwrap();
        std::fs::write(source.join("config.json"), r#"{"parameters":{}}"#).unwrap();
        std::fs::write(source.join("in/tables/a.csv"), "x\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", source.join("in/tables/link.csv")).unwrap();
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        stage(&source, &data).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("in/tables/a.csv")).unwrap(),
            "x\n"
        );
        assert_eq!(
            std::fs::read_link(data.join("in/tables/link.csv")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_to_string(data.join("in/state.json")).unwrap(),
            "{}"
        );
        for dir in STANDARD_DIRS {
            assert!(data.join(dir).is_dir(), "{dir}");
        }
        // The case is left as it was.
        assert!(!source.join("out").exists() && !source.join("in/state.json").exists());
        // A case's own state is kept.
        std::fs::write(source.join("in/state.json"), r#"{"a":1}"#).unwrap();
        let data2 = work.path().join("data2");
        stage(&source, &data2).unwrap();
        assert_eq!(
            std::fs::read_to_string(data2.join("in/state.json")).unwrap(),
            r#"{"a":1}"#
        );
    }
}
