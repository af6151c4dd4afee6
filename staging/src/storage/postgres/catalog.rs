//! Reading the catalog: tables, metadata, column types, files, and SQL fragments built from
//! them. Orderings use the `C` collation so that they are byte orders, as SQLite's are,
//! whatever the database's locale.

use postgres::GenericClient;
use postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::rules::{
    ColumnMetadata, RowCondition, group_metadata, json_list, listed_slices, order_column_types,
};
use crate::storage::{FileInfo, Metadata, Operator, TableInfo};
use crate::time::format_iso;
use crate::types::ColumnType;

/// One slice of a file's content as the catalog lists it (the bytes are in `file_chunks`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SliceRef {
    pub(super) name: String,
    pub(super) size: u64,
}

/// Catalog row of a table, as SQL sees it.
pub(super) struct TableRow {
    pub(super) seq: i64,
    pub(super) columns: Vec<String>,
    pub(super) primary_key: Vec<String>,
    pub(super) rows: i64,
}

pub(super) fn table_row(conn: &mut impl GenericClient, id: &TableId) -> Result<Option<TableRow>> {
    let row = conn
        .query_opt(
            "SELECT seq, columns, primary_key, rows FROM tables WHERE id = $1",
            &[&id.to_string()],
        )
        .map_err(Error::pg(format!("reading table {id}")))?;
    Ok(row.map(|r| TableRow {
        seq: r.get(0),
        columns: json_list(r.get(1)),
        primary_key: json_list(r.get(2)),
        rows: r.get(3),
    }))
}

fn read_metadata(
    conn: &mut impl GenericClient,
    id: &str,
) -> Result<(Vec<Metadata>, ColumnMetadata)> {
    let rows = conn
        .query(
            "SELECT column_name, key, value, provider, timestamp FROM metadata
             WHERE table_id = $1 ORDER BY column_name COLLATE \"C\", ord",
            &[&id],
        )
        .map_err(Error::pg("reading metadata"))?;
    Ok(group_metadata(rows.into_iter().map(|r| {
        (
            r.get(0),
            Metadata {
                key: r.get(1),
                value: r.get(2),
                provider: r.get(3),
                timestamp: format_iso(r.get(4)),
            },
        )
    })))
}

pub(super) fn table_info(conn: &mut impl GenericClient, id: &TableId) -> Result<Option<TableInfo>> {
    let row = conn
        .query_opt(
            "SELECT columns, primary_key, created, last_change, last_import, rows
             FROM tables WHERE id = $1",
            &[&id.to_string()],
        )
        .map_err(Error::pg(format!("reading table {id}")))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let columns = json_list(row.get(0));
    let (metadata, column_metadata) = read_metadata(conn, &id.to_string())?;
    let column_types = read_column_types(conn, id, &columns)?;
    Ok(Some(TableInfo {
        id: id.clone(),
        columns,
        primary_key: json_list(row.get(1)),
        created: row.get(2),
        last_change: row.get(3),
        last_import: row.get(4),
        rows: row.get::<_, i64>(5).max(0) as u64,
        metadata,
        column_metadata,
        column_types,
    }))
}

/// The stored types of a table's typed columns, in `columns` order.
fn read_column_types(
    conn: &mut impl GenericClient,
    id: &TableId,
    columns: &[String],
) -> Result<Vec<(String, ColumnType)>> {
    let rows = conn
        .query(
            "SELECT column_name, definition FROM column_types WHERE table_id = $1",
            &[&id.to_string()],
        )
        .map_err(Error::pg(format!("reading column types of {id}")))?;
    let mut types = Vec::with_capacity(rows.len());
    for r in rows {
        let column: String = r.get(0);
        let definition: String = r.get(1);
        let parsed: ColumnType =
            serde_json::from_str(&definition).map_err(|e| Error::Serialize {
                path: format!("<type of column {column} of {id}>").into(),
                source: Box::new(e),
            })?;
        types.push((column, parsed));
    }
    order_column_types(&mut types, columns);
    Ok(types)
}

