//! The write transaction: table loads, metadata, files, state.

use std::cell::{RefCell, RefMut};
use std::collections::HashSet;

use postgres::error::SqlState;
use postgres::types::ToSql;
use serde_json::Value;

use super::catalog::{
    Params, SliceRef, TableRow, file_slices, push_condition, refs, table_info, table_row,
};
use super::{MAX_COLUMNS, RETIRED_GRACE_MICROS, copy};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::queue::{Claim, Step};
use crate::storage::rules::{
    check_new_table, column_index, column_positions, is_sliced, load_positions, plan_table_change,
    switch_key, to_json,
};
use crate::storage::{
    DeleteFilter, NewFile, Prepared, RowSource, Slice, StateKey, TableInfo, Transaction,
};
use crate::types::ColumnType;

/// First key of the advisory locks that serialise writers of one table (`Tb`).
const TABLE_LOCK_CLASS: i32 = 0x5462;
/// Size of one stored chunk of file content.
const FILE_CHUNK: usize = 1 << 20;
/// Retired tables dropped per write transaction at most (the rest wait for the next one).
const DROPS_PER_BEGIN: i64 = 8;

/// The write transaction of the PostgreSQL backend: nothing is visible to others before
/// [`Transaction::commit`]; dropping it rolls everything back.
pub struct PgTransaction<'c> {
    tx: RefCell<postgres::Transaction<'c>>,
    now: i64,
    /// Tables whose advisory lock this transaction holds.
    locked: HashSet<String>,
    /// `t<seq>` created by this transaction: nobody else can see them, so a full load may
    /// rewrite them in place.
    created: HashSet<i64>,
}

