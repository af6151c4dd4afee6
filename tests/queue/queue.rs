//! Workers, jobs and faults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{busybox_component, json_of, text};
use crate::{Database, Host, kill_host, signal_group};

/// A component that sleeps `parameters.sleep` seconds (if given), then writes one row
/// `n, started, ended` (the host's uptime in seconds: one clock for every container of a
/// machine) to `hits.csv`, and says so on stdout.
const COMPONENT: &str = r#"#!/bin/sh
set -e
n=$(sed -n 's/.*"n": *\([0-9]*\).*/\1/p' /data/config.json | head -n 1)
s=$(sed -n 's/.*"sleep": *\([0-9.]*\).*/\1/p' /data/config.json | head -n 1)
started=$(cut -d ' ' -f 1 /proc/uptime)
if [ -n "$s" ]; then sleep "$s"; fi
ended=$(cut -d ' ' -f 1 /proc/uptime)
printf '"n","started","ended"\n"%s","%s","%s"\n' "$n" "$started" "$ended" > /data/out/tables/hits.csv
echo "job $n done"
"#;

const TAG: &str = "queue-test:1";

/// Builds the component into `host`'s store.
fn component(host: &Host) {
    busybox_component(&host.root, COMPONENT, TAG);
}

/// `n` hosts on the Storage at `url`, sharing the first one's state key (as an operator copies
/// it), each with the test component built into its store.
fn hosts(url: &str, n: usize) -> Vec<Host> {
    let first = Host::new(url, None);
    // The first command creates the key and records its check value in the database.
    let out = first.dockless(&["jobs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut all = vec![first];
    for _ in 1..n {
        let next = Host::new(url, Some(all[0].key()));
        all.push(next);
    }
    for host in &all {
        component(host);
    }
    all
}

/// A job file for job `n` of configuration `config` that sleeps `sleep` seconds.
fn job_file(dir: &Path, n: u32, config: &str, sleep: f64) -> PathBuf {
    let job = json!({
        "image": TAG,
        "component_id": "queue-test",
        "config_id": config,
        "configuration": {
            "parameters": {"n": n, "sleep": sleep},
            "storage": {"output": {"tables": [{
                "source": "hits.csv",
                "destination": "out.c-queue.hits",
                "incremental": true
            }]}}
        }
    });
    let path = dir.join(format!("job-{n}.json"));
    std::fs::write(&path, serde_json::to_vec(&job).unwrap()).unwrap();
    path
}

/// The rows of `out.c-queue.hits`: (n, started, ended).
fn hits(host: &Host) -> Vec<(u32, f64, f64)> {
    let out = host.dockless(&["storage", "export", "out.c-queue.hits"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(|v| v.trim_matches('"')).collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_hundred_jobs_on_three_workers_each_end_exactly_once() {
    let db = Database::create();
    let [a, b, c]: [Host; 3] = hosts(&db.url, 3).try_into().ok().unwrap();
    let files = tempfile::tempdir().unwrap();
    for n in 0..100 {
        a.submit(&job_file(files.path(), n, &format!("c{n}"), 0.0));
    }
    let workers: Vec<_> = [(&a, "a"), (&b, "b"), (&c, "c")]
        .into_iter()
        .map(|(h, name)| h.worker(name, &[]))
        .collect();
    let jobs = a.wait_all_ended(100, Duration::from_secs(900));
    for worker in &workers {
        signal_group(worker, libc::SIGTERM);
    }
    let failed: Vec<_> = jobs.iter().filter(|j| j["status"] != "success").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // Every job ran once, and each row is there once.
    assert!(jobs.iter().all(|j| j["attempt"] == 1), "{jobs:#?}");
    let rows = hits(&a);
    let distinct: BTreeSet<u32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(rows.len(), 100, "{rows:?}");
    assert_eq!(distinct.len(), 100);
    // The work was shared.
    let hosts: BTreeSet<&str> = jobs.iter().filter_map(|j| j["host"].as_str()).collect();
    assert!(hosts.len() >= 2, "one host did everything: {hosts:?}");
    for j in &jobs {
        for key in ["submitted_at", "started_at", "finished_at"] {
            let t = j[key].as_str().unwrap_or_else(|| panic!("{key} in {j}"));
            assert!(t.ends_with('Z') && t.contains('T'), "{key} = {t}");
        }
    }
    for worker in workers {
        let out = worker.wait_with_output();
        assert!(out.status.success(), "worker exit {:?}", out.status);
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn one_job_of_a_configuration_at_a_time_across_two_workers() {
    let db = Database::create();
    let [a, b]: [Host; 2] = hosts(&db.url, 2).try_into().ok().unwrap();
    let files = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (0..4)
        .map(|n| a.submit(&job_file(files.path(), n, "shared", 1.0)))
        .collect();
    let wa = a.worker("a", &["--slots", "2"]);
    let wb = b.worker("b", &["--slots", "2"]);
    let jobs = a.wait_all_ended(4, Duration::from_secs(300));
    signal_group(&wa, libc::SIGTERM);
    signal_group(&wb, libc::SIGTERM);
    assert!(jobs.iter().all(|j| j["status"] == "success"), "{jobs:#?}");
    let mut rows = hits(&a);
    rows.sort_by(|x, y| x.1.total_cmp(&y.1));
    // In submission order, never two at once.
    let order: Vec<u32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(order, vec![0, 1, 2, 3], "{rows:?} (ids {ids:?})");
    for pair in rows.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "jobs {} and {} overlapped: {rows:?}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_job_whose_host_dies_is_retried_elsewhere_and_stored_once() {
    let db = Database::create();
    let [a, b]: [Host; 2] = hosts(&db.url, 2).try_into().ok().unwrap();
    let files = tempfile::tempdir().unwrap();
    let id = a.submit(&job_file(files.path(), 7, "c7", 4.0));
    let wa = a.worker("a", &["--lease", "3s"]);
    let job = a.wait_status(id, "processing", Duration::from_secs(60));
    assert_eq!(job["job"]["host"], "a");
    std::thread::sleep(Duration::from_secs(1));
    // The host is gone: the worker and the job's process, at once.
    kill_host(&wa);
    drop(wa);
    let wb = b.worker("b", &["--lease", "3s"]);
    let job = a.wait_status(id, "success", Duration::from_secs(120));
    signal_group(&wb, libc::SIGTERM);
    assert_eq!(job["job"]["attempt"], 2, "{job:#}");
    assert_eq!(job["job"]["host"], "b");
    assert_eq!(job["job"]["committed_attempt"], 2);
    assert_eq!(hits(&a).len(), 1, "{:?}", hits(&a));
    // What the dead host left is collected by its next gc.
    let out = a.dockless(&["gc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    a.assert_clean();
    let out = wb.wait_with_output();
    assert!(out.status.success(), "{}", b.worker_log("b"));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn kill_stops_a_job_on_another_host_and_stores_nothing() {
    let db = Database::create();
    let [a, b]: [Host; 2] = hosts(&db.url, 2).try_into().ok().unwrap();
    let files = tempfile::tempdir().unwrap();
    let id = a.submit(&job_file(files.path(), 1, "c1", 60.0));
    let wa = a.worker("a", &[]);
    a.wait_status(id, "processing", Duration::from_secs(60));
    // Host b asks; host a's worker stops it.
    let out = b.dockless(&["kill", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("terminating"),
        "{}",
        text(&out.stdout)
    );
    let job = a.wait_status(id, "terminated", Duration::from_secs(60));
    assert_eq!(job["status"], "terminated", "{job:#}");
    let out = a.dockless(&["storage", "tables"]);
    assert!(
        !text(&out.stdout).contains("out.c-queue.hits"),
        "{}",
        text(&out.stdout)
    );
    // A kill of an ended job says so.
    let out = b.dockless(&["kill", &id.to_string()]);
    assert!(
        text(&out.stdout).contains("already ended"),
        "{}",
        text(&out.stdout)
    );
    signal_group(&wa, libc::SIGTERM);
    let out = wa.wait_with_output();
    assert!(out.status.success(), "{}", a.worker_log("a"));
    a.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn logs_and_the_job_show_what_a_job_did() {
    let db = Database::create();
    let a = Host::new(&db.url, None);
    component(&a);
    let files = tempfile::tempdir().unwrap();
    let id = a.submit(&job_file(files.path(), 42, "c42", 1.0));
    let wa = a.worker("a", &[]);
    // --follow returns once the job has ended, with all of its output.
    let out = a.dockless(&["logs", &id.to_string(), "--follow"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("job 42 done"),
        "{}\njob: {}\nworker: {}",
        text(&out.stdout),
        text(&a.dockless(&["job", &id.to_string(), "--json"]).stdout),
        a.worker_log("a")
    );
    let out = a.dockless(&["job", &id.to_string(), "--json"]);
    let job = json_of(&out);
    assert_eq!(job["status"], "success", "{job:#}");
    assert_eq!(job["tables"][0]["destination"], "out.c-queue.hits");
    assert_eq!(job["job"]["id"], id);
    let out = a.dockless(&["jobs", "--status", "success"]);
    assert!(text(&out.stdout).contains(&format!("{id}\tsuccess\tqueue-test\tc42\ta")));
    signal_group(&wa, libc::SIGTERM);
    assert!(wa.wait_with_output().status.success());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_postgres_restart_under_running_workers_loses_and_doubles_nothing() {
    let cluster = crate::cluster::Cluster::start();
    let [a, b, c]: [Host; 3] = hosts(&cluster.url, 3).try_into().ok().unwrap();
    let files = tempfile::tempdir().unwrap();
    for n in 0..9 {
        a.submit(&job_file(files.path(), n, &format!("c{n}"), 1.5));
    }
    let workers = [
        (a.worker("a", &["--lease", "5s"]), &a, "a"),
        (b.worker("b", &["--lease", "5s"]), &b, "b"),
        (c.worker("c", &["--lease", "5s"]), &c, "c"),
    ];
    // Restart once the first job has ended, while others run.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !a.jobs().iter().any(|j| j["status"] == "success") {
        assert!(std::time::Instant::now() < deadline, "no job ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.restart();
    let jobs = a.wait_all_ended(9, Duration::from_secs(300));
    for (w, _, _) in &workers {
        signal_group(w, libc::SIGTERM);
    }
    let logs = || {
        workers
            .iter()
            .map(|(_, h, name)| format!("worker {name}: {}", h.worker_log(name)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let failed: Vec<_> = jobs.iter().filter(|j| j["status"] != "success").collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", logs());
    let rows = hits(&a);
    let distinct: BTreeSet<u32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(rows.len(), 9, "{rows:?}");
    assert_eq!(distinct.len(), 9);
    let all_logs = logs();
    // Every worker came back and stopped cleanly.
    for (w, h, name) in workers {
        assert!(
            w.wait_with_output().status.success(),
            "{}",
            h.worker_log(name)
        );
    }
    assert!(
        all_logs.contains("connected to the queue again"),
        "{all_logs}"
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn bad_input_gets_one_clear_message() {
    let db = Database::create();
    let a = Host::new(&db.url, None);
    // A job file naming a file that is not there: refused at submit, nothing queued.
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("job.json");
    std::fs::write(&path, r#"{"image": "x", "config_file": "missing.json"}"#).unwrap();
    let out = a.dockless(&["submit", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("config_file") && err.contains("missing.json"),
        "{err}"
    );
    std::fs::write(&path, r#"{"image": "x", "configuration": {}, "colour": 1}"#).unwrap();
    let out = a.dockless(&["submit", path.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("colour"),
        "{}",
        text(&out.stderr)
    );
    assert!(a.jobs().is_empty());
    // A host with another state key is refused before it reads or writes a job.
    let stranger = Host::new(&db.url, None);
    let out = stranger.dockless(&["jobs"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("same state key"),
        "{}",
        text(&out.stderr)
    );
    // The embedded Storage has no queue.
    let out = a
        .root
        .dockless_with(&["jobs"], &[("DOCKLESS_STORAGE", "/tmp/x.db")], "");
    assert!(
        text(&out.stderr).contains("PostgreSQL Storage"),
        "{}",
        text(&out.stderr)
    );
    // A wrong password: one message naming the server, never the password.
    let wrong = db.url.replacen(":dockless-", ":wrong-", 1);
    let out = a
        .root
        .dockless_with(&["jobs"], &[("DOCKLESS_STORAGE", wrong.as_str())], "");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("127.0.0.1") && !err.contains("wrong-"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn ps_lists_a_local_job_and_kill_stops_it() {
    let a = Host::new("", None);
    component(&a);
    let config = a.root.path().join("config.json");
    std::fs::write(
        &config,
        json!({"parameters": {"n": 3, "sleep": 60}}).to_string(),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", a.root.path())
        .env("DOCKLESS_RUN_ROOT", a.root.path().join("run"))
        .args([
            "run",
            TAG,
            "--config",
            config.to_str().unwrap(),
            "--run-id",
            "4711",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = crate::support::Spawned::new(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = a.root.dockless_with(&["ps", "--json"], &[], "");
        let list = json_of(&out);
        if let Some(job) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["run_id"] == "4711")
        {
            break job.clone();
        }
        assert!(std::time::Instant::now() < deadline, "not listed: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed["component_id"], "queue-test");
    assert_eq!(listed["pid"], Value::from(run.id()));
    // Wait until the container runs (the job's log says nothing until it ends: poll ps a bit).
    std::thread::sleep(Duration::from_secs(2));
    let out = a.root.dockless_with(&["kill", "4711"], &[], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run.wait_with_output();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let out = a.root.dockless_with(&["ps", "--json"], &[], "");
    assert_eq!(json_of(&out), json!([]));
    a.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_retried_job_with_rows_skips_the_rows_already_stored() {
    let db = Database::create();
    let [a, b]: [Host; 2] = hosts(&db.url, 2).try_into().ok().unwrap();
    let output = json!({"tables": [{
        "source": "hits.csv",
        "destination": "out.c-queue.hits",
        "incremental": true
    }]});
    let job = json!({
        "image": TAG,
        "component_id": "queue-test",
        "config_id": "rows",
        "configuration": {
            "id": "rows",
            "configuration": {"storage": {"output": output}},
            "rows": [
                {"id": "r1", "configuration": {"parameters": {"n": 1}}},
                {"id": "r2", "configuration": {"parameters": {"n": 2, "sleep": 5}}}
            ]
        }
    });
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("rows.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let id = a.submit(&path);
    let wa = a.worker("a", &["--lease", "3s"]);
    // Row r1 is stored; r2 runs: the host dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let tables = a.dockless(&["storage", "tables"]);
        if text(&tables.stdout).contains("out.c-queue.hits") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "row r1 never stored");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    kill_host(&wa);
    drop(wa);
    let wb = b.worker("b", &["--lease", "3s"]);
    let job = a.wait_status(id, "success", Duration::from_secs(120));
    signal_group(&wb, libc::SIGTERM);
    assert_eq!(job["job"]["attempt"], 2, "{job:#}");
    let rows = &job["rows"];
    assert_eq!(rows[0]["row_id"], "r1", "{job:#}");
    assert!(
        rows[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("earlier attempt")),
        "{job:#}"
    );
    assert_eq!(rows[1]["status"], "success", "{job:#}");
    let mut ns: Vec<u32> = hits(&a).iter().map(|r| r.0).collect();
    ns.sort();
    assert_eq!(ns, vec![1, 2], "each row's output once");
    assert!(
        wb.wait_with_output().status.success(),
        "{}",
        b.worker_log("b")
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_host_that_dies_while_storing_a_jobs_output_leaves_nothing_half_stored() {
    let db = Database::create();
    let a = Host::new(&db.url, None);
    assert!(a.dockless(&["jobs"]).status.success());
    let b = Host::new(&db.url, Some(a.key()));
    // A big output: its COPY into PostgreSQL takes long enough to be caught in the act.
    let script = "#!/bin/sh\nset -e\n\
                  seq 1 1500000 | awk 'BEGIN { print \"\\\"n\\\",\\\"pad\\\"\" } \
                  { printf \"\\\"%d\\\",\\\"%s\\\"\\n\", $1, \"padding-padding-padding-padding\" }' \
                  > /data/out/tables/big.csv\n";
    for host in [&a, &b] {
        busybox_component(&host.root, script, "queue-big:1");
    }
    let job = json!({
        "image": "queue-big:1",
        "component_id": "queue-big",
        "config_id": "big",
        "configuration": {"storage": {"output": {"tables": [{
            "source": "big.csv",
            "destination": "out.c-queue.big",
            "incremental": true
        }]}}}
    });
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("big.json");
    std::fs::write(&path, job.to_string()).unwrap();
    let id = a.submit(&path);
    let wa = a.worker("a", &["--lease", "3s"]);
    // Wait until the job's output transaction streams its rows in, then the host dies.
    let client_sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' \
         AND query ILIKE 'COPY%'",
        db.name
    );
    let mut client = db.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let copying: i64 = client.query_one(client_sql.as_str(), &[]).unwrap().get(0);
        if copying > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the output was never caught being stored: {}",
            a.worker_log("a")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_host(&wa);
    drop(wa);
    // Nothing of the first attempt is visible.
    let out = a.dockless(&["storage", "tables"]);
    assert!(
        !text(&out.stdout).contains("out.c-queue.big"),
        "{}",
        text(&out.stdout)
    );
    let wb = b.worker("b", &["--lease", "3s"]);
    let job = a.wait_status(id, "success", Duration::from_secs(300));
    signal_group(&wb, libc::SIGTERM);
    assert_eq!(job["job"]["attempt"], 2, "{job:#}");
    assert_eq!(job["job"]["committed_attempt"], 2, "{job:#}");
    let out = a.dockless(&["storage", "table", "out.c-queue.big"]);
    let table = text(&out.stdout);
    assert!(table.contains("rows:        1500000\n"), "{table}");
    assert!(
        wb.wait_with_output().status.success(),
        "{}",
        b.worker_log("b")
    );
    let out = a.dockless(&["gc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    a.assert_clean();
}
