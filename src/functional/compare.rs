//! What a case left against what it should have left, as datadirtest compares: every file
//! under `out/tables` and `out/files` whose name does not start with `.`, byte for byte,
//! except `.manifest` files, which are compared as JSON; `out/state.json` when the case
//! expects one. Stricter than datadirtest in one way: an extra file deep in a subfolder is
//! a difference too (datadirtest looks for extra files only at the top of each folder).
//!
//! The output side is what a container wrote: it is walked without following links, and a
//! link, FIFO or device where a file is expected is a difference, never read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// Characters of an expected or actual line quoted in a difference.
const QUOTE_CHARS: usize = 200;

/// Bytes of a `.manifest` or state file read to compare it as JSON (a bigger one is compared
/// byte for byte).
const MAX_JSON_BYTES: u64 = 64 << 20;

/// One way the output differs from the expected output; paths are relative to `/data`
/// (`out/tables/result.csv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// Expected, not written.
    Missing { path: String },
    /// Written, not expected.
    Extra { path: String },
    /// Written as something other than a regular file (a link, a folder, a FIFO).
    NotAFile { path: String, found: &'static str },
    /// The first line that differs (1-based); `<end of file>` where one side ended.
    Line {
        path: String,
        line: u64,
        expected: String,
        got: String,
    },
    /// The first JSON value that differs, by JSON pointer.
    Json {
        path: String,
        pointer: String,
        expected: String,
        got: String,
    },
    /// A file that could not be read or parsed.
    Unreadable { path: String, error: String },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { path } => write!(f, "missing {path}"),
            Self::Extra { path } => write!(f, "unexpected {path}"),
            Self::NotAFile { path, found } => write!(f, "{path} is a {found}, not a file"),
            Self::Line {
                path,
                line,
                expected,
                got,
            } => write!(f, "{path} line {line}: expected {expected:?}, got {got:?}"),
            Self::Json {
                path,
                pointer,
                expected,
                got,
            } => write!(f, "{path} at {pointer:?}: expected {expected}, got {got}"),
            Self::Unreadable { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

/// What a walked path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Other(&'static str),
}

/// The differences between `expected` (a case's `expected/data/out`) and `got` (the run's
/// `/data/out`), in path order.
pub fn compare(expected: &Path, got: &Path) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut want = BTreeMap::new();
    let mut have = BTreeMap::new();
    for sub in ["tables", "files"] {
        walk(&expected.join(sub), &format!("out/{sub}"), true, &mut want);
        walk(&got.join(sub), &format!("out/{sub}"), false, &mut have);
    }
    if expected.join("state.json").is_file() {
        want.insert("out/state.json".to_string(), Kind::File);
        if let Some(kind) = kind_of(&got.join("state.json"), false) {
            have.insert("out/state.json".to_string(), kind);
        }
    }
    for (path, kind) in &want {
        if *kind != Kind::File {
            continue; // something odd in the case's own folder: not compared
        }
        let relative = path.strip_prefix("out/").unwrap_or(path);
        match have.get(path) {
            None => differences.push(Difference::Missing { path: path.clone() }),
            Some(Kind::Other(found)) => differences.push(Difference::NotAFile {
                path: path.clone(),
                found,
            }),
            Some(Kind::File) => {
                let json = path.ends_with(".manifest") || path == "out/state.json";
                let found = if json {
                    compare_json(path, &expected.join(relative), &got.join(relative))
                } else {
                    compare_lines(path, &expected.join(relative), &got.join(relative))
                };
                differences.extend(found);
            }
        }
    }
    for path in have.keys() {
        if !want.contains_key(path) {
            differences.push(Difference::Extra { path: path.clone() });
        }
    }
    differences.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    differences
}

fn path_of(d: &Difference) -> &str {
    match d {
        Difference::Missing { path }
        | Difference::Extra { path }
        | Difference::NotAFile { path, .. }
        | Difference::Line { path, .. }
        | Difference::Json { path, .. }
        | Difference::Unreadable { path, .. } => path,
    }
}

/// Every path under `dir` whose own name does not start with `.`, keyed `prefix/relative`;
/// folders are descended into (the output's without following links).
fn walk(dir: &Path, prefix: &str, follow: bool, into: &mut BTreeMap<String, Kind>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = format!("{prefix}/{name}");
        let path = entry.path();
        let Some(kind) = kind_of(&path, follow) else {
            continue;
        };
        if kind == Kind::Other("folder") {
            walk(&path, &key, follow, into);
            continue;
        }
        if !name.starts_with('.') {
            into.insert(key, kind);
        }
    }
}

