//! The job queue's vocabulary, shared by every backend that keeps one (the PostgreSQL
//! Storage) and by the runner that works it off.
//!
//! The queue lives in the same database as the Storage on purpose: a job's output mapping,
//! its new state and its terminal status are written by one [`Transaction`], so a job ends
//! exactly once whatever dies when. What makes that safe across hosts is the [`Claim`]: the
//! worker that runs a job holds it, and every write that ends the job (or one of its rows)
//! checks, inside the job's own transaction, that the claim still holds. A worker whose lease
//! expired while it was cut off, or whose job was killed meanwhile, commits nothing.
//!
//! [`Transaction`]: crate::storage::Transaction

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::storage::StateKey;

/// A job's state, in Keboola's job-state words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Submitted, not claimed yet (or given back for a retry).
    Waiting,
    /// A worker holds it and runs it.
    Processing,
    /// Ended well; its output and state are stored.
    Success,
    /// Ended with an error (the component's or the runner's); `message` says which.
    Error,
    /// A kill was asked for; the worker running it is stopping it.
    Terminating,
    /// Killed: no output mapping, no state.
    Terminated,
}

impl JobStatus {
    /// Every status, in the order a job goes through them.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Waiting,
        JobStatus::Processing,
        JobStatus::Terminating,
        JobStatus::Success,
        JobStatus::Error,
        JobStatus::Terminated,
    ];

    /// The word stored and shown (`waiting`, `processing`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Processing => "processing",
            JobStatus::Success => "success",
            JobStatus::Error => "error",
            JobStatus::Terminating => "terminating",
            JobStatus::Terminated => "terminated",
        }
    }

    /// A job in this status never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Error | JobStatus::Terminated
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let words: Vec<_> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown job status {s:?}: one of {}", words.join(", "))
            })
    }
}

/// A worker's hold on one attempt of one job. The attempt number fences a worker that lost
/// its lease: a later attempt of the same job has a higher number, and writes of the earlier
/// one are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The job's id.
    pub job_id: i64,
    /// Which attempt this is (1 for the first run).
    pub attempt: i32,
    /// The worker holding it (`host/pid/random`, unique per worker process).
    pub worker: String,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.job_id, self.attempt, self.worker)
    }
}

impl FromStr for Claim {
    type Err = String;

    /// The form [`Claim`]'s `Display` writes: `JOB:ATTEMPT:WORKER` (the worker may hold `:`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a job claim (JOB:ATTEMPT:WORKER): {s:?}");
        let mut parts = s.splitn(3, ':');
        let job_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let attempt = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let worker = parts.next().filter(|w| !w.is_empty()).ok_or_else(bad)?;
        Ok(Claim {
            job_id,
            attempt,
            worker: worker.to_string(),
        })
    }
}

/// What a job's own transaction records about the job (see
/// [`Transaction::queue_step`](crate::storage::Transaction::queue_step)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// One row of a configuration with rows has its output stored: a retry of the job skips
    /// it. Its state, held back until every row succeeded, is kept with the mark so that a
    /// retry can still store it at the end.
    RowDone {
        /// The row.
        row_id: &'a str,
        /// The row's new state, whose state it is.
        state: Option<(&'a StateKey, &'a Value)>,
    },
    /// The job ends with this status (success or error) together with its output and state.
    End(JobStatus),
}
