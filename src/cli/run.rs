//! `dockless run`: plain mode and the Keboola job mode.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::registry::RegistryArgs;
use crate::units::{parse_cpus, parse_duration, parse_size};

/// Arguments of `dockless run` (plain mode).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image reference; pulled when it is not in the local store (may come from `--job`, or
    /// with `--config` from the specification of `--component-id`, see `--components`).
    /// With `--project`: the path of the configuration to run (none lists them).
    #[arg(required_unless_present_any = ["job_file", "component_id", "project"])]
    pub image: Option<String>,

    /// Command and arguments replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,

    /// Host directory bound read-write at /data.
    #[arg(long, conflicts_with = "job_source")]
    pub data: Option<PathBuf>,

    /// Memory limit, Keboola's and docker's format (`256m`, `1g`, bytes); swap is not added.
    /// Default with --config: 256m.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,

    /// CPU quota in CPUs (`1.5`).
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Maximum number of processes (podman's default 2048).
    #[arg(long, default_value_t = dockless_runtime::bundle::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Wall-clock limit (`30`, `30s`, `5m`, `1h`); everything the container started is killed.
    /// Default with --config: 3600 s (30 s for a sync action); the configuration's
    /// `runtime.process_timeout` overrides it for the main image, as in Keboola.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// On SIGTERM, SIGINT or SIGHUP the container gets SIGTERM, then SIGKILL after this
    /// long (`30`, `30s`, `0` for at once; default 10 s, as `podman stop`); dockless then
    /// removes the run and exits 128 + the signal. A second signal ends dockless at once.
    #[arg(long, value_parser = parse_duration)]
    pub stop_timeout: Option<Duration>,

    /// `none` (default: an empty network namespace with lo up), `bridge` (its own namespace
    /// with outbound access through pasta, without the host's loopback or own address) or
    /// `host` (root only). With `--config`, default: the component's specification's.
    #[arg(long, value_enum)]
    pub network: Option<Network>,

    /// Mount the image's root filesystem read-only (/data and /tmp stay writable).
    #[arg(long)]
    pub read_only: bool,

    /// As root: run the container in a user namespace of its own, its root mapped to the
    /// unprivileged host range of the `dockless` entry in /etc/subuid and /etc/subgid (its
    /// layers are kept shifted into that range; `--data` is chowned to it, as podman's `:U`).
    #[arg(long)]
    pub userns: bool,

    /// Environment variable `KEY=VALUE` (repeatable); with a job, for every container of it
    /// (a `KBC_*` name is the runner's and refused).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// User inside the container (`name`, `uid`, `uid:gid`), instead of the image's.
    #[arg(long, short, conflicts_with = "job_source")]
    pub user: Option<String>,

    /// Working directory inside the container, instead of the image's.
    #[arg(long, short = 'w', conflicts_with = "job_source")]
    pub workdir: Option<String>,

    /// Platform to pull when the image is not stored.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Print a JSON result (exit code, OOM, timeout, duration, output tails) instead of
    /// streaming the container's stdout (with --config: the job result; the component's
    /// output is then streamed to stderr).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub job: JobArgs,
}

