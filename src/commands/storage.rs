//! `dockless storage ...`: the embedded Storage from the command line.

use std::process::ExitCode;

use clap::Subcommand;

use super::Paths;

/// Subcommands of `dockless storage`.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// List tables.
    Tables,
}

/// Runs one storage subcommand against `paths.storage`.
pub fn run(cmd: StorageCommand, paths: &Paths) -> anyhow::Result<ExitCode> {
    let _ = (cmd, &paths.storage);
    anyhow::bail!("storage commands are not implemented yet")
}
