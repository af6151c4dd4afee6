//! `dockless build`: a component image from a base image and a git repository (Keboola's
//! builder components), built without a daemon; see [`crate::build`].

use std::process::ExitCode;

use anyhow::Context as _;
use dockless_builder::spec::split_entrypoint;
use dockless_builder::{BuildNetwork, BuildSpec, Secret};

use crate::build::{BuildOptions, build};
use crate::cli::build::{BuildArgs, NetworkArg, PASSWORD_ENV};
use crate::paths::Paths;

/// Builds and prints `NAME DIGEST` (or the JSON result) on stdout.
pub fn run(args: BuildArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let password = match (&args.password_file, args.username.is_some()) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the password file {}", file.display()))?;
            Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, true) => std::env::var(PASSWORD_ENV).ok().map(Secret::new),
        (None, false) => None,
    };
    let spec = BuildSpec {
        base: args.base,
        repository: args.repository,
        reference: args.reference,
        username: args.username,
        password,
        commands: args.commands,
        entrypoint: split_entrypoint(&args.entrypoint)?,
        workdir: args.workdir,
        network: match args.network {
            NetworkArg::None => BuildNetwork::None,
            NetworkArg::Host => BuildNetwork::Host,
            NetworkArg::Bridge => BuildNetwork::Bridge,
        },
    };
    let options = BuildOptions {
        tag: args.tag,
        platform: args.platform,
        registry: args.registry.resolve()?,
        memory: args.memory,
        cpus: args.cpus,
        timeout: args.timeout,
        pids: args.pids_limit,
        quiet: args.quiet,
    };
    let built = build(&spec, &options, paths)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
    } else {
        println!("{} {}", built.name, built.digest);
    }
    Ok(ExitCode::SUCCESS)
}
