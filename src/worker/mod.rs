//! `dockless worker`: works off the job queue of a PostgreSQL Storage on this host.
//!
//! One loop, one database connection: claim jobs while slots are free, renew the leases of
//! the running ones, turn kills into SIGTERM, store what the jobs print, and end each job
//! when its process exits. Each job runs as its own `dockless run --job ... --queue-claim`
//! process ([`child`]), so that a job's signals, rootless session and cleanup are exactly a
//! local run's, and a crashing job cannot take the worker (or its other jobs) with it. The
//! job's process stores its output, state and end itself, in one transaction fenced by the
//! claim (see `dockless_staging::queue`); the worker only ends jobs that ended without such
//! a commit (failed before output mapping, killed, crashed).
//!
//! When the database goes away the worker stops claiming, keeps its jobs running and
//! reconnects with backoff; a job that could not store its output is given back to the queue.
//! SIGTERM or SIGINT stops claiming, stops the running jobs and gives them back; a second
//! signal ends the worker at once (its jobs then stop on their own, see [`child`]).

mod child;
pub mod document;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dockless_staging::queue::{Claim, JobStatus};
use dockless_staging::storage::postgres::{Claimed, Renewal, Wakeup};
use serde_json::Value;

use crate::paths::Paths;
use crate::stages::queue::Queue;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs run at once.
    pub slots: usize,
    /// How long a claim holds without renewal; renewed every third of it.
    pub lease: Duration,
    /// This host's name in the queue (`dockless jobs` shows it).
    pub host: String,
    /// How often an idle worker looks for work when no notification arrives.
    pub poll: Duration,
}

/// Why the worker stopped a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// `dockless kill`.
    Killed,
    /// Another worker holds the job now.
    Lost(String),
    /// The worker is shutting down: the job goes back to the queue.
    Shutdown,
}

struct Running {
    claimed: Claimed,
    job: child::JobProcess,
    renew_at: Instant,
    stop: Option<Stop>,
}

/// A job whose process ended, waiting to be recorded (the database may be away).
struct Ended {
    claim: Claim,
    stop: Option<Stop>,
    outcome: child::Outcome,
}

/// Runs jobs until SIGTERM or SIGINT; returns when every running job is stopped and given
/// back.
pub fn run(options: &Options, paths: &Paths) -> anyhow::Result<()> {
    let url = crate::stages::queue::url(paths)?.to_string();
    let worker = worker_id(&options.host);
    let mut connection = Connection::open(paths)?;
    collect_abandoned(paths);
    eprintln!(
        "dockless worker {worker}: {} slot(s), lease {} s",
        options.slots,
        options.lease.as_secs()
    );
    let (log_tx, log_rx) = mpsc::channel::<(Claim, String)>();
    let mut running: Vec<Running> = Vec::new();
    let mut ended: Vec<Ended> = Vec::new();
    let mut logs: BTreeMap<(i64, i32), (Claim, String)> = BTreeMap::new();
    let mut shutting_down = false;
    loop {
        if !shutting_down && crate::signals::received().is_some() {
            shutting_down = true;
            eprintln!("dockless worker: stopping; running jobs go back to the queue");
            for r in &mut running {
                r.stop.get_or_insert(Stop::Shutdown);
                r.job.terminate();
            }
        }
        // Jobs whose process ended.
        let mut i = 0;
        while i < running.len() {
            if let Some(outcome) = running[i].job.try_finish()? {
                let r = running.swap_remove(i);
                ended.push(Ended {
                    claim: r.claimed.claim,
                    stop: r.stop,
                    outcome,
                });
            } else {
                i += 1;
            }
        }
        // What the jobs printed; after the ended ones were collected, so that an ended job's
        // last lines are stored before its end.
        while let Ok((claim, text)) = log_rx.try_recv() {
            let entry = logs
                .entry((claim.job_id, claim.attempt))
                .or_insert_with(|| (claim, String::new()));
            entry.1.push_str(&text);
        }
        if shutting_down && running.is_empty() && ended.is_empty() && logs.is_empty() {
            return Ok(());
        }
        let Some(queue) = connection.get(paths) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let step = (|| -> anyhow::Result<()> {
            flush_logs(queue, &mut logs)?;
            while let Some(e) = ended.pop() {
                record(queue, &e)?;
            }
            let now = Instant::now();
            for r in running.iter_mut().filter(|r| r.renew_at <= now) {
                r.renew_at = now + options.lease / 3;
                match queue.jobs.renew(&r.claimed.claim, options.lease)? {
                    Renewal::Held => {}
                    Renewal::Kill => {
                        if r.stop.is_none() {
                            r.stop = Some(Stop::Killed);
                            r.job.terminate();
                        }
                    }
                    Renewal::Lost(why) => {
                        if r.stop.is_none() {
                            eprintln!(
                                "dockless worker: job {} lost: {why}; stopping it",
                                r.claimed.claim.job_id
                            );
                            r.stop = Some(Stop::Lost(why));
                            r.job.terminate();
                        }
                    }
                }
            }
            while !shutting_down && running.len() < options.slots {
                let Some(claimed) = queue.jobs.claim(&worker, &options.host, options.lease)? else {
                    break;
                };
                let job_id = claimed.claim.job_id;
                match child::JobProcess::start(&claimed, queue, &url, paths, log_tx.clone()) {
                    Ok(job) => {
                        eprintln!(
                            "dockless worker: job {job_id} ({}) attempt {} started",
                            claimed.component_id, claimed.claim.attempt
                        );
                        running.push(Running {
                            renew_at: Instant::now() + options.lease / 3,
                            claimed,
                            job,
                            stop: None,
                        });
                    }
                    Err(e) => {
                        // Nothing ran: the job ends with why (a document sealed with another
                        // key, a job file this version cannot read).
                        let message = format!("the worker could not start the job: {e:#}");
                        queue
                            .jobs
                            .end(&claimed.claim, JobStatus::Error, Some(&message))?;
                    }
                }
            }
            // While jobs run, look at them often: a slot freed is claimed again at once.
            // Waiting for notifications costs the database nothing.
            let wait = if running.is_empty() {
                options.poll
            } else {
                Duration::from_millis(20)
            };
            for wakeup in queue.jobs.wait(wait)? {
                if let Wakeup::Kill(id) = wakeup
                    && let Some(r) = running.iter_mut().find(|r| r.claimed.claim.job_id == id)
                    && r.stop.is_none()
                {
                    r.stop = Some(Stop::Killed);
                    r.job.terminate();
                }
            }
            Ok(())
        })();
        if let Err(e) = step {
            connection.lost(&e);
        }
    }
}

