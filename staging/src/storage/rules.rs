//! The rules every backend follows, decided once here: what makes a table definition or a load
//! valid, which columns an export writes, how the catalog keeps lists and groups metadata, how
//! a file query is read. Each backend turns the outcome into its own SQL; no SQL lives here.

use crate::error::{Error, Result};
use crate::id::TableId;
use crate::storage::{ColumnFilter, DeleteFilter, ExportOptions, FileQuery, Metadata, Operator};
use crate::types::ColumnType;

/// Where `name` stands in `columns`; a column the table lacks is an error.
pub(crate) fn column_index(table: &TableId, columns: &[String], name: &str) -> Result<usize> {
    columns
        .iter()
        .position(|c| c == name)
        .ok_or_else(|| Error::ColumnNotFound {
            table: table.to_string(),
            column: name.to_string(),
        })
}

/// [`column_index`] of each of `names`, in their order.
pub(crate) fn column_positions(
    table: &TableId,
    columns: &[String],
    names: &[String],
) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|name| column_index(table, columns, name))
        .collect()
}

/// A column list as the catalog stores it (JSON); an unreadable one reads as empty.
pub(crate) fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The catalog's text of a column list (see [`json_list`]).
pub(crate) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// Refuses a table wider than the backend's `limit` once `columns` are added to `existing`
/// (before anything is created or altered: the database's own refusal would come half way
/// through, and it is the CSV that is too wide).
fn check_width(
    id: &TableId,
    existing: Option<&[String]>,
    columns: &[String],
    limit: usize,
) -> Result<()> {
    let mut names: std::collections::HashSet<&str> = existing
        .map(|cols| cols.iter().map(String::as_str).collect())
        .unwrap_or_default();
    names.extend(columns.iter().map(String::as_str));
    let count = names.len();
    if count > limit {
        return Err(Error::TooManyColumns {
            table: id.to_string(),
            count,
            limit,
        });
    }
    Ok(())
}

/// Checks the definition of a table to be created: at most `limit` columns, none empty or
/// repeated, at least one, and every key column among them.
pub(crate) fn check_new_table(
    id: &TableId,
    columns: &[String],
    primary_key: &[String],
    limit: usize,
) -> Result<()> {
    check_width(id, None, columns, limit)?;
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
    column_positions(id, columns, primary_key)?;
    Ok(())
}

/// What preparing an existing table for a load changes, decided before any SQL runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableChange {
    /// The columns to add, in order.
    pub(crate) added: Vec<String>,
    /// All columns afterwards: the existing ones, then `added`.
    pub(crate) columns: Vec<String>,
    /// The primary key asked for differs from the table's (and its columns all exist).
    pub(crate) new_key: bool,
}

/// Plans preparing an existing table (`existing`, keyed by `existing_key`) for a load of
/// `columns` keyed by `primary_key`: at most `limit` columns in all, no empty name, every
/// key column among the columns afterwards.
pub(crate) fn plan_table_change(
    id: &TableId,
    existing: &[String],
    existing_key: &[String],
    columns: &[String],
    primary_key: &[String],
    limit: usize,
) -> Result<TableChange> {
    check_width(id, Some(existing), columns, limit)?;
    let mut all = existing.to_vec();
    let mut added = Vec::new();
    for c in columns {
        if c.is_empty() {
            return Err(Error::Columns {
                what: id.to_string(),
                reason: "empty column name".into(),
            });
        }
        if !all.contains(c) {
            all.push(c.clone());
            added.push(c.clone());
        }
    }
    let new_key = primary_key != existing_key;
    if new_key {
        column_positions(id, &all, primary_key)?;
    }
    Ok(TableChange {
        added,
        columns: all,
        new_key,
    })
}

/// Moves a table's primary key from `old` to `new` once the old key's index is gone:
/// `build_index` builds the unique index of a key and answers false when the rows hold
/// duplicates in it, in which case the old key's index is built again and the old key kept.
/// Returns the key the table has afterwards and the line that says so in the log.
pub(crate) fn switch_key(
    id: &TableId,
    old: &[String],
    new: &[String],
    mut build_index: impl FnMut(&[String]) -> Result<bool>,
) -> Result<(Vec<String>, String)> {
    if build_index(new)? {
        let warning = format!("primary key of {id} changed from {old:?} to {new:?}");
        return Ok((new.to_vec(), warning));
    }
    build_index(old)?;
    let warning =
        format!("primary key of {id} kept as {old:?}: the rows have duplicates in {new:?}");
    Ok((old.to_vec(), warning))
}

/// Checks the header of a load against the table (every table column present, none twice)
/// and returns, for each field of a record, the position of its column in the table.
pub(crate) fn load_positions(
    id: &TableId,
    table_columns: &[String],
    columns: &[String],
) -> Result<Vec<usize>> {
    let missing: Vec<String> = table_columns
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
        positions.push(column_index(id, table_columns, c)?);
    }
    Ok(positions)
}

