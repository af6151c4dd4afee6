//! The job queue in the Storage's PostgreSQL database (schema: `migrations/0002_queue.sql`).
//!
//! Claiming takes the oldest runnable job with `SELECT ... FOR UPDATE SKIP LOCKED`, so
//! workers never wait for each other and never take the same job. A claim is a lease the
//! worker renews while the job runs; a job whose lease ran out (its worker died, or lost the
//! database) is claimed again with the next attempt number, up to the job's attempt limit.
//! Every write that ends a job or one of its rows checks the attempt and the worker inside
//! the job's own transaction (`Transaction::queue_step`), which is what makes a job end exactly once: a worker
//! that lost its lease commits nothing. Keboola's one-job-per-configuration rule is a partial
//! unique index, so it holds across hosts whatever the timing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::queue::{Claim, JobStatus, Step};

/// Channel a submit notifies, so that idle workers claim at once instead of at their next
/// poll.
pub const SUBMITTED_CHANNEL: &str = "dockless_jobs";
/// Channel a kill notifies, with the job id as payload.
pub const KILL_CHANNEL: &str = "dockless_kill";

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Component id (shown, and the one-job-per-configuration key).
    pub component_id: String,
    /// Configuration id, if the job has one.
    pub config_id: Option<String>,
    /// The job document, already sealed ([`crate::StateCipher::seal_document`]).
    pub document: String,
    /// How many times the job may be started before a lost worker fails it.
    pub max_attempts: i32,
}

/// A job a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The hold: job, attempt, worker.
    pub claim: Claim,
    /// Component id.
    pub component_id: String,
    /// Configuration id.
    pub config_id: Option<String>,
    /// The sealed job document.
    pub document: String,
}

/// What a lease renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, for another lease period.
    Held,
    /// Still ours, but a kill was asked for: stop the job.
    Kill,
    /// Not ours any more; nothing of this attempt may be stored.
    Lost(String),
}

/// What a kill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Killed {
    /// The job had not started: it is terminated.
    BeforeStart,
    /// Its worker was asked to stop it.
    Asked,
    /// A kill was already asked for.
    AlreadyAsked,
    /// It had already ended, with this status.
    AlreadyEnded(JobStatus),
}

/// A job as `dockless jobs` and `dockless job` show it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Job id.
    pub id: i64,
    /// Current status.
    pub status: JobStatus,
    /// Component id.
    pub component_id: String,
    /// Configuration id.
    pub config_id: Option<String>,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The host of the worker that holds (or last held) it.
    pub host: Option<String>,
    /// The worker that holds (or last held) it.
    pub worker: Option<String>,
    /// When it was submitted (unix microseconds).
    pub submitted_at: i64,
    /// When its first attempt started (unix microseconds).
    pub started_at: Option<i64>,
    /// When it ended (unix microseconds).
    pub finished_at: Option<i64>,
    /// Why it ended as it did.
    pub message: Option<String>,
    /// The attempt that stored its output.
    pub committed_attempt: Option<i32>,
    /// The result object of its run, when recorded.
    pub result: Option<Value>,
}

const RECORD_COLUMNS: &str = "id, status, component_id, config_id, attempt, max_attempts, \
     host, worker, submitted_at, started_at, finished_at, message, committed_attempt";

fn db(during: &'static str) -> impl FnOnce(postgres::Error) -> Error {
    Error::pg(during)
}

fn status_of(text: &str) -> Result<JobStatus> {
    text.parse().map_err(|reason: String| Error::JobLost {
        job: 0,
        attempt: 0,
        reason,
    })
}

fn record(row: &postgres::Row, with_result: bool) -> Result<JobRecord> {
    Ok(JobRecord {
        id: row.get("id"),
        status: status_of(row.get("status"))?,
        component_id: row.get("component_id"),
        config_id: row.get("config_id"),
        attempt: row.get("attempt"),
        max_attempts: row.get("max_attempts"),
        host: row.get("host"),
        worker: row.get("worker"),
        submitted_at: row
            .get::<_, DateTime<Utc>>("submitted_at")
            .timestamp_micros(),
        started_at: micros(row.get("started_at")),
        finished_at: micros(row.get("finished_at")),
        message: row.get("message"),
        committed_attempt: row.get("committed_attempt"),
        result: if with_result { row.get("result") } else { None },
    })
}

