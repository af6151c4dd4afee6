//! The job queue of a PostgreSQL Storage as every command opens it: connected, its schema
//! current, and this host's state key checked against the one the database's jobs and state
//! were sealed with (every host of one Storage needs the same key file).

use anyhow::Context as _;
use dockless_staging::StateCipher;
use dockless_staging::queue::Claim;
use dockless_staging::storage::postgres::JobQueue;
use serde_json::Value;

use crate::paths::Paths;

/// The queue and the key its jobs are sealed with.
pub struct Queue {
    /// The connection.
    pub jobs: JobQueue,
    /// This host's state key.
    pub cipher: StateCipher,
}

/// Where the queue is: the `--storage` URL, which must be a PostgreSQL one.
pub fn url(paths: &Paths) -> anyhow::Result<&str> {
    paths.postgres_url().context(
        "the job queue lives in a PostgreSQL Storage: give --storage postgres://... (or set \
         DOCKLESS_STORAGE); the embedded SQLite Storage has none",
    )
}

/// Opens the queue of `paths`' Storage.
pub fn open(paths: &Paths) -> anyhow::Result<Queue> {
    let mut jobs = JobQueue::connect(url(paths)?)?;
    let cipher = StateCipher::open_or_create(&paths.state_key())?;
    jobs.check_key(&cipher)?;
    Ok(Queue { jobs, cipher })
}

/// Rows an earlier attempt of the claimed job stored, with their held-back states unsealed.
pub fn rows_done(
    paths: &Paths,
    claim: &Claim,
    component_id: &str,
    config_id: Option<&str>,
) -> anyhow::Result<Vec<(String, Option<Value>)>> {
    let mut queue = open(paths)?;
    let mut rows = queue.jobs.rows_done(claim.job_id)?;
    for (row, state) in &mut rows {
        if let Some(state) = state {
            let key = dockless_staging::StateKey {
                component: component_id.to_string(),
                config: config_id.unwrap_or_default().to_string(),
                row: Some(row.clone()),
            };
            queue.cipher.unseal(&key, state)?;
        }
    }
    Ok(rows)
}