/// The columns an export writes (the asked ones in their order, or all in table order) and
/// their positions in the table; a table without columns has nothing to export.
pub(crate) fn export_columns(
    id: &TableId,
    table_columns: &[String],
    options: &ExportOptions,
) -> Result<(Vec<String>, Vec<usize>)> {
    let selected: Vec<String> = if options.columns.is_empty() {
        table_columns.to_vec()
    } else {
        options.columns.clone()
    };
    if selected.is_empty() {
        return Err(Error::Columns {
            what: id.to_string(),
            reason: "nothing to export: the table has no columns".into(),
        });
    }
    let positions = column_positions(id, table_columns, &selected)?;
    Ok((selected, positions))
}

/// One condition on a table's rows, all ANDed; a filter's column is already resolved to
/// its position in the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowCondition<'a> {
    /// The row changed at or after this time (unix microseconds).
    ChangedSince(i64),
    /// The row changed before this time (unix microseconds).
    ChangedBefore(i64),
    /// The value at `position` is (`Eq`) or is not (`Ne`) one of `values`; an empty list
    /// matches no row (`Eq`) or every row (`Ne`).
    Column {
        /// Position of the column in the table.
        position: usize,
        /// Values to compare with.
        values: &'a [String],
        /// `eq` or `ne`.
        operator: Operator,
    },
}

impl ColumnFilter {
    /// This filter as a [`RowCondition`] on a table with `columns`.
    fn condition(&self, id: &TableId, columns: &[String]) -> Result<RowCondition<'_>> {
        Ok(RowCondition::Column {
            position: column_index(id, columns, &self.column)?,
            values: &self.values,
            operator: self.operator,
        })
    }
}

/// The conditions of rows changed in `[since, until)` and matching every filter.
fn row_conditions<'a>(
    id: &TableId,
    columns: &[String],
    since: Option<i64>,
    until: Option<i64>,
    filters: impl IntoIterator<Item = &'a ColumnFilter>,
) -> Result<Vec<RowCondition<'a>>> {
    let mut out: Vec<RowCondition<'a>> =
        since.map(RowCondition::ChangedSince).into_iter().collect();
    out.extend(until.map(RowCondition::ChangedBefore));
    for filter in filters {
        out.push(filter.condition(id, columns)?);
    }
    Ok(out)
}

impl ExportOptions {
    /// The rows this export selects, from a table with `columns` (its row limit aside).
    pub(crate) fn conditions(
        &self,
        id: &TableId,
        columns: &[String],
    ) -> Result<Vec<RowCondition<'_>>> {
        row_conditions(id, columns, self.changed_since, None, &self.filter)
    }
}

impl DeleteFilter {
    /// The rows this delete removes, from a table with `columns`.
    pub(crate) fn conditions(
        &self,
        id: &TableId,
        columns: &[String],
    ) -> Result<Vec<RowCondition<'_>>> {
        row_conditions(
            id,
            columns,
            self.changed_since,
            self.changed_until,
            &self.filters,
        )
    }
}

/// A row limit as SQL takes it (a signed 64-bit integer; larger means no limit anyway).
pub(crate) fn sql_limit(limit: u64) -> i64 {
    limit.min(i64::MAX as u64) as i64
}