fn micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn lease_seconds(lease: Duration) -> f64 {
    lease.as_secs_f64().max(1.0)
}

/// Enqueues a job and wakes idle workers; returns its id.
fn submit(client: &mut Client, job: &NewJob) -> Result<i64> {
    let mut tx = client.transaction().map_err(db("starting a submit"))?;
    let row = tx
        .query_one(
            "INSERT INTO jobs (component_id, config_id, document, max_attempts)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[
                &job.component_id,
                &job.config_id,
                &job.document,
                &job.max_attempts,
            ],
        )
        .map_err(db("inserting the job"))?;
    tx.execute(&format!("NOTIFY {SUBMITTED_CHANNEL}"), &[])
        .map_err(db("notifying the workers"))?;
    tx.commit().map_err(db("committing the submit"))?;
    Ok(row.get(0))
}

/// Claims the next job for `worker` on `host` with a lease of `lease`: first a job whose
/// worker was lost (its lease ran out), then the oldest waiting job whose configuration runs
/// no other job (and has no older job waiting). Jobs lost too often, or lost while being
/// killed, are ended on the way. `None` when there is nothing to run.
fn claim(
    client: &mut Client,
    worker: &str,
    host: &str,
    lease: Duration,
) -> Result<Option<Claimed>> {
    let seconds = lease_seconds(lease);
    let mut tx = client.transaction().map_err(db("starting a claim"))?;
    // Jobs whose worker is gone.
    loop {
        let Some(row) = tx
            .query_opt(
                "SELECT id, status, attempt, max_attempts, worker FROM jobs
                 WHERE status IN ('processing', 'terminating') AND lease_until < now()
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[],
            )
            .map_err(db("looking for jobs whose worker was lost"))?
        else {
            break;
        };
        let id: i64 = row.get(0);
        let status = status_of(row.get(1))?;
        let attempt: i32 = row.get(2);
        let max_attempts: i32 = row.get(3);
        let lost: Option<String> = row.get(4);
        let lost = lost.unwrap_or_default();
        if status == JobStatus::Terminating {
            tx.execute(
                "UPDATE jobs SET status = 'terminated', finished_at = now(),
                 lease_until = NULL, message = $2 WHERE id = $1",
                &[
                    &id,
                    &format!("killed; its worker {lost} was lost before it had stopped"),
                ],
            )
            .map_err(db("ending a killed job"))?;
            continue;
        }
        if attempt >= max_attempts {
            tx.execute(
                "UPDATE jobs SET status = 'error', finished_at = now(),
                 lease_until = NULL, message = $2 WHERE id = $1",
                &[
                    &id,
                    &format!(
                        "the job lost its worker in each of its {attempt} attempts (last: \
                         {lost}); not retried"
                    ),
                ],
            )
            .map_err(db("failing a job lost too often"))?;
            continue;
        }
        let row = tx
            .query_one(
                "UPDATE jobs SET attempt = attempt + 1, worker = $2, host = $3,
                 lease_until = now() + make_interval(secs => $4)
                 WHERE id = $1
                 RETURNING attempt, component_id, config_id, document",
                &[&id, &worker, &host, &seconds],
            )
            .map_err(db("claiming a job whose worker was lost"))?;
        tx.commit().map_err(db("committing a claim"))?;
        return Ok(Some(claimed(id, worker, &row)));
    }
    let candidates = tx
        .query(
            "SELECT id FROM jobs j
             WHERE status = 'waiting'
               AND (config_id IS NULL OR NOT EXISTS (
                     SELECT 1 FROM jobs o
                     WHERE o.component_id = j.component_id AND o.config_id = j.config_id
                       AND (o.status IN ('processing', 'terminating')
                            OR (o.status = 'waiting' AND o.id < j.id))))
             ORDER BY id LIMIT 8 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .map_err(db("looking for waiting jobs"))?;
    for candidate in candidates {
        let id: i64 = candidate.get(0);
        let mut attempt = tx.transaction().map_err(db("a claim's savepoint"))?;
        let updated = attempt.query_one(
            "UPDATE jobs SET status = 'processing', attempt = attempt + 1,
             worker = $2, host = $3, lease_until = now() + make_interval(secs => $4),
             started_at = coalesce(started_at, now())
             WHERE id = $1
             RETURNING attempt, component_id, config_id, document",
            &[&id, &worker, &host, &seconds],
        );
        match updated {
            Ok(row) => {
                attempt.commit().map_err(db("a claim's savepoint"))?;
                tx.commit().map_err(db("committing a claim"))?;
                return Ok(Some(claimed(id, worker, &row)));
            }
            // Another worker started a job of the same configuration meanwhile.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                attempt.rollback().map_err(db("a claim's savepoint"))?;
            }
            Err(e) => return Err(db("claiming a waiting job")(e)),
        }
    }
    tx.commit().map_err(db("committing a claim"))?;
    Ok(None)
}

