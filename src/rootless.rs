//! The rootless side of the binary: an ordinary user's commands that unpack layers or run
//! containers first move the process into its own user namespace (see the runtime's
//! `userns`), and every limit that cannot be enforced there is named in a warning.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use dockless_runtime::bundle::RunSpec;
use dockless_runtime::userns::{self, SubIdFiles};

use crate::paths::{Paths, euid};

/// Enters the rootless session when the caller is not root. Must run before any thread is
/// started. Without a delegated cgroup subtree, containers run in the caller's cgroup: this
/// host's cgroup hierarchy cannot be written by an ordinary user, so a private cgroup2 view is
/// mounted for libcontainer. Only a session that `runs_containers` claims a delegated v2
/// cgroup (moving into a leaf of it): a pull or gc would leave that leaf behind in a cgroup
/// that is not its own scope.
pub fn enter_session(paths: &Paths, runs_containers: bool) -> anyhow::Result<()> {
    if euid() == 0 {
        return Ok(());
    }
    secure_run_state(&paths.run_state)?;
    let map = userns::current_user_map(&SubIdFiles::default()).context("cannot run rootless")?;
    // Owners are checked from outside: inside, the user's directories belong to uid 0.
    let delegated = userns::delegated_parent(euid());
    userns::enter(&map)
        .context("cannot enter the rootless user namespace")
        .map_err(apparmor_hint)?;
    if delegated.is_none() {
        userns::mount_private_cgroup2()
            .context("cannot set up the rootless session")
            .map_err(apparmor_hint)?;
        if runs_containers {
            let _ = DELEGATED_V2.set(userns::claim_delegated_v2());
            tracing::debug!(controllers = ?DELEGATED_V2.get(), "cgroup v2 delegation of the session");
        }
    }
    let _ = DELEGATED.set(delegated);
    Ok(())
}

/// Where AppArmor restricts user namespaces (Ubuntu 24.04), a failed session says why and
/// what fixes it: the profile in `contrib/apparmor/`, as podman and others ship theirs.
fn apparmor_hint(err: anyhow::Error) -> anyhow::Error {
    if !userns::apparmor_restricts_userns() {
        return err;
    }
    err.context(
        "this host's AppArmor policy restricts unprivileged user namespaces \
         (kernel.apparmor_restrict_unprivileged_userns = 1): as root, install dockless' profile \
         (`install -m 0644 contrib/apparmor/dockless /etc/apparmor.d/dockless && apparmor_parser \
         -r /etc/apparmor.d/dockless`, for a binary at /usr/bin/dockless or \
         /usr/local/bin/dockless), or run dockless as root",
    )
}

/// The cgroup parent root delegated to this user (`dockless delegate-cgroups`), if any.
static DELEGATED: OnceLock<Option<String>> = OnceLock::new();

/// On a cgroup v2 host whose systemd delegated this session's cgroup to the user, the
/// controllers enabled for the containers (see `userns::claim_delegated_v2`): their limits
/// are enforced by libcontainer's v2 manager.
static DELEGATED_V2: OnceLock<Vec<String>> = OnceLock::new();

/// Where a rootless run's cgroups go when root delegated a subtree; `None` when not
/// rootless or when nothing was delegated.
pub fn delegated_cgroup_parent() -> Option<&'static str> {
    DELEGATED.get().and_then(|d| d.as_deref())
}

/// Whether this process runs rootless (inside its session or a foreign user namespace).
pub fn active() -> bool {
    userns::in_user_namespace()
}

/// The spec to hand the runtime: rootless without a delegated cgroup, the cgroup limits are
/// taken out and named once per process on stderr, never dropped silently.
pub fn enforceable(spec: &RunSpec) -> RunSpec {
    let mut spec = spec.clone();
    if !active() || delegated_cgroup_parent().is_some() {
        return spec;
    }
    let v2 = DELEGATED_V2.get().map(Vec::as_slice).unwrap_or_default();
    let enforced = |controller: &str| v2.iter().any(|c| c == controller);
    let mut dropped = Vec::new();
    if !enforced("memory")
        && let Some(bytes) = spec.limits.memory_bytes.take()
    {
        dropped.push(format!("memory limit {}", crate::units::limit_text(bytes)));
    }
    if !enforced("cpu")
        && let Some(cpus) = spec.limits.cpus.take()
    {
        dropped.push(format!("cpu limit {cpus}"));
    }
    if !enforced("pids")
        && let Some(pids) = spec.limits.pids.take()
    {
        dropped.push(format!("pids limit {pids}"));
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !dropped.is_empty() && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "dockless: warning: rootless without a cgroup delegated to this user: not \
             enforced: {}; the timeout still applies{}",
            dropped.join(", "),
            if userns::v1_hierarchies().is_empty() {
                " (on a systemd host, the user's systemd must answer on its D-Bus: \
                 `loginctl enable-linger USER` starts it; without systemd, as root, \
                 `dockless delegate-cgroups USER` makes a cgroup for the user's runner)"
            } else {
                " (as root, `dockless delegate-cgroups USER` delegates one)"
            }
        );
    }
    spec
}

