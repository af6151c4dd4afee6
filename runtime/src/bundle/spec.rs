//! Assembles the OCI runtime spec for one run from the image config and the run options.

use std::path::Path;

use libcontainer::oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use super::BundleError;
use super::hardening::{self, DEFAULT_CAPABILITIES};
use super::run_spec::{NetworkMode, RunSpec, TmpMount};
use super::seccomp::{Target, load_profile};
use super::user::resolve_user;

/// PATH given to images that set none; libcontainer's executor needs one to find `args[0]`.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CFS period used to express `--cpus` as a quota.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

fn spec_err(
    what: &'static str,
) -> impl FnOnce(libcontainer::oci_spec::OciSpecError) -> BundleError {
    move |source| BundleError::Spec { what, source }
}

/// Builds the runtime spec for running `run` in `rootfs` (an absolute path to a private,
/// per-run root directory) inside the cgroup `cgroups_path` (e.g. `/dockless/<id>`).
pub fn build_spec(rootfs: &Path, run: &RunSpec, cgroups_path: &str) -> Result<Spec, BundleError> {
    if !rootfs.is_absolute() {
        return Err(BundleError::RelativeRootfs {
            path: rootfs.to_owned(),
        });
    }
    if !cgroups_path.starts_with('/') {
        return Err(BundleError::CgroupsPath {
            path: cgroups_path.to_owned(),
        });
    }
    let args = process_args(run)?;
    let user_spec = run
        .user
        .as_deref()
        .or(run.image.user.as_deref())
        .unwrap_or("");
    let user = resolve_user(rootfs, user_spec)?;
    let env = process_env(run, user.home.as_deref())?;
    let cwd = run
        .workdir
        .as_deref()
        .or(run.image.working_dir.as_deref())
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(BundleError::RelativeWorkdir {
            workdir: cwd.to_owned(),
        });
    }
    // Made by the container's root where the image lacks it (with `--userns`, the range's).
    super::workdir::ensure_workdir(rootfs, cwd, run.userns.map_or(0, |s| s.base))?;

    // Root keeps the default set; any other user gets none (as podman does), the bounding
    // set still caps what a setuid binary could regain.
    let bounding: Vec<Capability> = DEFAULT_CAPABILITIES.to_vec();
    let granted: Vec<Capability> = if user.uid == 0 {
        bounding.clone()
    } else {
        Vec::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(
            bounding
                .iter()
                .copied()
                .collect::<std::collections::HashSet<_>>(),
        )
        .effective(
            granted
                .iter()
                .copied()
                .collect::<std::collections::HashSet<_>>(),
        )
        .permitted(
            granted
                .iter()
                .copied()
                .collect::<std::collections::HashSet<_>>(),
        )
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(spec_err("capabilities"))?;

    let (nofile_soft, nofile_hard) = clamp_nofile(run.limits.nofile);
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(spec_err("user"))?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(nofile_soft)
                .hard(nofile_hard)
                .build()
                .map_err(spec_err("rlimit"))?,
        ])
        .build()
        .map_err(spec_err("process"))?;

    let seccomp = load_profile(
        run.seccomp_profile.as_deref(),
        &hardening::capability_names(&bounding),
        &Target {
            compat_arches: run.seccomp_compat_arches,
            ..Target::host()
        },
    )?;

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .chain(
        run.network
            .own_namespace()
            .then_some(LinuxNamespaceType::Network),
    )
    .chain(run.userns.is_some().then_some(LinuxNamespaceType::User))
    {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(spec_err("namespace"))?,
        );
    }

    let rootless = crate::userns::in_user_namespace();
    if rootless {
        refuse_in_user_namespace(run)?;
    }
    if run.userns.is_some() && (rootless || run.network == NetworkMode::Host) {
        return Err(BundleError::UsernsUnavailable {
            reason: if rootless {
                "a rootless run already is in a user namespace"
            } else {
                "the host's network namespace belongs to the host's user namespace"
            },
        });
    }
    let mut resources = LinuxResourcesBuilder::default().devices(hardening::device_rules()?);
    run.limits.validate()?;
    if let Some(bytes) = run.limits.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()
                .map_err(spec_err("memory limit"))?,
        );
    }
    if let Some(cpus) = run.limits.cpus {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(CPU_PERIOD_US)
                .quota((cpus * CPU_PERIOD_US as f64).round().max(1000.0) as i64)
                .build()
                .map_err(spec_err("cpu limit"))?,
        );
    }
    if let Some(pids) = run.limits.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .map_err(spec_err("pids limit"))?,
        );
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(hardening::masked_paths())
        .readonly_paths(hardening::readonly_paths())
        .rootfs_propagation("private")
        .cgroups_path(cgroups_path)
        .resources(resources.build().map_err(spec_err("resources"))?)
        .seccomp(seccomp)
        .build()
        .map_err(spec_err("linux"))?;
    if let Some(shift) = run.userns {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(shift.base)
            .size(shift.count)
            .build()
            .map_err(spec_err("id mapping"))?;
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    if rootless {
        // libcontainer applies resources (and always the v1 devices rules) only when they are
        // present; a rootless run has no cgroup it could write them to, but for the limits of
        // controllers delegated to it on v2 (checked above), which libcontainer's v2 manager
        // writes below the delegated cgroup. Devices stay limited either way: only the default
        // nodes are bound in, and mknod of devices needs the host's root.
        let limited = run.limits.memory_bytes.is_some()
            || run.limits.cpus.is_some()
            || run.limits.pids.is_some();
        match linux.resources_mut() {
            Some(resources) if limited => {
                resources.set_devices(None);
            }
            _ => {
                linux.set_resources(None);
            }
        }
    }

    SpecBuilder::default()
        .version("1.0.2")
        .hostname(run.hostname.clone())
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(run.read_only_rootfs)
                .build()
                .map_err(spec_err("root"))?,
        )
        .mounts(mounts(rootfs, run)?)
        .process(process)
        .linux(linux)
        .build()
        .map_err(spec_err("spec"))
}

