//! The crate's error type: one enum, each variant carrying the path, table or file it is about.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while staging a job or using the Storage.
///
/// [`Error::is_user_error`] sorts the variants into Keboola's two classes: a bad configuration,
/// manifest, mapping or CSV is the user's fault; a failing disk or database is ours.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that must be `stage.c-bucket.table` (or `stage.c-bucket`) is not.
    #[error("invalid {what} id {id:?}: {reason}")]
    InvalidId {
        /// "table" or "bucket".
        what: &'static str,
        /// The offending id.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The job configuration breaks the runner's configuration tree.
    #[error("invalid configuration at {at}: {reason}")]
    Config {
        /// JSON path of the bad node, e.g. `storage.input.tables[0].days`.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value that must be a table or bucket id is not one.
    #[error("invalid configuration at {at}")]
    ConfigId {
        /// JSON path of the bad node, e.g. `storage.input.tables[0].source`.
        at: String,
        /// Why the id was refused (an [`Error::InvalidId`]).
        #[source]
        source: Box<Error>,
    },
    /// A configuration or manifest could not be parsed at all.
    #[error("failed to parse {what}")]
    Parse {
        /// The file or document, e.g. `out/tables/a.csv.manifest`.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest or mapping entry is well-formed but not acceptable.
    #[error("invalid manifest or mapping for {what}: {reason}")]
    Mapping {
        /// The file or source the entry is about.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An output table's destination (from its mapping, manifest or file name) is not a
    /// table id.
    #[error("invalid manifest or mapping for {what}: invalid destination")]
    Destination {
        /// The file the destination is for, e.g. `out/tables/a.csv`.
        what: String,
        /// Why it was refused (an [`Error::InvalidId`]).
        #[source]
        source: Box<Error>,
    },
    /// A YAML manifest or state written by the component could not be parsed.
    #[error("invalid manifest or mapping for {what}: invalid yaml")]
    Yaml {
        /// The file or document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// `x.manifest` without `x` in `out/tables` or `out/files`.
    #[error("found orphaned {kind} manifest {path}")]
    OrphanedManifest {
        /// "table" or "file".
        kind: &'static str,
        /// The manifest file.
        path: PathBuf,
    },
    /// A mapping names a source that the component did not write.
    #[error("{kind} source {source_name:?} not found in {dir}")]
    SourceNotFound {
        /// "table" or "file".
        kind: &'static str,
        /// The mapping's `source`.
        source_name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The container left something in `/data/out` that is not a regular file or folder.
    #[error("refusing {kind} at {path}: only regular files and folders are read from out/")]
    UnsafeEntry {
        /// "symlink", "device", "fifo", "socket".
        kind: &'static str,
        /// The entry.
        path: PathBuf,
    },
    /// A CSV file could not be read; names file and line.
    #[error("malformed csv in {path} at line {line}")]
    Csv {
        /// The file (or slice) being read.
        path: PathBuf,
        /// 1-based line where the bad record starts.
        line: u64,
        /// The parser's error.
        #[source]
        source: csv::Error,
    },
    /// A CSV row whose field count differs from the header.
    #[error("row at line {line} of {path} has {found} values, expected {expected}")]
    RowWidth {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// Values in the row.
        found: usize,
        /// Columns of the table.
        expected: usize,
    },
    /// A load that lacks some of the table's existing columns.
    #[error("some columns are missing in the csv file for table {table}: {missing:?}")]
    MissingColumns {
        /// The destination table.
        table: String,
        /// Existing columns absent from the file.
        missing: Vec<String>,
    },
    /// A column list that names a column twice or holds an empty name.
    #[error("invalid columns for {what}: {reason}")]
    Columns {
        /// Table or file concerned.
        what: String,
        /// The problem, naming the column.
        reason: String,
    },
    /// A table would get more columns than the Storage backend holds. Checked before the
    /// table is created or altered, so nothing of the load is written.
    #[error("table {table} would have {count} columns; Storage allows at most {limit}")]
    TooManyColumns {
        /// The table id.
        table: String,
        /// Columns the table would have after the load.
        count: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// A table id that is not in the Storage.
    #[error("table {id} not found")]
    TableNotFound {
        /// The table id.
        id: String,
    },
    /// A file id that is not in the Storage.
    #[error("file {id} not found")]
    FileNotFound {
        /// The file id.
        id: i64,
    },
    /// A column name that the table does not have.
    #[error("column {column:?} not found in table {table}")]
    ColumnNotFound {
        /// The table id.
        table: String,
        /// The column.
        column: String,
    },
    /// A `changed_since` value that is not a time expression.
    #[error("invalid time expression {expr:?}")]
    TimeExpr {
        /// The expression as written.
        expr: String,
    },
    /// A state file that is not JSON or YAML.
    #[error("failed to read state file {path}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// File-system failure.
    #[error("i/o error on {path}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Database failure.
    #[error("storage database error while {during}")]
    Db {
        /// What the backend was doing.
        during: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL Storage failure (a statement, a COPY, the transaction).
    #[error("postgres storage error while {during}")]
    Postgres {
        /// What the backend was doing.
        during: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// A PostgreSQL Storage could not be reached or refused the login: names the server,
    /// user and database (never the password) and what failed.
    #[error("cannot open postgres storage {target}: {reason}")]
    PgConnect {
        /// `user@host:port/dbname`.
        target: String,
        /// What failed, in words (wrong password, no such database, connection refused ...).
        reason: String,
    },
    /// A `--storage` value that is not a usable PostgreSQL URL (or its TLS material).
    #[error("invalid postgres storage URL: {reason}")]
    PgUrl {
        /// What is wrong with it (the password is never quoted).
        reason: String,
    },
    /// The PostgreSQL Storage's schema is not the version this dockless uses.
    #[error(
        "postgres storage {target} has schema version {found}, this dockless knows up to {supported}: {advice}"
    )]
    PgSchema {
        /// `user@host:port/dbname`.
        target: String,
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
        /// What to do: run `dockless storage migrate`, or use a newer dockless.
        advice: &'static str,
    },
    /// The component's `out/usage.json` is not what Keboola takes: an application error, as
    /// in Keboola (the component broke its contract).
    #[error("invalid usage file {what}: {reason}")]
    Usage {
        /// The file, relative to `/data` (`out/usage.json`).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The Storage file was written by a newer dockless.
    #[error("storage {path} has schema version {found}, this dockless supports {supported}")]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Version this build writes.
        supported: i64,
    },
    /// The installation's state key file is missing its protection or its content: it is a
    /// link, not a regular file, not the user's own, readable by others, or not a key.
    #[error("state key file {path}: {reason}")]
    StateKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it, and how to fix it.
        reason: String,
    },
    /// A `#` value of a stored state does not decrypt with this installation's key: it was
    /// encrypted with another key file, or the stored state was altered.
    #[error(
        "cannot decrypt {at} in the stored state of {state} with the key in {key_file} \
         (encrypted with another key, or altered)"
    )]
    StateDecrypt {
        /// Whose state: `component/config` or `component/config/row`.
        state: String,
        /// Where in the state document, e.g. `component.#refresh_token`.
        at: String,
        /// The key file used.
        key_file: PathBuf,
    },
    /// A queued job's step was recorded on a Storage that keeps no job queue (SQLite).
    #[error("job {job}: this Storage keeps no job queue (use a PostgreSQL Storage)")]
    NoQueue {
        /// The job.
        job: i64,
    },
    /// A worker's claim on a job no longer holds: nothing of this attempt may be stored.
    #[error("job {job} attempt {attempt}: {reason}")]
    JobLost {
        /// The job.
        job: i64,
        /// The attempt whose claim failed.
        attempt: i32,
        /// What happened to the job meanwhile.
        reason: String,
    },
    /// A sealed document (a queued job) does not decrypt with this installation's key.
    #[error(
        "cannot decrypt {what} with the key in {key_file} (sealed with another host's key, or \
         altered): every host sharing a Storage needs the same state key file"
    )]
    DocumentDecrypt {
        /// What was sealed, e.g. `job 12`.
        what: String,
        /// The key file used.
        key_file: PathBuf,
    },
    /// Serializing config.json, a manifest or the state failed.
    #[error("failed to write {path}")]
    Serialize {
        /// The target file.
        path: PathBuf,
        /// The serializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True when the job failed because of its configuration or what the component wrote
    /// (Keboola's user error, exit class 1); false for failures of the runner's own machinery.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. }
                | Error::Db { .. }
                | Error::Postgres { .. }
                | Error::PgConnect { .. }
                | Error::PgUrl { .. }
                | Error::PgSchema { .. }
                | Error::Serialize { .. }
                | Error::SchemaVersion { .. }
                | Error::Usage { .. }
                | Error::StateKeyFile { .. }
                | Error::StateDecrypt { .. }
                | Error::NoQueue { .. }
                | Error::JobLost { .. }
                | Error::DocumentDecrypt { .. }
        )
    }

    /// The Storage could not be reached (its server went away, the connection broke or could
    /// not be made): a queued job that failed this way is retried rather than ended.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::PgConnect { .. } => true,
            Error::Postgres { source, .. } => {
                source.is_closed()
                    || source.as_db_error().is_none()
                    || source.code().is_some_and(|c| {
                        // Class 08 (connection exception) and 57P0x (the server shuts down).
                        c.code().starts_with("08") || c.code().starts_with("57P0")
                    })
            }
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Error mapper for a database call; the context is converted only when an error happens
    /// (hot loops pass a `&str` and pay nothing on success).
    pub(crate) fn db<D: Into<String>>(during: D) -> impl FnOnce(rusqlite::Error) -> Error {
        move |source| Error::Db {
            during: during.into(),
            source,
        }
    }

    /// Error mapper for a PostgreSQL call, as [`Error::db`] for SQLite.
    pub(crate) fn pg<D: Into<String>>(during: D) -> impl FnOnce(postgres::Error) -> Error {
        move |source| Error::Postgres {
            during: during.into(),
            source,
        }
    }

    /// Error mapper for an id read from the configuration at `at`.
    pub(crate) fn config_id(at: impl Into<String>) -> impl FnOnce(Error) -> Error {
        let at = at.into();
        move |source| Error::ConfigId {
            at,
            source: Box::new(source),
        }
    }

    pub(crate) fn config(at: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config {
            at: at.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn mapping(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Mapping {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// An error and its sources, `: `-joined: a message that names the cause (job results,
/// warnings), for this crate's errors and the caller's alike.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
