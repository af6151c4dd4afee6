//! The Storage interface: tables and files a job reads from and writes to.
//!
//! Reads go through [`Storage`]; every write goes through a [`Transaction`] so that one job's
//! output lands all at once or not at all. The embedded backend is [`sqlite::SqliteStorage`],
//! the shared one [`postgres::PostgresStorage`]; each keeps its query language to itself, and
//! [`any::AnyStorage`] is whichever of them a [`any::Location`] names. [`sealed::SealedStorage`] wraps any of them so that
//! the `#` values of stored state are encrypted at rest.

pub mod any;
pub mod postgres;
pub(crate) mod rules;
pub mod sealed;
pub mod sqlite;

use std::io::{Read, Write};

use serde_json::Value;

use crate::error::Result;
use crate::id::TableId;
use crate::queue::{Claim, Step};
use crate::types::ColumnType;

/// One `{key, value}` metadata entry as Keboola keeps it on tables and columns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metadata {
    /// Metadata key, e.g. `KBC.description`.
    pub key: String,
    /// Its value; Keboola stores strings.
    pub value: String,
    /// Who set it (a component id, or `user`).
    pub provider: String,
    /// When it was set, ISO 8601.
    pub timestamp: String,
}

/// What a table looks like, without its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The table id.
    pub id: TableId,
    /// Column names in table order.
    pub columns: Vec<String>,
    /// Primary key columns (may be empty).
    pub primary_key: Vec<String>,
    /// Creation time, unix microseconds.
    pub created: i64,
    /// Last time rows changed, unix microseconds.
    pub last_change: i64,
    /// Last time data was loaded (even without changes), unix microseconds.
    pub last_import: i64,
    /// Number of rows.
    pub rows: u64,
    /// Table metadata.
    pub metadata: Vec<Metadata>,
    /// Column metadata, by column name.
    pub column_metadata: Vec<(String, Vec<Metadata>)>,
    /// Types of the typed columns, in table column order (empty for an untyped table): part
    /// of the table's definition, as in Keboola's typed tables.
    pub column_types: Vec<(String, ColumnType)>,
}

impl TableInfo {
    /// The stored type of `column`, if it has one.
    pub fn column_type(&self, column: &str) -> Option<&ColumnType> {
        self.column_types
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, t)| t)
    }

    /// A table is typed when any of its columns has a type.
    pub fn is_typed(&self) -> bool {
        !self.column_types.is_empty()
    }
}

/// `eq` keeps the listed values, `ne` drops them (SQL `NOT IN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operator {
    /// Value is one of the list.
    #[default]
    Eq,
    /// Value is none of the list.
    Ne,
}

/// A single-column filter, as in `where_column`/`where_values`/`where_operator`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFilter {
    /// Column name.
    pub column: String,
    /// Values to compare with.
    pub values: Vec<String>,
    /// `eq` or `ne`.
    pub operator: Operator,
}

/// Which rows and columns to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportOptions {
    /// Column subset in this order; empty means all columns in table order.
    pub columns: Vec<String>,
    /// Only rows whose `_timestamp` is at or after this time (unix microseconds).
    pub changed_since: Option<i64>,
    /// Row filter.
    pub filter: Option<ColumnFilter>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// Which rows a delete removes: all conditions are ANDed (Keboola's `deleteTableRows`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteFilter {
    /// Rows changed at or after this time (unix microseconds).
    pub changed_since: Option<i64>,
    /// Rows changed before this time (unix microseconds).
    pub changed_until: Option<i64>,
    /// Column filters.
    pub filters: Vec<ColumnFilter>,
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The columns written, in order.
    pub columns: Vec<String>,
    /// Rows written (without the header).
    pub rows: u64,
}

/// A Storage file, without its content.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    /// Increasing integer id.
    pub id: i64,
    /// File name (no directories).
    pub name: String,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Creation time, unix microseconds.
    pub created: i64,
    /// Total size of the content in bytes.
    pub size: u64,
    /// Keboola `is_public`.
    pub is_public: bool,
    /// Keboola `is_permanent`; non-permanent files expire after 15 days in Keboola.
    pub is_permanent: bool,
    /// Keboola `is_encrypted`.
    pub is_encrypted: bool,
    /// Content is several slices (a folder in `/data/in/files`).
    pub is_sliced: bool,
    /// Slice names, in order, for sliced files.
    pub slices: Vec<String>,
}

/// Options of a new file.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    /// File name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// `is_public`.
    pub is_public: bool,
    /// `is_permanent`.
    pub is_permanent: bool,
    /// `is_encrypted`.
    pub is_encrypted: bool,
}

/// How files are selected for input mapping (tag filters are ANDed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileQuery {
    /// Files must carry all of these tags.
    pub include_tags: Vec<String>,
    /// Files must carry none of these tags.
    pub exclude_tags: Vec<String>,
    /// Only these ids (tags are ignored when set).
    pub ids: Vec<i64>,
    /// Only files created at or after this time (unix microseconds).
    pub created_since: Option<i64>,
    /// Only files with a larger id.
    pub since_id: Option<i64>,
    /// At most this many files, newest first.
    pub limit: Option<u64>,
}

/// Whose state: Keboola keeps state per component configuration and row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateKey {
    /// Component id.
    pub component: String,
    /// Configuration id.
    pub config: String,
    /// Row id, if the job runs a row.
    pub row: Option<String>,
}

/// A stream of CSV records for a load. Records must have as many fields as `columns`.
pub trait RowSource {
    /// Reads the next record into `record`; false at the end.
    fn next_record(&mut self, record: &mut csv::StringRecord) -> Result<bool>;
}

