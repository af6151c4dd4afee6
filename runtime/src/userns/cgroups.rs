//! Limits for rootless runs on a cgroup-v1 host: a subtree of each hierarchy that root hands
//! to the user once (`dockless delegate-cgroups USER`), in which the user's runner creates one
//! cgroup per container and writes its limits itself.
//!
//! libcgroups' v1 manager cannot run unprivileged (it always writes device rules), so a
//! delegated run keeps `resources` out of the spec: libcontainer only creates and joins the
//! cgroups (allowed: the parent belongs to the user), freezes and kills through them, and
//! removes them; the runner writes memory, swap, pids and CPU limits before the container
//! starts. Device access stays as it is rootless anyway: only the standard nodes are bound in.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::UsernsError;

/// The directory delegated to `uid` in every v1 hierarchy.
pub fn delegated_parent_name(uid: u32) -> String {
    format!("dockless-u{uid}")
}

/// The mount points of the v1 controller hierarchies (`cgroup` filesystems that carry a
/// controller the kernel lists in `/proc/cgroups` and show the hierarchy's root), with their
/// controllers. Named hierarchies (`name=systemd`) carry none and are never touched: systemd
/// tracks sessions there.
pub fn v1_hierarchies() -> Vec<(PathBuf, Vec<String>)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let known: Vec<String> = std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = after.split(' ');
        if tail.next() != Some("cgroup") {
            continue;
        }
        let options = tail.nth(1).unwrap_or_default();
        let mut fields = before.split(' ');
        // Field 4 is the root of the mount within its hierarchy: only a whole hierarchy gives
        // the paths libcontainer computes.
        let (Some("/"), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        if options.split(',').any(|o| o.starts_with("name=")) {
            continue;
        }
        let controllers = options
            .split(',')
            .filter(|o| known.iter().any(|k| k == o))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if !controllers.is_empty() {
            out.push((PathBuf::from(mount_point), controllers));
        }
    }
    out
}

/// The cgroup2 root, when `/sys/fs/cgroup` is a pure v2 hierarchy.
fn unified_root() -> Option<&'static Path> {
    let root = Path::new("/sys/fs/cgroup");
    rustix::fs::statfs(root)
        .is_ok_and(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC)
        .then_some(root)
}

/// The files of a v2 cgroup that `Delegate=yes` hands to the user with the directory (see the
/// kernel's cgroup-v2 "Delegation"): moving processes, threads, and enabling controllers.
const V2_DELEGATED_FILES: [&str; 3] = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// Root's one-time step: creates `dockless-u<uid>` in every v1 hierarchy, owned by the user
/// (cpuset's cpus and mems copied from the root, which a new cpuset needs before use), or,
/// on a pure cgroup v2 host, one `/sys/fs/cgroup/dockless-u<uid>` handed over as systemd's
/// `Delegate=yes` does (see `delegate_v2`). Returns the directories. Idempotent; lost at
/// reboot like every cgroup.
pub fn delegate(uid: u32, gid: u32) -> Result<Vec<PathBuf>, UsernsError> {
    let hierarchies = v1_hierarchies();
    if hierarchies.is_empty() {
        return match unified_root() {
            Some(root) => delegate_v2(root, uid, gid).map(|dir| vec![dir]),
            None => Err(UsernsError::NoV1Hierarchy),
        };
    }
    let name = delegated_parent_name(uid);
    let mut made = Vec::new();
    for (mount, controllers) in hierarchies {
        let dir = mount.join(&name);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| UsernsError::Cgroup { what, path, source }
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("cannot create", &dir)(e)),
        }
        if controllers.iter().any(|c| c == "cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read(mount.join(file)).map_err(io("cannot read", &mount))?;
                std::fs::write(dir.join(file), value).map_err(io("cannot write", &dir))?;
            }
        }
        // Only the directory: the user creates the runs' cgroups below it (and owns them and
        // their files); the parent's own files, limits included, stay root's.
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io("cannot chown", &dir))?;
        made.push(dir);
    }
    Ok(made)
}