/// Appends one field as Keboola writes it: always quoted, quotes doubled, then `,` or LF.
pub(crate) fn quote_field(buf: &mut Vec<u8>, field: &[u8], last: bool) {
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

/// The header line of an exported CSV.
pub(crate) fn csv_header(columns: &[String]) -> Vec<u8> {
    let mut header = Vec::new();
    for (i, name) in columns.iter().enumerate() {
        quote_field(&mut header, name.as_bytes(), i + 1 == columns.len());
    }
    header
}

/// Metadata of each column, by column name.
pub(crate) type ColumnMetadata = Vec<(String, Vec<Metadata>)>;

/// Splits metadata rows `(column, entry)`, ordered by column (`""` for the table's own), into
/// the table's entries and each column's.
pub(crate) fn group_metadata(
    rows: impl IntoIterator<Item = (String, Metadata)>,
) -> (Vec<Metadata>, ColumnMetadata) {
    let mut table = Vec::new();
    let mut columns: ColumnMetadata = Vec::new();
    for (column, entry) in rows {
        if column.is_empty() {
            table.push(entry);
        } else if let Some(last) = columns.last_mut().filter(|(c, _)| *c == column) {
            last.1.push(entry);
        } else {
            columns.push((column, vec![entry]));
        }
    }
    (table, columns)
}

/// Puts stored column types in table column order.
pub(crate) fn order_column_types(types: &mut [(String, ColumnType)], columns: &[String]) {
    types.sort_by_key(|(c, _)| columns.iter().position(|n| n == c).unwrap_or(usize::MAX));
}

/// Whether file content stored as `count` slices is a sliced file: one slice is a plain
/// file, any other count (none included) a folder of slices.
pub(crate) fn is_sliced(count: usize) -> bool {
    count != 1
}

/// The slice names a [`crate::storage::FileInfo`] lists: those of a sliced file, none for a
/// plain one.
pub(crate) fn listed_slices(is_sliced: bool, names: impl Iterator<Item = String>) -> Vec<String> {
    if is_sliced {
        names.collect()
    } else {
        Vec::new()
    }
}

/// One condition of a [`FileQuery`], all ANDed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FileCondition<'a> {
    /// The id is one of these.
    IdIn(&'a [i64]),
    /// The file carries this tag.
    HasTag(&'a str),
    /// The file does not carry this tag.
    LacksTag(&'a str),
    /// Created at or after this time.
    CreatedSince(i64),
    /// The id is larger than this.
    IdAbove(i64),
}

impl FileQuery {
    /// The conditions of this query, in the order the backends write them (ids, when given,
    /// replace the tag filters). Files come newest first, at most [`FileQuery::sql_limit`].
    pub(crate) fn conditions(&self) -> Vec<FileCondition<'_>> {
        let mut out = Vec::new();
        if !self.ids.is_empty() {
            out.push(FileCondition::IdIn(&self.ids));
        } else {
            out.extend(self.include_tags.iter().map(|t| FileCondition::HasTag(t)));
            out.extend(self.exclude_tags.iter().map(|t| FileCondition::LacksTag(t)));
        }
        if let Some(since) = self.created_since {
            out.push(FileCondition::CreatedSince(since));
        }
        if let Some(since) = self.since_id {
            out.push(FileCondition::IdAbove(since));
        }
        out
    }

    /// [`FileQuery::limit`] as SQL takes it.
    pub(crate) fn sql_limit(&self) -> Option<i64> {
        self.limit.map(sql_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_table_needs_distinct_named_columns_and_its_key_among_them() {
        let id: TableId = "in.c-b.t".parse().unwrap();
        assert!(check_new_table(&id, &names(&["a", "b"]), &names(&["b"]), 2).is_ok());
        assert!(matches!(
            check_new_table(&id, &names(&["a", "b", "c"]), &[], 2),
            Err(Error::TooManyColumns { count: 3, .. })
        ));
        assert!(check_new_table(&id, &names(&["a", "a"]), &[], 9).is_err());
        assert!(check_new_table(&id, &names(&[""]), &[], 9).is_err());
        assert!(check_new_table(&id, &[], &[], 9).is_err());
        assert!(matches!(
            check_new_table(&id, &names(&["a"]), &names(&["x"]), 9),
            Err(Error::ColumnNotFound { .. })
        ));
    }

    #[test]
    fn a_table_change_adds_missing_columns_once_and_checks_a_new_key() {
        let id: TableId = "in.c-b.t".parse().unwrap();
        let change = plan_table_change(
            &id,
            &names(&["a"]),
            &names(&["a"]),
            &names(&["b", "a", "b"]),
            &names(&["b"]),
            9,
        )
        .unwrap();
        assert_eq!(change.added, names(&["b"]));
        assert_eq!(change.columns, names(&["a", "b"]));
        assert!(change.new_key);
        assert!(
            plan_table_change(&id, &names(&["a"]), &[], &names(&["b"]), &names(&["x"]), 9).is_err()
        );
        assert!(plan_table_change(&id, &names(&["a"]), &[], &names(&[""]), &[], 9).is_err());
        assert!(plan_table_change(&id, &names(&["a"]), &[], &names(&["b", "c"]), &[], 2).is_err());
    }

    #[test]
    fn row_conditions_resolve_filter_columns() {
        let id: TableId = "in.c-b.t".parse().unwrap();
        let filter = ColumnFilter {
            column: "b".into(),
            values: names(&["x"]),
            operator: Operator::Ne,
        };
        let delete = DeleteFilter {
            changed_since: Some(1),
            changed_until: Some(2),
            filters: vec![filter.clone()],
        };
        assert_eq!(
            delete.conditions(&id, &names(&["a", "b"])).unwrap(),
            vec![
                RowCondition::ChangedSince(1),
                RowCondition::ChangedBefore(2),
                RowCondition::Column {
                    position: 1,
                    values: &filter.values,
                    operator: Operator::Ne
                }
            ]
        );
        let export = ExportOptions {
            filter: Some(filter),
            ..ExportOptions::default()
        };
        assert!(matches!(
            export.conditions(&id, &names(&["a"])),
            Err(Error::ColumnNotFound { .. })
        ));
    }

    #[test]
    fn file_query_ids_replace_tags() {
        let query = FileQuery {
            include_tags: names(&["x"]),
            ids: vec![1],
            since_id: Some(3),
            limit: Some(u64::MAX),
            ..FileQuery::default()
        };
        assert_eq!(
            query.conditions(),
            vec![FileCondition::IdIn(&[1]), FileCondition::IdAbove(3)]
        );
        assert_eq!(query.sql_limit(), Some(i64::MAX));
    }

    #[test]
    fn fields_are_always_quoted() {
        assert_eq!(csv_header(&names(&["a", "b\"c"])), b"\"a\",\"b\"\"c\"\n");
    }
}
