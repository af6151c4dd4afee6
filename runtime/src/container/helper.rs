//! The single-threaded helper process that drives libcontainer for one run.
//!
//! libcontainer `chdir`s the calling process, makes it non-dumpable and makes the container's
//! init its child; none of that may happen inside a multi-threaded caller. The binary that
//! embeds this crate re-executes itself with a hidden subcommand and calls [`helper_main`].

use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use super::cgroup_stats::read_memory_stats;
use super::gc::cgroup_dirs;
use super::loopback::{bring_up_loopback, bring_up_loopback_in};
use super::protocol::{
    CONTAINER_STDERR_FD, CONTAINER_STDOUT_FD, HelperOutcome, HelperReport, HelperRequest,
    LISTEN_FD, NETNS_FD, STOP_BYTE,
};
use crate::network::block::block_in;
use crate::network::pasta::{Pasta, Starting};

/// The first message of a bridged run whose pasta failed.
const NETWORK_FAILED: &str = "cannot start the container's network (--network bridge)";

/// How long the init may take to die after SIGKILL before the helper gives up waiting.
const KILL_GRACE: Duration = Duration::from_secs(10);

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// Entry point of the helper: reads a `HelperRequest` line from stdin, runs the container,
/// writes a `HelperReport` line to stdout. Expects the container's stdout and stderr pipes
/// on fds 3 and 4 and the run lock on fd 5 (set up by the parent's `Runner`).
///
/// Call it first thing in `main` for the hidden subcommand, before any thread or async
/// runtime is started: libcontainer forks from this process and must not inherit held locks.
pub fn helper_main() -> ExitCode {
    // Rust ignores SIGPIPE at startup and libcontainer's init is a clone of this process:
    // without a reset every container would inherit SIG_IGN for SIGPIPE.
    // SAFETY (must stay: installing a disposition is unsafe in nix's API and rustix has no
    // sigaction): restoring default dispositions in a single-threaded process.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
        let _ = signal(Signal::SIGCHLD, SigHandler::SigDfl);
    }
    // A stop signal sent to the runner's whole cgroup or process group (`systemctl stop`,
    // an orchestrator) must not kill the helper: that would SIGKILL the container with no
    // grace. Only the runner decides (the stop byte, or EOF on stdin). A handler, not
    // SIG_IGN: handlers reset to the default at exec, so the container's init gets default
    // dispositions.
    let ignore = nix::sys::signal::SigAction::new(
        SigHandler::Handler(ignore_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY (must stay, as above): the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &ignore) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    restore_name();

    let report = match read_request_line() {
        Ok(line) if line.is_empty() => HelperReport::Failed(vec!["empty request on stdin".into()]),
        Ok(line) => match serde_json::from_slice::<HelperRequest>(&line) {
            Ok(req) => match run(&req) {
                Ok(outcome) => HelperReport::Finished(outcome),
                Err(chain) => HelperReport::Failed(chain),
            },
            Err(e) => HelperReport::Failed(chain("invalid request", &e)),
        },
        Err(e) => HelperReport::Failed(chain("cannot read request", &e)),
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &report)
        .ok()
        .and_then(|_| out.write_all(b"\n").ok())
        .and_then(|_| out.flush().ok());
    match (written, &report) {
        (Some(()), HelperReport::Finished(_)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The request line, read a byte at a time: a buffered reader could swallow a stop request
/// that follows it, which `supervise` then would never see through `poll`.
fn read_request_line() -> std::io::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(stdin.as_fd(), &mut byte) {
            Ok(0) => return Ok(line),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Executed as `/proc/self/fd/<n>` (see `sealed`), the kernel named this process `<n>`; it
/// gets its program's name back (as `argv[0]` says it), for `ps` and `top`.
fn restore_name() {
    use std::os::unix::ffi::OsStrExt;
    let Some(argv0) = std::env::args_os().next() else {
        return;
    };
    let Some(name) = Path::new(&argv0).file_name() else {
        return;
    };
    // The kernel keeps 15 bytes; a name with a NUL byte cannot be set and is left alone.
    let bytes = &name.as_bytes()[..name.len().min(15)];
    if let Ok(name) = std::ffi::CString::new(bytes) {
        let _ = rustix::thread::set_name(&name);
    }
}

/// `context`, then the error chain of `err`, outermost first.
fn chain(context: &str, err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![context.to_owned()];
    out.extend(super::error_messages(err));
    out
}

fn run(req: &HelperRequest) -> Result<HelperOutcome, Vec<String>> {
    for fd in [CONTAINER_STDOUT_FD, CONTAINER_STDERR_FD] {
        // The descriptor table as the kernel lists it: asking F_GETFD would need a
        // `BorrowedFd` of a number that may not be open, which no safe API gives.
        if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
            return Err(vec![format!(
                "fd {fd} is not open: the helper must be started by a Runner"
            )]);
        }
    }
    // SAFETY (must stay: adopting inherited descriptors by number is what from_raw_fd is
    // for): the parent placed these pipe ends on fds 3 and 4 for us alone (checked open), and
    // nothing else in this process refers to them.
    let (out_fd, err_fd) = unsafe {
        (
            OwnedFd::from_raw_fd(CONTAINER_STDOUT_FD),
            OwnedFd::from_raw_fd(CONTAINER_STDERR_FD),
        )
    };
    // A bridged run's namespace, made by the runner: `lo` up and pasta started on it now, so
    // that pasta configures it while libcontainer creates the container.
    let mut starting = None;
    let _netns = if req.netns_on_fd {
        if std::fs::symlink_metadata(format!("/proc/self/fd/{NETNS_FD}")).is_err() {
            return Err(vec![format!(
                "fd {NETNS_FD} is not open: the helper must be started by a Runner"
            )]);
        }
        // SAFETY (must stay, as for fds 3 and 4): the parent placed the namespace on this fd
        // for us alone (checked open); the container's init inherits its own copy.
        let netns = unsafe { OwnedFd::from_raw_fd(NETNS_FD) };
        bring_up_loopback_in(netns.as_fd())
            .map_err(|e| chain("cannot bring up lo in the container", &e))?;
        block_in(netns.as_fd(), &req.unreachable)
            .map_err(|e| chain("cannot keep the host's addresses out of reach", &e))?;
        if let Some(program) = &req.pasta {
            starting = Some(
                Pasta::spawn(program, netns.as_fd(), &req.run_dir.join("pasta.log"))
                    .map_err(|e| vec![NETWORK_FAILED.to_owned(), e])?,
            );
        }
        Some(netns)
    } else {
        None
    };
    // Dropped on every way out of `run`: the runner then stops waiting for sockets.
    let listen_chan = adopt_listen_channel(req)?;
    let devnull =
        std::fs::File::open("/dev/null").map_err(|e| chain("cannot open /dev/null", &e))?;
    let container_dir = req.container_root.join(&req.id);
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&req.container_root)
        .map_err(|e| chain("cannot create the container state root", &e))?;

    let built = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_root_path(&req.container_root)
        .map(|b| {
            b.with_stdin(devnull)
                .with_stdout(out_fd)
                .with_stderr(err_fd)
        })
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_init(&req.run_dir)
                .with_systemd(false)
                .with_detach(true)
                .build()
        });
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let mut msg = chain("cannot create the container", &e);
            if let Err(cleanup) = remove_container(&container_dir) {
                msg.extend(cleanup);
            }
            return Err(msg);
        }
    };

    // The network stack of a bridged run: started before or by `supervise`, ended (killed
    // and reaped) once the container is gone, on every path.
    let mut pasta = None;
    let result = supervise(req, &mut container, listen_chan, starting, &mut pasta);
    if result.is_err() {
        // The init may still be alive (e.g. waiting for start): it holds the output pipes,
        // and a rootless delete cannot reach it through the cgroup. Kill it by pid and reap,
        // within bounds: an init that cannot die must not hang the helper (and its run lock).
        kill_all(&mut container);
        if let Some(pid) = container.pid() {
            let until = Instant::now() + KILL_GRACE;
            while Instant::now() < until {
                match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
        }
    }
    drop(pasta);
    let stats = read_memory_stats(&req.cgroups_path);
    let deleted = if result.is_ok() && remove_reaped(&container_dir, &req.cgroups_path) {
        Ok(())
    } else {
        delete_with_retry(&mut container)
    };
    let mut outcome = result?;
    deleted?;
    if outcome.aborted {
        // Nobody is left to remove the run directory.
        let _ = std::fs::remove_dir_all(&req.run_dir);
    }
    outcome.oom_killed = stats.oom_killed;
    outcome.peak_memory_bytes = stats.peak_bytes;
    Ok(outcome)
}