fn claimed(id: i64, worker: &str, row: &postgres::Row) -> Claimed {
    Claimed {
        claim: Claim {
            job_id: id,
            attempt: row.get(0),
            worker: worker.to_string(),
        },
        component_id: row.get(1),
        config_id: row.get(2),
        document: row.get(3),
    }
}

/// Extends the lease of `claim`. A job whose row is locked (its output transaction is
/// committing right now) keeps its lease untouched this time rather than waiting.
fn renew(client: &mut Client, claim: &Claim, lease: Duration) -> Result<Renewal> {
    let row = client
        .query_opt(
            "WITH held AS (
                 SELECT id FROM jobs
                 WHERE id = $1 AND attempt = $2 AND worker = $3
                   AND status IN ('processing', 'terminating')
                 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET lease_until = now() + make_interval(secs => $4)
             FROM held WHERE j.id = held.id
             RETURNING j.status",
            &[
                &claim.job_id,
                &claim.attempt,
                &claim.worker,
                &lease_seconds(lease),
            ],
        )
        .map_err(db("renewing a lease"))?;
    match row {
        Some(row) if status_of(row.get(0))? == JobStatus::Terminating => Ok(Renewal::Kill),
        Some(_) => Ok(Renewal::Held),
        None => match holder(client, claim, false)? {
            Ok(_) => Ok(Renewal::Held),
            Err(reason) => Ok(Renewal::Lost(reason)),
        },
    }
}

/// The job's status when `claim` still holds it (an unfinished job of this attempt and
/// worker), else why not: the one rule behind a renewal and a job's own commit. With `lock`,
/// the job's row stays locked until the caller's transaction ends.
fn holder(
    client: &mut impl GenericClient,
    claim: &Claim,
    lock: bool,
) -> Result<Result<JobStatus, String>> {
    let sql = if lock {
        "SELECT status, attempt, worker FROM jobs WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT status, attempt, worker FROM jobs WHERE id = $1"
    };
    let row = client
        .query_opt(sql, &[&claim.job_id])
        .map_err(db("reading a job"))?;
    let Some(row) = row else {
        return Ok(Err("the job is gone from the queue".into()));
    };
    let status = status_of(row.get(0))?;
    let attempt: i32 = row.get(1);
    let worker: Option<String> = row.get(2);
    Ok(
        if attempt != claim.attempt || worker.as_deref() != Some(&claim.worker) {
            Err(format!(
                "attempt {attempt} of worker {} holds it now (this worker's lease ran out)",
                worker.unwrap_or_default()
            ))
        } else if status.is_final() {
            Err(format!("the job already ended ({status})"))
        } else {
            Ok(status)
        },
    )
}

/// Records `step` inside a job's own transaction (the Storage transaction of its output),
/// after checking that `claim` still holds the job and no kill was asked for; see the module
/// docs.
pub(crate) fn step(
    tx: &mut postgres::Transaction<'_>,
    claim: &Claim,
    step: Step<'_>,
) -> Result<()> {
    let lost = |reason: String| Error::JobLost {
        job: claim.job_id,
        attempt: claim.attempt,
        reason,
    };
    match holder(tx, claim, true)? {
        Ok(JobStatus::Processing) => {}
        Ok(JobStatus::Terminating) => return Err(lost("it was killed".into())),
        Ok(other) => return Err(lost(format!("the job is {other}"))),
        Err(reason) => return Err(lost(reason)),
    }
    match step {
        Step::RowDone { row_id, state } => {
            let state = state.map(|(_, v)| v);
            tx.execute(
                "INSERT INTO job_rows (job_id, row_id, state, attempt)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (job_id, row_id) DO UPDATE
                 SET state = excluded.state, attempt = excluded.attempt",
                &[&claim.job_id, &row_id, &state, &claim.attempt],
            )
            .map_err(db("marking a row done"))?;
        }
        Step::End(status) => {
            tx.execute(
                "UPDATE jobs SET status = $2, finished_at = now(), lease_until = NULL,
                 committed_attempt = attempt
                 WHERE id = $1",
                &[&claim.job_id, &status.as_str()],
            )
            .map_err(db("ending the job"))?;
        }
    }
    Ok(())
}

