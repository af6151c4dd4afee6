//! Which cgroup manager this process's runs use, decided once before any thread starts (and,
//! rootless, before the user namespace is entered): `systemd` on a host whose PID 1 is
//! systemd on a pure cgroup v2 hierarchy and whose D-Bus answers (as podman decides), else
//! `cgroupfs`. `--cgroup-manager` / `DOCKLESS_CGROUP_MANAGER` force one; a forced `systemd`
//! that cannot work is an error naming why, never a silent fallback.
//!
//! - root, systemd: each run in a transient scope `dockless-<id>.scope` of `system.slice`
//!   (see `dockless_runtime::systemd`); nothing is created beside systemd's tree.
//! - rootless, systemd: the process asks the user's own systemd (`user@UID.service`) for one
//!   transient scope with `Delegate=yes` holding itself, so that the rootless session can
//!   enable the delegated memory, pids and cpu controllers below it for its containers (a
//!   login's `session-N.scope` is not the user's to write; a user service may hold other
//!   processes, which keep controllers from being enabled there).
//! - cgroupfs: root writes `/sys/fs/cgroup/.../dockless/<id>`; rootless uses what was
//!   delegated to it (`dockless delegate-cgroups`, or a cgroup systemd delegated already).

use std::sync::OnceLock;

use anyhow::{Context, bail};
use dockless_runtime::systemd::{self, RunScopes, Scope};

use crate::paths::euid;

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Detect (the default).
    Auto,
    /// `--cgroup-manager systemd`.
    Systemd,
    /// `--cgroup-manager cgroupfs`.
    Cgroupfs,
}

/// The decision, kept for the process.
#[derive(Debug)]
struct Chosen {
    /// root's per-run scopes (`None`: cgroupfs, or rootless).
    scopes: Option<RunScopes>,
    /// The rootless process's own scope.
    own_scope: Option<Scope>,
}

static CHOSEN: OnceLock<Chosen> = OnceLock::new();

/// Decides the manager for the commands that run containers. Rootless with systemd, this
/// moves the process into its own delegated scope: call it while single-threaded and before
/// the rootless session is entered.
pub fn choose(wanted: Wanted) -> anyhow::Result<()> {
    let chosen = decide(wanted)?;
    match (&chosen.scopes, &chosen.own_scope) {
        (Some(_), _) => tracing::debug!(
            cgroup_manager = "systemd",
            "each run in a transient scope of system.slice"
        ),
        (None, Some(scope)) => tracing::debug!(
            cgroup_manager = "systemd",
            scope = scope.cgroup,
            "rootless: the process in a delegated scope of the user's systemd"
        ),
        (None, None) => tracing::debug!(cgroup_manager = "cgroupfs", "cgroups written directly"),
    }
    let _ = CHOSEN.set(chosen);
    Ok(())
}

fn decide(wanted: Wanted) -> anyhow::Result<Chosen> {
    let cgroupfs = Chosen {
        scopes: None,
        own_scope: None,
    };
    if wanted == Wanted::Cgroupfs {
        return Ok(cgroupfs);
    }
    let forced = wanted == Wanted::Systemd;
    let why_not = if !systemd::booted() {
        Some("PID 1 is not systemd (no /run/systemd/system)")
    } else if !systemd::unified() {
        Some("/sys/fs/cgroup is not a pure cgroup v2 hierarchy")
    } else {
        None
    };
    if let Some(why) = why_not {
        if forced {
            bail!("--cgroup-manager systemd: {why}; use --cgroup-manager cgroupfs");
        }
        tracing::debug!(reason = why, "cgroup manager cgroupfs");
        return Ok(cgroupfs);
    }
    let attempt = if euid() == 0 {
        RunScopes::connect()
            .map(|scopes| Chosen {
                scopes: Some(scopes),
                own_scope: None,
            })
            .context("systemd's D-Bus API does not answer")
    } else {
        own_scope().map(|scope| Chosen {
            scopes: None,
            own_scope: Some(scope),
        })
    };
    match attempt {
        Ok(chosen) => Ok(chosen),
        Err(e) if forced => Err(e.context("--cgroup-manager systemd")),
        Err(e) => {
            tracing::debug!(
                reason = format!("{e:#}"),
                "cgroup manager cgroupfs: systemd cannot be used"
            );
            Ok(cgroupfs)
        }
    }
}

/// Rootless: a transient scope of the user's systemd with `Delegate=yes` for this process.
fn own_scope() -> anyhow::Result<Scope> {
    let uid = euid();
    let mut bus = systemd::user_bus(uid).context(
        "the user's systemd does not answer on its D-Bus (is user@UID.service running? \
         `loginctl enable-linger USER` starts it without a login)",
    )?;
    let pid = std::process::id();
    let unit = format!("dockless-{pid}.scope");
    Scope::start_for(&mut bus, &unit, None, pid, "dockless (rootless runner)")
        .with_context(|| format!("the user's systemd gave no scope {unit}"))
}

/// root's per-run scopes, when systemd manages the cgroups.
pub fn run_scopes() -> Option<RunScopes> {
    CHOSEN.get().and_then(|c| c.scopes.clone())
}

/// The manager's name for `--json` and the debug log: `"systemd"` or `"cgroupfs"`.
pub fn name() -> &'static str {
    match CHOSEN.get() {
        Some(Chosen {
            scopes: Some(_), ..
        })
        | Some(Chosen {
            own_scope: Some(_), ..
        }) => "systemd",
        _ => "cgroupfs",
    }
}