/// Starts the created container and waits for its init, enforcing the timeout and watching
/// the parent. On error the container is left for the caller to delete.
fn supervise(
    req: &HelperRequest,
    container: &mut Container,
    listen_chan: Option<OwnedFd>,
    starting: Option<Starting>,
    pasta: &mut Option<Pasta>,
) -> Result<HelperOutcome, Vec<String>> {
    let pid = container
        .pid()
        .ok_or_else(|| vec!["libcontainer reported no init pid".to_owned()])?;
    // Opened before start() so the pid cannot be recycled under us.
    let pidfd = pidfd_open(pid).map_err(|e| chain("cannot open a pidfd for the init", &e))?;
    // For gc, should this helper die: rootless runs may have no cgroup to kill through.
    super::init_record::record(&req.run_dir, pid.as_raw())
        .map_err(|e| chain("cannot record the init", &e))?;
    if req.loopback_up {
        bring_up_loopback(pid).map_err(|e| chain("cannot bring up lo in the container", &e))?;
    }
    let started = match (starting, &req.pasta) {
        (Some(starting), _) => Some(starting.ready()),
        (None, Some(program)) => {
            std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .and_then(|ns| block_in(ns.as_fd(), &req.unreachable))
                .map_err(|e| chain("cannot keep the host's addresses out of reach", &e))?;
            Some(Pasta::start(program, pid, &req.run_dir.join("pasta.log")))
        }
        (None, None) => None,
    };
    if let Some(started) = started {
        let started = started.map_err(|e| vec![NETWORK_FAILED.to_owned(), e])?;
        // Recorded before anything else can fail: gc ends it should this helper die.
        super::init_record::record_as(&req.run_dir, super::init_record::PASTA_FILE, started.pid())
            .map_err(|e| chain("cannot record the network stack", &e))?;
        *pasta = Some(started);
    }
    if let Some(chan) = listen_chan {
        let sockets = super::listen::listen_in_netns(pid, &req.listen)
            .map_err(|e| chain("cannot open the requested sockets in the container", &e))?;
        super::listen::send_fds(chan.as_fd(), &sockets)
            .map_err(|e| chain("cannot hand the container's sockets to the runner", &e))?;
    }
    container
        .start()
        .map_err(|e| chain("cannot start the container", &e))?;
    let started = Instant::now();
    let deadline = req.timeout_ms.map(|ms| started + Duration::from_millis(ms));

    let stdin = std::io::stdin();
    let mut timed_out = false;
    let mut aborted = false;
    let mut stopped = false;
    let mut stop_deadline: Option<Instant> = None;
    let mut kill_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // The earliest pending step: SIGKILL's grace, else the stop's, else the timeout.
        let wait_until = kill_deadline.or(match (stop_deadline, deadline) {
            (Some(s), Some(d)) => Some(s.min(d)),
            (s, d) => s.or(d),
        });
        let timeout = match wait_until {
            Some(t) => PollTimeout::try_from(
                t.saturating_duration_since(now).as_millis().min(60_000) as i32,
            )
            .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if !aborted {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(chain("poll failed", &e)),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            break;
        }
        if !aborted
            && fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        {
            let mut buf = [0u8; 64];
            match rustix::io::read(stdin.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    if buf[..n].contains(&STOP_BYTE) && !stopped {
                        // A stop as `podman stop` does it: SIGTERM to the init (ignored by
                        // an init without a handler, as in any pid namespace), SIGKILL to
                        // every process once the grace period is over.
                        stopped = true;
                        let _ = container.kill(Signal::SIGTERM, false);
                        stop_deadline =
                            Some(Instant::now() + Duration::from_millis(req.stop_grace_ms));
                    }
                    continue;
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                // End of file or a broken pipe: the parent closed our stdin (it finished
                // early, panicked or died): nobody will read the result, so end the
                // container now.
                _ => {
                    aborted = true;
                    kill_all(container);
                    kill_deadline.get_or_insert(Instant::now() + KILL_GRACE);
                    continue;
                }
            }
        }
        let now = Instant::now();
        if let Some(k) = kill_deadline {
            if now >= k {
                return Err(vec![format!(
                    "the container's init {pid} did not exit within {KILL_GRACE:?} of SIGKILL"
                )]);
            }
        } else if deadline.is_some_and(|d| now >= d) {
            timed_out = true;
            kill_all(container);
            kill_deadline = Some(now + KILL_GRACE);
        } else if stop_deadline.is_some_and(|s| now >= s) {
            kill_all(container);
            kill_deadline = Some(now + KILL_GRACE);
        }
    }
    let status = waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED)
        .map_err(|e| chain("cannot reap the container's init", &e))?;
    let duration = started.elapsed();
    let exit_code = match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => return Err(vec![format!("unexpected wait status {other:?}")]),
    };
    Ok(HelperOutcome {
        exit_code,
        oom_killed: false,
        timed_out,
        duration_ns: duration.as_nanos().min(u64::MAX as u128) as u64,
        peak_memory_bytes: None,
        aborted,
        stopped,
    })
}

