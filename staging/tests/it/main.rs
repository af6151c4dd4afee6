//! Integration tests of dockless-staging, each against both backends: a real SQLite file in a
//! temp folder, and a fresh database of its own on the test PostgreSQL (`scripts/test-env`).
//! A test is a `fn name(backend: Backend)`; [`backends!`] makes `name::sqlite` and
//! `name::postgres` of it.

mod concurrency;
mod config_examples;
mod csv_edge;
mod hostile;
mod input_mapping;
mod load_modes;
mod output_mapping;
mod pg_only;
mod state;
mod types;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dockless_staging::{AnyStorage, ImportOptions, Storage, StorageLocation, TableId, import_file};
use dockless_testkit::TestDatabase;

/// Fills a job's `out/` folder in a test case.
pub type WriteOut<'a> = Box<dyn Fn(&Path) + 'a>;

/// The Storage every test runs against: either backend.
pub type TestStorage = AnyStorage;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp folder.
    Sqlite,
    /// A fresh database on the test PostgreSQL.
    Postgres,
}

/// Makes `name::sqlite` and `name::postgres` tests of each `fn name(backend: Backend)`; the
/// PostgreSQL one needs `scripts/test-env` (ignored otherwise, as the root tests are; CI runs
/// `--include-ignored`).
#[macro_export]
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::Backend::Sqlite)
                }
                #[test]
                #[ignore = "needs scripts/test-env (PostgreSQL)"]
                fn postgres() {
                    super::$name($crate::Backend::Postgres)
                }
            }
        )*
    };
}

/// A test's Storage location and what keeps it alive: the temp folder (always: jobs need one
/// too) and, for PostgreSQL, the test database (dropped with the fixture).
pub struct Fixture {
    dir: tempfile::TempDir,
    db: Option<TestDatabase>,
    /// Where the Storage is.
    pub location: StorageLocation,
}

impl Fixture {
    /// A temp folder of the test's own.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Another handle on the same Storage (another job, another host).
    pub fn open(&self) -> TestStorage {
        self.location.open().unwrap()
    }

    /// Every row of every table of the Storage, catalog included, in a stable order: two equal
    /// dumps mean the Storage did not change.
    pub fn dump(&self) -> String {
        match (&self.location, &self.db) {
            (StorageLocation::Sqlite(path), _) => dump(path),
            (_, Some(db)) => dump_postgres(db),
            _ => unreachable!("a PostgreSQL fixture has its database"),
        }
    }
}

/// A fresh Storage of `backend` (kept alive by the returned fixture).
pub fn storage(backend: Backend) -> (Fixture, TestStorage) {
    let dir = tempfile::tempdir().unwrap();
    let (db, location) = match backend {
        Backend::Sqlite => (None, StorageLocation::Sqlite(dir.path().join("storage.db"))),
        Backend::Postgres => {
            let db = TestDatabase::create();
            let location = StorageLocation::Postgres(db.url.clone());
            (Some(db), location)
        }
    };
    let fixture = Fixture { dir, db, location };
    let storage = fixture.open();
    (fixture, storage)
}

/// [`Fixture::dump`] of a PostgreSQL Storage: the schema's tables, their columns and rows.
fn dump_postgres(db: &TestDatabase) -> String {
    let mut client = db.client();
    let names: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'dockless'
             ORDER BY table_name COLLATE \"C\"",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = String::new();
    for name in names {
        let columns: Vec<String> = client
            .query(
                "SELECT column_name || ' ' || data_type FROM information_schema.columns
                 WHERE table_schema = 'dockless' AND table_name = $1 ORDER BY ordinal_position",
                &[&name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        writeln!(out, "== {name} ({})", columns.join(", ")).unwrap();
        for row in client
            .query(
                &format!("SELECT to_jsonb(x)::text FROM dockless.\"{name}\" x ORDER BY 1"),
                &[],
            )
            .unwrap()
        {
            writeln!(out, "{}", row.get::<_, String>(0)).unwrap();
        }
    }
    out
}

/// Most columns a table of `backend` can have.
pub fn max_columns(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => dockless_staging::MAX_COLUMNS,
        Backend::Postgres => dockless_staging::storage::postgres::MAX_COLUMNS,
    }
}

/// Imports CSV text into `table` (full load, optional key).
pub fn seed(storage: &mut TestStorage, table: &str, csv: &str, pk: &[&str]) {
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
