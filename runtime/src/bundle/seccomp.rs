//! Turns a moby/podman-format seccomp profile into a plain OCI `linux.seccomp`.
//!
//! The profile is dockless' own ([`super::seccomp_builtin`], in the binary) unless a run names
//! a file (podman's `/usr/share/containers/seccomp.json`, say). The format is a superset of
//! the OCI one: rules carry `includes`/`excludes` on capabilities, architectures and kernel
//! versions, and an `archMap`. libcontainer only understands plain OCI, so the conditions are
//! evaluated here for the capabilities actually granted and the host's architecture.

use std::collections::HashSet;
use std::path::Path;

use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::BundleError;

/// Where podman's maintained profile lives on Debian (`golang-github-containers-common`):
/// one a run may name instead of the built-in one.
pub const PODMAN_PROFILE_PATH: &str = "/usr/share/containers/seccomp.json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    pub(super) default_action: LinuxSeccompAction,
    #[serde(default)]
    pub(super) default_errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    pub(super) syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMapEntry {
    pub(super) architecture: Arch,
    #[serde(default)]
    pub(super) sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rule {
    pub(super) names: Vec<String>,
    pub(super) action: LinuxSeccompAction,
    #[serde(default)]
    pub(super) errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) args: Option<Vec<RuleArg>>,
    #[serde(default)]
    pub(super) includes: Filter,
    #[serde(default)]
    pub(super) excludes: Filter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RuleArg {
    pub(super) index: usize,
    pub(super) value: u64,
    #[serde(default)]
    pub(super) value_two: u64,
    pub(super) op: LinuxSeccompOperator,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filter {
    #[serde(default)]
    pub(super) caps: Vec<String>,
    #[serde(default)]
    pub(super) arches: Vec<String>,
    #[serde(default)]
    pub(super) min_kernel: Option<String>,
}

/// The host facts a profile's conditions are evaluated against.
#[derive(Debug, Clone)]
pub struct Target {
    /// Go-style architecture name as used in profiles (`amd64`, `arm64`, ...).
    pub arch: &'static str,
    /// The seccomp architecture of this build.
    pub seccomp_arch: Arch,
    /// Running kernel as (major, minor).
    pub kernel: (u32, u32),
    /// Also admit the profile's sub-architectures (x86 and x32 on x86_64). Each one roughly
    /// doubles the time libseccomp needs to build the filter at every start; without them a
    /// syscall through a 32-bit ABI kills the calling thread.
    pub compat_arches: bool,
}

impl Target {
    /// The architecture this binary was built for and the running kernel.
    pub fn host() -> Self {
        let (arch, seccomp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", Arch::ScmpArchX86_64),
            "aarch64" => ("arm64", Arch::ScmpArchAarch64),
            "x86" => ("x86", Arch::ScmpArchX86),
            "arm" => ("arm", Arch::ScmpArchArm),
            "s390x" => ("s390x", Arch::ScmpArchS390x),
            "riscv64" => ("riscv64", Arch::ScmpArchRiscv64),
            "powerpc64" => ("ppc64le", Arch::ScmpArchPpc64le),
            _ => ("", Arch::ScmpArchNative),
        };
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
            .unwrap_or((0, 0));
        Self {
            arch,
            seccomp_arch,
            kernel,
            compat_arches: false,
        }
    }
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Reads the profile at `path` (the built-in one when `None`) and evaluates it for
/// `granted_caps` (names like `CAP_CHOWN`, the bounding set, as Docker does) and `target`.
pub fn load_profile(
    path: Option<&Path>,
    granted_caps: &HashSet<String>,
    target: &Target,
) -> Result<LinuxSeccomp, BundleError> {
    let profile = match path {
        None => super::seccomp_builtin::profile(),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| BundleError::SeccompRead {
                path: path.to_owned(),
                source,
            })?;
            serde_json::from_slice(&bytes).map_err(|source| BundleError::SeccompParse {
                path: path.to_owned(),
                source,
            })?
        }
    };
    evaluate(profile, granted_caps, target).map_err(|source| BundleError::Spec {
        what: "seccomp",
        source,
    })
}

fn evaluate(
    profile: Profile,
    caps: &HashSet<String>,
    target: &Target,
) -> Result<LinuxSeccomp, libcontainer::oci_spec::OciSpecError> {
    let mut arches = Vec::new();
    for entry in &profile.arch_map {
        if entry.architecture == target.seccomp_arch {
            arches.push(entry.architecture);
            if target.compat_arches {
                arches.extend(entry.sub_architectures.iter().copied());
            }
        }
    }
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in profile.syscalls {
        if !applies(&rule, caps, target) {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(rule.names)
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            b = b.errno_ret(errno);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            let args = args
                .into_iter()
                .map(|a| {
                    LinuxSeccompArgBuilder::default()
                        .index(a.index)
                        .value(a.value)
                        .value_two(a.value_two)
                        .op(a.op)
                        .build()
                })
                .collect::<Result<Vec<LinuxSeccompArg>, _>>()?;
            b = b.args(args);
        }
        syscalls.push(b.build()?);
    }
    if !caps.contains("CAP_SYS_ADMIN") {
        restrict_namespace_syscalls(&mut syscalls, target)?;
    }
    let mut b = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        b = b.default_errno_ret(errno);
    }
    if !arches.is_empty() {
        b = b.architectures(arches);
    }
    b.build()
}

