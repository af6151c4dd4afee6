//! The `dockless` binary: a thin CLI and job pipeline over the registry, runtime and staging
//! crates. It wires them together; it holds no HTTP, tar, SQL or syscall logic of its own.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(125)
        }
    }
}
