//! The embedded Storage: one SQLite file plus a folder of file contents beside it.
//!
//! ```text
//! storage.db                 catalog (buckets, tables, metadata, column types, files, states)
//!                            + table data
//! storage.db-wal, -shm       SQLite write-ahead log (concurrent readers, one writer)
//! storage.db.files/          (0700, like every folder the Storage creates; files are 0600)
//!   sha256/<hex>             file contents by hash (a sliced file has one blob per slice)
//!   tmp-*                    uploads in progress; renamed into sha256/ once hashed
//! ```
//!
//! Each table's rows live in their own SQLite table `t<seq>` with columns `c0..cN` (positions
//! into the catalog's column list, so user column names never reach SQL text) plus
//! `_timestamp` (unix microseconds of the row's last change). A primary key is a unique index
//! `t<seq>_pk`. File blobs written by a transaction that rolls back stay on disk unreferenced;
//! they are harmless and are shared by hash with any later upload of the same bytes.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::private;
use crate::storage::rules::FileCondition;
use crate::storage::{
    ExportOptions, Exported, FileInfo, FileQuery, StateKey, Storage, TableInfo, Transaction,
};
use crate::time::now_micros;

mod catalog;
mod export;
mod write;

use catalog::{file_blobs, file_info, table_info};
use write::SqliteTransaction;

/// Version of the catalog's layout (`PRAGMA user_version`); each step of [`MIGRATIONS`] moves
/// a file one version up, so a Storage created by an older dockless keeps working.
const SCHEMA_VERSION: i64 = 2;

/// Most columns a table can have: SQLite's compiled-in `SQLITE_MAX_COLUMN` (2000, kept: a
/// higher one needs a build-time variable outside `Cargo.toml` and makes wide tables slow)
/// less the hidden `_timestamp` column. Keboola documents 1,200 for its own backends.
pub const MAX_COLUMNS: usize = 1999;

const SCHEMA: &str = "
CREATE TABLE buckets (
    id TEXT PRIMARY KEY,
    created INTEGER NOT NULL
);
CREATE TABLE tables (
    id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL REFERENCES buckets(id),
    seq INTEGER NOT NULL UNIQUE,
    columns TEXT NOT NULL,
    primary_key TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_change INTEGER NOT NULL,
    last_import INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE metadata (
    table_id TEXT NOT NULL,
    column_name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    provider TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (table_id, column_name, key, provider)
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    size INTEGER NOT NULL,
    is_public INTEGER NOT NULL,
    is_permanent INTEGER NOT NULL,
    is_encrypted INTEGER NOT NULL,
    is_sliced INTEGER NOT NULL,
    slices TEXT NOT NULL
);
CREATE TABLE file_tags (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (file_id, tag)
);
CREATE TABLE states (
    component TEXT NOT NULL,
    config TEXT NOT NULL,
    row_id TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (component, config, row_id)
);
";

/// Version 2: the column types of typed tables (one JSON [`crate::types::ColumnType`] per
/// typed column).
const COLUMN_TYPES: &str = "
CREATE TABLE column_types (
    table_id TEXT NOT NULL,
    column_name TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (table_id, column_name)
);
";

/// The steps from version N-1 to N, in order; index 0 creates version 1 from nothing.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [SCHEMA, COLUMN_TYPES];

/// Tuning of the embedded backend.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a writer waits for another job's transaction before failing.
    pub busy_timeout: Duration,
    /// SQLite page cache per connection, KiB; bounds memory whatever the table size.
    pub cache_kib: u32,
    /// Page size of a new database file (ignored for an existing one). Larger pages mean fewer
    /// WAL frames and system calls on bulk loads and scans.
    pub page_size: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            busy_timeout: Duration::from_secs(600),
            cache_kib: 64 * 1024,
            // Storage is loaded and read in bulk; 64 KiB pages cut WAL frames and system calls
            // 16-fold against the 4 KiB default (an upsert of one row rewrites one larger page).
            page_size: 65536,
        }
    }
}

/// The SQLite-backed [`Storage`]; created on first use.
pub struct SqliteStorage {
    conn: Connection,
    path: PathBuf,
    blobs: PathBuf,
}

impl SqliteStorage {
    /// Opens (creating when missing) the Storage at `path` with default [`Options`].
    pub fn open(path: &Path) -> Result<SqliteStorage> {
        Self::open_with(path, &Options::default())
    }

