//! `dockless login` and `dockless logout`: registry credentials in podman's auth file.

use clap::Args;

use super::registry::RegistryArgs;

/// `dockless login -u USER --password-stdin REGISTRY`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`HOST[:PORT]`, `docker.io` for Docker Hub).
    pub registry: String,

    /// User name.
    #[arg(long, short)]
    pub username: String,

    /// Read the password (or access token) from standard input; a password is never taken
    /// from the command line, where other users could read it.
    #[arg(long, required = true)]
    pub password_stdin: bool,

    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

/// `dockless logout REGISTRY`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry whose entry is removed.
    pub registry: String,
}
