//! `dockless storage ...` subcommands.

use std::path::PathBuf;

use clap::Subcommand;

/// Subcommands of `dockless storage`.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Load a CSV file (with a header; `.gz` is decompressed) into a table.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Destination table, `stage.c-bucket.table`.
        table_id: String,
        /// Primary key columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        primary_key: Vec<String>,
        /// Upsert by the key (append without one) instead of replacing the rows.
        #[arg(long)]
        incremental: bool,
        /// Field delimiter (one character).
        #[arg(long, default_value = ",")]
        delimiter: String,
        /// Quote character (one character; empty for none).
        #[arg(long, default_value = "\"")]
        enclosure: String,
    },
    /// Write a table as Keboola's input CSV (every value quoted, LF).
    Export {
        /// The table.
        table_id: String,
        /// Output file; standard output when omitted.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Column subset, comma-separated, in this order.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        /// Row filter `column=v1,v2` or `column!=v1,v2`.
        #[arg(long = "where")]
        filter: Option<String>,
        /// Only rows changed since (`-2 days`, unix time, ISO date).
        #[arg(long)]
        changed_since: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// List tables.
    Tables,
    /// Show one table: columns, key, rows, last change.
    Table {
        /// The table.
        table_id: String,
    },
    /// List files, newest first.
    Files {
        /// Only files carrying all these tags.
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Store a file.
    Upload {
        /// The file.
        file: PathBuf,
        /// Tags (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Keep the file permanently.
        #[arg(long)]
        permanent: bool,
    },
    /// Write a file's content (slices concatenated) to a path or standard output.
    Download {
        /// File id.
        id: i64,
        /// Output path; standard output when omitted.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove a table (by table id) or a file (by numeric id).
    Rm {
        /// `stage.c-bucket.table` or a file id.
        target: String,
    },
    /// Bring the Storage's schema to this dockless' version (a PostgreSQL Storage is never
    /// upgraded behind the back of the other hosts that share it; a SQLite file is upgraded
    /// when opened). Safe to run from several hosts at once.
    Migrate,
}