/// Ends the job `claim` holds with `status` and `message`, unless its own transaction did
/// already (then only the message is added) or the claim no longer holds it. A job being
/// killed always ends `terminated`. Returns the status the job has now.
fn end(
    client: &mut Client,
    claim: &Claim,
    status: JobStatus,
    message: Option<&str>,
) -> Result<JobStatus> {
    let row = client
        .query_opt(
            "UPDATE jobs SET
                 status = CASE WHEN status = 'terminating' THEN 'terminated' ELSE $4 END,
                 finished_at = now(), lease_until = NULL, message = $5
             WHERE id = $1 AND attempt = $2 AND worker = $3
               AND status IN ('processing', 'terminating')
             RETURNING status",
            &[
                &claim.job_id,
                &claim.attempt,
                &claim.worker,
                &status.as_str(),
                &message,
            ],
        )
        .map_err(db("ending a job"))?;
    if let Some(row) = row {
        return status_of(row.get(0));
    }
    // Ended by its own transaction (success, or error with write_always outputs): keep the
    // message of the run; or not ours any more: say what the job is now.
    let row = client
        .query_one(
            "WITH noted AS (
                 UPDATE jobs SET message = coalesce(message, $4)
                 WHERE id = $1 AND attempt = $2 AND worker = $3 AND committed_attempt = $2
                 RETURNING status)
             SELECT status FROM noted
             UNION ALL SELECT status FROM jobs WHERE id = $1
             LIMIT 1",
            &[&claim.job_id, &claim.attempt, &claim.worker, &message],
        )
        .map_err(db("reading an ended job"))?;
    status_of(row.get(0))
}

/// Gives the job `claim` holds back to the queue (waiting) for another attempt: its run could
/// not store its output because the database went away.
fn release(client: &mut Client, claim: &Claim, reason: &str) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE jobs SET status = 'waiting', worker = NULL, lease_until = NULL,
             message = $4
             WHERE id = $1 AND attempt = $2 AND worker = $3 AND status = 'processing'",
            &[&claim.job_id, &claim.attempt, &claim.worker, &reason],
        )
        .map_err(db("giving a job back to the queue"))?;
    Ok(n == 1)
}

/// Stores the result object of the attempt `claim` held (kept when a later attempt holds
/// the job).
fn set_result(client: &mut Client, claim: &Claim, result: &Value) -> Result<()> {
    client
        .execute(
            "UPDATE jobs SET result = $4
             WHERE id = $1 AND attempt = $2 AND worker = $3",
            &[&claim.job_id, &claim.attempt, &claim.worker, result],
        )
        .map_err(db("storing a job's result"))?;
    Ok(())
}

/// Appends to the stored log of the attempt `claim` holds.
fn append_log(client: &mut Client, claim: &Claim, text: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO job_logs (job_id, attempt, text) VALUES ($1, $2, $3)",
            &[&claim.job_id, &claim.attempt, &text],
        )
        .map_err(db("storing a job's log"))?;
    Ok(())
}

