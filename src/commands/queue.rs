//! `dockless submit`, `worker`, `jobs`, `job`, `logs`, `kill` and `ps`: the job queue of a
//! PostgreSQL Storage ([`crate::worker`], `dockless_staging::storage::postgres`), and the
//! jobs running on this host.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dockless_staging::storage::postgres::{JobRecord, Killed, NewJob};
use dockless_staging::time::format_rfc3339;
use serde_json::{Value, json};

use crate::cli::queue::{
    JobsArgs, KillArgs, LogsArgs, PsArgs, ShowJobArgs, SubmitArgs, WorkerArgs,
};
use crate::paths::Paths;

/// `dockless submit JOB.json`: checks the job file, takes the files it names into it,
/// seals it and enqueues it; the id is the last word printed.
pub fn submit(args: SubmitArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("cannot read the job file {}", args.job.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("job file {}: not JSON", args.job.display()))?;
    super::job_file::check(&value, &args.job)?;
    let packed = crate::worker::document::pack(&args.job, value)?;
    let mut queue = crate::stages::queue::open(paths)?;
    let document = queue
        .cipher
        .seal_document(&packed.component_id, &packed.document)?;
    let id = queue.jobs.submit(&NewJob {
        component_id: packed.component_id,
        config_id: packed.config_id,
        document,
        max_attempts: args.max_attempts,
    })?;
    print(&format!("Submitted job {id}"));
    Ok(ExitCode::SUCCESS)
}

/// `dockless worker`: runs queued jobs until SIGTERM or SIGINT.
pub fn worker(args: WorkerArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let options = crate::worker::Options {
        slots: usize::from(args.slots),
        lease: args.lease.max(Duration::from_secs(1)),
        host: args.host.unwrap_or_else(crate::worker::host_name),
        poll: args.poll.max(Duration::from_millis(100)),
    };
    crate::worker::run(&options, paths)?;
    Ok(ExitCode::SUCCESS)
}

/// `dockless jobs`: a table, or a JSON array with `--json`.
pub fn jobs(args: JobsArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let mut queue = crate::stages::queue::open(paths)?;
    let jobs = queue.jobs.list(args.status, args.limit.max(1))?;
    if args.json {
        let list: Vec<Value> = jobs.iter().map(record_json).collect();
        print(&serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::from("ID\tSTATUS\tCOMPONENT\tCONFIG\tHOST\tATTEMPT\tSTARTED\tFINISHED\n");
    for j in &jobs {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}/{}\t{}\t{}\n",
            j.id,
            j.status,
            j.component_id,
            j.config_id.as_deref().unwrap_or("-"),
            j.host.as_deref().unwrap_or("-"),
            j.attempt,
            j.max_attempts,
            j.started_at.map_or("-".into(), format_rfc3339),
            j.finished_at.map_or("-".into(), format_rfc3339),
        ));
    }
    let _ = write!(std::io::stdout().lock(), "{out}");
    Ok(ExitCode::SUCCESS)
}

