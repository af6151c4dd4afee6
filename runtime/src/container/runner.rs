//! The parent side of a run: writes the bundle, spawns the helper, streams the container's
//! output to the caller, and cleans up on every path.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::RunError;
use super::capture::{Captured, Stream};
use super::gc::{CONTAINERS_DIR, RUNS_DIR, lock_run, remove_leftover};
use super::listen::{ListenSocket, MAX_LISTEN_SOCKETS, recv_fds};
use super::protocol::{
    CONTAINER_STDERR_FD, CONTAINER_STDOUT_FD, HelperReport, HelperRequest, LISTEN_FD, NETNS_FD,
    RUN_LOCK_FD, STOP_BYTE,
};
use super::pump::{Source, pump};
use crate::bundle::{NetworkMode, RunSpec, build_spec, write_bundle};
use crate::network::find_pasta;

/// Bytes kept at each end of each output stream unless configured otherwise.
pub const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;

/// Default grace period of [`Runner::with_stop`] between SIGTERM and SIGKILL (as
/// `podman stop`'s default).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Default for [`Runner::with_helper_grace`].
pub const DEFAULT_HELPER_GRACE: Duration = Duration::from_secs(30);

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run's container id.
    pub id: String,
    /// `Exited(n)` -> n, `Signaled(s)` -> 128 + s (so a timeout's SIGKILL gives 137).
    pub exit_code: i32,
    /// The OOM killer fired in the container's cgroup (the init may still exit 0 if the
    /// victim was another process).
    pub oom_killed: bool,
    /// The timeout passed and every process of the container was killed.
    pub timed_out: bool,
    /// The stop fd (see [`Runner::with_stop`]) fired before the container ended: it was
    /// stopped (SIGTERM, then SIGKILL after the grace period).
    pub stopped: bool,
    /// From the container's start to its init's exit.
    pub duration: Duration,
    /// Peak memory of the cgroup, where the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
    /// Head and tail of the container's stdout.
    pub stdout: Captured,
    /// Head and tail of the container's stderr.
    pub stderr: Captured,
}

/// Runs containers through a helper process: `program args...` must end up calling
/// [`helper_main`](super::helper_main) (the `dockless` binary passes its own path and a
/// hidden subcommand). One `Runner` may be used from many threads at once.
#[derive(Debug, Clone)]
pub struct Runner {
    program: PathBuf,
    args: Vec<OsString>,
    state_root: PathBuf,
    cgroup_parent: String,
    capture_limit: usize,
    helper_grace: Duration,
    own_v1_limits: bool,
    stop: Option<(Arc<OwnedFd>, Duration)>,
    pasta: Option<PathBuf>,
    scopes: Option<crate::systemd::RunScopes>,
}