/// Inside a user namespace (rootless) neither the host's network nor cgroup limits of a
/// controller that was not delegated (see `userns::claim_delegated_v2`) can be granted: say
/// so instead of silently running without them.
fn refuse_in_user_namespace(run: &RunSpec) -> Result<(), BundleError> {
    if run.network == NetworkMode::Host {
        return Err(BundleError::RootlessHostNetwork);
    }
    let limits = &run.limits;
    let asked: Vec<&'static str> = [
        limits.memory_bytes.map(|_| "memory"),
        limits.cpus.map(|_| "cpu"),
        limits.pids.map(|_| "pids"),
    ]
    .into_iter()
    .flatten()
    .filter(|c| {
        !crate::userns::delegated_v2_controllers()
            .iter()
            .any(|d| d == c)
    })
    .collect();
    if !asked.is_empty() {
        return Err(BundleError::RootlessLimits {
            limits: asked.join(", "),
        });
    }
    Ok(())
}

/// Raising a hard limit needs CAP_SYS_RESOURCE, which a root without it (as in some
/// sandboxes) lacks: the container's limit is capped at the runner's own hard limit.
fn clamp_nofile((soft, hard): (u64, u64)) -> (u64, u64) {
    let ours = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, h)| h)
        .unwrap_or(u64::MAX);
    let hard = hard.min(ours);
    (soft.min(hard), hard)
}

/// Entrypoint + Cmd with Docker's override rules: a new entrypoint drops the image's Cmd,
/// a new command keeps the image's entrypoint.
fn process_args(run: &RunSpec) -> Result<Vec<String>, BundleError> {
    let entrypoint = run
        .entrypoint
        .clone()
        .or_else(|| run.image.entrypoint.clone())
        .unwrap_or_default();
    let cmd = match (&run.command, &run.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => run.image.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(BundleError::NoCommand);
    }
    Ok(args)
}

