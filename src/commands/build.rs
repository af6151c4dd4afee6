//! `dockless build`: a component image from a base image and a git repository (Keboola's
//! builder components), built without a daemon; see [`crate::build`].

use std::process::ExitCode;

use anyhow::Context as _;
use dockless_builder::spec::{default_workdir, split_entrypoint};
use dockless_builder::{BuildNetwork, BuildSpec, Secret};

use crate::build::{BuildOptions, build};
use crate::cli::build::{BuildArgs, BuildSource, NetworkArg, PASSWORD_ENV, ProxyArgs};
use crate::paths::Paths;

/// Builds and prints `NAME DIGEST` (or the JSON result) on stdout.
pub fn run(args: BuildArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let source = args
        .source
        .context("dockless build needs --base, --repo, --ref and --entrypoint")?;
    let (spec, tag) = spec(source, args.network)?;
    let options = BuildOptions {
        tag,
        platform: args.platform,
        registry: args.registry.resolve()?,
        memory: args.memory,
        cpus: args.cpus,
        timeout: args.timeout,
        pids: args.pids_limit,
        quiet: args.quiet,
        http_proxy: args.proxy.http_proxy,
        ca_file: ca_file(&args.proxy)?,
    };
    let built = build(&spec, &options, paths)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
    } else {
        println!("{} {}", built.name, built.digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--ca-file`, checked and made absolute; shared with `dockless test --build`.
pub fn ca_file(proxy: &ProxyArgs) -> anyhow::Result<Option<std::path::PathBuf>> {
    proxy
        .ca_file
        .as_deref()
        .map(crate::build::proxy::ca_file)
        .transpose()
}

/// The build definition the flags describe (the password read from its file or from
/// DOCKLESS_GIT_PASSWORD), and the image name asked for; shared with `dockless test --build`.
pub fn spec(
    source: BuildSource,
    network: NetworkArg,
) -> anyhow::Result<(BuildSpec, Option<String>)> {
    let password = match (&source.password_file, source.username.is_some()) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the password file {}", file.display()))?;
            Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, true) => std::env::var(PASSWORD_ENV).ok().map(Secret::new),
        (None, false) => None,
    };
    let spec = BuildSpec {
        base: source.base,
        repository: source.repository,
        reference: source.reference,
        username: source.username,
        password,
        commands: source.commands,
        entrypoint: split_entrypoint(&source.entrypoint)?,
        workdir: source.workdir.unwrap_or_else(default_workdir),
        network: match network {
            NetworkArg::None => BuildNetwork::None,
            NetworkArg::Host => BuildNetwork::Host,
            NetworkArg::Bridge => BuildNetwork::Bridge,
        },
    };
    Ok((spec, source.tag))
}
