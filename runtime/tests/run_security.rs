//! Real containers (as root): capabilities, no_new_privileges, seccomp, masked and
//! read-only kernel paths, devices, the write-proof helper executable.

#[path = "run_common/mod.rs"]
mod common;

use common::Fixture;

/// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
/// SETFCAP: bits 0 1 3 4 5 6 7 8 10 18 31.
const DEFAULT_CAP_MASK: &str = "00000000800405fb";

#[test]
#[ignore = "needs root and scripts/test-env"]
fn root_gets_the_minimal_capability_set_and_no_new_privs() {
    let fx = Fixture::new("caps");
    let out = fx.run(&fx.sh("grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status"));
    let s = out.stdout();
    for (key, value) in [
        ("CapEff", DEFAULT_CAP_MASK),
        ("CapPrm", DEFAULT_CAP_MASK),
        ("CapBnd", DEFAULT_CAP_MASK),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ] {
        assert!(
            s.contains(&format!("{key}:\t{value}\n")),
            "{key} != {value} in\n{s}"
        );
    }
    fx.assert_clean();
}

/// A static C probe: prints `name=errno` (0 on success) for syscalls the profile must deny.
const SYSCALL_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static void show(const char *name, long rc) { printf("%s=%d\n", name, rc < 0 ? errno : 0); }
int main(void) {
    show("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
    show("add_key", syscall(SYS_add_key, "user", "k", "v", 1, -3));
    show("unshare_user", unshare(CLONE_NEWUSER));
    show("clone3", syscall(SYS_clone3, NULL, 0));
    show("getpid", syscall(SYS_getpid));
    return 0;
}
"#;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn seccomp_denies_keyring_and_namespace_syscalls() {
    let fx = Fixture::new("seccomp");
    let src = fx.dir.path().join("probe.c");
    std::fs::write(&src, SYSCALL_PROBE).unwrap();
    let bin = fx.rootfs.join("bin/syscall-probe");
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc (gcc + libc6-dev) is needed to build the syscall probe");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );

    // Control: on the host (no filter) keyctl and unshare(CLONE_NEWUSER) do not fail with
    // EPERM, so a denial inside comes from the container's filter.
    let host = std::process::Command::new(&bin).output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    assert!(host.contains("keyctl=0\n"), "host: {host}");
    assert!(host.contains("unshare_user=0\n"), "host: {host}");

    let out = fx.run(&fx.sh("syscall-probe; unshare -U true && echo unshare-ok"));
    let s = out.stdout();
    assert!(s.contains("keyctl=1\n"), "keyctl must be EPERM: {s}");
    assert!(s.contains("add_key=1\n"), "add_key must be EPERM: {s}");
    assert!(s.contains("unshare_user=1\n"), "unshare must be EPERM: {s}");
    assert!(s.contains("clone3=38\n"), "clone3 must be ENOSYS: {s}");
    assert!(s.contains("getpid=0\n"), "{s}");
    assert!(!s.contains("unshare-ok"), "{s}");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn kernel_paths_are_masked_or_read_only() {
    let fx = Fixture::new("masked");
    // Every masked path that exists on this host must read as empty inside (this host's
    // kernel has no /proc/kcore; where it exists it is checked the same way).
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/interrupts",
        "/proc/sched_debug",
        "/proc/latency_stats",
    ];
    let present: Vec<&str> = masked
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    assert!(!present.is_empty());
    let mut script = String::new();
    for p in &present {
        script.push_str(&format!("echo \"{p}=$(cat {p} 2>/dev/null | wc -c)\"; "));
    }
    script.push_str(
        "ls /sys/firmware | wc -l; \
         if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then echo procsys-writable; fi; \
         if touch /sys/x 2>/dev/null; then echo sys-writable; fi; \
         if mknod /tmp/null2 c 1 3 2>/dev/null; then echo mknod-ok; fi; \
         head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo devnull-ok",
    );
    let out = fx.run(&fx.sh(&script));
    let s = out.stdout();
    for p in &present {
        assert!(s.contains(&format!("{p}=0\n")), "{p} not masked: {s}");
    }
    assert!(s.contains("\n0\n"), "/sys/firmware must be empty: {s}");
    for bad in ["procsys-writable", "sys-writable", "mknod-ok"] {
        assert!(!s.contains(bad), "{bad}: {s}");
    }
    assert!(s.contains("4\ndevnull-ok\n"), "{s}");
    fx.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn spec_has_hardened_defaults() {
    // The written config.json itself, for what the container cannot observe directly.
    let fx = Fixture::new("spec");
    let mut spec = fx.sh("true");
    spec.limits.cpus = Some(1.5);
    spec.limits.memory_bytes = Some(64 << 20);
    let oci = dockless_runtime::bundle::build_spec(&fx.rootfs, &spec, "/dockless/x").unwrap();
    let json = serde_json::to_value(&oci).unwrap();
    let linux = &json["linux"];
    assert_eq!(linux["cgroupsPath"], "/dockless/x");
    assert_eq!(linux["rootfsPropagation"], "private");
    assert_eq!(linux["resources"]["pids"]["limit"], 2048);
    assert_eq!(linux["resources"]["cpu"]["quota"], 150_000);
    assert_eq!(linux["resources"]["cpu"]["period"], 100_000);
    assert_eq!(linux["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(linux["resources"]["memory"]["swap"], 64 << 20);
    assert_eq!(linux["resources"]["devices"][0]["allow"], false);
    assert_eq!(linux["resources"]["devices"][0]["access"], "rwm");
    let ns: Vec<&str> = linux["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    for want in ["pid", "ipc", "uts", "mount", "cgroup", "network"] {
        assert!(ns.contains(&want), "{want} missing from {ns:?}");
    }
    let masked = linux["maskedPaths"].as_array().unwrap();
    for want in [
        "/proc/kcore",
        "/sys/devices/virtual/tpm",
        "/proc/interrupts",
    ] {
        assert!(masked.iter().any(|m| m == want), "{want}");
    }
    assert_eq!(json["process"]["noNewPrivileges"], true);
    let mut bad = spec.clone();
    bad.limits.memory_bytes = Some(0);
    assert!(matches!(
        dockless_runtime::bundle::build_spec(&fx.rootfs, &bad, "/dockless/x"),
        Err(dockless_runtime::bundle::BundleError::InvalidLimit { what: "memory", .. })
    ));
    // Only the native ABI unless compat arches are asked for.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            linux["seccomp"]["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64"])
        );
        spec.seccomp_compat_arches = true;
        let oci = dockless_runtime::bundle::build_spec(&fx.rootfs, &spec, "/dockless/x").unwrap();
        let json = serde_json::to_value(&oci).unwrap();
        assert_eq!(
            json["linux"]["seccomp"]["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
    }
    assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
}

/// The helper (and so the container's init, forked from it, until it execs the entrypoint)
/// runs from a view of its program no one can write through, never from the host file: as
/// root a read-only overlay, else a sealed memfd copy. A handle on that executable, reopened
/// for writing as a container's root could through `/proc/<pid>/exe` once nothing executes
/// it any more (CVE-2019-5736), cannot change it.
#[test]
#[ignore = "needs root and scripts/test-env"]
fn the_helper_runs_from_a_view_that_refuses_writes() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let fx = Fixture::new("sealed");
    let mut seen: Option<std::fs::File> = None;
    fx.runner()
        .run(&fx.rootfs, &fx.sh("echo ready; sleep 1"), &mut |_, _| {
            if seen.is_none() {
                // While the container sleeps its helper is alive; any helper of this process
                // runs from the same view.
                seen = helpers_of_this_process()
                    .into_iter()
                    .find_map(|pid| std::fs::File::open(format!("/proc/{pid}/exe")).ok());
            }
        })
        .unwrap();
    let exe = seen.expect("no helper process found during the run");
    let (view, host) = (
        exe.metadata().unwrap(),
        std::fs::metadata(common::PROBE).unwrap(),
    );
    assert_eq!(view.len(), host.len());
    assert_ne!(
        (view.dev(), view.ino()),
        (host.dev(), host.ino()),
        "the helper runs from the host file"
    );
    // Reopen for writing once no helper executes it (other tests of this binary may still
    // run one): a read-only overlay refuses the open, a sealed copy the write.
    let reopen = format!("/proc/self/fd/{}", exe.as_raw_fd());
    let mut refused = None;
    for _ in 0..600 {
        match std::fs::OpenOptions::new().write(true).open(&reopen) {
            Ok(mut w) => {
                let seals = rustix::fs::fcntl_get_seals(&exe).unwrap();
                assert!(
                    seals.contains(rustix::fs::SealFlags::WRITE),
                    "writable and unsealed: {seals:?}"
                );
                refused = w.write(b"#!/bin/sh\n").err();
                assert_eq!(w.set_len(0).unwrap_err().raw_os_error(), Some(libc::EPERM));
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the helper's exe stayed busy for 30 s, or took the write");
    assert!(
        matches!(refused.raw_os_error(), Some(libc::EPERM | libc::EROFS)),
        "{refused}"
    );
    fx.assert_clean();
}

/// Children of this process running the probe as the runtime helper.
fn helpers_of_this_process() -> Vec<i32> {
    let me = std::process::id().to_string();
    let want = format!("{}\0__helper\0", common::PROBE);
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(me.as_str()) && cmdline == want.as_bytes() {
            pids.push(pid);
        }
    }
    pids
}
