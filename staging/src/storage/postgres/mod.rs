//! The shared Storage: a PostgreSQL database that several hosts use at once.
//!
//! ```text
//! schema dockless
//!   schema_version             one row per applied migration (see migrate.rs)
//!   buckets, tables, metadata, column_types, states     the catalog, as in the SQLite backend
//!   files, file_tags, file_chunks (1 MiB bytea each)    files, streamed in and out in chunks
//!   t<seq>                     a table's rows: c0..cN text NOT NULL DEFAULT '', _timestamp
//!                              bigint (unix microseconds), unique index t<seq>_pk for the key
//!   retired_tables             t<seq> replaced by a full load or dropped, kept for readers
//! ```
//!
//! Bulk data moves through `COPY`: loads stream binary rows into the table (or, for an upsert,
//! into a temporary staging table merged with one `INSERT ... ON CONFLICT`), exports stream
//! the server's CSV straight to the caller. A full load writes a new `t<seq>`, switches the
//! catalog to it and retires the old one, so that a reader's snapshot keeps seeing the old
//! rows; retired tables are dropped by a later write transaction after
//! [`RETIRED_GRACE_MICROS`].
//!
//! Concurrency: every write transaction takes a transaction-level advisory lock per table it
//! writes (`pg_advisory_xact_lock(CLASS, hashtext(table id))`) before touching it, so two jobs
//! writing one table take turns while jobs writing different tables run side by side; readers
//! never wait (REPEATABLE READ snapshots). Two jobs that write the same two tables in opposite
//! orders can deadlock: PostgreSQL detects it and fails one of them (its job ends in an
//! error, nothing of it committed).

mod catalog;
pub mod connect;
mod copy;
pub mod migrate;
pub mod queue;
mod write;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use postgres::Client;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::rules::{FileCondition, csv_header, export_columns, sql_limit};
use crate::storage::{
    ExportOptions, Exported, FileInfo, FileQuery, StateKey, Storage, TableInfo, Transaction,
};
use crate::time::now_micros;

use catalog::{Params, file_info, file_slices, inline_condition, refs, table_info};
pub use connect::ConnectTarget;
pub use queue::{Claimed, JobQueue, JobRecord, Killed, NewJob, Renewal, Wakeup};
pub use write::PgTransaction;

/// Most columns a table can have: PostgreSQL's 1,600 per table less `_timestamp`.
pub const MAX_COLUMNS: usize = 1599;

/// How long a retired `t<seq>` is kept for readers whose snapshot predates its retirement.
pub const RETIRED_GRACE_MICROS: i64 = 10 * 60 * 1_000_000;

/// Whether a `--storage` value names a PostgreSQL database rather than a SQLite file.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The PostgreSQL-backed [`Storage`]: one connection (a job's reads and its one write
/// transaction), plus one more per [`Storage::open_file`] while file content is read.
pub struct PostgresStorage {
    client: RefCell<Client>,
    target: ConnectTarget,
}

impl PostgresStorage {
    /// Connects to `url` (`postgres://` or `postgresql://`, completed from the `PG*`
    /// variables and `~/.pgpass`), sets up an empty database, and refuses a schema of another
    /// version (see [`migrate`]).
    pub fn connect(url: &str) -> Result<PostgresStorage> {
        let target = ConnectTarget::resolve(url)?;
        let mut client = open_session(&target)?;
        migrate::check_on_open(&mut client, target.display())?;
        Ok(PostgresStorage {
            client: RefCell::new(client),
            target,
        })
    }

    /// `dockless storage migrate`: connects and brings the schema to this build's version;
    /// returns the versions before and after.
    pub fn migrate(url: &str) -> Result<(i64, i64)> {
        let target = ConnectTarget::resolve(url)?;
        let mut client = open_session(&target)?;
        migrate::migrate(&mut client, target.display())
    }

    /// `user@host:port/dbname`, for messages.
    pub fn target(&self) -> &str {
        self.target.display()
    }

