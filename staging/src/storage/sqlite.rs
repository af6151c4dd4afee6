//! The embedded Storage: one SQLite file plus a folder of file contents beside it.
//!
//! ```text
//! storage.db                 catalog (buckets, tables, metadata, files, states) + table data
//! storage.db-wal, -shm       SQLite write-ahead log (concurrent readers, one writer)
//! storage.db.files/
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

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    ColumnFilter, DeleteFilter, ExportOptions, Exported, FileInfo, FileQuery, Metadata, NewFile,
    Operator, Prepared, RowSource, Slice, StateKey, Storage, TableInfo, Transaction,
};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::time::{format_iso, now_micros};

const SCHEMA_VERSION: i64 = 1;

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

/// One blob of a file's content, as kept in the catalog.
#[derive(serde::Serialize, serde::Deserialize)]
struct BlobRef {
    name: String,
    sha256: String,
    size: u64,
}

impl SqliteStorage {
    /// Opens (creating when missing) the Storage at `path` with default [`Options`].
    pub fn open(path: &Path) -> Result<SqliteStorage> {
        Self::open_with(path, &Options::default())
    }

    /// Opens (creating when missing) the Storage at `path`.
    pub fn open_with(path: &Path, options: &Options) -> Result<SqliteStorage> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        let conn =
            Connection::open(path).map_err(Error::db(format!("opening {}", path.display())))?;
        conn.busy_timeout(options.busy_timeout)
            .map_err(Error::db("setting the busy timeout"))?;
        // WAL: readers never block the one writer; NORMAL sync is durable at checkpoints and
        // never corrupts. The cache size bounds memory.
        conn.execute_batch(&format!(
            "PRAGMA page_size={}; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;
             PRAGMA cache_size=-{}; PRAGMA temp_store=FILE;",
            options.page_size, options.cache_kib
        ))
        .map_err(Error::db("configuring the connection"))?;
        let mut blobs = path.as_os_str().to_owned();
        blobs.push(".files");
        let storage = SqliteStorage {
            conn,
            path: path.to_path_buf(),
            blobs: PathBuf::from(blobs),
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<()> {
        // Readers must not queue behind a long write: look first, lock only to create.
        match self.schema_version()? {
            SCHEMA_VERSION => return Ok(()),
            0 => {}
            found => {
                return Err(Error::SchemaVersion {
                    path: self.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        // IMMEDIATE: two first openers of a new file must not both create the schema.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(Error::db("starting the schema migration"))?;
        let result = (|| {
            if self.schema_version()? == 0 {
                self.conn
                    .execute_batch(SCHEMA)
                    .map_err(Error::db("creating the schema"))?;
                self.conn
                    .execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
                    .map_err(Error::db("setting the schema version"))?;
            }
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

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Catalog row of a table, as SQL sees it.
struct TableRow {
    seq: i64,
    columns: Vec<String>,
    primary_key: Vec<String>,
}

fn table_row(conn: &Connection, id: &TableId) -> Result<Option<TableRow>> {
    conn.query_row(
        "SELECT seq, columns, primary_key FROM tables WHERE id = ?1",
        [id.to_string()],
        |r| {
            Ok(TableRow {
                seq: r.get(0)?,
                columns: json_list(&r.get::<_, String>(1)?),
                primary_key: json_list(&r.get::<_, String>(2)?),
            })
        },
    )
    .optional()
    .map_err(Error::db(format!("reading table {id}")))
}

/// Metadata of each column, by column name.
type ColumnMetadata = Vec<(String, Vec<Metadata>)>;

fn read_metadata(conn: &Connection, id: &str) -> Result<(Vec<Metadata>, ColumnMetadata)> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT column_name, key, value, provider, timestamp FROM metadata
             WHERE table_id = ?1 ORDER BY column_name, rowid",
        )
        .map_err(Error::db("reading metadata"))?;
    let mut table = Vec::new();
    let mut columns: Vec<(String, Vec<Metadata>)> = Vec::new();
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Metadata {
                    key: r.get(1)?,
                    value: r.get(2)?,
                    provider: r.get(3)?,
                    timestamp: format_iso(r.get(4)?),
                },
            ))
        })
        .map_err(Error::db("reading metadata"))?;
    for row in rows {
        let (column, entry) = row.map_err(Error::db("reading metadata"))?;
        if column.is_empty() {
            table.push(entry);
        } else if let Some(last) = columns.last_mut().filter(|(c, _)| *c == column) {
            last.1.push(entry);
        } else {
            columns.push((column, vec![entry]));
        }
    }
    Ok((table, columns))
}

fn table_info(conn: &Connection, id: &TableId) -> Result<Option<TableInfo>> {
    let row = conn
        .query_row(
            "SELECT columns, primary_key, created, last_change, last_import, rows
             FROM tables WHERE id = ?1",
            [id.to_string()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()
        .map_err(Error::db(format!("reading table {id}")))?;
    let Some((columns, pk, created, last_change, last_import, rows)) = row else {
        return Ok(None);
    };
    let (metadata, column_metadata) = read_metadata(conn, &id.to_string())?;
    Ok(Some(TableInfo {
        id: id.clone(),
        columns: json_list(&columns),
        primary_key: json_list(&pk),
        created,
        last_change,
        last_import,
        rows: rows.max(0) as u64,
        metadata,
        column_metadata,
    }))
}

fn column_index(table: &TableId, columns: &[String], name: &str) -> Result<usize> {
    columns
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| Error::ColumnNotFound {
            table: table.to_string(),
            column: name.to_string(),
        })
}

/// Appends `AND c IN (?, ..)` for a filter and pushes its values.
fn push_filter(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    table: &TableId,
    columns: &[String],
    filter: &ColumnFilter,
) -> Result<()> {
    let col = column_index(table, columns, &filter.column)?;
    let op = match filter.operator {
        Operator::Eq => "IN",
        Operator::Ne => "NOT IN",
    };
    sql.push_str(&format!(" AND c{col} {op} ("));
    for (i, v) in filter.values.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push('?');
        args.push(v.clone().into());
    }
    sql.push(')');
    Ok(())
}

fn export(
    conn: &Connection,
    id: &TableId,
    options: &ExportOptions,
    out: &mut (dyn Write + Send),
) -> Result<Exported> {
    let table = table_row(conn, id)?.ok_or_else(|| Error::TableNotFound { id: id.to_string() })?;
    let selected: Vec<String> = if options.columns.is_empty() {
        table.columns.clone()
    } else {
        options.columns.clone()
    };
    if selected.is_empty() {
        return Err(Error::Columns {
            what: id.to_string(),
            reason: "nothing to export: the table has no columns".into(),
        });
    }
    let mut positions = Vec::with_capacity(selected.len());
    for name in &selected {
        positions.push(column_index(id, &table.columns, name)?);
    }
    let select: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    let mut sql = format!("SELECT {} FROM t{} WHERE 1", select.join(","), table.seq);
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(since) = options.changed_since {
        sql.push_str(" AND _timestamp >= ?");
        args.push(since.into());
    }
    if let Some(filter) = &options.filter {
        push_filter(&mut sql, &mut args, id, &table.columns, filter)?;
    }
    if let Some(limit) = options.limit {
        sql.push_str(" LIMIT ?");
        args.push((limit.min(i64::MAX as u64) as i64).into());
    }
    let mut stmt = conn
        .prepare(&sql)
        .map_err(Error::db(format!("exporting {id}")))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args))
        .map_err(Error::db(format!("exporting {id}")))?;
    let io_err = |source| Error::Io {
        path: PathBuf::from(format!("<export of {id}>")),
        source,
    };
    let mut header = Vec::new();
    for (i, name) in selected.iter().enumerate() {
        quote_field(&mut header, name.as_bytes(), i + 1 == selected.len());
    }
    out.write_all(&header).map_err(io_err)?;
    // Two stages on two threads: this one steps SQLite and copies raw values into batches,
    // the other quotes them and writes. Batches are recycled, so memory stays at a few MiB.
    let width = selected.len();
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(3);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Batch>();
    let (count, written) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let mut buf = Vec::with_capacity(EXPORT_CHUNK + (1 << 16));
            for batch in full_rx {
                let mut start = 0usize;
                for (i, end) in batch.ends.iter().enumerate() {
                    let end = *end;
                    quote_field(&mut buf, &batch.data[start..end], (i + 1) % width == 0);
                    start = end;
                }
                if buf.len() >= EXPORT_CHUNK {
                    out.write_all(&buf)?;
                    buf.clear();
                }
                let _ = free_tx.send(batch);
            }
            out.write_all(&buf)?;
            out.flush()
        });
        let mut count = 0u64;
        let mut produce = || -> Result<()> {
            let during = || format!("exporting {id}");
            let mut batch = Batch::default();
            while let Some(row) = rows.next().map_err(|e| Error::db(during())(e))? {
                for i in 0..width {
                    let field: &[u8] = match row.get_ref(i).map_err(|e| Error::db(during())(e))? {
                        ValueRef::Text(t) | ValueRef::Blob(t) => t,
                        _ => b"",
                    };
                    batch.data.extend_from_slice(field);
                    batch.ends.push(batch.data.len());
                }
                count += 1;
                if batch.data.len() >= EXPORT_BATCH || batch.ends.len() >= EXPORT_BATCH / 8 {
                    if full_tx.send(batch).is_err() {
                        // The writer stopped on an error; it is reported below.
                        return Ok(());
                    }
                    batch = free_rx.try_recv().unwrap_or_default();
                    batch.data.clear();
                    batch.ends.clear();
                }
            }
            let _ = full_tx.send(batch);
            Ok(())
        };
        let produced = produce();
        drop(full_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("export writer panicked")));
        produced.map(|()| (count, written))
    })?;
    written.map_err(io_err)?;
    Ok(Exported {
        columns: selected,
        rows: count,
    })
}

