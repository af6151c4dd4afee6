//! Entering the session: unshare a user namespace, have the setuid helpers write the ranges,
//! then take a private mount and cgroup namespace.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};
use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};

use super::error::UsernsError;
use super::subid::{IdMap, IdRange};

/// Whether this process runs in a user namespace other than the host's (a rootless session,
/// or a sandbox that put us in one): then owners, devices and cgroups follow rootless rules.
/// Read each time (a few microseconds): [`enter`] changes the answer.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Moves the calling process into a new user namespace with `map`, then into a private mount
/// namespace. Must be called while the process is single-threaded (before any
/// async runtime or worker thread starts): a namespace change applies to the calling thread
/// only, and `fork` is used to run the id helpers from outside the namespace.
pub fn enter(map: &IdMap) -> Result<(), UsernsError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(UsernsError::NotSingleThreaded { threads });
    }
    for tool in ["newuidmap", "newgidmap"] {
        if find_in_path(tool).is_none() {
            return Err(UsernsError::ToolMissing { tool });
        }
    }
    let (ready_r, ready_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let target = nix::unistd::getpid();
    // SAFETY (must stay: fork is unsafe in any wrapper, and a separate process outside the
    // new namespace is what newuidmap needs): the process is single-threaded (checked above),
    // so the child may allocate and spawn programs; it leaves only through `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(sys("cannot fork the id mapper"))? {
        ForkResult::Child => {
            drop((ready_w, done_r));
            let code = mapper(target, map, ready_r, done_w);
            // SAFETY (must stay: neither rustix nor nix wraps _exit safely; std's exit would
            // run the parent's atexit handlers and flush its buffers a second time): ends the
            // forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((ready_r, done_w));
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
            let mut ready = std::fs::File::from(ready_w);
            let _ = ready.write_all(if unshared.is_ok() { b"u" } else { b"x" });
            drop(ready);
            let mut answer = String::new();
            let _ = std::fs::File::from(done_r).read_to_string(&mut answer);
            let _ = nix::sys::wait::waitpid(child, None);
            unshared.map_err(|e| UsernsError::Sys {
                what: "cannot create a user namespace (are unprivileged user namespaces disabled?)",
                source: e.into(),
            })?;
            if answer != "ok" {
                return Err(decode_refusal(&answer));
            }
        }
    }
    // The ranges are in place: this process is now uid 0 with every capability inside.
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())
        .map_err(sys("cannot become gid 0 in the user namespace"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())
        .map_err(sys("cannot become uid 0 in the user namespace"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(sys("cannot create the session's mount namespace"))?;
    // Nothing mounted from here on (overlays, cgroup2) propagates back to the host.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| UsernsError::Sys {
        what: "cannot make the session's mounts private",
        source: e.into(),
    })?;
    Ok(())
}

/// Enters a cgroup namespace of the session's and mounts a fresh cgroup2 hierarchy of it over
/// `/sys/fs/cgroup`, so that libcontainer sees a unified host and uses its rootless-tolerant
/// v2 manager instead of the v1 one, which an ordinary user cannot drive. Containers then run
/// in the caller's cgroup, without limits of their own.
///
/// On a cgroup v2 host `/sys/fs/cgroup` already is a cgroup2 mount, and the kernel refuses
/// the same hierarchy again on the same mount point (EBUSY): the session then first covers it
/// with a tmpfs of its own (its mount namespace is private) and mounts cgroup2 on that.
pub fn mount_private_cgroup2() -> Result<(), UsernsError> {
    // A cgroup namespace of our own: only then may the user namespace mount cgroup2.
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(sys("cannot create the session's cgroup namespace"))?;
    let target = Path::new("/sys/fs/cgroup");
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let failed = |e: rustix::io::Errno| UsernsError::Sys {
        what: "cannot mount a private cgroup2 hierarchy on /sys/fs/cgroup",
        source: e.into(),
    };
    match mount("cgroup2", target, "cgroup2", flags, c"") {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            mount("tmpfs", target, "tmpfs", flags, c"mode=0755").map_err(|e| UsernsError::Sys {
                what: "cannot cover the host's cgroup2 mount on /sys/fs/cgroup with a tmpfs",
                source: e.into(),
            })?;
            mount("cgroup2", target, "cgroup2", flags, c"").map_err(failed)
        }
        Err(e) => Err(failed(e)),
    }
}

