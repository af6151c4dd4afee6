//! `dockless build`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::registry::RegistryArgs;
use crate::units::{parse_cpus, parse_duration, parse_size};

/// The environment variable a password may come from (never a flag: it would show in `ps`).
pub const PASSWORD_ENV: &str = "DOCKLESS_GIT_PASSWORD";

/// Arguments of `dockless build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build (`--base`, `--repo`, `--ref`, `--entrypoint` required).
    #[command(flatten)]
    pub source: Option<BuildSource>,

    /// The network of the build commands.
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,

    /// Memory limit of each build command (`512m`, `1g`).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,

    /// CPU quota of each build command.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Wall-clock limit of each build command (`30s`, `10m`, `1h`).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub timeout: Duration,

    /// Process limit of each build command.
    #[arg(long, default_value_t = dockless_runtime::bundle::DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,

    /// Platform of the base image when it must be pulled.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,

    /// Print the result as JSON (name, digest, commit, cached, layers, step times).
    #[arg(long)]
    pub json: bool,

    /// No progress lines (build command output is still shown on stderr).
    #[arg(long, short)]
    pub quiet: bool,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A build behind a proxy: what its commands get from the host (never stored in the image).
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Pass the host's proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`, `FTP_PROXY`
    /// and their lowercase forms) to build commands that have a network, as podman does;
    /// `--http-proxy=false` keeps them out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub http_proxy: bool,

    /// The CA bundle (PEM) of a TLS-intercepting proxy: bound read-only into every build
    /// command and named by SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT; never part of
    /// the image.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// What an image is built from and how it starts: the flags `dockless build` and `dockless
/// test --build` share. Optional as a whole (`dockless test` without `--build` has none of
/// them); once one is given, the four that define a build are required.
#[derive(Debug, Args)]
#[group(requires_all = ["base", "repository", "reference", "entrypoint"])]
pub struct BuildSource {
    /// The base image (pulled when not stored); its Env and User are kept.
    #[arg(long, required = false)]
    pub base: String,

    /// The repository: an https or ssh URL, or a local path.
    #[arg(long = "repo", value_name = "URL|PATH", required = false)]
    pub repository: String,

    /// A tag, a branch or a full commit id; a tag or branch is resolved again on every build.
    #[arg(long = "ref", value_name = "REF", required = false)]
    pub reference: String,

    /// User name for an https repository.
    #[arg(long)]
    pub username: Option<String>,

    /// A file holding the password or token for an https repository (else the
    /// DOCKLESS_GIT_PASSWORD environment variable).
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,

    /// A shell command run in the image at build time, in /home (repeatable, in order); each
    /// one's changes become a layer.
    #[arg(long = "command", value_name = "CMD")]
    pub commands: Vec<String>,

    /// The image's entry point, split as a shell would (`python /home/main.py`).
    #[arg(long, required = false)]
    pub entrypoint: String,

    /// The image's working directory (default /data/, Keboola's).
    #[arg(long)]
    pub workdir: Option<String>,

    /// The image's name; default `localhost/build/<repository>:<commit prefix>`.
    #[arg(long)]
    pub tag: Option<String>,
}

/// `--network` of the build commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// An empty network namespace.
    None,
    /// The host's network (package installs; root only).
    Host,
    /// Outbound access through a user-mode network stack (pasta): package installs without
    /// the host's network.
    Bridge,
}
