//! The `dockless` binary: a thin CLI and job pipeline over the registry, runtime and staging
//! crates. It wires them together; it holds no HTTP, tar, SQL or syscall logic of its own.
//!
//! Layers, each using only those below it: `main` -> `commands` (one adapter per verb, over
//! `cli`'s clap structs) -> `pipeline` (the Keboola job), `build` (`dockless build`) and
//! `functional` (`dockless test`) ->
//! `stages` (pull + unpack, one container, gc's collection) -> `paths`, `rootless`,
//! `progress`, `units` -> the crates.

mod build;
mod cgroups;
mod cli;
mod commands;
mod functional;
mod paths;
mod pipeline;
mod progress;
mod rootless;
mod signals;
mod stages;
mod units;
mod worker;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A usage error exits 125 ("dockless itself failed"), never 1 or 2, which `run --config`
    // uses for Keboola's user and application errors; --help and --version still exit 0.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(125)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if matches!(cli.command, cli::Command::RuntimeHelper) {
        // The helper's stderr becomes the container's: nothing of ours may log there.
        return dockless_runtime::container::helper_main();
    }
    if matches!(
        cli.command,
        cli::Command::Run(_) | cli::Command::Test(_) | cli::Command::Worker(_)
    ) && let Err(e) = signals::install()
    {
        eprintln!("dockless: warning: cannot handle SIGTERM, SIGINT and SIGHUP: {e}");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOCKLESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<signals::Interrupted>().is_some() => {
            let interrupted = err.downcast_ref::<signals::Interrupted>();
            // After a hangup the terminal is gone: a failed write must not turn the exit
            // status into a panic's.
            let _ = writeln!(
                std::io::stderr().lock(),
                "dockless: {err:#}; the container and its files are removed"
            );
            ExitCode::from(interrupted.map_or(125, signals::Interrupted::exit_status))
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(125)
        }
    }
}