/// The Keboola job mode of `dockless run`: the configuration and the component's settings.
#[derive(Debug, Args)]
#[group(skip)]
pub struct JobArgs {
    /// Run the whole Keboola job with this configuration (JSON; `-` reads standard input):
    /// input mapping, the container, output mapping, state. Exits 0 / 1 / 2 for success /
    /// user error / application error, 125 when dockless itself failed.
    #[arg(
        long,
        value_name = "FILE|-",
        conflicts_with = "command",
        group = "job_source"
    )]
    pub config: Option<PathBuf>,

    /// A job file (JSON): the image, the configuration (inline as `configuration` or as a
    /// `config_file` path relative to the job file) and the component's settings under the
    /// names of the flags (`component_id`, `config_id`, `row_id`, `memory`, `timeout`,
    /// `network`, `cpus`, `configuration_format`, `default_bucket`, `data_type_support`,
    /// `image_parameters`, `processors` as `{"component": "image"}`, `rows` as a list of row
    /// ids, `variables`, `vault` and `shared_code` as paths relative to the job file, `vars`
    /// as `{"name": "value"}`, `logging` as in a component's specification). Flags given as
    /// well win.
    #[arg(
        long = "job",
        value_name = "FILE",
        conflicts_with = "command",
        group = "job_source"
    )]
    pub job_file: Option<PathBuf>,

    /// A project directory pulled by Keboola's `kbc` CLI (`.keboola/manifest.json`): run the
    /// configuration at PATH (the positional argument; its rows, variables, config and row
    /// ids from the manifest; the image from its component's specification, see
    /// `--components`), or list the runnable configurations without PATH.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "command",
        group = "job_source"
    )]
    pub project: Option<PathBuf>,

    /// The configuration given inline by a job file.
    #[arg(skip)]
    pub config_inline: Option<serde_json::Value>,

    /// The file an inline configuration came from, for messages (a project's `config.json`).
    #[arg(skip)]
    pub config_label: Option<PathBuf>,

    /// The shared code configuration in the Storage API's form, given by a project directory
    /// (`--shared-code` wins).
    #[arg(skip)]
    pub shared_code_inline: Option<serde_json::Value>,

    /// The image parameters given inline by a job file.
    #[arg(skip)]
    pub image_parameters_inline: Option<serde_json::Value>,

    /// Component id (`KBC_COMPONENTID`, state key, default bucket); default: the image's
    /// repository name. With a specification for it (`--components`), IMAGE may be left out.
    #[arg(long, requires = "job_source")]
    pub component_id: Option<String>,

    /// Component specifications in Keboola's form: the Storage API index
    /// (`GET /v2/storage`, `{"components": [...]}`) or its `components` list. The component
    /// (and each processor) found by id gives the image, memory, timeout, network,
    /// configuration format, image parameters, default bucket, logging and data type
    /// support; flags win. Default: `components.json` in the state directory, when present.
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub components: Option<PathBuf>,

    /// Configuration id: state is kept per configuration (none without one).
    #[arg(long, requires = "job_source")]
    pub config_id: Option<String>,

    /// Configuration row id (of a configuration without rows; for one in the Storage API's
    /// form with rows it selects the row, as --row).
    #[arg(long, requires = "job_source")]
    pub row_id: Option<String>,

    /// With a configuration in the Storage API's form (`{"id", "configuration", "rows"}`):
    /// run only this row (repeatable; a disabled row runs when named). Default: every
    /// enabled row, in order.
    #[arg(long = "row", value_name = "ID", requires = "job_source")]
    pub rows: Vec<String>,

    /// Values of the configuration's variables (`{{ NAME }}`), in Keboola's form
    /// (`{"values": [{"name": ..., "value": ...}]}`).
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub variables: Option<PathBuf>,

    /// The value of one variable (repeatable; wins over --variables).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var, requires = "job_source")]
    pub vars: Vec<(String, String)>,

    /// Vault variables (`{{ vault.NAME }}`): the Vault API's list of `{"key", "value"}`.
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub vault: Option<PathBuf>,

    /// The shared code configuration that `shared_code_id` names, as the Storage API returns
    /// it (`{"id", "rows": [{"id", "configuration": {"code_content": [...]}}]}`).
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub shared_code: Option<PathBuf>,

    /// Run id (`KBC_RUNID`); default: generated.
    #[arg(long, requires = "job_source")]
    pub run_id: Option<String>,

    /// Project id (`KBC_PROJECTID`).
    #[arg(long, default_value = "0", requires = "job_source")]
    pub project_id: String,

    /// Branch id (`KBC_BRANCHID`), when the job runs in one.
    #[arg(long, requires = "job_source")]
    pub branch_id: Option<String>,

    /// The configuration's version (`KBC_CONFIGVERSION`); default: the `version` of a
    /// configuration in the Storage API's form.
    #[arg(long, requires = "job_source")]
    pub config_version: Option<String>,

    /// Keboola's debug mode: `KBC_COMPONENT_RUN_MODE=debug`; the data folder is stored in
    /// Storage as `stage_<n>.zip` before each container and `stage_output.zip` after the last
    /// (tagged `debug`, secrets of config and state redacted); no output mapping, no state.
    #[arg(long, requires = "job_source")]
    pub debug: bool,

    /// The claim of the queue worker that started this job (`JOB:ATTEMPT:WORKER`; internal:
    /// `dockless worker` runs each job it claims as `dockless run --job ... --queue-claim`).
    #[arg(long, hide = true, requires = "job_source")]
    pub queue_claim: Option<dockless_staging::queue::Claim>,

    /// The orchestration the job runs in: its `artifacts/out/shared` is stored for, and
    /// `artifacts.shared` reads from, the other jobs of that orchestration.
    #[arg(long, requires = "job_source")]
    pub orchestration_id: Option<String>,

    /// The component's `configuration_format`: config, state and manifests as json or yaml
    /// [default: json].
    #[arg(long, value_enum, requires = "job_source")]
    pub configuration_format: Option<ConfigurationFormat>,

    /// The component's default bucket for outputs named by file name only
    /// (`stage.c-bucket`).
    #[arg(long, requires = "job_source")]
    pub default_bucket: Option<String>,

    /// The component's data type support (its `dataTypesConfiguration.dataTypesSupport`):
    /// `KBC_DATA_TYPE_SUPPORT`, typed input manifests (`schema` with `data_type`) for
    /// `authoritative` and `hints`, and output mapping's rules unless the configuration sets
    /// `storage.output.data_type_support` [default: none].
    #[arg(long, value_enum, requires = "job_source")]
    pub data_type_support: Option<DataTypeSupport>,

    /// The component's `image_parameters` (a JSON file; `#` values are secrets).
    #[arg(long, value_name = "FILE", requires = "job_source")]
    pub image_parameters: Option<PathBuf>,

    /// The image of a processor component (repeatable); a processor without one is run from
    /// the image its component id names.
    #[arg(long = "processor", value_name = "COMPONENT=IMAGE", value_parser = parse_processor, requires = "job_source")]
    pub processors: Vec<(String, String)>,

    /// The component's logging (its specification's `logging.type`): `gelf` runs a GELF
    /// server for the main container, named in `KBC_LOGGER_ADDR` and `KBC_LOGGER_PORT`;
    /// its messages become log lines and the result's `events`. Default: standard.
    #[arg(long, value_enum, requires = "job_source")]
    pub logging: Option<LoggingArg>,

    /// The GELF server's transport (`logging.gelf_server_type`; default tcp, as Keboola's).
    #[arg(long, value_enum, requires = "job_source")]
    pub gelf_server_type: Option<GelfServerArg>,

    /// The component's `logging` section given by a job file (Keboola's form).
    #[arg(skip)]
    pub logging_inline: Option<serde_json::Value>,
}