    /// Opens (creating when missing) the Storage at `path`.
    pub fn open_with(path: &Path, options: &Options) -> Result<SqliteStorage> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private::create_dir_all(parent)?;
        }
        let mut blobs = path.as_os_str().to_owned();
        blobs.push(".files");
        let blobs = PathBuf::from(blobs);
        // The file is created 0600 before SQLite opens it: SQLite gives the WAL, its index
        // and a rollback journal the main file's mode, whatever the umask. A Storage created
        // by an older dockless (0644, 0755) is tightened.
        private::create_file(path)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            private::tighten(Path::new(&file), private::FILE_MODE)?;
        }
        private::tighten(&blobs, private::DIR_MODE)?;
        let conn =
            Connection::open(path).map_err(Error::db(format!("opening {}", path.display())))?;
        conn.busy_timeout(options.busy_timeout)
            .map_err(Error::db("setting the busy timeout"))?;
        // WAL: readers never block the one writer; NORMAL sync is durable at checkpoints and
        // never corrupts. The cache size bounds memory.
        let pragmas = format!(
            "PRAGMA page_size={}; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;
             PRAGMA cache_size=-{}; PRAGMA temp_store=FILE;",
            options.page_size, options.cache_kib
        );
        // Switching a new file to WAL needs a moment of exclusive access, and SQLite answers
        // SQLITE_BUSY there without calling the busy handler: two jobs opening a fresh Storage
        // at once would fail. Retry within the busy timeout instead.
        let started = std::time::Instant::now();
        loop {
            match conn.execute_batch(&pragmas) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < options.busy_timeout =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(Error::db("configuring the connection")(e)),
            }
        }
        let storage = SqliteStorage {
            conn,
            path: path.to_path_buf(),
            blobs,
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<()> {
        // Readers must not queue behind a long write: look first, lock only to migrate.
        let found = self.schema_version()?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        if !(0..SCHEMA_VERSION).contains(&found) {
            return Err(Error::SchemaVersion {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // IMMEDIATE: two first openers must not both migrate; the second sees the new version.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(Error::db("starting the schema migration"))?;
        let result = (|| {
            let current = self.schema_version()?;
            for (i, step) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
                self.conn.execute_batch(step).map_err(Error::db(format!(
                    "migrating the schema to version {}",
                    i + 1
                )))?;
            }
            self.conn
                .execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
                .map_err(Error::db("setting the schema version"))?;
            Ok(())
        })();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn
            .execute_batch(end)
            .map_err(Error::db("finishing the schema migration"))?;
        result
    }

    fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(Error::db("reading the schema version"))
    }
}

impl Storage for SqliteStorage {
    fn tables(&self) -> Result<Vec<TableInfo>> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT id FROM tables ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(Error::db("listing tables"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id: TableId = id.parse()?;
            if let Some(info) = table_info(&self.conn, &id)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        table_info(&self.conn, id)
    }

    fn export_table(
        &self,
        id: &TableId,
        options: &ExportOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<Exported> {
        // A read transaction gives the export one consistent snapshot under WAL.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(Error::db(format!("starting the export of {id}")))?;
        let exported = export::export(&tx, id, options, out)?;
        tx.finish()
            .map_err(Error::db(format!("finishing the export of {id}")))?;
        Ok(exported)
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>> {
        let mut sql = String::from("SELECT id FROM files f WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        for condition in query.conditions() {
            match condition {
                FileCondition::IdIn(ids) => {
                    let marks = vec!["?"; ids.len()].join(",");
                    sql.push_str(&format!(" AND id IN ({marks})"));
                    args.extend(ids.iter().map(|&id| id.into()));
                }
                FileCondition::HasTag(tag) => {
                    sql.push_str(
                        " AND EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = ?)",
                    );
                    args.push(tag.to_string().into());
                }
                FileCondition::LacksTag(tag) => {
                    sql.push_str(" AND NOT EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = ?)");
                    args.push(tag.to_string().into());
                }
                FileCondition::CreatedSince(since) => {
                    sql.push_str(" AND created >= ?");
                    args.push(since.into());
                }
                FileCondition::IdAbove(since) => {
                    sql.push_str(" AND id > ?");
                    args.push(since.into());
                }
            }
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = query.sql_limit() {
            sql.push_str(" LIMIT ?");
            args.push(limit.into());
        }
        let ids: Vec<i64> = self
            .conn
            .prepare(&sql)
            .and_then(|mut s| {
                s.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?
                    .collect()
            })
            .map_err(Error::db("listing files"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = file_info(&self.conn, id)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn file(&self, id: i64) -> Result<Option<FileInfo>> {
        file_info(&self.conn, id)
    }

    fn open_file(&self, id: i64) -> Result<Vec<Box<dyn Read + Send>>> {
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::new();
        for blob in file_blobs(&self.conn, id)? {
            let path = self.blobs.join("sha256").join(&blob.sha256);
            let file = File::open(&path).map_err(Error::io(&path))?;
            readers.push(Box::new(BufReader::with_capacity(1 << 16, file)));
        }
        Ok(readers)
    }

    fn state(&self, key: &StateKey) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM states WHERE component = ?1 AND config = ?2 AND row_id = ?3",
                params![key.component, key.config, key.row.as_deref().unwrap_or("")],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::db("reading the state"))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::db("starting the write transaction"))?;
        Ok(Box::new(SqliteTransaction {
            tx,
            now: now_micros(),
            blobs: self.blobs.clone(),
        }))
    }
}
