//! Full and filtered table export as Keboola's input CSV, on two threads.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::catalog::{push_condition, table_row};
use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::rules::{csv_header, export_columns, quote_field, sql_limit};
use crate::storage::{ExportOptions, Exported};

pub(super) fn export(
    conn: &Connection,
    id: &TableId,
    options: &ExportOptions,
    out: &mut (dyn Write + Send),
) -> Result<Exported> {
    let table = table_row(conn, id)?.ok_or_else(|| Error::TableNotFound { id: id.to_string() })?;
    let (selected, positions) = export_columns(id, &table.columns, options)?;
    let select: Vec<String> = positions.iter().map(|p| format!("c{p}")).collect();
    let mut sql = format!("SELECT {} FROM t{} WHERE 1", select.join(","), table.seq);
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for condition in options.conditions(id, &table.columns)? {
        push_condition(&mut sql, &mut args, &condition);
    }
    if let Some(limit) = options.limit {
        sql.push_str(" LIMIT ?");
        args.push(sql_limit(limit).into());
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
    out.write_all(&csv_header(&selected)).map_err(io_err)?;
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
pub(super) struct Batch {
    pub(super) data: Vec<u8>,
    pub(super) ends: Vec<usize>,
}

/// Bytes of raw values per batch handed to the export writer thread.
pub(super) const EXPORT_BATCH: usize = 1 << 20;
/// Bytes of CSV collected before one `write` call.
pub(super) const EXPORT_CHUNK: usize = 1 << 20;
