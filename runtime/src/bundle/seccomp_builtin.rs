//! dockless' own default seccomp profile, carried in the binary so that no run depends on a
//! file of another package. An allow-list: every syscall not named here fails with ENOSYS
//! (libc then falls back where it can, as it does on an older kernel), and the namespace,
//! mount and keyring calls are refused with EPERM by [`super::seccomp`]'s rules for a
//! container without CAP_SYS_ADMIN.
//!
//! What is allowed, and why (grouped by purpose; names that exist only on some architectures,
//! such as the 32-bit `*64` variants, are skipped by libseccomp where they do not exist):
//! what ordinary programs (shells, interpreters, databases clients, HTTP clients) need to run
//! processes and threads, use memory, files, sockets, pipes, events, timers, signals and
//! System V / POSIX IPC inside their own namespaces. Left out on purpose: kernel and machine
//! administration (modules, kexec, reboot, swap, clock setting, accounting, quotas),
//! introspection of other processes (ptrace, process_vm_*, kcmp, perf_event_open, bpf),
//! `userfaultfd`, `io_uring_*` (a large attack surface most container profiles now refuse),
//! the keyring, and the mount and namespace calls.

use libcontainer::oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompOperator};

use super::seccomp::{ArchMapEntry, Filter, Profile, Rule, RuleArg};

/// ENOSYS: "this kernel has no such call", the answer libc knows how to work around.
const DEFAULT_ERRNO: u32 = 38;

#[rustfmt::skip]
const PROCESSES: &[&str] = &[
    "exit", "exit_group", "fork", "vfork", "execve", "execveat", "wait4", "waitid", "waitpid",
    "kill", "tkill", "tgkill", "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp",
    "getsid", "setsid", "set_tid_address", "set_robust_list", "get_robust_list", "futex",
    "futex_time64", "futex_waitv", "futex_wait", "futex_wake", "futex_requeue", "prctl", "rseq",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_getattr", "sched_setattr", "getpriority", "setpriority", "ioprio_get",
    "ioprio_set", "capget", "capset", "getrlimit", "ugetrlimit", "setrlimit", "prlimit64",
    "getrusage", "times", "uname", "olduname", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "restart_syscall", "membarrier", "getcpu", "sysinfo", "get_mempolicy",
    "set_mempolicy", "mbind", "seccomp", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self",
];

#[rustfmt::skip]
const CREDENTIALS: &[&str] = &[
    "getuid", "geteuid", "getgid", "getegid", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "getresuid", "getresgid", "setfsuid", "setfsgid", "getgroups",
    "setgroups", "getuid32", "geteuid32", "getgid32", "getegid32", "setuid32", "setgid32",
    "setreuid32", "setregid32", "setresuid32", "setresgid32", "getresuid32", "getresgid32",
    "setfsuid32", "setfsgid32", "getgroups32", "setgroups32",
];

#[rustfmt::skip]
const SIGNALS_AND_TIME: &[&str] = &[
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "sigaction", "sigprocmask", "sigreturn", "sigsuspend", "sigpending", "signal",
    "sigaltstack", "signalfd", "signalfd4", "pause", "alarm", "getitimer", "setitimer",
    "timer_create", "timer_settime", "timer_settime64", "timer_gettime", "timer_gettime64",
    "timer_getoverrun", "timer_delete", "nanosleep", "clock_nanosleep",
    "clock_nanosleep_time64", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "gettimeofday", "time", "timerfd_create", "timerfd_settime",
    "timerfd_settime64", "timerfd_gettime", "timerfd_gettime64",
];

#[rustfmt::skip]
const MEMORY: &[&str] = &[
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "pkey_mprotect", "pkey_alloc",
    "pkey_free", "madvise", "mincore", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
    "msync", "memfd_create", "remap_file_pages", "map_shadow_stack", "mseal",
];