/// Raw values of many rows, `ends[i]` the end offset of field `i` in `data`.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

/// Bytes of raw values per batch handed to the export writer thread.
const EXPORT_BATCH: usize = 1 << 20;
/// Bytes of CSV collected before one `write` call.
const EXPORT_CHUNK: usize = 1 << 20;

/// Appends one field as Keboola writes it: always quoted, quotes doubled, then `,` or LF.
fn quote_field(buf: &mut Vec<u8>, field: &[u8], last: bool) {
    buf.push(b'"');
    if field.contains(&b'"') {
        for &b in field {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
    } else {
        buf.extend_from_slice(field);
    }
    buf.push(b'"');
    buf.push(if last { b'\n' } else { b',' });
}

fn file_info(conn: &Connection, id: i64) -> Result<Option<FileInfo>> {
    let row = conn
        .query_row(
            "SELECT name, created, size, is_public, is_permanent, is_encrypted, is_sliced, slices
             FROM files WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, String>(7)?,
                ))
            },
        )
        .optional()
        .map_err(Error::db(format!("reading file {id}")))?;
    let Some((name, created, size, is_public, is_permanent, is_encrypted, is_sliced, slices)) = row
    else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached("SELECT tag FROM file_tags WHERE file_id = ?1 ORDER BY tag")
        .map_err(Error::db("reading file tags"))?;
    let tags = stmt
        .query_map([id], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::db("reading file tags"))?;
    let blobs: Vec<BlobRef> = serde_json::from_str(&slices).unwrap_or_default();
    Ok(Some(FileInfo {
        id,
        name,
        tags,
        created,
        size: size.max(0) as u64,
        is_public,
        is_permanent,
        is_encrypted,
        is_sliced,
        slices: if is_sliced {
            blobs.into_iter().map(|b| b.name).collect()
        } else {
            Vec::new()
        },
    }))
}