/// Drops tables retired longer than [`RETIRED_GRACE_MICROS`] ago that no reader holds (a
/// table still read is skipped, not waited for).
pub(super) fn drop_retired(tx: &mut postgres::Transaction<'_>, now: i64) -> Result<()> {
    let names: Vec<String> = tx
        .query(
            "SELECT name FROM retired_tables WHERE retired < $1 ORDER BY retired
             LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&(now - RETIRED_GRACE_MICROS), &DROPS_PER_BEGIN],
        )
        .map_err(Error::pg("listing retired tables"))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    for name in names {
        let mut sp = tx
            .savepoint("retired")
            .map_err(Error::pg("dropping a retired table"))?;
        let dropped = sp.batch_execute(&format!(
            "SET LOCAL lock_timeout = '50ms'; DROP TABLE IF EXISTS {}; \
             DELETE FROM retired_tables WHERE name = {}",
            quote_ident(&name),
            super::catalog::literal(&name)
        ));
        if dropped.is_ok() {
            sp.commit().map_err(Error::pg("dropping a retired table"))?;
        }
    }
    tx.batch_execute("SET LOCAL lock_timeout TO DEFAULT")
        .map_err(Error::pg("dropping a retired table"))?;
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl<'c> PgTransaction<'c> {
    pub(super) fn new(tx: postgres::Transaction<'c>, now: i64) -> PgTransaction<'c> {
        PgTransaction {
            tx: RefCell::new(tx),
            now,
            locked: HashSet::new(),
            created: HashSet::new(),
        }
    }

    /// The underlying transaction, for sibling modules that write in it (the queue records a
    /// job's end in the job's own output transaction).
    pub(crate) fn client(&self) -> RefMut<'_, postgres::Transaction<'c>> {
        self.tx.borrow_mut()
    }

    /// The time every row and catalog change of this transaction is stamped with.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Waits for, then holds until the end of the transaction, the right to write `id`.
    fn lock(&mut self, id: &TableId) -> Result<()> {
        let key = id.to_string();
        if self.locked.contains(&key) {
            return Ok(());
        }
        self.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&TABLE_LOCK_CLASS, &key],
            format!("waiting for other writers of {id}"),
        )?;
        self.locked.insert(key);
        Ok(())
    }

    fn require(&mut self, id: &TableId) -> Result<TableRow> {
        self.lock(id)?;
        table_row(self.tx.get_mut(), id)?.ok_or_else(|| Error::TableNotFound { id: id.to_string() })
    }

    /// Runs one statement with parameters; returns how many rows it changed.
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        during: impl Into<String>,
    ) -> Result<u64> {
        self.tx
            .get_mut()
            .execute(sql, params)
            .map_err(Error::pg(during))
    }

    fn exec(&mut self, sql: &str, during: impl Into<String>) -> Result<()> {
        self.tx
            .get_mut()
            .batch_execute(sql)
            .map_err(Error::pg(during))
    }

    /// Creates an empty `t<seq>` with `width` columns; returns its seq.
    fn create_data_table(&mut self, width: usize, id: &TableId) -> Result<i64> {
        let seq: i64 = self
            .tx
            .get_mut()
            .query_one("SELECT nextval('table_seq')", &[])
            .map_err(Error::pg("allocating a table"))?
            .get(0);
        let defs: Vec<String> = (0..width)
            .map(|i| format!("c{i} text NOT NULL DEFAULT ''"))
            .collect();
        self.exec(
            &format!(
                "CREATE TABLE t{seq} ({}, _timestamp bigint NOT NULL)",
                defs.join(", ")
            ),
            format!("creating table {id}"),
        )?;
        self.created.insert(seq);
        Ok(seq)
    }

    /// Builds the unique index of `pk`; false (and no index) when the rows hold duplicates.
    fn create_pk_index(
        &mut self,
        seq: i64,
        columns: &[String],
        pk: &[String],
        id: &TableId,
    ) -> Result<bool> {
        if pk.is_empty() {
            return Ok(true);
        }
        let cols = pk_columns(id, columns, pk)?;
        let sql = format!(
            "CREATE UNIQUE INDEX t{seq}_pk ON t{seq} ({})",
            cols.join(",")
        );
        let mut sp = self
            .tx
            .get_mut()
            .savepoint("pk")
            .map_err(Error::pg("creating a savepoint"))?;
        match sp.batch_execute(&sql) {
            Ok(()) => {
                sp.commit().map_err(Error::pg("releasing a savepoint"))?;
                Ok(true)
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                sp.rollback()
                    .map_err(Error::pg("rolling back a savepoint"))?;
                Ok(false)
            }
            Err(e) => Err(Error::pg(format!("indexing the primary key of {id}"))(e)),
        }
    }

    /// Sets the catalog's row count and times after a change of the rows.
    fn touch(&mut self, id: &TableId, changed: bool, rows: i64, seq: i64) -> Result<()> {
        let sql = if changed {
            "UPDATE tables SET last_import = $2, last_change = $2, rows = $3, seq = $4 WHERE id = $1"
        } else {
            "UPDATE tables SET last_import = $2, rows = $3, seq = $4 WHERE id = $1"
        };
        let now = self.now;
        self.execute(
            sql,
            &[&id.to_string(), &now, &rows, &seq],
            format!("updating table {id}"),
        )?;
        Ok(())
    }

    /// Removes `t<seq>`: at once when this transaction created it, else retired for readers
    /// that may still have it in their snapshot.
    fn retire(&mut self, seq: i64, id: &TableId) -> Result<()> {
        if self.created.remove(&seq) {
            return self.exec(&format!("DROP TABLE t{seq}"), format!("dropping {id}"));
        }
        let now = self.now;
        self.execute(
            "INSERT INTO retired_tables (name, retired) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            &[&format!("t{seq}"), &now],
            format!("retiring the old rows of {id}"),
        )?;
        Ok(())
    }

    /// Streams `rows` into `target` (`t<seq>` or a staging table) through binary COPY.
    fn copy_into(
        &mut self,
        target: &str,
        cols: &[String],
        with_timestamp: bool,
        rows: &mut dyn RowSource,
        id: &TableId,
    ) -> Result<u64> {
        let mut list = cols.join(",");
        if with_timestamp {
            list.push_str(",_timestamp");
        }
        let sql = format!("COPY {target} ({list}) FROM STDIN (FORMAT binary)");
        let now = self.now;
        let tx = self.tx.get_mut();
        let mut writer = tx
            .copy_in(sql.as_str())
            .map_err(Error::pg(format!("loading {id}")))?;
        let sent = copy::copy_rows(
            &mut writer,
            rows,
            cols.len(),
            with_timestamp.then_some(now),
            &id.to_string(),
        )?;
        let stored = writer
            .finish()
            .map_err(Error::pg(format!("loading {id}")))?;
        debug_assert_eq!(sent, stored);
        Ok(sent)
    }

    fn put_metadata(
        &mut self,
        id: &TableId,
        column: &str,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()> {
        let now = self.now;
        let tx = self.tx.get_mut();
        let stmt = tx
            .prepare(
                "INSERT INTO metadata (table_id, column_name, key, value, provider, timestamp)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (table_id, column_name, key, provider)
                 DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp",
            )
            .map_err(Error::pg("writing metadata"))?;
        for (key, value) in entries {
            tx.execute(
                &stmt,
                &[&id.to_string(), &column, key, value, &provider, &now],
            )
            .map_err(Error::pg(format!("writing metadata of {id}")))?;
        }
        Ok(())
    }

    /// Stores one slice in chunks; returns its size.
    fn store_slice(&mut self, file: i64, index: i32, slice: &mut Slice) -> Result<u64> {
        let tx = self.tx.get_mut();
        let stmt = tx
            .prepare("INSERT INTO file_chunks (file_id, slice, seq, bytes) VALUES ($1, $2, $3, $4)")
            .map_err(Error::pg("storing file content"))?;
        let mut buf = vec![0u8; FILE_CHUNK];
        let (mut size, mut seq) = (0u64, 0i32);
        loop {
            // Fill a whole chunk (readers may return less than asked).
            let mut filled = 0;
            while filled < buf.len() {
                match slice.read(&mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            tx.execute(&stmt, &[&file, &index, &seq, &&buf[..filled]])
                .map_err(Error::pg(format!("storing file {}", slice.name)))?;
            size += filled as u64;
            seq += 1;
            if filled < buf.len() {
                break;
            }
        }
        Ok(size)
    }
}

fn pk_columns(id: &TableId, columns: &[String], pk: &[String]) -> Result<Vec<String>> {
    Ok(column_positions(id, columns, pk)?
        .iter()
        .map(|p| format!("c{p}"))
        .collect())
}

impl Transaction for PgTransaction<'_> {
    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        table_info(&mut *self.tx.borrow_mut(), id)
    }

    fn prepare_table(
        &mut self,
        id: &TableId,
        columns: &[String],
        primary_key: &[String],
    ) -> Result<Prepared> {
        let mut prepared = Prepared::default();
        self.lock(id)?;
        let Some(existing) = table_row(self.tx.get_mut(), id)? else {
            check_new_table(id, columns, primary_key, MAX_COLUMNS)?;
            let bucket = id.bucket().to_string();
            let now = self.now;
            self.execute(
                "INSERT INTO buckets (id, created) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&bucket, &now],
                format!("creating bucket {bucket}"),
            )?;
            let seq = self.create_data_table(columns.len(), id)?;
            self.execute("INSERT INTO tables (id, bucket, seq, columns, primary_key, created, last_change, last_import)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $6)",
                    &[&id.to_string(), &bucket, &seq, &to_json(columns), &to_json(primary_key), &now], format!("creating table {id}"))?;
            self.create_pk_index(seq, columns, primary_key, id)?;
            prepared.created = true;
            return Ok(prepared);
        };
        let change = plan_table_change(
            id,
            &existing.columns,
            &existing.primary_key,
            columns,
            primary_key,
            MAX_COLUMNS,
        )?;
        for (i, c) in change.added.iter().enumerate() {
            self.exec(
                &format!(
                    "ALTER TABLE t{} ADD COLUMN c{} text NOT NULL DEFAULT ''",
                    existing.seq,
                    existing.columns.len() + i
                ),
                format!("adding column {c} to {id}"),
            )?;
        }
        let all = change.columns;
        prepared.added_columns = change.added;
        let mut pk = existing.primary_key.clone();
        if change.new_key {
            self.exec(
                &format!("DROP INDEX IF EXISTS t{}_pk", existing.seq),
                format!("dropping the primary key of {id}"),
            )?;
            let warning;
            (pk, warning) = switch_key(id, &existing.primary_key, primary_key, |key| {
                self.create_pk_index(existing.seq, &all, key, id)
            })?;
            prepared.warnings.push(warning);
        }
        self.execute(
            "UPDATE tables SET columns = $2, primary_key = $3 WHERE id = $1",
            &[&id.to_string(), &to_json(&all), &to_json(&pk)],
            format!("updating table {id}"),
        )?;
        Ok(prepared)
    }

    fn delete_rows(&mut self, id: &TableId, filter: &DeleteFilter) -> Result<u64> {
        let table = self.require(id)?;
        let mut sql = format!("DELETE FROM t{} WHERE true", table.seq);
        let mut params: Params = Vec::new();
        for condition in filter.conditions(id, &table.columns)? {
            push_condition(&mut sql, &mut params, &condition);
        }
        let n = self.execute(
            sql.as_str(),
            &refs(&params),
            format!("deleting rows of {id}"),
        )?;
        if n > 0 {
            self.touch(id, true, table.rows - n as i64, table.seq)?;
        }
        Ok(n)
    }

    fn load_rows(
        &mut self,
        id: &TableId,
        columns: &[String],
        incremental: bool,
        rows: &mut dyn RowSource,
    ) -> Result<u64> {
        let table = self.require(id)?;
        let cols: Vec<String> = load_positions(id, &table.columns, columns)?
            .iter()
            .map(|p| format!("c{p}"))
            .collect();
        let pk_cols = pk_columns(id, &table.columns, &table.primary_key)?;
        let seq = table.seq;
        if !incremental {
            // Full load: into a table nobody else sees (a new t<seq>, or this transaction's
            // own), without the index; the index is then built in one sort. Duplicate keys
            // in the file keep one arbitrary row, as Keboola does.
            let target = if self.created.contains(&seq) {
                self.exec(
                    &format!("DROP INDEX IF EXISTS t{seq}_pk; TRUNCATE t{seq}"),
                    format!("emptying {id}"),
                )?;
                seq
            } else {
                self.create_data_table(table.columns.len(), id)?
            };
            let read = self.copy_into(&format!("t{target}"), &cols, true, rows, id)?;
            let mut stored = read as i64;
            if !self.create_pk_index(target, &table.columns, &table.primary_key, id)? {
                let removed = self.execute(
                    &format!(
                        "DELETE FROM t{target} WHERE ctid NOT IN
                             (SELECT max(ctid) FROM t{target} GROUP BY {})",
                        pk_cols.join(",")
                    ),
                    &[],
                    format!("deduplicating {id}"),
                )?;
                stored -= removed as i64;
                self.create_pk_index(target, &table.columns, &table.primary_key, id)?;
            }
            if target != seq {
                self.retire(seq, id)?;
            }
            self.touch(id, true, stored, target)?;
            return Ok(read);
        }
        if pk_cols.is_empty() {
            let read = self.copy_into(&format!("t{seq}"), &cols, true, rows, id)?;
            self.touch(id, read > 0, table.rows + read as i64, seq)?;
            return Ok(read);
        }
        // Upsert: the rows into a temporary staging table, then one merge. Of several rows
        // with one key in the file the last wins, as row-by-row upserts would leave it.
        let typed: bool = self
            .tx
            .get_mut()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM column_types WHERE table_id = $1)",
                &[&id.to_string()],
            )
            .map_err(Error::pg(format!("reading column types of {id}")))?
            .get(0);
        let stage = format!("pg_temp.stage_t{seq}");
        let defs: Vec<String> = cols.iter().map(|c| format!("{c} text NOT NULL")).collect();
        self.exec(
            &format!(
                "DROP TABLE IF EXISTS {stage}; CREATE TEMP TABLE stage_t{seq} ({}, _ord bigserial) ON COMMIT DROP",
                defs.join(", ")
            ),
            format!("staging rows for {id}"),
        )?;
        let read = self.copy_into(&stage, &cols, false, rows, id)?;
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        let mut sql = format!(
            "WITH merged AS (
                 INSERT INTO t{seq} AS t ({list}, _timestamp)
                 SELECT DISTINCT ON ({pk}) {list}, $1::bigint FROM {stage} ORDER BY {pk}, _ord DESC
                 ON CONFLICT ({pk}) DO UPDATE SET {sets}, _timestamp = excluded._timestamp",
            list = cols.join(","),
            pk = pk_cols.join(","),
            sets = sets.join(","),
        );
        // Keboola leaves an identical row of an untyped table untouched (its `_timestamp`
        // kept); a typed table's upsert replaces every duplicate key.
        if !typed {
            let old: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
            let new: Vec<String> = cols.iter().map(|c| format!("excluded.{c}")).collect();
            sql.push_str(&format!(
                " WHERE ({}) IS DISTINCT FROM ({})",
                old.join(","),
                new.join(",")
            ));
        }
        sql.push_str(
            " RETURNING (xmax = 0) AS inserted)
             SELECT count(*), count(*) FILTER (WHERE inserted) FROM merged",
        );
        let now = self.now;
        let row = self
            .tx
            .get_mut()
            .query_one(sql.as_str(), &[&now])
            .map_err(Error::pg(format!("merging rows into {id}")))?;
        let (changed, inserted): (i64, i64) = (row.get(0), row.get(1));
        self.exec(
            &format!("DROP TABLE {stage}"),
            format!("staging rows for {id}"),
        )?;
        self.touch(id, changed > 0, table.rows + inserted, seq)?;
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

    fn set_column_types(&mut self, id: &TableId, types: &[(String, ColumnType)]) -> Result<()> {
        let table = self.require(id)?;
        let tx = self.tx.get_mut();
        let stmt = tx
            .prepare(
                "INSERT INTO column_types (table_id, column_name, definition) VALUES ($1, $2, $3)
                 ON CONFLICT (table_id, column_name) DO UPDATE SET definition = excluded.definition",
            )
            .map_err(Error::pg("writing column types"))?;
        for (column, column_type) in types {
            column_index(id, &table.columns, column)?;
            let definition = serde_json::to_string(column_type).map_err(|e| Error::Serialize {
                path: format!("<type of column {column} of {id}>").into(),
                source: Box::new(e),
            })?;
            tx.execute(&stmt, &[&id.to_string(), column, &definition])
                .map_err(Error::pg(format!(
                    "writing the type of column {column} of {id}"
                )))?;
        }
        Ok(())
    }

    fn drop_table(&mut self, id: &TableId) -> Result<()> {
        let table = self.require(id)?;
        self.retire(table.seq, id)?;
        self.exec(
            &format!(
                "DELETE FROM tables WHERE id = {id};
                 DELETE FROM metadata WHERE table_id = {id};
                 DELETE FROM column_types WHERE table_id = {id};",
                id = super::catalog::literal(&id.to_string())
            ),
            format!("dropping {id}"),
        )
    }

    fn add_file(&mut self, file: &NewFile, slices: &mut dyn Iterator<Item = Slice>) -> Result<i64> {
        let now = self.now;
        let id: i64 = self
            .tx
            .get_mut()
            .query_one(
                "INSERT INTO files (name, created, size, is_public, is_permanent, is_encrypted, is_sliced, slices)
                 VALUES ($1, $2, 0, $3, $4, $5, false, '[]') RETURNING id",
                &[&file.name, &now, &file.is_public, &file.is_permanent, &file.is_encrypted],
            )
            .map_err(Error::pg(format!("adding file {}", file.name)))?
            .get(0);
        let mut refs = Vec::new();
        for (index, mut slice) in slices.enumerate() {
            let index = i32::try_from(index).map_err(|_| Error::Columns {
                what: file.name.clone(),
                reason: "too many slices".into(),
            })?;
            let size = self.store_slice(id, index, &mut slice)?;
            refs.push(SliceRef {
                name: slice.name.clone(),
                size,
            });
        }
        let is_sliced = is_sliced(refs.len());
        let size: u64 = refs.iter().map(|s| s.size).sum();
        let listed = serde_json::to_string(&refs).unwrap_or_else(|_| "[]".into());
        self.execute(
            "UPDATE files SET size = $2, is_sliced = $3, slices = $4 WHERE id = $1",
            &[&id, &(size as i64), &is_sliced, &listed],
            format!("adding file {}", file.name),
        )?;
        self.add_file_tags(id, &file.tags)?;
        Ok(id)
    }

    fn add_file_tags(&mut self, id: i64, tags: &[String]) -> Result<()> {
        file_slices(self.tx.get_mut(), id)?;
        let tx = self.tx.get_mut();
        let stmt = tx
            .prepare("INSERT INTO file_tags (file_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .map_err(Error::pg("tagging a file"))?;
        for tag in tags {
            tx.execute(&stmt, &[&id, tag])
                .map_err(Error::pg(format!("tagging file {id}")))?;
        }
        Ok(())
    }

    fn delete_file(&mut self, id: i64) -> Result<()> {
        let n = self.execute(
            "DELETE FROM files WHERE id = $1",
            &[&id],
            format!("deleting file {id}"),
        )?;
        if n == 0 {
            return Err(Error::FileNotFound { id });
        }
        Ok(())
    }

    fn set_state(&mut self, key: &StateKey, state: &Value) -> Result<()> {
        self.execute(
            "INSERT INTO states (component, config, row_id, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (component, config, row_id) DO UPDATE SET value = excluded.value",
            &[
                &key.component,
                &key.config,
                &key.row.as_deref().unwrap_or(""),
                &state.to_string(),
            ],
            "storing the state",
        )?;
        Ok(())
    }

    fn queue_step(&mut self, claim: &Claim, step: Step<'_>) -> Result<()> {
        super::queue::step(&mut self.client(), claim, step)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx
            .into_inner()
            .commit()
            .map_err(Error::pg("committing"))
    }
}