    /// The connection settings, for another connection to the same database (a worker's
    /// second session, a test).
    pub fn connect_target(&self) -> &ConnectTarget {
        &self.target
    }

    /// The session itself, for sibling modules that run their own statements (the queue).
    pub(crate) fn client(&self) -> std::cell::RefMut<'_, Client> {
        self.client.borrow_mut()
    }

    /// [`Storage::begin`] with the concrete type, whose `client` (crate-internal) lets
    /// sibling modules write in the same transaction.
    pub fn begin_pg(&mut self) -> Result<PgTransaction<'_>> {
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(Error::pg("starting the write transaction"))?;
        let now = now_micros();
        write::drop_retired(&mut tx, now)?;
        Ok(PgTransaction::new(tx, now))
    }
}

/// A session on `url` whose schema is current (an empty database is set up), for the job
/// queue's own connections.
pub(crate) fn connect_current(url: &str) -> Result<Client> {
    let target = ConnectTarget::resolve(url)?;
    let mut client = open_session(&target)?;
    migrate::check_on_open(&mut client, target.display())?;
    Ok(client)
}

/// A connection with the session settings every statement here relies on.
fn open_session(target: &ConnectTarget) -> Result<Client> {
    let mut client = target.connect()?;
    client
        .batch_execute("SET search_path TO dockless; SET client_encoding TO 'UTF8'")
        .map_err(Error::pg("setting up the session"))?;
    Ok(client)
}

/// A read-only REPEATABLE READ transaction: everything one read looks at comes from one
/// snapshot.
fn snapshot(client: &mut Client, during: impl Into<String>) -> Result<postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(Error::pg(during))
}