/// The channel for the requested sockets (fd [`LISTEN_FD`]), when the request asks for any;
/// close-on-exec at once, so the container's init (a clone of this process) loses it at its
/// exec.
fn adopt_listen_channel(req: &HelperRequest) -> Result<Option<OwnedFd>, Vec<String>> {
    if req.listen.is_empty() {
        return Ok(None);
    }
    if std::fs::symlink_metadata(format!("/proc/self/fd/{LISTEN_FD}")).is_err() {
        return Err(vec![format!(
            "fd {LISTEN_FD} is not open: the helper must be started by a Runner"
        )]);
    }
    // SAFETY (must stay, as for the output pipes): the parent placed this socket on fd 6 for
    // us alone (checked open above), and nothing else in this process refers to it.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FD) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| chain("cannot set close-on-exec on the socket channel", &e))?;
    Ok(Some(fd))
}

/// SIGKILL to every process of the container's cgroup (freeze, kill, thaw).
fn kill_all(container: &mut Container) {
    if container.kill(Signal::SIGKILL, true).is_err()
        && let Some(pid) = container.pid()
    {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    }
}

fn delete_with_retry(container: &mut Container) -> Result<(), Vec<String>> {
    let mut last = None;
    for attempt in 0..5 {
        match container.delete(true) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(chain("cannot delete the container", &e)),
        }
        std::thread::sleep(Duration::from_millis(50 << attempt));
    }
    Err(last.unwrap_or_default())
}

/// Fast path after the init was reaped: our specs have no hooks and no Intel RDT, so a
/// finished container is just its cgroup directories and its state directory. libcontainer's
/// `delete` costs ~10 ms more (hundreds of hardened procfs lookups). Returns false (and the
/// caller falls back to `delete`) if a cgroup is still busy, e.g. with dying processes.
fn remove_reaped(container_dir: &Path, cgroups_path: &str) -> bool {
    for dir in cgroup_dirs(Path::new(cgroups_path)) {
        if let Err(e) = std::fs::remove_dir(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return false;
        }
    }
    match std::fs::remove_dir_all(container_dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes what a failed `build()` may have left: the state dir and, through it, the cgroup.
fn remove_container(container_dir: &Path) -> Result<(), Vec<String>> {
    if !container_dir.exists() {
        return Ok(());
    }
    match Container::load(container_dir.to_owned()) {
        Ok(mut c) => c
            .delete(true)
            .map_err(|e| chain("cannot delete the half-created container", &e)),
        Err(_) => std::fs::remove_dir_all(container_dir)
            .map_err(|e| chain("cannot remove the half-created container's state", &e)),
    }
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid.as_raw())
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}
