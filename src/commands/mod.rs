//! One short adapter per verb: the parsed flags -> a stage or pipeline -> output and exit
//! code. `dispatch` routes the parsed command line.

pub mod build;
pub mod components;
pub mod gc;
pub mod images;
pub mod job;
pub mod job_config;
pub mod job_file;
pub mod login;
pub mod project;
pub mod pull;
pub mod queue;
pub mod run;
pub mod storage;
pub mod test;

use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{Cli, Command};
use crate::paths::{Paths, is_root};

/// Runs the parsed command; the returned code is the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::resolve(cli.root.clone(), cli.storage.clone());
    if !matches!(
        cli.command,
        Command::Unshare(_) | Command::DelegateCgroups(_) | Command::RuntimeHelper
    ) {
        // Before any crate creates it (they would make it 0700, too narrow for --userns).
        paths
            .create_root()
            .with_context(|| format!("cannot create {}", paths.root.display()))?;
    }
    // Abandoned rootless containers are only reachable from outside any session (see
    // `kill_abandoned_inits`); as root, gc's own removal of each run kills them.
    if !is_root()
        && matches!(
            cli.command,
            Command::Gc | Command::Run(_) | Command::Test(_)
        )
        && let Err(e) = dockless_runtime::container::kill_abandoned_inits(&paths.containers())
    {
        tracing::warn!(error = format!("{e:#}"), "cannot end abandoned containers");
    }
    // Still single-threaded here: a rootless runner's own systemd scope comes before its
    // session, and the session before any thread.
    let runs_containers = matches!(
        cli.command,
        Command::Run(_) | Command::Build(_) | Command::Test(_)
    );
    if runs_containers {
        crate::cgroups::choose(match cli.cgroup_manager {
            None => crate::cgroups::Wanted::Auto,
            Some(crate::cli::CgroupManager::Systemd) => crate::cgroups::Wanted::Systemd,
            Some(crate::cli::CgroupManager::Cgroupfs) => crate::cgroups::Wanted::Cgroupfs,
        })?;
    }
    if matches!(
        cli.command,
        Command::Pull(_)
            | Command::Rmi(_)
            | Command::Load(_)
            | Command::Run(_)
            | Command::Gc
            | Command::Build(_)
            | Command::Test(_)
            | Command::Unshare(_)
    ) {
        crate::rootless::enter_session(&paths, runs_containers)?;
    }
    match cli.command {
        Command::Storage(cmd) => storage::run(cmd, &paths),
        Command::Build(args) => build::run(*args, &paths),
        Command::Pull(args) => pull::run(args, &paths),
        Command::Images(args) => images::list(args, &paths),
        Command::Rmi(args) => images::remove(args, &paths),
        Command::Load(args) => images::load(args, &paths),
        Command::Run(args) => run::run(*args, &paths),
        Command::Test(args) => test::run(*args, &paths),
        Command::Gc => gc::run(&paths),
        Command::Submit(args) => queue::submit(args, &paths),
        Command::Worker(args) => queue::worker(args, &paths),
        Command::Jobs(args) => queue::jobs(args, &paths),
        Command::Job(args) => queue::job(args, &paths),
        Command::Logs(args) => queue::logs(args, &paths),
        Command::Kill(args) => queue::kill(args, &paths),
        Command::Ps(args) => queue::ps(args, &paths),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Unshare(args) => crate::rootless::exec(args.command),
        Command::DelegateCgroups(args) => crate::rootless::delegate(&args.user, args.undo),
        Command::RuntimeHelper => unreachable!("main runs the helper before anything else"),
    }
}
