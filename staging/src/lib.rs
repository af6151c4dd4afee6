//! dockless-staging: the embedded Storage and Keboola's `/data` contract.
//!
//! Where it sits: the registry pulls an image, the runtime unpacks it and runs the container
//! with a job's working directory mounted at `/data`; this crate fills that folder before the
//! run (input mapping, `config.json`, `in/state.json`) and loads what the component wrote into
//! Storage after it (output mapping, state), so that an existing Keboola component sees exactly
//! the files it sees under Keboola's runner.
//!
//! Main types:
//! - [`Storage`] / [`Transaction`]: tables (`stage.c-bucket.table`, text columns, optional
//!   primary key, hidden `_timestamp`, metadata, the column types of a typed table) and files
//!   (tags, flags, content by hash).
//!   [`SqliteStorage`] is the embedded backend: one SQLite file created on first use, WAL so
//!   that concurrent jobs wait for each other instead of failing; its folders are 0700 and its
//!   files 0600 whatever the umask. [`SealedStorage`] wraps any backend so that the `#` values
//!   of stored state are encrypted at rest with the installation's [`StateCipher`] key.
//! - [`Job`]: one job, from its [`JobSpec`] (configuration, component, config/row ids,
//!   image parameters, action, format, default bucket): [`Job::new`] normalizes the
//!   configuration, [`Job::stage`] writes the data folder, [`Job::finish`] loads the outputs
//!   and stores the state in one transaction.
//! - [`DataDir`]: the working directory layout.
//! - [`Error`]: typed; [`Error::is_user_error`] tells a bad configuration, manifest or CSV
//!   (the user's fault) from a failure of the machinery.
//!
//! ```no_run
//! use dockless_staging::{DataDir, Job, JobSpec, SealedStorage, SqliteStorage, StateCipher};
//! use serde_json::json;
//!
//! # fn main() -> dockless_staging::Result<()> {
//! let cipher = StateCipher::open_or_create("/var/lib/dockless/storage.key".as_ref())?;
//! let backend = SqliteStorage::open("/var/lib/dockless/storage.db".as_ref())?;
//! let mut storage = SealedStorage::new(backend, cipher);
//! let dir = DataDir::create("/tmp/job-1".as_ref())?;
//! let mut job = Job::new(JobSpec {
//!     configuration: json!({
//!         "storage": {
//!             "input": {"tables": [{"source": "in.c-main.orders", "destination": "orders.csv"}]},
//!             "output": {"tables": [{"source": "totals.csv", "destination": "out.c-main.totals"}]}
//!         },
//!         "parameters": {"multiplier": 2}
//!     }),
//!     component_id: "keboola.python-transformation".into(),
//!     config_id: Some("123".into()),
//!     action: "run".into(),
//!     ..JobSpec::default()
//! })?;
//! job.stage(&storage, &dir)?;
//! // ... run the container with dir.data() at /data and dir.tmp() at /tmp ...
//! let succeeded = true;
//! let report = job.finish(&mut storage, &dir, succeeded, None)?;
//! for table in &report.output.tables {
//!     println!("{} <- {} ({} rows)", table.destination, table.source, table.rows);
//! }
//! # Ok(())
//! # }
//! ```

pub mod artifacts;
pub mod components;
pub mod config;
pub mod debug_archive;
pub mod error;
pub mod id;
pub mod input;
pub mod job;
pub mod layout;
mod out_dir;
pub mod output;
pub mod php_json;
mod private;
pub mod queue;
pub mod sanitize;
pub mod storage;
pub mod time;
pub mod types;
pub mod usage;

pub use config::Format;
pub use error::{Error, Result};
pub use id::{BucketId, Stage, TableId, default_bucket};
pub use job::{Job, JobReport, JobSpec, store_states};
pub use layout::DataDir;
pub use output::{
    ImportOptions, LoadedTable, OutputReport, OutputSettings, StoredFile, import_file,
};
pub use storage::any::{AnyStorage, Location as StorageLocation};
pub use storage::postgres::PostgresStorage;
pub use storage::sealed::{SealedStorage, StateCipher};
pub use storage::sqlite::{MAX_COLUMNS, Options as SqliteOptions, SqliteStorage};
pub use storage::{
    ExportOptions, FileInfo, FileQuery, NewFile, StateKey, Storage, TableInfo, Transaction,
};
pub use types::{BaseType, ColumnType, DataTypeSupport};
