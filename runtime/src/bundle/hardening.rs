//! The fixed parts of the hardened spec: capabilities, masked and read-only paths, the
//! kernel filesystems every container gets, and the device rules.

use std::collections::HashSet;

use libcontainer::oci_spec::runtime::{
    Capability, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, Mount, MountBuilder,
};

use super::BundleError;

/// Podman's shipped default (containers.conf): Docker's 14 without NET_RAW, MKNOD and
/// AUDIT_WRITE. No MKNOD also matters because cgroup-v2 device rules may be unenforced.
pub const DEFAULT_CAPABILITIES: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// The kernel's name of a capability (`CAP_CHOWN`), as seccomp profiles spell it.
pub fn capability_name(cap: Capability) -> String {
    format!("CAP_{cap}")
}

/// Docker's masked paths plus runc's `/sys/devices/virtual/tpm`, and each host CPU's
/// `thermal_throttle` directory (Docker masks those that exist).
pub fn masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap",
        "/sys/devices/virtual/tpm",
        "/sys/firmware",
    ]
    .map(str::to_owned)
    .into();
    if let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") {
        let mut throttles: Vec<String> = entries
            .flatten()
            .map(|e| e.path().join("thermal_throttle"))
            .filter(|p| p.is_dir())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        throttles.sort();
        paths.extend(throttles);
    }
    paths
}

/// Kernel interfaces the container may read but never write.
pub fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(str::to_owned)
    .into()
}

/// proc, /dev (tmpfs, devpts, shm, mqueue) and a read-only sysfs, with Docker's options.
pub fn kernel_mounts() -> Result<Vec<Mount>, BundleError> {
    Ok(vec![
        mount("proc", "/proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "devpts",
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "sysfs",
            "/sys",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// One mount entry; `typ` "bind" sources are host paths the runner chose.
pub fn mount(
    source: &str,
    destination: &str,
    typ: &str,
    options: &[&str],
) -> Result<Mount, BundleError> {
    MountBuilder::default()
        .source(source)
        .destination(destination)
        .typ(typ)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(|source| BundleError::Spec {
            what: "mount",
            source,
        })
}

/// Deny every device; libcontainer appends the runtime-spec defaults (null, zero, full,
/// random, urandom, tty, ptmx, pts) after this rule.
pub fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, BundleError> {
    Ok(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(|source| BundleError::Spec {
                what: "device rule",
                source,
            })?,
    ])
}

/// The granted set as capability names, for seccomp evaluation.
pub fn capability_names(caps: &[Capability]) -> HashSet<String> {
    caps.iter().map(|c| capability_name(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_use_the_kernel_spelling() {
        assert_eq!(
            capability_name(Capability::NetBindService),
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(capability_name(Capability::SysChroot), "CAP_SYS_CHROOT");
        let names = capability_names(&DEFAULT_CAPABILITIES);
        for banned in [
            "CAP_NET_RAW",
            "CAP_MKNOD",
            "CAP_AUDIT_WRITE",
            "CAP_SYS_ADMIN",
        ] {
            assert!(!names.contains(banned));
        }
    }
}
