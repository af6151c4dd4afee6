//! SIGTERM, SIGINT and SIGHUP to `dockless run`: handled as `podman run` does, by stopping the
//! container (SIGTERM, SIGKILL after the grace period), removing everything of the run and
//! exiting 128 + the signal. Without this the signal killed the runner and left the rootfs
//! mounted until `gc`.
//!
//! The handlers only write to a self-pipe and set flags (async-signal-safe). The runtime's
//! `Runner` polls the pipe beside its container (see `Runner::with_stop`); the job pipeline
//! checks [`received`] at its phase boundaries. A second signal ends the process at once
//! (exit 128 + that signal): the helper still kills the container when its runner is gone,
//! but a mounted rootfs or a job's directory is then left for `dockless gc`.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The handled signals.
const SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

/// What the handlers write to.
struct Installed {
    /// Read end of the self-pipe: readable from the first signal on (never drained).
    pipe: Arc<OwnedFd>,
    /// The first signal's number, 0 before any.
    which: Arc<AtomicUsize>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static GRACE: OnceLock<Duration> = OnceLock::new();

/// Why a command ended early: one of the handled signals arrived.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}", name(*.signal))]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
}

impl Interrupted {
    /// 128 + the signal, as a shell reports a process ended by it (143 for SIGTERM).
    pub fn exit_status(&self) -> u8 {
        exit_status(self.signal)
    }
}

/// Installs the handlers. Call early in `main`, before any thread exists and only for the
/// commands that handle the signals (`run`, `test`): the others keep the default action.
pub fn install() -> std::io::Result<()> {
    let (read, write) = UnixStream::pair()?;
    // A full pipe must never block a handler; one byte is enough to wake the poller.
    write.set_nonblocking(true)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for sig in SIGNALS {
        // Order matters: the first action sees `stopping` still false on the first signal.
        signal_hook::flag::register_conditional_shutdown(
            sig,
            i32::from(exit_status(sig)),
            Arc::clone(&stopping),
        )?;
        signal_hook::flag::register(sig, Arc::clone(&stopping))?;
        signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize)?;
        signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
    }
    let _ = INSTALLED.set(Installed {
        pipe: Arc::new(OwnedFd::from(read)),
        which,
    });
    Ok(())
}

/// The signal received, if any (the pipeline's check at its safe points).
pub fn received() -> Option<Interrupted> {
    let sig = INSTALLED.get()?.which.load(Ordering::SeqCst);
    (sig != 0).then_some(Interrupted { signal: sig as i32 })
}

/// `Err(Interrupted)` once a signal arrived: `?` at a safe point ends the command there.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Sets the grace period between SIGTERM and SIGKILL (`--stop-timeout`); the first call wins.
pub fn set_grace(grace: Duration) {
    let _ = GRACE.set(grace);
}

/// The runtime's stop: the self-pipe and the grace period, when the handlers are installed.
pub fn stop() -> Option<(Arc<OwnedFd>, Duration)> {
    let installed = INSTALLED.get()?;
    let grace = GRACE
        .get()
        .copied()
        .unwrap_or(dockless_runtime::container::DEFAULT_STOP_GRACE);
    Some((Arc::clone(&installed.pipe), grace))
}

/// For a job a queue worker started: once the worker is gone (this process was re-parented),
/// act as if SIGTERM arrived, so that the job stops as a terminated one, removes its
/// containers and stores nothing; another worker retries it once its lease runs out.
pub fn stop_when_orphaned() {
    let parent = rustix::process::getppid();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if rustix::process::getppid() != parent {
                let me = rustix::process::getpid();
                let _ = rustix::process::kill_process(me, rustix::process::Signal::TERM);
                return;
            }
        }
    });
}

/// 128 + `signal`.
fn exit_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

/// The signal's name as people know it.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_128_plus_the_signal_as_a_shell_reports_it() {
        assert_eq!(Interrupted { signal: SIGTERM }.exit_status(), 143);
        assert_eq!(Interrupted { signal: SIGINT }.exit_status(), 130);
        assert_eq!(Interrupted { signal: SIGHUP }.exit_status(), 129);
        assert_eq!(
            Interrupted { signal: SIGTERM }.to_string(),
            "stopped by SIGTERM"
        );
    }

    #[test]
    fn a_terminated_job_says_so_in_its_status() {
        use crate::pipeline::classify::Class;
        use crate::pipeline::result::JobResult;
        let mut result = JobResult::new("img", "comp", "1", "run");
        result.fail(Class::Terminated, "Job terminated by SIGTERM".into());
        assert_eq!(result.status, "terminated");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["class"], "terminated");
    }
}