/// The v2 form of [`delegate`], for hosts without systemd: the memory, pids and cpu
/// controllers enabled in the root's `cgroup.subtree_control` (so the new cgroup has them),
/// and `<root>/dockless-u<uid>` with its directory and [`V2_DELEGATED_FILES`] owned by the
/// user, its limits (`memory.max`, ...) staying root's. A process root places there (its
/// `cgroup.procs`; v2 lets nobody move a process in from outside a subtree it owns) runs
/// dockless with limits: the runner moves itself into a leaf and enables the controllers
/// below, as in a systemd scope with `Delegate=yes`. Only the runner may live in it then: the
/// controllers cannot be enabled beside another process (`EBUSY`).
fn delegate_v2(root: &Path, uid: u32, gid: u32) -> Result<PathBuf, UsernsError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| UsernsError::Cgroup { what, path, source }
    };
    let available = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(io("cannot read", &root.join("cgroup.controllers")))?;
    let wanted: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    if wanted.is_empty() {
        return Err(UsernsError::NoV2Controllers);
    }
    let control = root.join("cgroup.subtree_control");
    for c in &wanted {
        std::fs::write(&control, format!("+{c}")).map_err(io("cannot write", &control))?;
    }
    let dir = root.join(delegated_parent_name(uid));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("cannot create", &dir)(e)),
    }
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io("cannot chown", &dir))?;
    for file in V2_DELEGATED_FILES {
        let path = dir.join(file);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io("cannot chown", &path))?;
    }
    Ok(dir)
}

/// Removes `dir` and the empty cgroups the user's runners made below it, deepest first.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// Undoes [`delegate`]; fails (naming the directory) while a run of the user still lives.
pub fn undelegate(uid: u32) -> Result<Vec<PathBuf>, UsernsError> {
    let name = delegated_parent_name(uid);
    let mut removed = Vec::new();
    if v1_hierarchies().is_empty()
        && let Some(root) = unified_root()
    {
        let dir = root.join(&name);
        return match remove_cgroup_tree(&dir) {
            Ok(()) => Ok(vec![dir]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(UsernsError::Cgroup {
                what: "cannot remove",
                path: dir,
                source,
            }),
        };
    }
    for (mount, _) in v1_hierarchies() {
        let dir = mount.join(&name);
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(UsernsError::Cgroup {
                    what: "cannot remove",
                    path: dir,
                    source,
                });
            }
        }
    }
    Ok(removed)
}

/// The delegated parent (relative to each hierarchy) when root delegated one to `uid` in
/// every v1 hierarchy; `None` otherwise (then a rootless run has no limits). Checked from
/// outside the user namespace, where owners are the host's.
pub fn delegated_parent(uid: u32) -> Option<String> {
    let hierarchies = v1_hierarchies();
    let name = delegated_parent_name(uid);
    let all_ours = !hierarchies.is_empty()
        && hierarchies.iter().all(|(mount, _)| {
            std::fs::symlink_metadata(mount.join(&name)).is_ok_and(|m| m.is_dir() && m.uid() == uid)
        });
    all_ours.then_some(name)
}

/// Creates the run's cgroup in the memory, pids and cpu hierarchies (inside a delegated
/// parent) and writes `limits` there before libcontainer joins it. Swap is limited to the
/// memory limit (memsw, where the kernel accounts swap), as for root runs.
pub(crate) fn write_limits(
    cgroups_path: &str,
    limits: &crate::bundle::Limits,
) -> Result<(), UsernsError> {
    let rel = cgroups_path.trim_start_matches('/');
    let hierarchies = v1_hierarchies();
    let dir_of = |controller: &str| -> Result<PathBuf, UsernsError> {
        let mount = hierarchies
            .iter()
            .find(|(_, c)| c.iter().any(|c| c == controller))
            .map(|(m, _)| m.clone())
            .ok_or(UsernsError::NoV1Hierarchy)?;
        let dir = mount.join(rel);
        std::fs::create_dir_all(&dir).map_err(|source| UsernsError::Cgroup {
            what: "cannot create",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    };
    let write = |dir: &Path, file: &str, value: String| -> Result<(), UsernsError> {
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(|source| UsernsError::Cgroup {
            what: "cannot write",
            path,
            source,
        })
    };
    if let Some(bytes) = limits.memory_bytes {
        let dir = dir_of("memory")?;
        write(&dir, "memory.limit_in_bytes", bytes.to_string())?;
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            write(&dir, "memory.memsw.limit_in_bytes", bytes.to_string())?;
        }
    }
    if let Some(pids) = limits.pids {
        write(&dir_of("pids")?, "pids.max", pids.to_string())?;
    }
    if let Some(cpus) = limits.cpus {
        let dir = dir_of("cpu")?;
        let period = crate::bundle::CPU_PERIOD_US;
        write(&dir, "cpu.cfs_period_us", period.to_string())?;
        let quota = (cpus * period as f64).round().max(1000.0) as i64;
        write(&dir, "cpu.cfs_quota_us", quota.to_string())?;
    }
    Ok(())
}