/// On a cgroup v2 host whose systemd delegated the caller's cgroup to the user (a user
/// service or scope with `Delegate=yes`, as rootless podman gets one): the session's private
/// cgroup2 view (see [`mount_private_cgroup2`]) is then the user's to write. The process moves
/// into a leaf of its own (`dockless-session`: v2 allows controllers only below a cgroup
/// without processes) and enables those of the memory, pids and cpu controllers that systemd
/// delegated, for its siblings, where the containers' cgroups go. Returns the controllers
/// enabled (the limits that can be enforced); anywhere else (a login session's scope is
/// root's) nothing is changed and the list is empty. Call before any thread exists.
pub fn claim_delegated_v2() -> Vec<String> {
    let enabled = claim_v2_controllers();
    let _ = CLAIMED_V2.set(enabled.clone());
    enabled
}

/// What [`claim_delegated_v2`] enabled in this process: the bundle lets those limits into a
/// rootless spec (libcontainer's v2 manager writes them below the delegated cgroup).
static CLAIMED_V2: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The cgroup v2 controllers this rootless process enabled for its containers (empty unless
/// [`claim_delegated_v2`] enabled some).
pub fn delegated_v2_controllers() -> &'static [String] {
    CLAIMED_V2.get().map(Vec::as_slice).unwrap_or_default()
}

fn claim_v2_controllers() -> Vec<String> {
    let root = Path::new("/sys/fs/cgroup");
    let writable = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    if !writable(&root.join("cgroup.procs")) || !writable(&root.join("cgroup.subtree_control")) {
        return Vec::new();
    }
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let leaf = root.join("dockless-session");
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return Vec::new(),
    }
    if std::fs::write(leaf.join("cgroup.procs"), "0").is_err() {
        return Vec::new();
    }
    ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| {
            // EBUSY: another process still lives in the delegated cgroup itself (a user
            // service's main process), which v2 forbids beside enabled controllers.
            let written = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}"));
            if let Err(e) = &written {
                tracing::debug!(controller = c, error = %e, "cannot enable a delegated controller");
            }
            written.is_ok()
        })
        .map(str::to_string)
        .collect()
}

/// Whether an AppArmor policy keeps unprivileged programs from using user namespaces
/// (Ubuntu 24.04's `kernel.apparmor_restrict_unprivileged_userns = 1`): a rootless session then
/// fails unless a profile allows `userns` for the binary.
pub fn apparmor_restricts_userns() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .is_ok_and(|v| v.trim() == "1")
}

/// The forked child: waits until the parent has unshared, runs `newuidmap` and `newgidmap`
/// for it and reports "ok" or the refusal. Returns the exit code.
fn mapper(target: Pid, map: &IdMap, ready: OwnedFd, done: OwnedFd) -> i32 {
    let mut byte = [0u8; 1];
    let mut ready = std::fs::File::from(ready);
    let mut done = std::fs::File::from(done);
    if ready.read_exact(&mut byte).is_err() || byte[0] != b'u' {
        return 1;
    }
    for (tool, ranges) in [("newuidmap", &map.uids), ("newgidmap", &map.gids)] {
        if let Err(message) = run_map_tool(tool, target, ranges) {
            let _ = done.write_all(message.as_bytes());
            return 1;
        }
    }
    let _ = done.write_all(b"ok");
    0
}

/// Runs `tool PID inside outside count...`; on failure returns "tool\0args\0status\0stderr".
fn run_map_tool(tool: &str, target: Pid, ranges: &[IdRange]) -> Result<(), String> {
    let mut args = vec![target.to_string()];
    for r in ranges {
        args.extend([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let joined = args.join(" ");
    match Command::new(tool).args(&args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{tool}\0{joined}\0{}\0{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{tool}\0{joined}\0not started\0{e}")),
    }
}

fn decode_refusal(answer: &str) -> UsernsError {
    let mut parts = answer.splitn(4, '\0');
    let tool = match parts.next() {
        Some("newgidmap") => "newgidmap",
        _ => "newuidmap",
    };
    UsernsError::MapRefused {
        tool,
        args: parts.next().unwrap_or_default().to_owned(),
        status: parts.next().unwrap_or("no report").to_owned(),
        stderr: parts.next().unwrap_or_default().to_owned(),
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("cannot create a pipe"))
}

fn sys(what: &'static str) -> impl FnOnce(nix::errno::Errno) -> UsernsError {
    move |e| UsernsError::Sys {
        what,
        source: e.into(),
    }
}
