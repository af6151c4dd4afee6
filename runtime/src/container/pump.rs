//! Reads the container's and the helper's pipes until they close, from the calling thread.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::RunError;
use super::capture::{BoundedCapture, Captured, Stream};

/// Bytes kept of the helper's report and of its own stderr.
const HELPER_CAPTURE_LIMIT: usize = 64 << 10;

/// What a pipe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The container's stdout or stderr: streamed to the caller and captured.
    Container(Stream),
    /// The helper's stdout: its one-line report.
    Report,
    /// The helper's stderr: diagnostics for when it dies without a report.
    Diagnostics,
}

/// Everything read.
pub(super) struct Pumped {
    pub stdout: Captured,
    pub stderr: Captured,
    pub report: Captured,
    pub diagnostics: Captured,
    /// The deadline passed before every pipe closed.
    pub deadline_passed: bool,
    /// The helper closed its stdout without a complete report line: it died (e.g. SIGKILL)
    /// and nothing supervises the container any more; pumping stopped at once.
    pub helper_died: bool,
}

/// Reads every pipe until all are closed, `deadline` passes or the helper dies without a
/// report, calling `on_output` with each chunk of container output as it arrives. `stop` is
/// polled (never read) beside them: the first time it is readable `on_stop` is called, once.
pub(super) fn pump(
    mut sources: Vec<(BorrowedFd<'_>, Source)>,
    capture_limit: usize,
    deadline: Option<Instant>,
    mut stop: Option<BorrowedFd<'_>>,
    on_stop: &mut dyn FnMut(),
    on_output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Pumped, RunError> {
    let mut stdout = BoundedCapture::new(capture_limit);
    let mut stderr = BoundedCapture::new(capture_limit);
    let mut report = BoundedCapture::new(HELPER_CAPTURE_LIMIT);
    let mut diagnostics = BoundedCapture::new(HELPER_CAPTURE_LIMIT);
    let mut deadline_passed = false;
    let mut helper_died = false;
    // The report is one line: complete once the helper's stdout ended a chunk with `\n`.
    let mut report_complete = false;
    let mut buf = vec![0u8; 64 << 10];
    while !sources.is_empty() {
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    deadline_passed = true;
                    break;
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN))
            .chain(stop.map(|fd| PollFd::new(fd, PollFlags::POLLIN)))
            .collect();
        match poll(&mut fds, wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(RunError::Os {
                    what: "poll on the output pipes failed",
                    source: e.into(),
                });
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if stop.is_some() && ready.get(sources.len()).copied().unwrap_or(false) {
            // Level-triggered and never drained: polled no more once acted on.
            stop = None;
            on_stop();
        }
        let mut closed = Vec::new();
        for (i, (fd, source)) in sources.iter().enumerate() {
            if !ready[i] {
                continue;
            }
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    if *source == Source::Report && !report_complete {
                        helper_died = true;
                    }
                    closed.push(i);
                }
                Ok(n) => {
                    let chunk = &buf[..n];
                    match source {
                        Source::Container(s @ Stream::Stdout) => {
                            stdout.push(chunk);
                            on_output(*s, chunk);
                        }
                        Source::Container(s @ Stream::Stderr) => {
                            stderr.push(chunk);
                            on_output(*s, chunk);
                        }
                        Source::Report => {
                            report.push(chunk);
                            report_complete = chunk.ends_with(b"\n");
                        }
                        Source::Diagnostics => diagnostics.push(chunk),
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
        if helper_died {
            // The container's pipes may stay open for as long as it runs: do not wait.
            break;
        }
    }
    Ok(Pumped {
        stdout: stdout.finish(),
        stderr: stderr.finish(),
        report: report.finish(),
        diagnostics: diagnostics.finish(),
        deadline_passed,
        helper_died,
    })
}