fn file_blobs(conn: &Connection, id: i64) -> Result<Vec<BlobRef>> {
    let slices: Option<String> = conn
        .query_row("SELECT slices FROM files WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(Error::db(format!("reading file {id}")))?;
    let slices = slices.ok_or(Error::FileNotFound { id })?;
    Ok(serde_json::from_str(&slices).unwrap_or_default())
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
        let exported = export(&tx, id, options, out)?;
        tx.finish()
            .map_err(Error::db(format!("finishing the export of {id}")))?;
        Ok(exported)
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>> {
        let mut sql = String::from("SELECT id FROM files f WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !query.ids.is_empty() {
            sql.push_str(" AND id IN (");
            for (i, id) in query.ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
                args.push((*id).into());
            }
            sql.push(')');
        } else {
            for tag in &query.include_tags {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = ?)",
                );
                args.push(tag.clone().into());
            }
            for tag in &query.exclude_tags {
                sql.push_str(" AND NOT EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = ?)");
                args.push(tag.clone().into());
            }
        }
        if let Some(since) = query.created_since {
            sql.push_str(" AND created >= ?");
            args.push(since.into());
        }
        if let Some(since) = query.since_id {
            sql.push_str(" AND id > ?");
            args.push(since.into());
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            args.push((limit.min(i64::MAX as u64) as i64).into());
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

/// The write transaction of the embedded backend (`BEGIN IMMEDIATE`: one writer at a time).
struct SqliteTransaction<'c> {
    tx: rusqlite::Transaction<'c>,
    now: i64,
    blobs: PathBuf,
}