fn kind_of(path: &Path, follow: bool) -> Option<Kind> {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .ok()?;
    let t = meta.file_type();
    Some(if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Other("folder")
    } else if t.is_symlink() {
        Kind::Other("symbolic link")
    } else {
        Kind::Other("special file")
    })
}

/// Opens an output file without following a link (the walk saw a regular file; a container
/// is no longer running to swap it, but the rule holds everywhere).
fn open_output(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Line by line, streaming (a table may be larger than memory): the first differing line.
fn compare_lines(path: &str, expected: &Path, got: &Path) -> Option<Difference> {
    let unreadable = |e: std::io::Error, which: &Path| Difference::Unreadable {
        path: path.to_string(),
        error: format!("cannot read {}: {e}", which.display()),
    };
    let mut want = match File::open(expected) {
        Ok(f) => BufReader::new(f),
        Err(e) => return Some(unreadable(e, expected)),
    };
    let mut have = match open_output(got) {
        Ok(f) => BufReader::new(f),
        Err(e) => return Some(unreadable(e, got)),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut line = 0u64;
    loop {
        a.clear();
        b.clear();
        line += 1;
        let n = match want.read_until(b'\n', &mut a) {
            Ok(n) => n,
            Err(e) => return Some(unreadable(e, expected)),
        };
        let m = match have.read_until(b'\n', &mut b) {
            Ok(m) => m,
            Err(e) => return Some(unreadable(e, got)),
        };
        if a != b {
            return Some(Difference::Line {
                path: path.to_string(),
                line,
                expected: quote(&a, n == 0),
                got: quote(&b, m == 0),
            });
        }
        if n == 0 {
            return None;
        }
    }
}

/// A line as shown in a difference: its text without the newline (kept visible when it is
/// all that differs), cut at [`QUOTE_CHARS`].
fn quote(line: &[u8], eof: bool) -> String {
    if eof {
        return "<end of file>".to_string();
    }
    let text = String::from_utf8_lossy(line);
    let text = match text.strip_suffix('\n') {
        Some(t) => t.to_string(),
        None => format!("{text}<no newline at end of file>"),
    };
    cut(&text)
}

fn cut(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(QUOTE_CHARS).collect();
    s.push('…');
    s
}

/// As JSON values (key order and whitespace do not matter); an expected file that is not
/// JSON is compared line by line instead.
fn compare_json(path: &str, expected: &Path, got: &Path) -> Option<Difference> {
    let want = match read_json(File::open(expected)) {
        Ok(Some(v)) => v,
        Ok(None) => return compare_lines(path, expected, got),
        Err(e) => {
            return Some(Difference::Unreadable {
                path: path.to_string(),
                error: format!("cannot read {}: {e}", expected.display()),
            });
        }
    };
    let have = match read_json(open_output(got)) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Some(Difference::Unreadable {
                path: path.to_string(),
                error: "not valid JSON (or larger than 64 MiB)".to_string(),
            });
        }
        Err(e) => {
            return Some(Difference::Unreadable {
                path: path.to_string(),
                error: format!("cannot read it: {e}"),
            });
        }
    };
    first_json_difference(&want, &have, "").map(|(pointer, expected, got)| Difference::Json {
        path: path.to_string(),
        pointer,
        expected,
        got,
    })
}

/// `Ok(None)`: readable, but not JSON or too big to parse.
fn read_json(file: std::io::Result<File>) -> std::io::Result<Option<Value>> {
    let mut text = Vec::new();
    file?.take(MAX_JSON_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&text).ok())
}

