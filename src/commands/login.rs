//! `dockless login` / `logout`: credentials checked against the registry, then written to
//! the auth file podman writes (`REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`), every other entry kept. Pulls read that file
//! first.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use dockless_registry::{Client, Credentials};

use crate::cli::login::{LoginArgs, LogoutArgs};

/// Reads the password from stdin, checks it with the registry and stores it.
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    // As docker and podman: one trailing newline (and carriage return) is not part of it.
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    let credentials = Credentials::new(&args.username, password);
    let client = Client::new(args.registry_args.resolve()?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(client.check_login(&args.registry, &credentials))?;
    let file = dockless_registry::login_file();
    dockless_registry::store_login(&file, &args.registry, &credentials)?;
    println!("Login Succeeded!");
    Ok(ExitCode::SUCCESS)
}

/// Removes the registry's entry; not being logged in is an error, as in podman.
pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let file = dockless_registry::login_file();
    if !dockless_registry::remove_login(&file, &args.registry)? {
        anyhow::bail!(
            "not logged into {} (no entry in {})",
            args.registry,
            file.display()
        );
    }
    println!("Removed login credentials for {}", args.registry);
    Ok(ExitCode::SUCCESS)
}