/// `--logging` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoggingArg {
    /// stdout and stderr only.
    Standard,
    /// A GELF server besides them.
    Gelf,
}

/// `--gelf-server-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GelfServerArg {
    /// Null-byte delimited messages over TCP.
    Tcp,
    /// Datagrams (plain, zlib, gzip, chunked).
    Udp,
    /// POST requests, one message each.
    Http,
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{text:?}: expected NAME=VALUE")),
    }
}

fn parse_processor(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
        _ => Err(format!("{text:?}: expected COMPONENT=IMAGE")),
    }
}

/// `--configuration-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigurationFormat {
    /// config.json
    Json,
    /// config.yml
    Yaml,
}

/// `--data-type-support` values (Keboola's `dataTypesSupport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DataTypeSupport {
    /// Every output column carries its type; tables are created typed.
    Authoritative,
    /// Types are hints: kept as metadata, columns created as strings.
    Hints,
    /// The component says nothing about types (Keboola's default).
    #[default]
    None,
}

impl From<DataTypeSupport> for dockless_staging::DataTypeSupport {
    fn from(value: DataTypeSupport) -> Self {
        match value {
            DataTypeSupport::Authoritative => dockless_staging::DataTypeSupport::Authoritative,
            DataTypeSupport::Hints => dockless_staging::DataTypeSupport::Hints,
            DataTypeSupport::None => dockless_staging::DataTypeSupport::None,
        }
    }
}

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// An empty network namespace with only lo.
    None,
    /// The host's network.
    Host,
    /// Outbound access through a user-mode network stack (pasta).
    Bridge,
}

impl From<Network> for dockless_runtime::bundle::NetworkMode {
    fn from(network: Network) -> Self {
        match network {
            Network::None => Self::None,
            Network::Host => Self::Host,
            Network::Bridge => Self::Bridge,
        }
    }
}