/// Bind parameters of a statement built piece by piece.
pub(super) type Params = Vec<Box<dyn ToSql + Sync>>;

/// The parameters as the client takes them.
pub(super) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref()).collect()
}

/// Appends `AND ...` for a row condition and pushes its values.
pub(super) fn push_condition(sql: &mut String, params: &mut Params, condition: &RowCondition<'_>) {
    match condition {
        RowCondition::ChangedSince(since) => {
            params.push(Box::new(*since));
            sql.push_str(&format!(" AND _timestamp >= ${}", params.len()));
        }
        RowCondition::ChangedBefore(until) => {
            params.push(Box::new(*until));
            sql.push_str(&format!(" AND _timestamp < ${}", params.len()));
        }
        RowCondition::Column {
            position,
            values,
            operator,
        } => {
            params.push(Box::new(values.to_vec()));
            let n = params.len();
            match operator {
                Operator::Eq => sql.push_str(&format!(" AND c{position} = ANY(${n})")),
                Operator::Ne => sql.push_str(&format!(" AND c{position} <> ALL(${n})")),
            }
        }
    }
}

/// A row condition with its values written into the SQL as literals (for `COPY (SELECT
/// ...)`, which takes no parameters).
pub(super) fn inline_condition(sql: &mut String, condition: &RowCondition<'_>) {
    match condition {
        RowCondition::ChangedSince(since) => sql.push_str(&format!(" AND _timestamp >= {since}")),
        RowCondition::ChangedBefore(until) => sql.push_str(&format!(" AND _timestamp < {until}")),
        RowCondition::Column {
            position,
            values,
            operator,
        } => {
            let list: Vec<String> = values.iter().map(|v| literal(v)).collect();
            let op = match operator {
                Operator::Eq => "IN",
                Operator::Ne => "NOT IN",
            };
            if list.is_empty() {
                // `IN ()` is no SQL; an empty list matches nothing (`eq`) or everything (`ne`).
                sql.push_str(match operator {
                    Operator::Eq => " AND false",
                    Operator::Ne => "",
                });
            } else {
                sql.push_str(&format!(" AND c{position} {op} ({})", list.join(",")));
            }
        }
    }
}

/// A string literal, safe whatever `standard_conforming_strings` says (`E'...'` escapes both
/// backslash and quote).
pub(super) fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub(super) fn file_info(conn: &mut impl GenericClient, id: i64) -> Result<Option<FileInfo>> {
    let row = conn
        .query_opt(
            "SELECT name, created, size, is_public, is_permanent, is_encrypted, is_sliced, slices
             FROM files WHERE id = $1",
            &[&id],
        )
        .map_err(Error::pg(format!("reading file {id}")))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let tags = conn
        .query(
            "SELECT tag FROM file_tags WHERE file_id = $1 ORDER BY tag COLLATE \"C\"",
            &[&id],
        )
        .map_err(Error::pg("reading file tags"))?
        .into_iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let is_sliced: bool = row.get(6);
    let slices: Vec<SliceRef> = serde_json::from_str(row.get(7)).unwrap_or_default();
    Ok(Some(FileInfo {
        id,
        name: row.get(0),
        tags,
        created: row.get(1),
        size: row.get::<_, i64>(2).max(0) as u64,
        is_public: row.get(3),
        is_permanent: row.get(4),
        is_encrypted: row.get(5),
        is_sliced,
        slices: listed_slices(is_sliced, slices.into_iter().map(|s| s.name)),
    }))
}

pub(super) fn file_slices(conn: &mut impl GenericClient, id: i64) -> Result<Vec<SliceRef>> {
    let row = conn
        .query_opt("SELECT slices FROM files WHERE id = $1", &[&id])
        .map_err(Error::pg(format!("reading file {id}")))?;
    let row = row.ok_or(Error::FileNotFound { id })?;
    Ok(serde_json::from_str(row.get(0)).unwrap_or_default())
}