/// The log of job `id` after sequence number `after`, in order: `(seq, attempt, text)`.
fn log_after(client: &mut Client, id: i64, after: i64) -> Result<Vec<(i64, i32, String)>> {
    let rows = client
        .query(
            "SELECT seq, attempt, text FROM job_logs
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
            &[&id, &after],
        )
        .map_err(db("reading a job's log"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Rows of job `id` already stored by an earlier attempt, with their (sealed) held-back
/// states.
fn rows_done(client: &mut Client, id: i64) -> Result<Vec<(String, Option<Value>)>> {
    let rows = client
        .query(
            "SELECT row_id, state FROM job_rows WHERE job_id = $1",
            &[&id],
        )
        .map_err(db("reading a job's finished rows"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Jobs, newest first, optionally only those in `status`.
fn list(client: &mut Client, status: Option<JobStatus>, limit: i64) -> Result<Vec<JobRecord>> {
    let status = status.map(JobStatus::as_str);
    let rows = client
        .query(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM jobs
                 WHERE $1::text IS NULL OR status = $1
                 ORDER BY id DESC LIMIT $2"
            ),
            &[&status, &limit],
        )
        .map_err(db("listing jobs"))?;
    rows.iter().map(|r| record(r, false)).collect()
}

/// One job with its result, or `None`.
fn get(client: &mut Client, id: i64) -> Result<Option<JobRecord>> {
    let row = client
        .query_opt(
            &format!("SELECT {RECORD_COLUMNS}, result FROM jobs WHERE id = $1"),
            &[&id],
        )
        .map_err(db("reading a job"))?;
    row.map(|r| record(&r, true)).transpose()
}

/// Asks for job `id` to be stopped: a waiting job ends at once, a running one is marked
/// `terminating` and its worker notified.
fn kill(client: &mut Client, id: i64) -> Result<Option<Killed>> {
    let mut tx = client.transaction().map_err(db("starting a kill"))?;
    let Some(row) = tx
        .query_opt("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", &[&id])
        .map_err(db("reading the job to kill"))?
    else {
        return Ok(None);
    };
    let killed = match status_of(row.get(0))? {
        JobStatus::Waiting => {
            tx.execute(
                "UPDATE jobs SET status = 'terminated', finished_at = now(),
                 message = 'killed before it started' WHERE id = $1",
                &[&id],
            )
            .map_err(db("terminating a waiting job"))?;
            Killed::BeforeStart
        }
        JobStatus::Processing => {
            tx.execute(
                "UPDATE jobs SET status = 'terminating' WHERE id = $1",
                &[&id],
            )
            .map_err(db("asking for a kill"))?;
            tx.execute(&format!("NOTIFY {KILL_CHANNEL}, '{id}'"), &[])
                .map_err(db("notifying the worker"))?;
            Killed::Asked
        }
        JobStatus::Terminating => Killed::AlreadyAsked,
        ended => Killed::AlreadyEnded(ended),
    };
    tx.commit().map_err(db("committing a kill"))?;
    Ok(Some(killed))
}

/// Subscribes this connection to submits and kills (see [`wait`]).
fn listen(client: &mut Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "LISTEN {SUBMITTED_CHANNEL}; LISTEN {KILL_CHANNEL}"
        ))
        .map_err(db("listening for submits and kills"))
}

/// What woke a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// A job was submitted.
    Submitted,
    /// A kill of this job was asked for.
    Kill(i64),
}

/// Waits up to `timeout` for notifications (after [`listen`]); returns what arrived, empty
/// on timeout.
fn wait(client: &mut Client, timeout: Duration) -> Result<Vec<Wakeup>> {
    let mut notifications = client.notifications();
    let mut out = Vec::new();
    let first = notifications
        .timeout_iter(timeout)
        .next()
        .map_err(db("waiting for submits and kills"))?;
    let Some(first) = first else {
        return Ok(out);
    };
    out.push(wakeup(&first));
    // Whatever else arrived meanwhile, without waiting again.
    let mut rest = notifications.iter();
    while let Some(n) = rest.next().map_err(db("reading notifications"))? {
        out.push(wakeup(&n));
    }
    Ok(out)
}

fn wakeup(n: &postgres::Notification) -> Wakeup {
    match (n.channel(), n.payload().parse()) {
        (KILL_CHANNEL, Ok(id)) => Wakeup::Kill(id),
        _ => Wakeup::Submitted,
    }
}

/// Checks that this host's state key is the one every host of this database uses (the first
/// host to ask records a check value sealed with its key).
fn check_key(client: &mut Client, cipher: &crate::StateCipher) -> Result<()> {
    const CONTEXT: &str = "state key check";
    let sealed = cipher.seal_document(CONTEXT, &Value::String("dockless".into()))?;
    let row = client
        .query_one(
            "WITH mine AS (
                 INSERT INTO queue_settings (name, value) VALUES ('state_key_check', $1)
                 ON CONFLICT (name) DO NOTHING RETURNING value)
             SELECT value FROM mine
             UNION ALL SELECT value FROM queue_settings WHERE name = 'state_key_check'
             LIMIT 1",
            &[&sealed],
        )
        .map_err(db("checking the state key"))?;
    let stored: String = row.get(0);
    cipher
        .unseal_document(CONTEXT, &stored, "this database's state key check")
        .map(|_| ())
}

/// A connection to the job queue of a PostgreSQL Storage: what `submit`, `worker`, `jobs`,
/// `job`, `logs` and `kill` use. One per thread; a worker keeps one for claims, renewals and
/// notifications.
pub struct JobQueue {
    client: Client,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").finish_non_exhaustive()
    }
}