impl SqliteTransaction<'_> {
    fn require(&self, id: &TableId) -> Result<TableRow> {
        table_row(&self.tx, id)?.ok_or_else(|| Error::TableNotFound { id: id.to_string() })
    }

    fn write_catalog(&self, id: &TableId, columns: &[String], pk: &[String]) -> Result<()> {
        self.tx
            .execute(
                "UPDATE tables SET columns = ?2, primary_key = ?3 WHERE id = ?1",
                params![id.to_string(), to_json(columns), to_json(pk)],
            )
            .map_err(Error::db(format!("updating table {id}")))?;
        Ok(())
    }

    /// Builds the unique index of `pk`; false (and no index) when the rows hold duplicates.
    fn create_pk_index(
        &self,
        seq: i64,
        columns: &[String],
        pk: &[String],
        id: &TableId,
    ) -> Result<bool> {
        if pk.is_empty() {
            return Ok(true);
        }
        let mut cols = Vec::new();
        for name in pk {
            cols.push(format!("c{}", column_index(id, columns, name)?));
        }
        let sql = format!(
            "CREATE UNIQUE INDEX t{seq}_pk ON t{seq} ({})",
            cols.join(",")
        );
        self.tx
            .execute_batch("SAVEPOINT pk")
            .map_err(Error::db("creating a savepoint"))?;
        match self.tx.execute_batch(&sql) {
            Ok(()) => {
                self.tx
                    .execute_batch("RELEASE pk")
                    .map_err(Error::db("releasing a savepoint"))?;
                Ok(true)
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                self.tx
                    .execute_batch("ROLLBACK TO pk; RELEASE pk")
                    .map_err(Error::db("rolling back a savepoint"))?;
                Ok(false)
            }
            Err(e) => Err(Error::db(format!("indexing the primary key of {id}"))(e)),
        }
    }

    fn load_plain(
        &self,
        seq: i64,
        positions: &[usize],
        rows: &mut dyn RowSource,
        upsert: Option<(&[String], &[String])>,
    ) -> Result<(u64, u64)> {
        let cols: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
        let marks: Vec<String> = (1..=positions.len()).map(|i| format!("?{i}")).collect();
        let ts = positions.len() + 1;
        let mut sql = format!(
            "INSERT INTO t{seq} ({}, _timestamp) VALUES ({}, ?{ts})",
            cols.join(","),
            marks.join(",")
        );
        if let Some((pk_cols, _)) = upsert {
            let sets: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            let differs: Vec<String> = cols
                .iter()
                .map(|c| format!("t{seq}.{c} IS NOT excluded.{c}"))
                .collect();
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}, _timestamp = excluded._timestamp WHERE {}",
                pk_cols.join(","),
                sets.join(","),
                differs.join(" OR ")
            ));
        }
        let mut stmt = self
            .tx
            .prepare(&sql)
            .map_err(Error::db("preparing the load"))?;
        let mut record = csv::StringRecord::new();
        let (mut read, mut changed) = (0u64, 0u64);
        while rows.next_record(&mut record)? {
            for (i, field) in record.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, field)
                    .map_err(Error::db("binding a row"))?;
            }
            stmt.raw_bind_parameter(ts, self.now)
                .map_err(Error::db("binding a row"))?;
            changed += stmt.raw_execute().map_err(Error::db("inserting a row"))? as u64;
            read += 1;
        }
        Ok((read, changed))
    }

    fn touch(&self, id: &TableId, changed: bool) -> Result<()> {
        let seq = self.require(id)?.seq;
        let rows: i64 = self
            .tx
            .query_row(&format!("SELECT count(*) FROM t{seq}"), [], |r| r.get(0))
            .map_err(Error::db(format!("counting rows of {id}")))?;
        let sql = if changed {
            "UPDATE tables SET last_import = ?2, last_change = ?2, rows = ?3 WHERE id = ?1"
        } else {
            "UPDATE tables SET last_import = ?2, rows = ?3 WHERE id = ?1"
        };
        self.tx
            .execute(sql, params![id.to_string(), self.now, rows])
            .map_err(Error::db(format!("updating table {id}")))?;
        Ok(())
    }

    fn put_metadata(
        &self,
        id: &TableId,
        column: &str,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO metadata (table_id, column_name, key, value, provider, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (table_id, column_name, key, provider)
                 DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp",
            )
            .map_err(Error::db("writing metadata"))?;
        for (key, value) in entries {
            stmt.execute(params![
                id.to_string(),
                column,
                key,
                value,
                provider,
                self.now
            ])
            .map_err(Error::db(format!("writing metadata of {id}")))?;
        }
        Ok(())
    }

    fn store_blob(&self, slice: &mut Slice) -> Result<BlobRef> {
        let dir = self.blobs.join("sha256");
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempfile_in(&self.blobs)
            .map_err(Error::io(&self.blobs))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match slice.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Io {
                        path: slice.origin.clone(),
                        source,
                    });
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(Error::io(tmp.path()))?;
            size += n as u64;
        }
        tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
        let sha = hex::encode(hasher.finalize());
        let target = dir.join(&sha);
        tmp.persist(&target).map_err(|e| Error::Io {
            path: target.clone(),
            source: e.error,
        })?;
        Ok(BlobRef {
            name: slice.name.clone(),
            sha256: sha,
            size,
        })
    }
}

