//! The job queue of the PostgreSQL Storage against the test environment's real PostgreSQL (a
//! fresh database per test): claims, leases, fencing of a worker that lost its lease, kills,
//! one job per configuration, bounded attempts, workers racing for the last job.
//!
//! Needs `scripts/test-env up` (PostgreSQL): run by `scripts/test`.

use std::time::Duration;

use dockless_staging::queue::{Claim, JobStatus, Step};
use dockless_staging::storage::postgres::{
    JobQueue, Killed, NewJob, PostgresStorage, Renewal, Wakeup,
};
use dockless_staging::storage::{RowSource, Storage};
use dockless_staging::{Error, TableId};

/// A fresh database with the schema set up (dropped at the end), and a queue connection.
struct Database(dockless_testkit::TestDatabase);

impl Database {
    fn new() -> Database {
        let db = dockless_testkit::TestDatabase::create();
        PostgresStorage::connect(&db.url).unwrap();
        Database(db)
    }

    fn queue(&self) -> JobQueue {
        JobQueue::connect(&self.0.url).unwrap()
    }
}

fn job(config: Option<&str>, max_attempts: i32) -> NewJob {
    NewJob {
        component_id: "test.component".into(),
        config_id: config.map(str::to_string),
        document: "sealed".into(),
        max_attempts,
    }
}