impl JobQueue {
    /// Connects to the database of `url` (as [`super::PostgresStorage`] does) and checks
    /// that its schema is current.
    pub fn connect(url: &str) -> Result<JobQueue> {
        Ok(JobQueue {
            client: super::connect_current(url)?,
        })
    }

    /// The connection broke (the server went away): reconnect before the next call.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Checks this host's state key against the one this database's jobs and state were
    /// sealed with: the first host to ask records a check value sealed with its key, every
    /// other host must decrypt it.
    pub fn check_key(&mut self, cipher: &crate::StateCipher) -> Result<()> {
        check_key(&mut self.client, cipher)
    }

    /// Enqueues a job; returns its id.
    pub fn submit(&mut self, job: &NewJob) -> Result<i64> {
        submit(&mut self.client, job)
    }

    /// Claims the next job for `worker` on `host` with a lease of `lease`: first a job whose
    /// worker was lost (its lease ran out), then the oldest waiting job whose configuration
    /// runs no other job and has no older job waiting. Jobs lost too often, or lost while being
    /// killed, are ended on the way. `None` when there is nothing to run.
    pub fn claim(&mut self, worker: &str, host: &str, lease: Duration) -> Result<Option<Claimed>> {
        claim(&mut self.client, worker, host, lease)
    }

    /// Extends the lease of `claim`; says whether a kill was asked for or the job was lost. A
    /// job whose output transaction is committing right now keeps its lease this time.
    pub fn renew(&mut self, claim: &Claim, lease: Duration) -> Result<Renewal> {
        renew(&mut self.client, claim, lease)
    }

    /// Ends the job `claim` holds with `status` and `message` after its run, unless its own
    /// transaction did already (then only the message is added) or the claim no longer holds
    /// it; a job being killed always ends `terminated`. Returns the job's status now.
    pub fn end(
        &mut self,
        claim: &Claim,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<JobStatus> {
        end(&mut self.client, claim, status, message)
    }

    /// Gives the job `claim` holds back to the queue for another attempt (its run could not
    /// store its output: the database went away); false when the claim no longer holds it.
    pub fn release(&mut self, claim: &Claim, reason: &str) -> Result<bool> {
        release(&mut self.client, claim, reason)
    }

    /// Stores an attempt's result object.
    pub fn set_result(&mut self, claim: &Claim, result: &Value) -> Result<()> {
        set_result(&mut self.client, claim, result)
    }

    /// Appends to an attempt's stored log.
    pub fn append_log(&mut self, claim: &Claim, text: &str) -> Result<()> {
        append_log(&mut self.client, claim, text)
    }

    /// A job's stored log after `after`: `(seq, attempt, text)`.
    pub fn log_after(&mut self, id: i64, after: i64) -> Result<Vec<(i64, i32, String)>> {
        log_after(&mut self.client, id, after)
    }

    /// Rows an earlier attempt stored, with their sealed states.
    pub fn rows_done(&mut self, id: i64) -> Result<Vec<(String, Option<Value>)>> {
        rows_done(&mut self.client, id)
    }

    /// Jobs, newest first.
    pub fn list(&mut self, status: Option<JobStatus>, limit: i64) -> Result<Vec<JobRecord>> {
        list(&mut self.client, status, limit)
    }

    /// One job with its result.
    pub fn get(&mut self, id: i64) -> Result<Option<JobRecord>> {
        get(&mut self.client, id)
    }

    /// Asks for a job to stop; `None` when there is no such job.
    pub fn kill(&mut self, id: i64) -> Result<Option<Killed>> {
        kill(&mut self.client, id)
    }

    /// Subscribes to submits and kills.
    pub fn listen(&mut self) -> Result<()> {
        listen(&mut self.client)
    }

    /// Waits up to `timeout` for submits and kills.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<Wakeup>> {
        wait(&mut self.client, timeout)
    }
}
