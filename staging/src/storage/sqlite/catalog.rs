//! Reading the catalog: tables, metadata, files, and the SQL fragments built from them.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::rules::{
    ColumnMetadata, RowCondition, group_metadata, json_list, listed_slices, order_column_types,
};
use crate::storage::{FileInfo, Metadata, Operator, TableInfo};
use crate::time::format_iso;
use crate::types::ColumnType;

/// One blob of a file's content, as kept in the catalog.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct BlobRef {
    pub(super) name: String,
    pub(super) sha256: String,
    pub(super) size: u64,
}

/// Catalog row of a table, as SQL sees it.
pub(super) struct TableRow {
    pub(super) seq: i64,
    pub(super) columns: Vec<String>,
    pub(super) primary_key: Vec<String>,
}

pub(super) fn table_row(conn: &Connection, id: &TableId) -> Result<Option<TableRow>> {
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

pub(super) fn read_metadata(
    conn: &Connection,
    id: &str,
) -> Result<(Vec<Metadata>, ColumnMetadata)> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT column_name, key, value, provider, timestamp FROM metadata
             WHERE table_id = ?1 ORDER BY column_name, rowid",
        )
        .map_err(Error::db("reading metadata"))?;
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
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::db("reading metadata"))?;
    Ok(group_metadata(rows))
}

pub(super) fn table_info(conn: &Connection, id: &TableId) -> Result<Option<TableInfo>> {
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
    let columns = json_list(&columns);
    let column_types = read_column_types(conn, id, &columns)?;
    Ok(Some(TableInfo {
        id: id.clone(),
        columns,
        primary_key: json_list(&pk),
        created,
        last_change,
        last_import,
        rows: rows.max(0) as u64,
        metadata,
        column_metadata,
        column_types,
    }))
}

/// The stored types of a table's typed columns, in `columns` order.
pub(super) fn read_column_types(
    conn: &Connection,
    id: &TableId,
    columns: &[String],
) -> Result<Vec<(String, ColumnType)>> {
    let mut stmt = conn
        .prepare_cached("SELECT column_name, definition FROM column_types WHERE table_id = ?1")
        .map_err(Error::db("reading column types"))?;
    let rows = stmt
        .query_map([id.to_string()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(Error::db(format!("reading column types of {id}")))?;
    let mut types = Vec::with_capacity(rows.len());
    for (column, definition) in rows {
        let parsed: ColumnType = serde_json::from_str(&definition).map_err(|e| Error::Db {
            during: format!("reading the type of column {column} of {id}"),
            source: rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                Box::new(e),
            ),
        })?;
        types.push((column, parsed));
    }
    order_column_types(&mut types, columns);
    Ok(types)
}

/// Appends `AND ...` for a row condition and pushes its values.
pub(super) fn push_condition(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    condition: &RowCondition<'_>,
) {
    match condition {
        RowCondition::ChangedSince(since) => {
            sql.push_str(" AND _timestamp >= ?");
            args.push((*since).into());
        }
        RowCondition::ChangedBefore(until) => {
            sql.push_str(" AND _timestamp < ?");
            args.push((*until).into());
        }
        RowCondition::Column {
            position,
            values,
            operator,
        } => {
            let op = match operator {
                Operator::Eq => "IN",
                Operator::Ne => "NOT IN",
            };
            let marks = vec!["?"; values.len()].join(",");
            sql.push_str(&format!(" AND c{position} {op} ({marks})"));
            args.extend(values.iter().map(|v| v.clone().into()));
        }
    }
}

pub(super) fn file_info(conn: &Connection, id: i64) -> Result<Option<FileInfo>> {
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
        slices: listed_slices(is_sliced, blobs.into_iter().map(|s| s.name)),
    }))
}

pub(super) fn file_blobs(conn: &Connection, id: i64) -> Result<Vec<BlobRef>> {
    let slices: Option<String> = conn
        .query_row("SELECT slices FROM files WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(Error::db(format!("reading file {id}")))?;
    let slices = slices.ok_or(Error::FileNotFound { id })?;
    Ok(serde_json::from_str(&slices).unwrap_or_default())
}