impl Storage for PostgresStorage {
    fn tables(&self) -> Result<Vec<TableInfo>> {
        let mut client = self.client();
        let mut tx = snapshot(&mut client, "listing tables")?;
        let ids: Vec<String> = tx
            .query("SELECT id FROM tables ORDER BY id COLLATE \"C\"", &[])
            .map_err(Error::pg("listing tables"))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id: TableId = id.parse()?;
            if let Some(info) = table_info(&mut tx, &id)? {
                out.push(info);
            }
        }
        tx.commit().map_err(Error::pg("listing tables"))?;
        Ok(out)
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        let mut client = self.client();
        let mut tx = snapshot(&mut client, format!("reading table {id}"))?;
        let info = table_info(&mut tx, id)?;
        tx.commit()
            .map_err(Error::pg(format!("reading table {id}")))?;
        Ok(info)
    }

    fn export_table(
        &self,
        id: &TableId,
        options: &ExportOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<Exported> {
        let mut client = self.client();
        // One snapshot for the catalog and the rows: a full load committed in between is not
        // seen at all (its old table is kept for such readers).
        let mut tx = snapshot(&mut client, format!("starting the export of {id}"))?;
        let table = catalog::table_row(&mut tx, id)?
            .ok_or_else(|| Error::TableNotFound { id: id.to_string() })?;
        let (selected, positions) = export_columns(id, &table.columns, options)?;
        let select: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
        let mut sql = format!(
            "COPY (SELECT {} FROM t{} WHERE true",
            select.join(","),
            table.seq
        );
        for condition in options.conditions(id, &table.columns)? {
            inline_condition(&mut sql, &condition);
        }
        if let Some(limit) = options.limit {
            sql.push_str(&format!(" LIMIT {}", sql_limit(limit)));
        }
        sql.push_str(") TO STDOUT (FORMAT csv, FORCE_QUOTE *)");
        out.write_all(&csv_header(&selected))
            .map_err(|source| Error::Io {
                path: format!("<export of {id}>").into(),
                source,
            })?;
        let rows = {
            let mut reader = tx
                .copy_out(sql.as_str())
                .map_err(Error::pg(format!("exporting {id}")))?;
            copy::pass_csv(&mut reader, out, &id.to_string())?
        };
        tx.commit()
            .map_err(Error::pg(format!("finishing the export of {id}")))?;
        Ok(Exported {
            columns: selected,
            rows,
        })
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>> {
        let mut sql = String::from("SELECT id FROM files f WHERE true");
        let mut params: Params = Vec::new();
        for condition in query.conditions() {
            let test = match condition {
                FileCondition::IdIn(ids) => {
                    params.push(Box::new(ids.to_vec()));
                    "id = ANY($n)"
                }
                FileCondition::HasTag(tag) => {
                    params.push(Box::new(tag.to_string()));
                    "EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = $n)"
                }
                FileCondition::LacksTag(tag) => {
                    params.push(Box::new(tag.to_string()));
                    "NOT EXISTS (SELECT 1 FROM file_tags t WHERE t.file_id = f.id AND t.tag = $n)"
                }
                FileCondition::CreatedSince(since) => {
                    params.push(Box::new(since));
                    "created >= $n"
                }
                FileCondition::IdAbove(since) => {
                    params.push(Box::new(since));
                    "id > $n"
                }
            };
            sql.push_str(" AND ");
            sql.push_str(&test.replace("$n", &format!("${}", params.len())));
        }
        sql.push_str(" ORDER BY id DESC");
        if let Some(limit) = query.sql_limit() {
            params.push(Box::new(limit));
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let mut client = self.client();
        let mut tx = snapshot(&mut client, "listing files")?;
        let ids: Vec<i64> = tx
            .query(sql.as_str(), &refs(&params))
            .map_err(Error::pg("listing files"))?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = file_info(&mut tx, id)? {
                out.push(info);
            }
        }
        tx.commit().map_err(Error::pg("listing files"))?;
        Ok(out)
    }

    fn file(&self, id: i64) -> Result<Option<FileInfo>> {
        file_info(&mut *self.client(), id)
    }

    fn open_file(&self, id: i64) -> Result<Vec<Box<dyn Read + Send>>> {
        let slices = file_slices(&mut *self.client(), id)?;
        // The readers outlive this borrow of the session: they share a connection of their
        // own, opened on the first read and closed with the last reader.
        let session = Arc::new(Mutex::new(None));
        Ok((0..slices.len())
            .map(|slice| {
                Box::new(ChunkReader {
                    target: self.target.clone(),
                    session: session.clone(),
                    file: id,
                    slice: slice as i32,
                    next: 0,
                    chunk: Vec::new(),
                    at: 0,
                    done: false,
                }) as Box<dyn Read + Send>
            })
            .collect())
    }

    fn state(&self, key: &StateKey) -> Result<Option<Value>> {
        let row = self
            .client()
            .query_opt(
                "SELECT value FROM states WHERE component = $1 AND config = $2 AND row_id = $3",
                &[
                    &key.component,
                    &key.config,
                    &key.row.as_deref().unwrap_or(""),
                ],
            )
            .map_err(Error::pg("reading the state"))?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        Ok(Box::new(self.begin_pg()?))
    }
}

/// Reads one slice of a file chunk by chunk (one 1 MiB chunk in memory at a time).
struct ChunkReader {
    target: ConnectTarget,
    session: Arc<Mutex<Option<Client>>>,
    file: i64,
    slice: i32,
    next: i32,
    chunk: Vec<u8>,
    at: usize,
    done: bool,
}

impl ChunkReader {
    fn fetch(&mut self) -> std::io::Result<()> {
        let mut session = self
            .session
            .lock()
            .map_err(|_| std::io::Error::other("file reader poisoned"))?;
        if session.is_none() {
            *session = Some(open_session(&self.target).map_err(std::io::Error::other)?);
        }
        let client = session.as_mut().expect("connected above");
        let row = client
            .query_opt(
                "SELECT bytes FROM file_chunks WHERE file_id = $1 AND slice = $2 AND seq = $3",
                &[&self.file, &self.slice, &self.next],
            )
            .map_err(std::io::Error::other)?;
        match row {
            Some(row) => {
                self.chunk = row.get(0);
                self.at = 0;
                self.next += 1;
            }
            None => {
                self.done = true;
                self.chunk = Vec::new();
                self.at = 0;
            }
        }
        Ok(())
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            self.fetch()?;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