impl Runner {
    /// A runner whose helper is `program args...` and whose state (bundles, libcontainer
    /// state, locks) lives under `state_root`.
    pub fn new<I, A>(program: impl Into<PathBuf>, args: I, state_root: impl Into<PathBuf>) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            state_root: state_root.into(),
            cgroup_parent: "dockless".to_owned(),
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            helper_grace: DEFAULT_HELPER_GRACE,
            own_v1_limits: false,
            stop: None,
            pasta: None,
            scopes: None,
        }
    }

    /// systemd as the cgroup manager (see [`crate::systemd`]): each run gets a transient
    /// scope `dockless-<id>.scope` in `system.slice` with `Delegate=yes`, the helper its
    /// `supervisor` leaf and the container its `container` cgroup; the cgroup parent is then
    /// not used. `None` keeps cgroupfs (cgroups below the parent, written directly).
    pub fn with_systemd_scopes(mut self, scopes: Option<crate::systemd::RunScopes>) -> Self {
        self.scopes = scopes;
        self
    }

    /// Which cgroup manager the runs use: `"systemd"` or `"cgroupfs"`.
    pub fn cgroup_manager(&self) -> &'static str {
        if self.scopes.is_some() {
            "systemd"
        } else {
            "cgroupfs"
        }
    }

    /// The pasta executable for `--network bridge` runs, instead of the first `pasta` on
    /// `PATH` (or in `/usr/bin`, `/usr/sbin`, `/bin`, `/sbin`); it must exist.
    pub fn with_pasta(mut self, program: Option<PathBuf>) -> Self {
        self.pasta = program;
        self
    }

    /// Stops runs on request: when `fd` becomes readable (e.g. the read end of a signal
    /// handler's self-pipe) the container's init gets SIGTERM and, `grace` later, every
    /// process of it SIGKILL; the run then ends as usual with [`RunResult::stopped`] set and
    /// everything removed. The fd is polled, never read: once readable it stays so, and every
    /// later run of this runner stops as soon as its container has started.
    pub fn with_stop(mut self, fd: Arc<OwnedFd>, grace: Duration) -> Self {
        self.stop = Some((fd, grace));
        self
    }

    /// Puts container cgroups under `/<parent>/<id>` in every hierarchy (default `dockless`).
    pub fn with_cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = parent.into().trim_matches('/').to_owned();
        self
    }

    /// Rootless with a delegated cgroup-v1 subtree (see `userns::delegate`): the runner
    /// writes the limits into the run's cgroups itself and keeps them out of the spec, which
    /// libcontainer's v1 manager could not apply unprivileged. The cgroup parent must be the
    /// delegated directory.
    pub fn with_own_v1_limits(mut self, own: bool) -> Self {
        self.own_v1_limits = own;
        self
    }

    /// Keeps at most `bytes` at each end of each output stream in the [`RunResult`].
    pub fn with_capture_limit(mut self, bytes: usize) -> Self {
        self.capture_limit = bytes;
        self
    }

    /// How long past a run's timeout the helper may take to report before it is killed and
    /// the run cleaned up from here (default 30 s). Runs without a timeout have no watchdog.
    pub fn with_helper_grace(mut self, grace: Duration) -> Self {
        self.helper_grace = grace;
        self
    }

    /// Where this runner keeps its state; pass it to [`gc()`](super::gc()).
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// The cgroup parent (relative to each hierarchy's root).
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Runs `spec` with `rootfs` (a private per-run directory the caller owns) as root
    /// filesystem. A `bridge` run also writes its resolv.conf and hosts into
    /// `<rootfs>.network` beside it (see [`crate::network::files_dir`]) and removes them. Output chunks go to `on_output` as they arrive (from the calling thread)
    /// and are kept, bounded, in the result. Returns once the container is gone and its
    /// state, cgroups and run directory are removed.
    pub fn run(
        &self,
        rootfs: &Path,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunResult, RunError> {
        self.run_listening(rootfs, spec, &[], &mut |_| {}, on_output)
    }

    /// [`Runner::run`] with `listen` sockets (at most [`MAX_LISTEN_SOCKETS`]) bound to
    /// 127.0.0.1 in the container's own network namespace once it is created and before it
    /// starts: the container reaches them on its loopback, and `on_listening` gets them (in
    /// the order asked, non-blocking) on the calling thread before any output arrives, to
    /// serve from the host side while the container runs. Not called when the run fails
    /// before they exist.
    pub fn run_listening(
        &self,
        rootfs: &Path,
        spec: &RunSpec,
        listen: &[ListenSocket],
        on_listening: &mut dyn FnMut(Vec<OwnedFd>),
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunResult, RunError> {
        if listen.len() > MAX_LISTEN_SOCKETS {
            return Err(RunError::Os {
                what: "too many sockets requested for one run",
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let id = new_run_id();
        let (run_dir, lock) = self.create_run_dir(&id)?;
        let lock_fd = lock.as_raw_fd();
        // From here on the guard removes whatever exists of this run, even on panic.
        let mut session = Session {
            state_root: self.state_root.clone(),
            id: id.clone(),
            child: None,
            stdin: None,
            lock: Some(lock),
            own_cgroup: None,
            network_files: None,
            scope: None,
        };

        // Everything `bridge` needs from the host, checked before any container exists: a
        // missing pasta is an error, never a fallback to another network.
        let mut unreachable = Vec::new();
        let pasta = match spec.network {
            NetworkMode::Bridge => {
                let pasta = find_pasta(self.pasta.as_deref())?;
                let dir = crate::network::write_files(rootfs, &spec.hostname)?;
                session.network_files = Some(dir.clone());
                // The host's own addresses, but for resolvers the container is told to use.
                let resolvers = crate::network::nameservers(
                    &std::fs::read_to_string(dir.join("resolv.conf")).unwrap_or_default(),
                );
                unreachable = crate::network::host_addresses()
                    .map_err(crate::network::NetworkError::HostAddresses)?;
                unreachable.retain(|a| !resolvers.contains(a));
                Some(pasta)
            }
            NetworkMode::None | NetworkMode::Host => None,
        };
        // Unless the container gets a user namespace of its own (which must own its network
        // namespace), a bridged run's namespace is made here and handed to the helper, so that
        // pasta configures it while libcontainer creates the container.
        let mut netns = match (&pasta, spec.userns) {
            (Some(_), None) => {
                Some(super::loopback::new_netns().map_err(|source| RunError::Os {
                    what: "cannot create the container's network namespace",
                    source,
                })?)
            }
            _ => None,
        };
        let joined = |mut bundle: libcontainer::oci_spec::runtime::Spec| {
            if netns.is_some() {
                join_netns_fd(&mut bundle);
            }
            bundle
        };
        crate::bundle::hand_over(rootfs, spec)?;
        let cgroups_path = if self.scopes.is_some() {
            format!(
                "/{}/dockless-{id}.scope/{}",
                crate::systemd::ROOT_SLICE,
                crate::systemd::CONTAINER_LEAF
            )
        } else {
            format!("/{}/{}", self.cgroup_parent, id)
        };
        if self.own_v1_limits {
            spec.limits.validate()?;
            let mut bundle_spec = spec.clone();
            bundle_spec.limits.memory_bytes = None;
            bundle_spec.limits.cpus = None;
            bundle_spec.limits.pids = None;
            write_bundle(
                &run_dir,
                &joined(build_spec(rootfs, &bundle_spec, &cgroups_path)?),
            )?;
            session.own_cgroup = Some(cgroups_path.clone());
            crate::userns::write_limits(&cgroups_path, &spec.limits).map_err(|source| {
                RunError::Limits {
                    id: id.clone(),
                    source,
                }
            })?;
        } else {
            write_bundle(&run_dir, &joined(build_spec(rootfs, spec, &cgroups_path)?))?;
        }

        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let mut passed = vec![
            (out_w.as_raw_fd(), CONTAINER_STDOUT_FD),
            (err_w.as_raw_fd(), CONTAINER_STDERR_FD),
            (lock_fd, RUN_LOCK_FD),
        ];
        if let Some(netns) = &netns {
            passed.push((netns.as_raw_fd(), NETNS_FD));
        }
        let listen_chan = if listen.is_empty() {
            None
        } else {
            let (ours, theirs) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| RunError::Os {
                what: "cannot create the socket channel",
                source: e.into(),
            })?;
            passed.push((theirs.as_raw_fd(), LISTEN_FD));
            Some((ours, theirs))
        };
        let mut child = self.spawn_helper(&passed)?;
        let helper_pid = child.id();
        // The helper (and through it the container and pasta) holds the namespace now.
        let netns_on_fd = netns.take().is_some();
        drop((out_w, err_w));
        let listen_chan = listen_chan.map(|(ours, _theirs)| ours);
        let helper_out = child.stdout.take();
        let helper_err = child.stderr.take();
        session.stdin = child.stdin.take();
        session.child = Some(child);
        if let Some(scopes) = &self.scopes {
            // Before the request: the helper waits for it, so it creates the container only
            // once it is in the scope's supervisor leaf.
            let scope = scopes
                .start(&id, helper_pid)
                .map_err(|source| RunError::Systemd {
                    id: id.clone(),
                    source,
                })?;
            let path = scope.container_cgroup();
            session.scope = Some(scope);
            if path != cgroups_path {
                return Err(RunError::Systemd {
                    id,
                    source: crate::systemd::SystemdError::NotMoved {
                        pid: helper_pid,
                        unit: format!("the cgroup {cgroups_path}"),
                        found: path,
                    },
                });
            }
        }

        let request = HelperRequest {
            id: id.clone(),
            container_root: self.state_root.join(CONTAINERS_DIR),
            run_dir,
            timeout_ms: spec
                .timeout
                .map(|t| t.as_millis().min(u64::MAX as u128) as u64),
            // A namespace made here had `lo` brought up by the helper before the container.
            loopback_up: spec.network.own_namespace() && !netns_on_fd,
            pasta,
            netns_on_fd,
            unreachable,
            cgroups_path,
            stop_grace_ms: self.stop.as_ref().map_or(0, |(_, grace)| {
                grace.as_millis().min(u64::MAX as u128) as u64
            }),
            listen: listen.to_vec(),
        };
        let mut line = serde_json::to_vec(&request).map_err(|source| RunError::Protocol {
            id: id.clone(),
            source,
        })?;
        line.push(b'\n');
        if let Some(stdin) = session.stdin.as_mut() {
            // A failed write means the helper already died; its report (or the lack of
            // one) tells the rest below.
            let _ = stdin.write_all(&line).and_then(|_| stdin.flush());
        }

        let mut sources = vec![
            (out_r.as_fd(), Source::Container(Stream::Stdout)),
            (err_r.as_fd(), Source::Container(Stream::Stderr)),
        ];
        if let Some(h) = &helper_out {
            sources.push((h.as_fd(), Source::Report));
        }
        if let Some(h) = &helper_err {
            sources.push((h.as_fd(), Source::Diagnostics));
        }
        let watchdog = spec.timeout.map(|t| Instant::now() + t + self.helper_grace);
        if let Some(chan) = listen_chan {
            // Before start, so nothing is lost: the helper sends the sockets between the
            // container's creation and its start, or closes the channel failing (its
            // report then says why).
            let mut late = false;
            match recv_fds(chan.as_fd(), watchdog, &mut late) {
                Ok(Some(fds)) => on_listening(fds),
                Ok(None) if late => {
                    if let Some(child) = session.child.as_mut() {
                        let _ = child.kill();
                    }
                    session.cleanup()?;
                    return Err(RunError::HelperUnresponsive {
                        id,
                        grace: self.helper_grace,
                    });
                }
                // The helper failed or died: its report (or its absence) says the rest.
                Ok(None) | Err(_) => {}
            }
        }
        let stop_fd = self.stop.as_ref().map(|(fd, _)| fd.as_fd());
        let mut ask_stop = || {
            if let Some(stdin) = session.stdin.as_mut() {
                // A helper that is gone cannot stop anything; its missing report says so.
                let _ = stdin.write_all(&[STOP_BYTE]).and_then(|_| stdin.flush());
            }
        };
        let pumped = pump(
            sources,
            self.capture_limit,
            watchdog,
            stop_fd,
            &mut ask_stop,
            on_output,
        )?;
        drop((out_r, err_r, helper_out, helper_err));

        if pumped.helper_died {
            // Nothing supervises the container any more: remove the run as gc removes an
            // abandoned one (kill its processes through its cgroup and recorded init, delete
            // its state) right now rather than at its exit or timeout.
            let status = session.finish_helper();
            session.cleanup()?;
            let (status, wait_error) = match status {
                Ok(s) => (s.to_string(), None),
                Err(e) => ("status unknown".to_owned(), Some(e)),
            };
            return Err(RunError::HelperDied {
                id,
                status,
                stderr: pumped.diagnostics.to_string_lossy(),
                wait_error,
            });
        }

        if pumped.deadline_passed {
            // The helper is stuck (e.g. inside libcontainer): kill it; the cleanup deletes
            // the container from its state.
            if let Some(child) = session.child.as_mut() {
                let _ = child.kill();
            }
            session.cleanup()?;
            return Err(RunError::HelperUnresponsive {
                id,
                grace: self.helper_grace,
            });
        }
        let status = session.finish_helper();
        let report: Option<HelperReport> = if pumped.report.truncated() {
            None
        } else {
            serde_json::from_slice(&pumped.report.head).ok()
        };
        session.cleanup()?;
        match report {
            Some(HelperReport::Finished(outcome)) => Ok(RunResult {
                id,
                exit_code: outcome.exit_code,
                oom_killed: outcome.oom_killed,
                timed_out: outcome.timed_out,
                stopped: outcome.stopped,
                duration: Duration::from_nanos(outcome.duration_ns),
                peak_memory_bytes: outcome.peak_memory_bytes,
                stdout: pumped.stdout,
                stderr: pumped.stderr,
            }),
            Some(HelperReport::Failed(messages)) => Err(RunError::Helper { id, messages }),
            None => {
                let (status, wait_error) = match status {
                    Ok(s) => (s.to_string(), None),
                    Err(e) => ("status unknown".to_owned(), Some(e)),
                };
                Err(RunError::HelperCrashed {
                    id,
                    status,
                    stderr: pumped.diagnostics.to_string_lossy(),
                    wait_error,
                })
            }
        }
    }

    /// Creates `<state_root>/runs/<id>` and returns it open with its lock held. The directory
    /// appears under its final name only once locked, so a concurrent gc never mistakes a run
    /// being set up for an abandoned one.
    fn create_run_dir(&self, id: &str) -> Result<(PathBuf, File), RunError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| RunError::Io { what, path, source }
        };
        let runs = self.state_root.join(RUNS_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&runs)
            .map_err(io("cannot create", &runs))?;
        let staging = runs.join(format!(".new-{id}"));
        let run_dir = runs.join(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io("cannot create", &staging))?;
        let locked = File::open(&staging)
            .map_err(io("cannot open", &staging))
            .and_then(|lock| {
                lock_run(&lock, true).map_err(io("cannot lock", &staging))?;
                std::fs::rename(&staging, &run_dir).map_err(io("cannot rename", &staging))?;
                Ok(lock)
            });
        match locked {
            Ok(lock) => Ok((run_dir, lock)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// Starts `program args...` with piped stdio and `passed` fds moved to fixed numbers.
    /// The program is executed from a view no container can write through (see
    /// [`super::sealed`]), under its own name as `argv[0]`.
    fn spawn_helper(&self, passed: &[(RawFd, RawFd)]) -> Result<Child, RunError> {
        let exe = super::sealed::helper_exe(&self.program, &self.state_root)?;
        let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        cmd.arg0(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C or hangup meant for the runner must not kill
            // the helper too, which would leave the container (in its own session) running.
            // The runner's death closes the helper's stdin; the helper then ends the run.
            .process_group(0);
        let mut fixed = [(0, 0); 5];
        if passed.len() > fixed.len() {
            return Err(RunError::Spawn {
                program: self.program.clone(),
                source: std::io::Error::other("more descriptors to pass than places for them"),
            });
        }
        fixed[..passed.len()].copy_from_slice(passed);
        let count = passed.len();
        // SAFETY (must stay: std offers no stable way to place fds in the child): the closure
        // only calls fcntl and dup2, which are async-signal-safe (the fds are in an array,
        // nothing is allocated after the fork).
        unsafe {
            cmd.pre_exec(move || place_fds(&fixed[..count]));
        }
        // `exe` (the shared copy) stays open across the spawn: the child execs it by number.
        cmd.spawn().map_err(|source| RunError::Spawn {
            program: self.program.clone(),
            source,
        })
    }
}

/// Owns a run while it is in progress; dropping it (normal end, error or panic) closes the
/// helper's stdin — which makes a still-running helper kill its container — waits for the
/// helper, and removes whatever is left of the run.
struct Session {
    state_root: PathBuf,
    id: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// The run directory, open and flocked; the helper inherits the same open file
    /// description, so gc skips the run while either of us lives.
    lock: Option<File>,
    /// The run's cgroup path when the runner created it (delegated rootless limits).
    own_cgroup: Option<String>,
    /// A bridged run's resolv.conf and hosts beside the rootfs.
    network_files: Option<PathBuf>,
    /// The run's systemd scope (systemd removes it once empty; its supervisor leaf is
    /// removed here so that nothing waits for that).
    scope: Option<crate::systemd::Scope>,
}

impl Session {
    fn finish_helper(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.stdin = None;
        match self.child.take() {
            Some(mut child) => child.wait(),
            None => Err(std::io::Error::other("helper not started")),
        }
    }

    fn cleanup(&mut self) -> Result<(), RunError> {
        let _ = self.finish_helper();
        let removed = remove_leftover(&self.state_root, &self.id);
        if let Some(path) = self.own_cgroup.take() {
            // Empty by now (the container is gone); a failure to create it leaves them too.
            for dir in super::gc::cgroup_dirs(Path::new(&path)) {
                let _ = std::fs::remove_dir(&dir);
            }
        }
        if let Some(dir) = self.network_files.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(scope) = self.scope.take() {
            // The helper is gone and the container deleted: both leaves are empty.
            let _ = std::fs::remove_dir(scope.dir().join(crate::systemd::SUPERVISOR_LEAF));
        }
        self.lock = None;
        removed.map(drop)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// Makes the bundle's network namespace the one the helper holds on [`NETNS_FD`]: the init,
/// a clone of the helper, joins it through its own copy of that descriptor.
fn join_netns_fd(bundle: &mut libcontainer::oci_spec::runtime::Spec) {
    use libcontainer::oci_spec::runtime::LinuxNamespaceType;
    let Some(linux) = bundle.linux_mut() else {
        return;
    };
    if let Some(namespaces) = linux.namespaces_mut() {
        for ns in namespaces.iter_mut() {
            if ns.typ() == LinuxNamespaceType::Network {
                ns.set_path(Some(PathBuf::from(format!("/proc/self/fd/{NETNS_FD}"))));
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RunError::Os {
        what: "cannot create a pipe",
        source: e.into(),
    })
}

/// In the forked child before exec: moves each fd to its fixed number without CLOEXEC.
/// Sources are first copied above the targets so that no move clobbers a later source.
fn place_fds(passed: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    // nix rather than rustix: rustix's dup2 wants an owned target, and these are raw numbers
    // in a forked child. Both calls are plain syscalls (no allocation, async-signal-safe).
    let mut temps = [0; 5];
    for (temp, (src, _)) in temps.iter_mut().zip(passed) {
        *temp = fcntl(*src, FcntlArg::F_DUPFD_CLOEXEC(super::sealed::MIN_FD))?;
    }
    for (temp, (_, target)) in temps.iter().zip(passed) {
        nix::unistd::dup2(*temp, *target)?;
    }
    Ok(())
}

/// A container id unique across processes and time: pid, a per-process counter and the
/// clock; only characters libcontainer accepts.
fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "dl-{:x}-{}-{:x}",
        std::process::id(),
        n,
        nanos & 0xffff_ffff
    )
}