/// `dockless job ID`.
pub fn job(args: ShowJobArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let mut queue = crate::stages::queue::open(paths)?;
    let Some(job) = queue.jobs.get(args.id)? else {
        bail!("no job {} in the queue", args.id);
    };
    let record = record_json(&job);
    if args.json {
        // The run's result object (as `dockless run --json` prints it) with the queue's view
        // of the job under `job`; before a result exists, the job's status alone.
        let mut doc = match job.result.clone() {
            Some(Value::Object(result)) => Value::Object(result),
            _ => json!({"status": job.status.as_str()}),
        };
        doc["job"] = record;
        print(&serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let doc = record;
    let mut out = String::new();
    for key in [
        "id",
        "status",
        "component_id",
        "config_id",
        "host",
        "worker",
        "attempt",
        "submitted_at",
        "started_at",
        "finished_at",
        "message",
    ] {
        match &doc[key] {
            Value::Null => {}
            Value::String(s) => out.push_str(&format!("{key}: {s}\n")),
            other => out.push_str(&format!("{key}: {other}\n")),
        }
    }
    let _ = write!(std::io::stdout().lock(), "{out}");
    Ok(ExitCode::SUCCESS)
}

/// `dockless logs ID [--follow]`.
pub fn logs(args: LogsArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let mut queue = crate::stages::queue::open(paths)?;
    if queue.jobs.get(args.id)?.is_none() {
        bail!("no job {} in the queue", args.id);
    }
    let mut after = 0;
    let mut attempt_shown = 0;
    loop {
        // The status first: a log line stored before the job ended is then surely read.
        let ended = queue.jobs.get(args.id)?.is_none_or(|j| j.status.is_final());
        loop {
            let chunk = queue.jobs.log_after(args.id, after)?;
            if chunk.is_empty() {
                break;
            }
            let mut out = std::io::stdout().lock();
            for (seq, attempt, text) in chunk {
                if attempt != attempt_shown && attempt > 1 {
                    let _ = writeln!(out, "--- attempt {attempt} ---");
                }
                attempt_shown = attempt;
                let _ = out.write_all(text.as_bytes());
                after = seq;
            }
            let _ = out.flush();
        }
        if !args.follow || ended {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `dockless kill ID`: a queued job through the database (with a PostgreSQL Storage and a
/// numeric id), else a job running on this host by its run id.
pub fn kill(args: KillArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    if let (Some(_), Ok(id)) = (paths.postgres_url(), args.id.parse::<i64>())
        && let Some(killed) = crate::stages::queue::open(paths)?.jobs.kill(id)?
    {
        let text = match killed {
            Killed::BeforeStart => format!("Job {id} terminated before it started"),
            Killed::Asked => format!("Job {id} is terminating: its worker stops it"),
            Killed::AlreadyAsked => format!("Job {id} is already terminating"),
            Killed::AlreadyEnded(status) => format!("Job {id} had already ended ({status})"),
        };
        print(&text);
        return Ok(ExitCode::SUCCESS);
    }
    let local = crate::pipeline::workdir::live(&paths.jobs());
    let Some(job) = local.iter().find(|j| {
        j["run_id"].as_str() == Some(&args.id)
            || j["pid"]
                .as_u64()
                .is_some_and(|pid| pid.to_string() == args.id)
    }) else {
        bail!(
            "no job {} runs on this host (`dockless ps` lists them{})",
            args.id,
            if paths.postgres_url().is_some() {
                "; a queued job's id is in `dockless jobs`"
            } else {
                ""
            }
        );
    };
    let pid = job["pid"]
        .as_i64()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        .context("the running job's record has no process id")?;
    // SIGTERM, as `podman stop`: the job stops its containers, stores nothing and exits.
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot signal the job's process {}", pid.as_raw_nonzero()))?;
    print(&format!(
        "Job {} (process {}) is terminating",
        args.id,
        pid.as_raw_nonzero()
    ));
    Ok(ExitCode::SUCCESS)
}

/// `dockless ps`: the jobs running on this host.
pub fn ps(args: PsArgs, paths: &Paths) -> anyhow::Result<ExitCode> {
    let jobs = crate::pipeline::workdir::live(&paths.jobs());
    if args.json {
        print(&serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::from("RUN ID\tPID\tCOMPONENT\tCONFIG\tROW\tQUEUED JOB\tSTARTED\tIMAGE\n");
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for j in &jobs {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            text(&j["run_id"]),
            text(&j["pid"]),
            text(&j["component_id"]),
            text(&j["config_id"]),
            text(&j["row_id"]),
            text(&j["queue_job"]),
            text(&j["started_at"]),
            text(&j["image"]),
        ));
    }
    let _ = write!(std::io::stdout().lock(), "{out}");
    Ok(ExitCode::SUCCESS)
}

/// A job as `dockless jobs --json` prints it: Keboola's status words, RFC 3339 times.
fn record_json(j: &JobRecord) -> Value {
    json!({
        "id": j.id,
        "status": j.status.as_str(),
        "component_id": j.component_id,
        "config_id": j.config_id,
        "host": j.host,
        "worker": j.worker,
        "attempt": j.attempt,
        "max_attempts": j.max_attempts,
        "submitted_at": format_rfc3339(j.submitted_at),
        "started_at": j.started_at.map(format_rfc3339),
        "finished_at": j.finished_at.map(format_rfc3339),
        "message": j.message,
        "committed_attempt": j.committed_attempt,
    })
}

fn print(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