#[rustfmt::skip]
const FILES: &[&str] = &[
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "dup", "dup2",
    "dup3", "fcntl", "fcntl64", "ioctl", "lseek", "_llseek", "stat", "lstat", "fstat",
    "newfstatat", "fstatat64", "stat64", "lstat64", "fstat64", "statx", "statfs", "fstatfs",
    "statfs64", "fstatfs64", "access", "faccessat", "faccessat2", "chdir", "fchdir", "getcwd",
    "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "unlink",
    "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod", "fchmod",
    "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "chown32", "fchown32",
    "lchown32", "truncate", "ftruncate", "truncate64", "ftruncate64", "fallocate",
    "fadvise64", "fadvise64_64", "sync", "syncfs", "fsync", "fdatasync", "sync_file_range",
    "flock", "getdents", "getdents64", "utime", "utimes", "utimensat", "utimensat_time64",
    "futimesat", "umask", "mknod", "mknodat", "setxattr", "lsetxattr", "fsetxattr", "getxattr",
    "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr",
    "lremovexattr", "fremovexattr", "sendfile", "sendfile64", "splice", "tee", "vmsplice",
    "copy_file_range", "readahead", "inotify_init", "inotify_init1", "inotify_add_watch",
    "inotify_rm_watch", "fanotify_mark", "name_to_handle_at", "cachestat", "readdir",
];

#[rustfmt::skip]
const EVENTS: &[&str] = &[
    "select", "_newselect", "pselect6", "pselect6_time64", "poll", "ppoll", "ppoll_time64",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait",
    "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "pipe", "pipe2",
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents",
];

#[rustfmt::skip]
const SOCKETS: &[&str] = &[
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "sendto", "send", "recvfrom", "recv", "sendmsg", "recvmsg", "sendmmsg",
    "recvmmsg", "recvmmsg_time64", "shutdown", "setsockopt", "getsockopt", "socketcall",
];

#[rustfmt::skip]
const IPC: &[&str] = &[
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open",
    "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
];

/// Per architecture: the thread-pointer and cache calls each ABI has of its own.
#[rustfmt::skip]
const ARCH_SPECIFIC: &[(&str, &[&str])] = &[
    ("amd64", &["arch_prctl", "modify_ldt"]),
    ("x86", &["modify_ldt", "get_thread_area", "set_thread_area"]),
    ("arm64", &["cacheflush", "set_tls", "sync_file_range2", "arm_sync_file_range"]),
    ("arm", &["breakpoint", "cacheflush", "set_tls", "arm_fadvise64_64", "sync_file_range2"]),
    ("ppc64le", &["sync_file_range2"]),
    ("s390x", &["s390_runtime_instr"]),
];

/// `personality(2)` values a program may set: Linux itself, the 32-bit personality, and
/// UNAME26 with either; `0xffffffff` only reads the current one.
#[rustfmt::skip]
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn allow(names: &[&str]) -> Rule {
    Rule {
        names: names.iter().map(|n| (*n).to_string()).collect(),
        action: LinuxSeccompAction::ScmpActAllow,
        errno_ret: None,
        args: None,
        includes: Filter::default(),
        excludes: Filter::default(),
    }
}

/// The profile, in the same moby format a `--seccomp-profile` file has, so both go through
/// one evaluation.
pub(super) fn profile() -> Profile {
    let mut syscalls = vec![allow(
        &[
            PROCESSES,
            CREDENTIALS,
            SIGNALS_AND_TIME,
            MEMORY,
            FILES,
            EVENTS,
            SOCKETS,
            IPC,
        ]
        .concat(),
    )];
    for (arch, names) in ARCH_SPECIFIC {
        syscalls.push(Rule {
            includes: Filter {
                arches: vec![(*arch).to_string()],
                ..Filter::default()
            },
            ..allow(names)
        });
    }
    for value in PERSONALITIES {
        syscalls.push(Rule {
            args: Some(vec![RuleArg {
                index: 0,
                value: *value,
                value_two: 0,
                op: LinuxSeccompOperator::ScmpCmpEq,
            }]),
            ..allow(&["personality"])
        });
    }
    // chroot(2) with the capability the container is given for it.
    syscalls.push(Rule {
        includes: Filter {
            caps: vec!["CAP_SYS_CHROOT".into()],
            ..Filter::default()
        },
        ..allow(&["chroot"])
    });
    // clone and clone3: restricted by the evaluator (no namespace flags without
    // CAP_SYS_ADMIN; clone3 answers ENOSYS so libc uses clone).
    syscalls.push(allow(&["clone", "clone3"]));
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(DEFAULT_ERRNO),
        arch_map: vec![
            ArchMapEntry {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: vec![Arch::ScmpArchArm],
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchS390x,
                sub_architectures: vec![Arch::ScmpArchS390],
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchPpc64le,
                sub_architectures: vec![],
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchRiscv64,
                sub_architectures: vec![],
            },
        ],
        syscalls,
    }
}