/// The first place (JSON pointer) where the two values differ, with both sides as compact
/// JSON (`<absent>` for a missing key or item).
fn first_json_difference(want: &Value, have: &Value, at: &str) -> Option<(String, String, String)> {
    let shown = |v: Option<&Value>| v.map_or("<absent>".to_string(), |v| cut(&v.to_string()));
    match (want, have) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_json_difference(x, y, &here),
                    (x, y) => Some((here, shown(x), shown(y))),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) => (0..a.len().max(b.len())).find_map(|i| {
            let here = format!("{at}/{i}");
            match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) => first_json_difference(x, y, &here),
                (x, y) => Some((here, shown(x), shown(y))),
            }
        }),
        (a, b) if a == b => None,
        (a, b) => Some((
            if at.is_empty() {
                "/".to_string()
            } else {
                at.to_string()
            },
            shown(Some(a)),
            shown(Some(b)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["tables", "files"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn equal_trees_have_no_difference_and_hidden_files_do_not_count() {
        let want = tree(&[("tables/a.csv", "x\n1\n"), ("files/.gitkeep", "")]);
        let got = tree(&[("tables/a.csv", "x\n1\n"), ("tables/.tmp", "junk")]);
        assert_eq!(compare(want.path(), got.path()), []);
    }

    #[test]
    fn first_differing_line_missing_and_extra_files() {
        let want = tree(&[("tables/a.csv", "x\n1\n2\n"), ("tables/b.csv", "y\n")]);
        let got = tree(&[("tables/a.csv", "x\n1\n3\n"), ("files/sub/c.txt", "z")]);
        let found = compare(want.path(), got.path());
        assert_eq!(
            found,
            [
                Difference::Extra {
                    path: "out/files/sub/c.txt".into()
                },
                Difference::Line {
                    path: "out/tables/a.csv".into(),
                    line: 3,
                    expected: "2".into(),
                    got: "3".into()
                },
                Difference::Missing {
                    path: "out/tables/b.csv".into()
                },
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "out/tables/a.csv line 3: expected \"2\", got \"3\""
        );
    }

    #[test]
    fn shorter_output_and_missing_final_newline() {
        let want = tree(&[("tables/a.csv", "x\n1\n")]);
        let got = tree(&[("tables/a.csv", "x\n")]);
        let found = compare(want.path(), got.path());
        assert!(
            matches!(&found[..], [Difference::Line { line: 2, got, .. }] if got == "<end of file>"),
            "{found:?}"
        );
        let got = tree(&[("tables/a.csv", "x\n1")]);
        let found = compare(want.path(), got.path());
        assert!(
            matches!(&found[..], [Difference::Line { line: 2, got, .. }] if got == "1<no newline at end of file>"),
            "{found:?}"
        );
    }

    #[test]
    fn manifests_and_state_compare_as_json() {
        let want = tree(&[
            (
                "tables/a.csv.manifest",
                r#"{"incremental": false, "primary_key": ["id"]}"#,
            ),
            ("state.json", r#"{"last": 2}"#),
        ]);
        let got = tree(&[
            (
                "tables/a.csv.manifest",
                "{\n  \"primary_key\": [\"id\"],\n  \"incremental\": false\n}\n",
            ),
            ("state.json", r#"{"last":2}"#),
        ]);
        assert_eq!(compare(want.path(), got.path()), []);
        let got = tree(&[(
            "tables/a.csv.manifest",
            r#"{"incremental": true, "primary_key": ["id", "x"]}"#,
        )]);
        let found = compare(want.path(), got.path());
        assert_eq!(
            found,
            [
                Difference::Missing {
                    path: "out/state.json".into()
                },
                Difference::Json {
                    path: "out/tables/a.csv.manifest".into(),
                    pointer: "/incremental".into(),
                    expected: "false".into(),
                    got: "true".into()
                },
            ]
        );
        let got = tree(&[("tables/a.csv.manifest", "not json"), ("state.json", "{}")]);
        let found = compare(want.path(), got.path());
        assert!(
            matches!(&found[1], Difference::Unreadable { error, .. } if error.contains("not valid JSON")),
            "{found:?}"
        );
        assert!(
            matches!(&found[0], Difference::Json { pointer, got, .. } if pointer == "/last" && got == "<absent>"),
            "{found:?}"
        );
    }

    #[test]
    fn a_link_in_the_output_is_never_followed() {
        let want = tree(&[("tables/a.csv", "secret\n")]);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("a.csv"), "secret\n").unwrap();
        let got = tree(&[]);
        std::os::unix::fs::symlink(
            outside.path().join("a.csv"),
            got.path().join("tables/a.csv"),
        )
        .unwrap();
        // A linked folder is not descended into either.
        std::os::unix::fs::symlink(outside.path(), got.path().join("files/dir")).unwrap();
        let found = compare(want.path(), got.path());
        assert_eq!(
            found,
            [
                Difference::Extra {
                    path: "out/files/dir".into()
                },
                Difference::NotAFile {
                    path: "out/tables/a.csv".into(),
                    found: "symbolic link"
                },
            ]
        );
    }
}