/// Syscalls that create or enter namespaces, mount, or reach the kernel keyring. podman's
/// profile allows them and relies on capabilities, but creating a user namespace needs none:
/// like moby's profile, we deny them without CAP_SYS_ADMIN.
const ADMIN_ONLY_SYSCALLS: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
];

/// The namespace flags moby's profile refuses in `clone` (CLONE_NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Applies moby's rules for a container without CAP_SYS_ADMIN on top of podman's profile:
/// the syscalls above fail with EPERM, `clone` is allowed only without namespace flags, and
/// `clone3` (whose flags seccomp cannot inspect) fails with ENOSYS so libc falls back to clone.
fn restrict_namespace_syscalls(
    syscalls: &mut Vec<LinuxSyscall>,
    target: &Target,
) -> Result<(), libcontainer::oci_spec::OciSpecError> {
    for rule in syscalls.iter_mut() {
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| {
                !ADMIN_ONLY_SYSCALLS.contains(&n.as_str()) && *n != "clone" && *n != "clone3"
            })
            .cloned()
            .collect();
        rule.set_names(names);
    }
    syscalls.retain(|r| !r.names().is_empty());
    // s390 passes the clone flags in the second argument.
    let flags_index: usize = if target.arch.starts_with("s390") {
        1
    } else {
        0
    };
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone".to_owned()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(vec![
                LinuxSeccompArgBuilder::default()
                    .index(flags_index)
                    .value(0u64)
                    .value_two(CLONE_NAMESPACE_FLAGS)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?,
            ])
            .build()?,
    );
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    );
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(
                ADMIN_ONLY_SYSCALLS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32)
            .build()?,
    );
    Ok(())
}

/// Docker's semantics: every `includes` condition must hold, and no `excludes` one may.
fn applies(rule: &Rule, caps: &HashSet<String>, target: &Target) -> bool {
    let inc = &rule.includes;
    if !inc.caps.iter().all(|c| caps.contains(c)) {
        return false;
    }
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    if let Some(min) = inc.min_kernel.as_deref().and_then(parse_kernel)
        && target.kernel < min
    {
        return false;
    }
    let exc = &rule.excludes;
    if exc.caps.iter().any(|c| caps.contains(c)) {
        return false;
    }
    if exc.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            arch: "amd64",
            seccomp_arch: Arch::ScmpArchX86_64,
            kernel: (6, 1),
            compat_arches: true,
        }
    }

    const PROFILE: &str = r#"{
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                  {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
      "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["breakpoint"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}
      ]}"#;

    #[test]
    fn conditions_are_evaluated_for_caps_arch_and_kernel() {
        let profile: Profile = serde_json::from_str(PROFILE).unwrap();
        let caps: HashSet<String> = ["CAP_SYS_CHROOT".to_owned()].into();
        let s = evaluate(profile, &caps, &target()).unwrap();
        assert_eq!(s.default_errno_ret(), Some(38));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
        );
        let rules: Vec<(String, LinuxSeccompAction)> = s
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| (r.names()[0].clone(), r.action()))
            .collect();
        let names: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "read",
                "chroot",
                "bpf",
                "arch_prctl",
                "personality",
                "clone",
                "clone3",
                "unshare"
            ]
        );
        assert_eq!(rules[2].1, LinuxSeccompAction::ScmpActErrno);
        let personality = &s.syscalls().as_ref().unwrap()[4];
        assert_eq!(personality.args().as_ref().unwrap()[0].value(), 8);
        assert!(s.syscalls().as_ref().unwrap()[0].args().is_none());
    }

    /// What a profile allows without conditions after evaluation for `caps`.
    fn allowed_names(s: &LinuxSeccomp) -> HashSet<String> {
        s.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().iter().cloned())
            .collect()
    }

    #[test]
    fn the_built_in_profile_is_an_allow_list_without_admin_calls() {
        let caps: HashSet<String> = ["CAP_CHOWN", "CAP_SYS_CHROOT", "CAP_SETUID"]
            .map(str::to_owned)
            .into();
        let s = load_profile(None, &caps, &target()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(38));
        let allowed = allowed_names(&s);
        for needed in [
            "read",
            "execve",
            "openat",
            "socket",
            "futex",
            "arch_prctl",
            "chroot",
        ] {
            assert!(allowed.contains(needed), "{needed}");
        }
        for refused in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "ptrace",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "init_module",
            "userfaultfd",
            "io_uring_setup",
            "clock_settime",
            "reboot",
            "swapon",
            "clone",
        ] {
            assert!(!allowed.contains(refused), "{refused}");
        }
        // Not on this architecture; chroot only with its capability.
        assert!(!allowed.contains("set_tls"));
        let without = load_profile(None, &HashSet::new(), &target()).unwrap();
        assert!(!allowed_names(&without).contains("chroot"));
        // clone only without namespace flags.
        for rule in s.syscalls().as_ref().unwrap() {
            if rule.names().iter().any(|n| n == "clone") {
                assert!(rule.args().is_some(), "clone must be conditional");
            }
        }
    }

    #[test]
    fn a_profile_file_goes_through_the_same_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(&path, PROFILE).unwrap();
        let s = load_profile(Some(&path), &HashSet::new(), &target()).unwrap();
        assert!(allowed_names(&s).contains("read"));
        let missing = dir.path().join("absent.json");
        assert!(matches!(
            load_profile(Some(&missing), &HashSet::new(), &target()),
            Err(BundleError::SeccompRead { .. })
        ));
    }
}
