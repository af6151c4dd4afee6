//! Integration tests of dockless-staging against a real SQLite file in a temp folder.

mod concurrency;
mod config_examples;
mod csv_edge;
mod hostile;
mod input_mapping;
mod load_modes;
mod output_mapping;
mod state;
mod types;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dockless_staging::{ImportOptions, SqliteStorage, Storage, TableId, import_file};

/// Fills a job's `out/` folder in a test case.
pub type WriteOut<'a> = Box<dyn Fn(&Path) + 'a>;

/// A fresh Storage in its own temp folder (kept alive by the returned guard).
pub fn storage() -> (tempfile::TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(&dir.path().join("storage.db")).unwrap();
    (dir, storage)
}

/// Imports CSV text into `table` (full load, optional key).
pub fn seed(storage: &mut SqliteStorage, table: &str, csv: &str, pk: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.csv");
    std::fs::write(&path, csv).unwrap();
    let options = ImportOptions {
        primary_key: pk.iter().map(|s| s.to_string()).collect(),
        ..ImportOptions::default()
    };
    import_file(storage, &path, &id(table), &options, "test").unwrap();
}

/// Parses a table id.
pub fn id(s: &str) -> TableId {
    s.parse().unwrap()
}

/// Full export of a table as text.
pub fn export(storage: &dyn Storage, table: &str) -> String {
    let mut out = Vec::new();
    storage
        .export_table(&id(table), &Default::default(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Export with the rows sorted (Storage row order is unspecified, as in Keboola).
pub fn export_sorted(storage: &dyn Storage, table: &str) -> String {
    let text = export(storage, table);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let mut rows: Vec<&str> = lines.collect();
    rows.sort();
    let mut out = header + "\n";
    for r in rows {
        out.push_str(r);
        out.push('\n');
    }
    out
}

/// Every row of every SQLite table, catalog included, in a stable order: two equal dumps
/// mean the Storage did not change.
pub fn dump(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names.retain(|n| n != "sqlite_sequence");
    let mut out = String::new();
    for name in names {
        writeln!(out, "== {name}").unwrap();
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let values: Vec<String> = (0..n)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            writeln!(out, "{}", values.join("|")).unwrap();
        }
    }
    let schema: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    out + &schema.join("\n")
}

/// The shared Keboola examples folder (`../shared/keboola-examples` beside the repo).
pub fn examples() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/keboola-examples");
    assert!(
        dir.is_dir(),
        "the Keboola examples are missing at {} (the shared/ folder must sit beside the repo)",
        dir.display()
    );
    dir
}