/// Image env, then the caller's additions (a later key replaces an earlier one), plus PATH
/// and HOME when neither sets them.
fn process_env(run: &RunSpec, home: Option<&str>) -> Result<Vec<String>, BundleError> {
    let mut env: Vec<String> = Vec::new();
    for entry in run.image.env.iter().flatten().chain(run.env.iter()) {
        let key = match entry.split_once('=') {
            Some((k, _)) if !k.is_empty() => k,
            _ => {
                return Err(BundleError::InvalidEnv {
                    entry: entry.clone(),
                });
            }
        };
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(entry.clone());
    }
    let has = |env: &[String], key: &str| env.iter().any(|e| e.starts_with(&format!("{key}=")));
    if !has(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", home.unwrap_or("/")));
    }
    Ok(env)
}

fn mounts(rootfs: &Path, run: &RunSpec) -> Result<Vec<Mount>, BundleError> {
    let mut mounts = hardening::kernel_mounts()?;
    mounts.push(match &run.tmp {
        TmpMount::Tmpfs => {
            hardening::mount("tmpfs", "/tmp", "tmpfs", &["nosuid", "nodev", "mode=1777"])?
        }
        TmpMount::HostDir(dir) => bind(dir, "/tmp", &["rw"])?,
    });
    if let Some(data) = &run.data_dir {
        mounts.push(bind(data, "/data", &["rw"])?);
    }
    match run.network {
        NetworkMode::Host => {
            for file in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(file).is_file() {
                    mounts.push(bind(Path::new(file), file, &["ro"])?);
                }
            }
        }
        NetworkMode::Bridge => {
            // Written by the runner before the container is created.
            let dir = crate::network::files_dir(rootfs);
            for name in ["resolv.conf", "hosts"] {
                mounts.push(bind(&dir.join(name), &format!("/etc/{name}"), &["ro"])?);
            }
        }
        NetworkMode::None => {}
    }
    // Last: a destination under /tmp lands on the tmpfs mounted above, not in the rootfs.
    for file in &run.read_only_files {
        mounts.push(bind(&file.source, &file.destination, &["ro"])?);
    }
    Ok(mounts)
}

fn bind(source: &Path, destination: &str, extra: &[&str]) -> Result<Mount, BundleError> {
    if !source.is_absolute() {
        return Err(BundleError::RelativeBindSource {
            path: source.to_owned(),
        });
    }
    let mut options = vec!["rbind", "nosuid", "nodev"];
    options.extend_from_slice(extra);
    hardening::mount(&source.to_string_lossy(), destination, "bind", &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::ImageConfig;

    fn run_with(image: ImageConfig) -> RunSpec {
        RunSpec::new(image)
    }

    #[test]
    fn command_overrides_follow_docker() {
        let image = ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default".into()]),
            ..Default::default()
        };
        let mut run = run_with(image);
        assert_eq!(process_args(&run).unwrap(), ["/entry", "default"]);
        run.command = Some(vec!["x".into()]);
        assert_eq!(process_args(&run).unwrap(), ["/entry", "x"]);
        run.command = None;
        run.entrypoint = Some(vec!["/other".into()]);
        assert_eq!(process_args(&run).unwrap(), ["/other"]);
        let empty = run_with(ImageConfig::default());
        assert!(matches!(process_args(&empty), Err(BundleError::NoCommand)));
    }

    #[test]
    fn env_additions_override_and_path_is_ensured() {
        let image = ImageConfig {
            env: Some(vec!["A=1".into(), "B=2".into()]),
            ..Default::default()
        };
        let mut run = run_with(image);
        run.env = vec!["A=3".into()];
        let env = process_env(&run, Some("/root")).unwrap();
        assert_eq!(env, [DEFAULT_PATH, "B=2", "A=3", "HOME=/root"]);
        run.env = vec!["=x".into()];
        assert!(matches!(
            process_env(&run, None),
            Err(BundleError::InvalidEnv { .. })
        ));
        run.env = vec!["NOVALUE".into()];
        assert!(process_env(&run, None).is_err());
    }
}