/// Stores what the jobs printed since the last call (one row per job attempt).
fn flush_logs(
    queue: &mut Queue,
    logs: &mut BTreeMap<(i64, i32), (Claim, String)>,
) -> anyhow::Result<()> {
    while let Some((key, (claim, text))) = logs.pop_first() {
        if let Err(e) = queue.jobs.append_log(&claim, &text) {
            logs.insert(key, (claim, text));
            return Err(e.into());
        }
    }
    Ok(())
}

/// Ends a job whose process ended, as its outcome says.
fn record(queue: &mut Queue, e: &Ended) -> anyhow::Result<()> {
    let claim = &e.claim;
    let result = e.outcome.result.as_ref();
    if let Some(result) = result {
        queue.jobs.set_result(claim, result)?;
    }
    let field = |key: &str| result.and_then(|r| r.get(key));
    let message = field("message").and_then(Value::as_str).map(str::to_string);
    let retryable = field("retryable").and_then(Value::as_bool) == Some(true);
    match &e.stop {
        Some(Stop::Lost(_)) => return Ok(()),
        Some(Stop::Shutdown) => {
            queue
                .jobs
                .release(claim, "its worker was stopped before the job ended")?;
            return Ok(());
        }
        _ => {}
    }
    if retryable {
        let reason = format!(
            "retried: the Storage could not be reached ({})",
            message.as_deref().unwrap_or("no message")
        );
        if queue.jobs.release(claim, &reason)? {
            eprintln!("dockless worker: job {} given back: {reason}", claim.job_id);
            return Ok(());
        }
    }
    let (status, message) = match (&e.stop, field("status").and_then(Value::as_str)) {
        (Some(Stop::Killed), _) => (
            JobStatus::Terminated,
            Some("killed by `dockless kill`: no output mapping, no state stored".to_string()),
        ),
        (_, Some("success")) => (JobStatus::Success, message),
        (_, Some("terminated")) => (JobStatus::Terminated, message),
        (_, Some(_)) => (JobStatus::Error, message),
        (_, None) => (
            JobStatus::Error,
            Some(format!(
                "the job's process ended without a result ({}): {}",
                e.outcome.exit,
                e.outcome.stderr_tail.trim()
            )),
        ),
    };
    let now = queue.jobs.end(claim, status, message.as_deref())?;
    eprintln!("dockless worker: job {} {now}", claim.job_id);
    Ok(())
}

/// The queue connection, reopened with backoff after it broke.
struct Connection {
    queue: Option<Queue>,
    retry_at: Instant,
    backoff: Duration,
}

impl Connection {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(10);

    fn open(paths: &Paths) -> anyhow::Result<Connection> {
        let mut queue = crate::stages::queue::open(paths)?;
        queue.jobs.listen()?;
        Ok(Connection {
            queue: Some(queue),
            retry_at: Instant::now(),
            backoff: Self::FIRST_BACKOFF,
        })
    }

    /// The open queue, reconnecting when it is time to try again.
    fn get(&mut self, paths: &Paths) -> Option<&mut Queue> {
        if self.queue.as_ref().is_some_and(|q| q.jobs.is_closed()) {
            self.queue = None;
        }
        if self.queue.is_none() && Instant::now() >= self.retry_at {
            let opened = crate::stages::queue::open(paths).and_then(|mut q| {
                q.jobs.listen()?;
                Ok(q)
            });
            match opened {
                Ok(q) => {
                    eprintln!("dockless worker: connected to the queue again");
                    self.queue = Some(q);
                    self.backoff = Self::FIRST_BACKOFF;
                }
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "reconnecting failed");
                    self.retry_at = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
                }
            }
        }
        self.queue.as_mut()
    }

    /// The connection failed: drop it, claim nothing until it is back.
    fn lost(&mut self, error: &anyhow::Error) {
        eprintln!(
            "dockless worker: lost the queue ({error:#}); running jobs go on, no new claims \
             until it is back"
        );
        self.queue = None;
        self.retry_at = Instant::now() + self.backoff;
    }
}

/// `host/pid/nonce`: unique per worker process, readable in `dockless jobs`.
fn worker_id(host: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}/{}/{:04x}", std::process::id(), nanos & 0xffff)
}

/// Removes what killed workers left of their jobs' files (`dockless gc`, and every worker as
/// it starts); returns how many folders.
pub fn collect_abandoned(paths: &Paths) -> usize {
    child::collect_abandoned(&paths.queued())
}

/// This host's name (`uname -n`).
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