impl Transaction for SqliteTransaction<'_> {
    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        table_info(&self.tx, id)
    }

    fn prepare_table(
        &mut self,
        id: &TableId,
        columns: &[String],
        primary_key: &[String],
    ) -> Result<Prepared> {
        let mut prepared = Prepared::default();
        let Some(existing) = table_row(&self.tx, id)? else {
            for (i, c) in columns.iter().enumerate() {
                if c.is_empty() || columns[..i].contains(c) {
                    return Err(Error::Columns {
                        what: id.to_string(),
                        reason: format!("column {c:?} is empty or repeated"),
                    });
                }
            }
            if columns.is_empty() {
                return Err(Error::Columns {
                    what: id.to_string(),
                    reason: "a table needs at least one column".into(),
                });
            }
            for name in primary_key {
                column_index(id, columns, name)?;
            }
            let bucket = id.bucket().to_string();
            self.tx
                .execute(
                    "INSERT OR IGNORE INTO buckets (id, created) VALUES (?1, ?2)",
                    params![bucket, self.now],
                )
                .map_err(Error::db(format!("creating bucket {bucket}")))?;
            let seq: i64 = self
                .tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM tables", [], |r| {
                    r.get(0)
                })
                .map_err(Error::db("allocating a table"))?;
            self.tx
                .execute(
                    "INSERT INTO tables (id, bucket, seq, columns, primary_key, created, last_change, last_import)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
                    params![id.to_string(), bucket, seq, to_json(columns), to_json(primary_key), self.now],
                )
                .map_err(Error::db(format!("creating table {id}")))?;
            let defs: Vec<String> = (0..columns.len())
                .map(|i| format!("c{i} TEXT NOT NULL DEFAULT ''"))
                .collect();
            self.tx
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS t{seq}; CREATE TABLE t{seq} ({}, _timestamp INTEGER NOT NULL)",
                    defs.join(", ")
                ))
                .map_err(Error::db(format!("creating table {id}")))?;
            self.create_pk_index(seq, columns, primary_key, id)?;
            prepared.created = true;
            return Ok(prepared);
        };
        let mut all = existing.columns.clone();
        for c in columns {
            if c.is_empty() {
                return Err(Error::Columns {
                    what: id.to_string(),
                    reason: "empty column name".into(),
                });
            }
            if !all.contains(c) {
                self.tx
                    .execute_batch(&format!(
                        "ALTER TABLE t{} ADD COLUMN c{} TEXT NOT NULL DEFAULT ''",
                        existing.seq,
                        all.len()
                    ))
                    .map_err(Error::db(format!("adding column {c} to {id}")))?;
                all.push(c.clone());
                prepared.added_columns.push(c.clone());
            }
        }
        let mut pk = existing.primary_key.clone();
        if primary_key != existing.primary_key.as_slice() {
            for name in primary_key {
                column_index(id, &all, name)?;
            }
            self.tx
                .execute_batch(&format!("DROP INDEX IF EXISTS t{}_pk", existing.seq))
                .map_err(Error::db(format!("dropping the primary key of {id}")))?;
            if self.create_pk_index(existing.seq, &all, primary_key, id)? {
                prepared.warnings.push(format!(
                    "primary key of {id} changed from {:?} to {primary_key:?}",
                    existing.primary_key
                ));
                pk = primary_key.to_vec();
            } else {
                self.create_pk_index(existing.seq, &all, &existing.primary_key, id)?;
                prepared.warnings.push(format!(
                    "primary key of {id} kept as {:?}: the rows have duplicates in {primary_key:?}",
                    existing.primary_key
                ));
            }
        }
        self.write_catalog(id, &all, &pk)?;
        Ok(prepared)
    }

    fn delete_rows(&mut self, id: &TableId, filter: &DeleteFilter) -> Result<u64> {
        let table = self.require(id)?;
        let mut sql = format!("DELETE FROM t{} WHERE 1", table.seq);
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(since) = filter.changed_since {
            sql.push_str(" AND _timestamp >= ?");
            args.push(since.into());
        }
        if let Some(until) = filter.changed_until {
            sql.push_str(" AND _timestamp < ?");
            args.push(until.into());
        }
        for f in &filter.filters {
            push_filter(&mut sql, &mut args, id, &table.columns, f)?;
        }
        let n = self
            .tx
            .execute(&sql, rusqlite::params_from_iter(args))
            .map_err(Error::db(format!("deleting rows of {id}")))?;
        if n > 0 {
            self.touch(id, true)?;
        }
        Ok(n as u64)
    }

    fn load_rows(
        &mut self,
        id: &TableId,
        columns: &[String],
        incremental: bool,
        rows: &mut dyn RowSource,
    ) -> Result<u64> {
        let table = self.require(id)?;
        let missing: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !columns.contains(c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingColumns {
                table: id.to_string(),
                missing,
            });
        }
        let mut positions = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(Error::Columns {
                    what: id.to_string(),
                    reason: format!("column {c:?} appears twice"),
                });
            }
            positions.push(column_index(id, &table.columns, c)?);
        }
        let seq = table.seq;
        let pk_cols: Vec<String> = table
            .primary_key
            .iter()
            .map(|k| column_index(id, &table.columns, k).map(|p| format!("c{p}")))
            .collect::<Result<_>>()?;
        let (read, changed) = if !incremental {
            // Full load: empty the table, insert without the index, then build the index in
            // one sort (much faster than keeping it up to date row by row). Duplicate keys in
            // the file keep one arbitrary row, as Keboola does.
            self.tx
                .execute_batch(&format!(
                    "DROP INDEX IF EXISTS t{seq}_pk; DELETE FROM t{seq};"
                ))
                .map_err(Error::db(format!("emptying {id}")))?;
            let counts = self.load_plain(seq, &positions, rows, None)?;
            if !self.create_pk_index(seq, &table.columns, &table.primary_key, id)? {
                self.tx
                    .execute_batch(&format!(
                        "DELETE FROM t{seq} WHERE rowid NOT IN (SELECT MAX(rowid) FROM t{seq} GROUP BY {})",
                        pk_cols.join(",")
                    ))
                    .map_err(Error::db(format!("deduplicating {id}")))?;
                self.create_pk_index(seq, &table.columns, &table.primary_key, id)?;
            }
            (counts.0, 1)
        } else if pk_cols.is_empty() {
            self.load_plain(seq, &positions, rows, None)?
        } else {
            self.load_plain(seq, &positions, rows, Some((&pk_cols, &table.primary_key)))?
        };
        self.touch(id, changed > 0)?;
        Ok(read)
    }

    fn set_table_metadata(
        &mut self,
        id: &TableId,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        self.require(id)?;
        self.put_metadata(id, "", provider, entries)
    }

    fn set_column_metadata(
        &mut self,
        id: &TableId,
        column: &str,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        let table = self.require(id)?;
        column_index(id, &table.columns, column)?;
        self.put_metadata(id, column, provider, entries)
    }

    fn drop_table(&mut self, id: &TableId) -> Result<()> {
        let table = self.require(id)?;
        self.tx
            .execute_batch(&format!("DROP TABLE t{}", table.seq))
            .map_err(Error::db(format!("dropping {id}")))?;
        self.tx
            .execute("DELETE FROM tables WHERE id = ?1", [id.to_string()])
            .and_then(|_| {
                self.tx
                    .execute("DELETE FROM metadata WHERE table_id = ?1", [id.to_string()])
            })
            .map_err(Error::db(format!("dropping {id}")))?;
        Ok(())
    }

    fn add_file(&mut self, file: &NewFile, slices: &mut dyn Iterator<Item = Slice>) -> Result<i64> {
        let mut blobs = Vec::new();
        for mut slice in slices {
            blobs.push(self.store_blob(&mut slice)?);
        }
        let is_sliced = blobs.len() != 1;
        let size: u64 = blobs.iter().map(|b| b.size).sum();
        let slices = serde_json::to_string(&blobs).unwrap_or_else(|_| "[]".into());
        self.tx
            .execute(
                "INSERT INTO files (name, created, size, is_public, is_permanent, is_encrypted, is_sliced, slices)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![file.name, self.now, size as i64, file.is_public, file.is_permanent, file.is_encrypted, is_sliced, slices],
            )
            .map_err(Error::db(format!("adding file {}", file.name)))?;
        let id = self.tx.last_insert_rowid();
        self.add_file_tags(id, &file.tags)?;
        Ok(id)
    }

    fn add_file_tags(&mut self, id: i64, tags: &[String]) -> Result<()> {
        file_blobs(&self.tx, id)?;
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO file_tags (file_id, tag) VALUES (?1, ?2)")
            .map_err(Error::db("tagging a file"))?;
        for tag in tags {
            stmt.execute(params![id, tag])
                .map_err(Error::db(format!("tagging file {id}")))?;
        }
        Ok(())
    }

    fn delete_file(&mut self, id: i64) -> Result<()> {
        let n = self
            .tx
            .execute("DELETE FROM files WHERE id = ?1", [id])
            .map_err(Error::db(format!("deleting file {id}")))?;
        if n == 0 {
            return Err(Error::FileNotFound { id });
        }
        Ok(())
    }

    fn set_state(&mut self, key: &StateKey, state: &Value) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO states (component, config, row_id, value) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (component, config, row_id) DO UPDATE SET value = excluded.value",
                params![
                    key.component,
                    key.config,
                    key.row.as_deref().unwrap_or(""),
                    state.to_string()
                ],
            )
            .map_err(Error::db("storing the state"))?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().map_err(Error::db("committing"))
    }
}