/// `dockless delegate-cgroups USER [--undo]`: root's one-time step that gives USER a
/// subtree of every cgroup v1 hierarchy, or on a cgroup v2 host without systemd one delegated
/// cgroup, so that its rootless runs get limits.
pub fn delegate(user: &str, undo: bool) -> anyhow::Result<std::process::ExitCode> {
    if euid() != 0 {
        bail!("delegate-cgroups changes the host's cgroup hierarchies: run it as root");
    }
    let (uid, gid) = lookup_user(user)?;
    let dirs = if undo {
        userns::undelegate(uid)
    } else {
        userns::delegate(uid, gid)
    }
    .with_context(|| format!("cannot change the cgroups delegated to {user}"))?;
    for dir in &dirs {
        println!("{}", dir.display());
    }
    if !undo && userns::v1_hierarchies().is_empty() {
        let dir = dirs
            .first()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "dockless: cgroup v2: {user}'s runner gets limits when it runs in {dir}: as root, \
             put the process that starts it there (`echo PID > {dir}/cgroup.procs`, e.g. the \
             first step of {user}'s service, then drop to {user} with `setpriv` or `exec`), \
             alone (the controllers cannot be enabled beside another process). On a systemd \
             host none of this is needed: the user's systemd gives each runner a delegated scope"
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// uid and primary gid of a user name (or of a numeric uid), as `id` reports them.
fn lookup_user(user: &str) -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = std::process::Command::new("id")
            .args([flag, user])
            .output()
            .context("cannot run id")?;
        if !out.status.success() {
            bail!("no user {user:?}");
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("id {flag} {user}"))
    };
    Ok((id("-u")?, id("-g")?))
}

/// The entry of /etc/subuid and /etc/subgid whose range root's `--userns` containers get
/// (podman names its own `containers`).
pub const USERNS_ENTRY: &str = "dockless";

/// `--userns`: the host range for the containers' ids, or `None` without the flag.
pub fn userns_range(wanted: bool) -> anyhow::Result<Option<dockless_runtime::unpack::IdShift>> {
    if !wanted {
        return Ok(None);
    }
    if euid() != 0 {
        bail!("--userns is for root: a rootless run already is in a user namespace");
    }
    let shift = userns::named_range(&SubIdFiles::default(), USERNS_ENTRY)
        .context("--userns needs a range for \"dockless\" (e.g. `dockless:1000000:65536`)")?;
    Ok(Some(shift))
}

/// A `--userns` container's root is an unprivileged host uid: it must be able to pass through
/// every directory above its rootfs and `/data` (libcontainer's error would only say "failed
/// to prepare rootfs").
pub fn check_searchable(path: &Path, base: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == base && mode & 0o100 != 0)
            || (meta.gid() == base && mode & 0o010 != 0);
        if !searchable {
            bail!(
                "--userns: {} must be searchable by others (chmod o+x) for the container's \
                 root, host uid {base}, to reach {}",
                dir.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// `dockless unshare`: replaces this process with `command` inside the session.
pub fn exec(mut command: Vec<String>) -> anyhow::Result<std::process::ExitCode> {
    use std::os::unix::process::CommandExt;
    if command.is_empty() {
        command.push(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".to_owned()));
    }
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(err).with_context(|| format!("cannot run {:?}", command[0]))
}

/// The runtime state directory holds bundles and locks; in a shared `/tmp` fallback it must
/// be ours alone and never a link someone planted.
fn secure_run_state(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(false)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| {
                    format!("cannot create the runtime state dir {}", dir.display())
                })?;
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create the runtime state dir {}", dir.display()));
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect the runtime state dir {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        bail!(
            "runtime state dir {} is not a directory of uid {} writable by it alone; \
             remove it or set XDG_RUNTIME_DIR or DOCKLESS_RUN_ROOT",
            dir.display(),
            euid()
        );
    }
    Ok(())
}
