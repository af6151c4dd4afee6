//! Starting `pasta` on a container's network namespace and ending it with the run.
//!
//! The runtime helper starts it after libcontainer created the init (so the namespace exists)
//! and before the container starts, and waits until pasta reports that the namespace is
//! configured (its pid written to a pipe given as `--pid`). pasta runs in the foreground as
//! the helper's child with the helper's own ids (`--runas`: a root pasta would otherwise
//! switch to `nobody`, which may not enter the namespace), dies with the helper
//! (`PR_SET_PDEATHSIG`), is killed and reaped when the container ends, and is recorded in the
//! run directory so that a runner that died leaves nothing for `gc` to miss.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use super::NetworkError;

/// The Debian package that ships pasta.
pub const PASTA_PACKAGE: &str = "passt";

/// Where pasta is looked for after `PATH` (a helper's `PATH` may be minimal).
const FALLBACK_DIRS: &[&str] = &["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// How long pasta may take to configure the namespace (it takes tens of milliseconds).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where pasta's namespace fd and readiness pipe are placed in its process.
const NETNS_FD: RawFd = 3;
const READY_FD: RawFd = 4;

/// The pasta executable: `explicit` if given (it must exist: no search then), else the first
/// `pasta` on `PATH` or in the usual system directories.
pub fn find_pasta(explicit: Option<&Path>) -> Result<PathBuf, NetworkError> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(NetworkError::PastaMissing {
                searched: format!("{} does not exist or is not executable", path.display()),
            })
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path_var)
        .filter(|d| d.is_absolute())
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .collect();
    dirs.iter()
        .map(|d| d.join("pasta"))
        .find(|p| is_executable(p))
        .ok_or_else(|| NetworkError::PastaMissing {
            searched: "not on PATH nor in /usr/bin, /usr/sbin, /bin, /sbin".to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The arguments that make pasta a plain outbound stack for the namespace on fd 3: no port
/// forwarding either way (`-t/-u/-T/-U none`), no gateway mapping (the gateway address is
/// the real gateway, not the host's loopback), interface, addresses and routes configured in
/// the namespace, no exit when the namespace's path goes away (we end it ourselves).
fn arguments(uid: u32, gid: u32) -> Vec<String> {
    [
        "--runas",
        &format!("{uid}:{gid}"),
        "--foreground",
        "--quiet",
        "--config-net",
        "--no-map-gw",
        "--no-netns-quit",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--netns",
        &format!("/proc/self/fd/{NETNS_FD}"),
        "--pid",
        &format!("/proc/self/fd/{READY_FD}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A running pasta; dropping it kills and reaps it.
pub(crate) struct Pasta {
    child: Child,
    log: PathBuf,
}

/// A pasta started but perhaps not done configuring the namespace yet; dropping it kills and
/// reaps it.
pub(crate) struct Starting {
    pasta: Pasta,
    ready: OwnedFd,
}

impl Pasta {
    /// Starts `program` on the network namespace of `init` and returns once the namespace is
    /// configured. Its diagnostics go to `log` (created; quoted in errors).
    pub(crate) fn start(program: &Path, init: Pid, log: &Path) -> Result<Pasta, String> {
        let netns = File::open(format!("/proc/{init}/ns/net"))
            .map_err(|e| format!("cannot open the container's network namespace: {e}"))?;
        Pasta::spawn(program, netns.as_fd(), log)?.ready()
    }

    /// Starts `program` on the network namespace `netns` (an open `/proc/.../ns/net`) without
    /// waiting for it: [`Starting::ready`] does. Its diagnostics go to `log`.
    pub(crate) fn spawn(
        program: &Path,
        netns: std::os::fd::BorrowedFd<'_>,
        log: &Path,
    ) -> Result<Starting, String> {
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        let stderr = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(arguments(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        let parent = std::process::id() as i32;
        let passed = [
            (netns.as_raw_fd(), NETNS_FD),
            (ready_w.as_raw_fd(), READY_FD),
        ];
        // SAFETY (must stay: std offers no other way to set the parent-death signal and place
        // fds in the child): the closure makes only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || in_child(parent, &passed));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        drop(ready_w);
        Ok(Starting {
            pasta: Pasta {
                child,
                log: log.to_owned(),
            },
            ready: ready_r,
        })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Starting {
    /// Waits until pasta has configured the namespace; on failure it is killed and the error
    /// quotes what it said.
    pub(crate) fn ready(self) -> Result<Pasta, String> {
        let Starting { mut pasta, ready } = self;
        match wait_ready(&ready) {
            Ok(()) => Ok(pasta),
            Err(why) => {
                let _ = pasta.child.kill();
                let status = pasta
                    .child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                let said = std::fs::read_to_string(&pasta.log).unwrap_or_default();
                let said = said
                    .lines()
                    .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(format!(
                    "pasta did not set up the container's network ({why}; {status}): {said}{}",
                    tun_hint()
                ))
            }
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why pasta may have failed: rootless, it opens `/dev/net/tun` as the user, which Debian
/// allows (0666) but some hosts do not (0600).
fn tun_hint() -> String {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => format!(
            " (/dev/net/tun is not open to this user: {e}; Debian's default mode is 0666, \
             which root restores with `chmod 0666 /dev/net/tun`)"
        ),
        Err(e) => format!(" (cannot open /dev/net/tun: {e})"),
        Ok(_) => String::new(),
    }
}

/// In the forked child, before exec: die with the helper, and hand pasta exactly the
/// namespace fd and the readiness pipe (every other inherited fd, the run lock included, is
/// closed at exec: a pasta holding the lock would make gc take the run for alive).
fn in_child(parent: i32, passed: &[(RawFd, RawFd); 2]) -> std::io::Result<()> {
    // SAFETY (must stay: prctl has no safe wrapper with this option in our dependencies):
    // PR_SET_PDEATHSIG takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The helper may have died before the prctl: then nobody would ever kill this pasta.
    if nix::unistd::getppid().as_raw() != parent {
        return Err(std::io::Error::other("the runtime helper is gone"));
    }
    let mut temps = [0; 2];
    for (temp, (src, _)) in temps.iter_mut().zip(passed) {
        *temp = fcntl(*src, FcntlArg::F_DUPFD_CLOEXEC(64))?;
    }
    // SAFETY (must stay: close_range has no wrapper here): marks fds CLOEXEC, no memory.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked != 0 {
        // Before Linux 5.11: mark them one by one.
        for fd in 3..1024 {
            // SAFETY (as above): F_SETFD on a number that may not be open just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    for (temp, (_, target)) in temps.iter().zip(passed) {
        nix::unistd::dup2(*temp, *target)?;
    }
    Ok(())
}

/// Waits until pasta writes its pid (a line) to the readiness pipe: it does so once the
/// namespace is configured. End of file first means it failed.
fn wait_ready(pipe: &OwnedFd) -> Result<(), String> {
    let until = Instant::now() + READY_TIMEOUT;
    let mut got = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not ready within {READY_TIMEOUT:?}"));
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let mut buf = [0u8; 64];
        match rustix::io::read(pipe, &mut buf) {
            Ok(0) => return Err("it exited".to_owned()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    return Ok(());
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(format!("cannot read its readiness pipe: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_must_exist_and_the_error_names_the_package() {
        let err = find_pasta(Some(Path::new("/nonexistent/pasta"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install passt"), "{msg}");
        assert!(msg.contains("/nonexistent/pasta"), "{msg}");
        let found = find_pasta(Some(Path::new("/bin/sh"))).unwrap();
        assert_eq!(found, Path::new("/bin/sh"));
    }

    #[test]
    fn no_forwarding_and_no_gateway_mapping() {
        let args = arguments(0, 0).join(" ");
        for wanted in [
            "--no-map-gw",
            "-t none",
            "-u none",
            "-T none",
            "-U none",
            "--config-net",
            "--runas 0:0",
            "--foreground",
        ] {
            assert!(args.contains(wanted), "{wanted} missing from {args}");
        }
    }
}
