//! The write transaction: table loads, metadata, files, state.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::params;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::MAX_COLUMNS;
use super::catalog::{BlobRef, TableRow, file_blobs, push_condition, table_info, table_row};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::rules::{
    check_new_table, column_index, column_positions, is_sliced, load_positions, plan_table_change,
    switch_key, to_json,
};
use crate::storage::{
    DeleteFilter, NewFile, Prepared, RowSource, Slice, StateKey, TableInfo, Transaction,
};
use crate::types::ColumnType;

/// The write transaction of the embedded backend (`BEGIN IMMEDIATE`: one writer at a time).
pub(super) struct SqliteTransaction<'c> {
    pub(super) tx: rusqlite::Transaction<'c>,
    pub(super) now: i64,
    pub(super) blobs: PathBuf,
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
        let cols: Vec<String> = column_positions(id, columns, pk)?
            .iter()
            .map(|p| format!("c{p}"))
            .collect();
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
        touch_identical: bool,
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
                " ON CONFLICT ({}) DO UPDATE SET {}, _timestamp = excluded._timestamp",
                pk_cols.join(","),
                sets.join(",")
            ));
            // Keboola leaves an identical row of an untyped table untouched (its `_timestamp`
            // kept); a typed table's upsert replaces every duplicate key.
            if !touch_identical {
                sql.push_str(&format!(" WHERE {}", differs.join(" OR ")));
            }
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
        crate::private::create_dir_all(&dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempfile_in(&self.blobs)
            .map_err(Error::io(&self.blobs))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = slice.read(&mut buf)?;
            if n == 0 {
                break;
            }
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
            check_new_table(id, columns, primary_key, MAX_COLUMNS)?;
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
        let change = plan_table_change(
            id,
            &existing.columns,
            &existing.primary_key,
            columns,
            primary_key,
            MAX_COLUMNS,
        )?;
        for (i, c) in change.added.iter().enumerate() {
            self.tx
                .execute_batch(&format!(
                    "ALTER TABLE t{} ADD COLUMN c{} TEXT NOT NULL DEFAULT ''",
                    existing.seq,
                    existing.columns.len() + i
                ))
                .map_err(Error::db(format!("adding column {c} to {id}")))?;
        }
        let all = change.columns;
        prepared.added_columns = change.added;
        let mut pk = existing.primary_key.clone();
        if change.new_key {
            self.tx
                .execute_batch(&format!("DROP INDEX IF EXISTS t{}_pk", existing.seq))
                .map_err(Error::db(format!("dropping the primary key of {id}")))?;
            let warning;
            (pk, warning) = switch_key(id, &existing.primary_key, primary_key, |key| {
                self.create_pk_index(existing.seq, &all, key, id)
            })?;
            prepared.warnings.push(warning);
        }
        self.write_catalog(id, &all, &pk)?;
        Ok(prepared)
    }

    fn delete_rows(&mut self, id: &TableId, filter: &DeleteFilter) -> Result<u64> {
        let table = self.require(id)?;
        let mut sql = format!("DELETE FROM t{} WHERE 1", table.seq);
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        for condition in filter.conditions(id, &table.columns)? {
            push_condition(&mut sql, &mut args, &condition);
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
        let positions = load_positions(id, &table.columns, columns)?;
        let seq = table.seq;
        let pk_cols: Vec<String> = column_positions(id, &table.columns, &table.primary_key)?
            .iter()
            .map(|p| format!("c{p}"))
            .collect();
        let (read, changed) = if !incremental {
            // Full load: empty the table, insert without the index, then build the index in
            // one sort (much faster than keeping it up to date row by row). Duplicate keys in
            // the file keep one arbitrary row, as Keboola does.
            self.tx
                .execute_batch(&format!(
                    "DROP INDEX IF EXISTS t{seq}_pk; DELETE FROM t{seq};"
                ))
                .map_err(Error::db(format!("emptying {id}")))?;
            let counts = self.load_plain(seq, &positions, rows, None, false)?;
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
            self.load_plain(seq, &positions, rows, None, false)?
        } else {
            let typed: bool = self
                .tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM column_types WHERE table_id = ?1)",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .map_err(Error::db(format!("reading column types of {id}")))?;
            self.load_plain(
                seq,
                &positions,
                rows,
                Some((&pk_cols, &table.primary_key)),
                typed,
            )?
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

    fn set_column_types(&mut self, id: &TableId, types: &[(String, ColumnType)]) -> Result<()> {
        let table = self.require(id)?;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO column_types (table_id, column_name, definition) VALUES (?1, ?2, ?3)
                 ON CONFLICT (table_id, column_name) DO UPDATE SET definition = excluded.definition",
            )
            .map_err(Error::db("writing column types"))?;
        for (column, column_type) in types {
            column_index(id, &table.columns, column)?;
            let definition = serde_json::to_string(column_type).map_err(|e| Error::Db {
                during: format!("encoding the type of column {column} of {id}"),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
            stmt.execute(params![id.to_string(), column, definition])
                .map_err(Error::db(format!(
                    "writing the type of column {column} of {id}"
                )))?;
        }
        Ok(())
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
            .and_then(|_| {
                self.tx.execute(
                    "DELETE FROM column_types WHERE table_id = ?1",
                    [id.to_string()],
                )
            })
            .map_err(Error::db(format!("dropping {id}")))?;
        Ok(())
    }

    fn add_file(&mut self, file: &NewFile, slices: &mut dyn Iterator<Item = Slice>) -> Result<i64> {
        let mut blobs = Vec::new();
        for mut slice in slices {
            blobs.push(self.store_blob(&mut slice)?);
        }
        let is_sliced = is_sliced(blobs.len());
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