/// Rows for a load.
struct Rows(Vec<&'static str>);

impl RowSource for Rows {
    fn next_record(&mut self, record: &mut csv::StringRecord) -> dockless_staging::Result<bool> {
        let Some(value) = self.0.pop() else {
            return Ok(false);
        };
        record.clear();
        record.push_field(value);
        Ok(true)
    }
}

fn table() -> TableId {
    "out.c-q.t".parse().unwrap()
}

/// One job's output: a row in `out.c-q.t`, then its end, in one transaction.
fn output(
    storage: &mut PostgresStorage,
    claim: &Claim,
    value: &'static str,
) -> dockless_staging::Result<()> {
    let columns = vec!["v".to_string()];
    let mut tx = storage.begin()?;
    tx.prepare_table(&table(), &columns, &[])?;
    tx.load_rows(&table(), &columns, true, &mut Rows(vec![value]))?;
    tx.queue_step(claim, Step::End(JobStatus::Success))?;
    tx.commit()
}

fn rows(storage: &PostgresStorage) -> u64 {
    storage.table(&table()).unwrap().map_or(0, |t| t.rows)
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_worker_that_lost_its_lease_commits_nothing_and_the_next_attempt_commits_once() {
    let db = Database::new();
    let mut q = db.queue();
    let mut storage = PostgresStorage::connect(&db.0.url).unwrap();
    let id = q.submit(&job(Some("1"), 3)).unwrap();
    let first = q
        .claim("w1", "h1", Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_eq!((first.claim.job_id, first.claim.attempt), (id, 1));
    std::thread::sleep(Duration::from_millis(2100));
    let second = q
        .claim("w2", "h2", Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(second.claim.attempt, 2);
    // The first worker wakes up and stores its output: refused, nothing stored.
    let err = output(&mut storage, &first.claim, "first").unwrap_err();
    assert!(matches!(err, Error::JobLost { .. }), "{err}");
    assert!(err.to_string().contains("attempt 2 of worker w2"), "{err}");
    assert_eq!(rows(&storage), 0);
    assert_eq!(
        q.renew(&first.claim, Duration::from_secs(30)).unwrap(),
        Renewal::Lost("attempt 2 of worker w2 holds it now (this worker's lease ran out)".into())
    );
    output(&mut storage, &second.claim, "second").unwrap();
    assert_eq!(rows(&storage), 1);
    let record = q.get(id).unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Success);
    assert_eq!(record.committed_attempt, Some(2));
    // A late end from the first worker changes nothing.
    assert_eq!(
        q.end(&first.claim, JobStatus::Error, Some("late")).unwrap(),
        JobStatus::Success
    );
    // The second worker's own end after its commit keeps the success and adds the message.
    assert_eq!(
        q.end(&second.claim, JobStatus::Success, Some("done"))
            .unwrap(),
        JobStatus::Success
    );
    assert_eq!(q.get(id).unwrap().unwrap().message.as_deref(), Some("done"));
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_job_lost_in_every_attempt_fails_with_the_reason() {
    let db = Database::new();
    let mut q = db.queue();
    let id = q.submit(&job(None, 2)).unwrap();
    for attempt in 1..=2 {
        let c = q.claim("w", "h", Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(c.claim.attempt, attempt);
        std::thread::sleep(Duration::from_millis(2100));
    }
    assert!(q.claim("w", "h", Duration::from_secs(1)).unwrap().is_none());
    let record = q.get(id).unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Error);
    let message = record.message.unwrap();
    assert!(
        message.contains("lost its worker in each of its 2 attempts"),
        "{message}"
    );
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn one_job_of_a_configuration_runs_at_a_time_in_submission_order() {
    let db = Database::new();
    let mut q = db.queue();
    let a = q.submit(&job(Some("7"), 3)).unwrap();
    let b = q.submit(&job(Some("7"), 3)).unwrap();
    let other = q.submit(&job(Some("8"), 3)).unwrap();
    let first = q.claim("w", "h", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(first.claim.job_id, a);
    // b waits for a; the other configuration's job runs meanwhile.
    let next = q.claim("w", "h", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(next.claim.job_id, other);
    assert!(
        q.claim("w", "h", Duration::from_secs(30))
            .unwrap()
            .is_none()
    );
    q.end(&first.claim, JobStatus::Error, Some("failed"))
        .unwrap();
    let then = q.claim("w", "h", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(then.claim.job_id, b);
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn workers_racing_for_the_last_job_run_it_once() {
    let db = Database::new();
    for round in 0..20 {
        let id = db
            .queue()
            .submit(&job(Some(&format!("r{round}")), 3))
            .unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let url = db.0.url.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut q = JobQueue::connect(&url).unwrap();
                    barrier.wait();
                    q.claim(&format!("w{w}"), "h", Duration::from_secs(30))
                        .unwrap()
                        .map(|c| c.claim.job_id)
                })
            })
            .collect();
        let winners: Vec<i64> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(winners, vec![id], "round {round}");
    }
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_kill_ends_a_waiting_job_and_stops_a_running_one_from_committing() {
    let db = Database::new();
    let mut q = db.queue();
    let mut storage = PostgresStorage::connect(&db.0.url).unwrap();
    let running = q.submit(&job(Some("2"), 3)).unwrap();
    let c = q.claim("w", "h", Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(c.claim.job_id, running);
    let late = q.submit(&job(Some("3"), 3)).unwrap();
    assert_eq!(q.kill(late).unwrap(), Some(Killed::BeforeStart));
    assert_eq!(q.get(late).unwrap().unwrap().status, JobStatus::Terminated);
    assert_eq!(q.kill(running).unwrap(), Some(Killed::Asked));
    assert_eq!(q.kill(running).unwrap(), Some(Killed::AlreadyAsked));
    assert_eq!(
        q.renew(&c.claim, Duration::from_secs(30)).unwrap(),
        Renewal::Kill
    );
    let err = output(&mut storage, &c.claim, "x").unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert_eq!(rows(&storage), 0);
    assert_eq!(
        q.end(&c.claim, JobStatus::Error, Some("stopped")).unwrap(),
        JobStatus::Terminated
    );
    assert_eq!(
        q.kill(running).unwrap(),
        Some(Killed::AlreadyEnded(JobStatus::Terminated))
    );
    assert_eq!(q.kill(999_999).unwrap(), None);
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_row_marked_done_is_kept_with_its_state_for_the_retry() {
    let db = Database::new();
    let mut q = db.queue();
    let mut storage = PostgresStorage::connect(&db.0.url).unwrap();
    let id = q.submit(&job(Some("1"), 3)).unwrap();
    let c = q.claim("w", "h", Duration::from_secs(30)).unwrap().unwrap();
    let key = dockless_staging::StateKey {
        component: "test.component".into(),
        config: "1".into(),
        row: Some("r1".into()),
    };
    let state = serde_json::json!({"component": {"cursor": 5}});
    let mut tx = storage.begin().unwrap();
    tx.queue_step(
        &c.claim,
        Step::RowDone {
            row_id: "r1",
            state: Some((&key, &state)),
        },
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        q.rows_done(id).unwrap(),
        vec![("r1".to_string(), Some(state))]
    );
    // The job itself still runs.
    assert_eq!(q.get(id).unwrap().unwrap().status, JobStatus::Processing);
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn submits_and_kills_wake_a_listening_worker() {
    let db = Database::new();
    let mut worker = db.queue();
    worker.listen().unwrap();
    assert!(worker.wait(Duration::from_millis(100)).unwrap().is_empty());
    db.queue().submit(&job(None, 1)).unwrap();
    let woke = worker.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(woke, vec![Wakeup::Submitted]);
    let c = worker
        .claim("w", "h", Duration::from_secs(30))
        .unwrap()
        .unwrap();
    db.queue().kill(c.claim.job_id).unwrap();
    let woke = worker.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(woke, vec![Wakeup::Kill(c.claim.job_id)]);
}