/// Result of preparing a table for a load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// The table did not exist and was created.
    pub created: bool,
    /// Columns added to an existing table.
    pub added_columns: Vec<String>,
    /// The primary key was changed, or could not be (duplicates), described for the log.
    pub warnings: Vec<String>,
}

/// Read access to a Storage.
pub trait Storage {
    /// All tables, by id.
    fn tables(&self) -> Result<Vec<TableInfo>>;
    /// One table, or `None`.
    fn table(&self, id: &TableId) -> Result<Option<TableInfo>>;
    /// Streams the selected rows as Keboola's input CSV (header, all values quoted, LF) into
    /// `out`. Memory stays flat whatever the table size.
    fn export_table(
        &self,
        id: &TableId,
        options: &ExportOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<Exported>;
    /// Files matching `query`, newest first.
    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>>;
    /// One file, or `None`.
    fn file(&self, id: i64) -> Result<Option<FileInfo>>;
    /// Readers over the content of a file: one for a plain file, one per slice (in order) for
    /// a sliced one.
    fn open_file(&self, id: i64) -> Result<Vec<Box<dyn Read + Send>>>;
    /// The stored configuration state (`{"component": ..., "storage": ...}`), or `None`.
    fn state(&self, key: &StateKey) -> Result<Option<Value>>;
    /// Starts the single write transaction of a job. Waits (up to the backend's busy timeout)
    /// while another job writes; nothing is visible to others before
    /// [`Transaction::commit`], and dropping the transaction rolls everything back.
    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>>;
}

/// Writes of one job; all or nothing.
pub trait Transaction {
    /// Reads a table as it is inside this transaction.
    fn table(&self, id: &TableId) -> Result<Option<TableInfo>>;
    /// Creates the bucket and table when missing, adds `columns` the table lacks, and makes
    /// `primary_key` the table's key (keeping the old key, with a warning, when the data has
    /// duplicates in the new one).
    fn prepare_table(
        &mut self,
        id: &TableId,
        columns: &[String],
        primary_key: &[String],
    ) -> Result<Prepared>;
    /// Deletes the matching rows; returns how many.
    fn delete_rows(&mut self, id: &TableId, filter: &DeleteFilter) -> Result<u64>;
    /// Loads rows whose fields follow `columns`, in any order; every column of the table must
    /// be among them (call [`Transaction::prepare_table`] first to add new ones). Full load
    /// replaces the rows; incremental upserts by the table's primary key (an unchanged row of
    /// an untyped table keeps its `_timestamp`; a typed table replaces every duplicate key, as
    /// Keboola's typed tables do) or appends without one. Returns the number of records read.
    fn load_rows(
        &mut self,
        id: &TableId,
        columns: &[String],
        incremental: bool,
        rows: &mut dyn RowSource,
    ) -> Result<u64>;
    /// Sets table metadata entries (same key and provider replaced).
    fn set_table_metadata(
        &mut self,
        id: &TableId,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()>;
    /// Sets metadata entries on one column.
    fn set_column_metadata(
        &mut self,
        id: &TableId,
        column: &str,
        provider: &str,
        entries: &[(String, String)],
    ) -> Result<()>;
    /// Sets (replaces) the types of these columns of a table; every column must exist.
    fn set_column_types(&mut self, id: &TableId, types: &[(String, ColumnType)]) -> Result<()>;
    /// Removes a table.
    fn drop_table(&mut self, id: &TableId) -> Result<()>;
    /// Stores a new file; `slices` holds one reader for a plain file, several (with names) for
    /// a sliced one. Returns the new id.
    fn add_file(&mut self, file: &NewFile, slices: &mut dyn Iterator<Item = Slice>) -> Result<i64>;
    /// Adds tags to an existing file.
    fn add_file_tags(&mut self, id: i64, tags: &[String]) -> Result<()>;
    /// Removes a file.
    fn delete_file(&mut self, id: i64) -> Result<()>;
    /// Replaces the stored configuration state.
    fn set_state(&mut self, key: &StateKey, state: &Value) -> Result<()>;
    /// Records `step` of the queued job `claim` holds inside this transaction, so that it
    /// commits with the job's output and state or not at all. Fails when the claim no longer
    /// holds the job (its lease went to another worker, or it was killed): the caller must
    /// then drop the transaction. A backend without a job queue refuses.
    fn queue_step(&mut self, claim: &Claim, step: Step<'_>) -> Result<()> {
        let _ = step;
        Err(crate::Error::NoQueue { job: claim.job_id })
    }
    /// Makes every write of this transaction visible at once.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// One piece of file content for [`Transaction::add_file`].
pub struct Slice {
    /// Slice name (the file name for a plain file).
    pub name: String,
    /// The content.
    pub reader: Box<dyn Read>,
    /// Where it comes from, for error messages.
    pub origin: std::path::PathBuf,
}

impl Slice {
    /// Reads some content into `buf` (0 at the end), retrying an interrupted read; a failed
    /// read is an error naming where the slice comes from.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(crate::Error::Io {
                        path: self.origin.clone(),
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interrupted once, then `b"ab"`, then a failure.
    struct Flaky(u8);

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0 += 1;
            match self.0 {
                1 => Err(std::io::ErrorKind::Interrupted.into()),
                2 => {
                    buf[..2].copy_from_slice(b"ab");
                    Ok(2)
                }
                _ => Err(std::io::Error::other("gone")),
            }
        }
    }

    #[test]
    fn slice_reads_retry_interruptions_and_name_the_origin_on_failure() {
        let mut slice = Slice {
            name: "f".into(),
            reader: Box::new(Flaky(0)),
            origin: "/in/f".into(),
        };
        let mut buf = [0u8; 4];
        assert_eq!(slice.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ab");
        match slice.read(&mut buf) {
            Err(crate::Error::Io { path, .. }) => assert_eq!(path, std::path::Path::new("/in/f")),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
