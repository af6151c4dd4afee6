//! The job configuration: strict normalization as Keboola's runner does it, and the documents
//! (`config.json`, manifests, state) written from it and read back.
//!
//! Normalization follows Keboola's code, not its older docs: the `Container` configuration
//! tree refuses unknown keys and appends missing defaults in its definition order (input
//! tables get `columns`, `column_types`, `where_values`, `where_operator`, `overwrite`,
//! `keep_internal_timestamp_column`; output tables get `incremental` ... `schema`; empty
//! `tags`/`processed_tags` of input files are dropped), then the job definition makes sure
//! `storage`, `processors` and `parameters` exist. [`container_config`] replays the runner's
//! `ConfigFile` steps, so keys come out in the order Keboola writes them.
//!
//! What this module gives input and output mapping is the *normalized JSON*, not a typed
//! view: every mapping entry has passed its section's key check and carries its defaults, so
//! [`crate::input`] and [`crate::output`] read it with `serde_json` accessors and this
//! module's `strings` helper. The JSON stays the one representation because it is also what
//! `config.json` is written from, in Keboola's key order, and because mapping values are read
//! leniently (numbers in string lists, file ids given as strings, a `limit` that is not a
//! number ignored), where derived serde structs would refuse them.
//!
//! The parts, each depending only on those listed before it:
//! - `tree`: Symfony-style checks (strict keys, defaults, PHP's `empty()`);
//! - `cloud_only`: values only Keboola's stack can resolve (ciphertexts, OAuth Broker
//!   references), refused with what to supply instead;
//! - `input`, `output`: the `storage.input` and `storage.output` sections;
//! - `normalize`: the root of the tree ([`normalize`], [`parse`]);
//! - `stored`: a configuration as the Storage API returns it and its runs (rows);
//! - `variables`: shared code, vault and configuration variables ([`resolve`]);
//! - `render`: [`Format`], [`container_config`], [`processor_config`], [`render`],
//!   [`parse_document`].

mod cloud_only;
mod input;
mod normalize;
mod output;
mod render;
mod stored;
mod tree;
mod variables;

pub use cloud_only::{cipher_prefix, refuse_at as refuse_cloud_only_at};
pub use normalize::{normalize, parse};
pub(crate) use output::{OUTPUT_FILE_KEYS, OUTPUT_TABLE_KEYS};
pub use render::{Format, container_config, parse_document, processor_config, render};
pub use stored::{Planned, Row, Stored, is_stored_form, parse_stored, plan, replace_recursive};
pub(crate) use tree::strings;
pub use variables::{
    SharedCode, Sources, parse_shared_code, parse_values, parse_vault, resolve, vault_secrets,
};
