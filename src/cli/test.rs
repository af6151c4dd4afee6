//! `dockless test`: a component's functional test folders run against its image.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::build::{BuildSource, NetworkArg, ProxyArgs};
use super::registry::RegistryArgs;
use super::run::Network;
use crate::units::{parse_cpus, parse_duration, parse_size};

/// Arguments of `dockless test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// `IMAGE DIR`; with `--build` only `DIR`. DIR holds one folder per case
    /// (`<case>/source/data`, `<case>/expected/data/out`), or is one case itself.
    #[arg(value_name = "IMAGE|DIR", num_args = 1..=2, required = true)]
    pub targets: Vec<String>,

    /// Run only this case (repeatable; a folder name under DIR).
    #[arg(long = "case", value_name = "NAME")]
    pub cases: Vec<String>,

    /// Environment variable for every case (`KEY=VALUE`, repeatable): added to the `KBC_*`
    /// variables a job gets, or replacing one (`KBC_STACKID`, `KBC_DATA_TYPE_SUPPORT`).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,

    /// The component id the cases run as (`KBC_COMPONENTID`); default: the image's
    /// repository name.
    #[arg(long)]
    pub component_id: Option<String>,

    /// Print the result as JSON on stdout (the case lines go to stderr).
    #[arg(long)]
    pub json: bool,

    /// Keep the data folder of every case that did not pass, and print where.
    #[arg(long)]
    pub keep: bool,

    /// Cases run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Memory limit of each case (`256m`, `1g`); default 256m, a job's.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,

    /// CPU quota of each case.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Maximum number of processes of each case.
    #[arg(long, default_value_t = dockless_runtime::bundle::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Wall-clock limit of each case (`30s`, `5m`); a case that runs longer fails, the
    /// others still run. Default 3600 s, a job's.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// On SIGTERM, SIGINT or SIGHUP the running cases' containers get SIGTERM, then SIGKILL
    /// after this long (default 10 s); no further case starts.
    #[arg(long, value_parser = parse_duration)]
    pub stop_timeout: Option<Duration>,

    /// The cases' network: `none` (default), `bridge` or `host`.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,

    /// As root: run the cases in a user namespace of their own (see `dockless run --userns`).
    #[arg(long)]
    pub userns: bool,

    /// Platform to pull when the image (or the base image) is not stored.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Build the image first from a base image and a git repository (the `dockless build`
    /// flags), then test it.
    #[arg(long, requires = "base")]
    pub build: bool,

    #[command(flatten)]
    pub source: Option<BuildSource>,

    /// The network of the build commands (`bridge` or `host` for package installs).
    #[arg(long, value_enum, default_value_t = NetworkArg::None, requires = "build")]
    pub build_network: NetworkArg,

    /// Wall-clock limit of each build command.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub build_timeout: Duration,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `-e KEY=VALUE`: a name before the `=`.
fn parse_env(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(text.to_string()),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

impl TestArgs {
    /// The image to test (none with `--build`) and the folder of cases.
    pub fn image_and_dir(&self) -> Result<(Option<String>, PathBuf), String> {
        match (self.build, self.targets.as_slice()) {
            (false, [image, dir]) => Ok((Some(image.clone()), PathBuf::from(dir))),
            (true, [dir]) => Ok((None, PathBuf::from(dir))),
            (false, [_]) => Err("expected IMAGE DIR (or --build ... DIR)".to_string()),
            (true, _) => Err("with --build, give only DIR: the image is the one built".to_string()),
            (false, _) => Err("expected IMAGE DIR".to_string()),
        }
    }
}
