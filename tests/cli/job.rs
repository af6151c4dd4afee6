//! End-to-end: `dockless run IMAGE --config FILE`, the whole Keboola job, with the demo
//! component (examples/demo-component, built and pushed to the local test registry once per
//! test binary), real containers and a real Storage file. Needs root and `scripts/test-env up`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use dockless_staging::{SealedStorage, SqliteStorage, StateCipher, StateKey, Storage};
use dockless_testkit::test_env;
use serde_json::{Value, json};

use crate::support::{self, text};

const SECRET: &str = "tok-S3cret-42";

/// The demo component's reference in the test registry, built and pushed on first use.
pub(crate) fn demo_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_image("demo-component", &[], None))
}

/// The demo component with an image that runs as uid 1000, built and pushed on first use.
fn demo_image_as_1000() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_image("demo-component-1000", &[], Some("1000:1000")))
}

/// The demo processor (examples/demo-component/processor.sh), built and pushed on first use.
pub(super) fn processor_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_image("demo-processor", &["processor.sh"], None))
}

/// Builds `examples/demo-component` (with `args` for build-image, running as `user` if given)
/// as `<registry>/<name>:test`.
fn build_image(name: &str, args: &[&str], user: Option<&str>) -> String {
    let reference = format!("{}/{name}:test", test_env().registry);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/build-image");
    let out = Command::new(&script)
        .arg(&reference)
        .args(args)
        .envs(user.map(|u| ("DEMO_USER", u)))
        .output()
        .expect("run build-image");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        text(&out.stderr)
    );
    reference
}

/// One test's dockless root (its own image store, Storage and job dirs), with the job tests'
/// helpers.
pub(super) struct Root(support::Root);

impl std::ops::Deref for Root {
    type Target = support::Root;

    fn deref(&self) -> &support::Root {
        &self.0
    }
}

impl Root {
    pub(super) fn new() -> Root {
        Root(support::Root::new("dockless run needs root here"))
    }

    pub(super) fn dockless(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.dockless_with(args, &[], stdin.unwrap_or(""))
    }

    pub(super) fn import(&self, csv: &str, table: &str, incremental: bool) {
        let file = self.path().join("import.csv");
        std::fs::write(&file, csv).unwrap();
        let mut args = vec![
            "storage",
            "import",
            file.to_str().unwrap(),
            table,
            "--primary-key",
            "id",
        ];
        if incremental {
            args.push("--incremental");
        }
        let out = self.dockless(&args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Runs a job with `--json`; the configuration goes through standard input.
    pub(super) fn job(&self, image: &str, config: &Value, flags: &[&str]) -> Job {
        let mut args = vec!["run", image, "--config", "-", "--json"];
        args.extend_from_slice(flags);
        let out = self.dockless(&args, Some(&config.to_string()));
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON result ({e}): stdout {} stderr {}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        self.assert_clean();
        for container in result["containers"].as_array().unwrap() {
            assert_no_cgroup(container["id"].as_str().unwrap());
        }
        Job {
            code: out.status.code(),
            result,
            stderr: text(&out.stderr),
        }
    }

    /// The Storage as dockless reads it: state `#` values decrypted with the root's key.
    pub(super) fn storage(&self) -> SealedStorage<SqliteStorage> {
        SealedStorage::new(
            SqliteStorage::open(&self.path().join("storage.db")).unwrap(),
            StateCipher::open_or_create(&self.path().join("storage.key")).unwrap(),
        )
    }

    /// Rows of a table as exported (header first), sorted after the header.
    pub(super) fn rows(&self, table: &str) -> Vec<String> {
        let out = self.dockless(&["storage", "export", table], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        lines[1..].sort();
        lines
    }

    pub(super) fn table_exists(&self, table: &str) -> bool {
        self.storage()
            .tables()
            .unwrap()
            .iter()
            .any(|t| t.id.to_string() == table)
    }

    pub(super) fn state(&self, config: &str) -> Option<Value> {
        self.storage()
            .state(&StateKey {
                component: "demo".into(),
                config: config.into(),
                row: None,
            })
            .unwrap()
    }

    pub(super) fn file_count(&self) -> usize {
        self.storage().files(&Default::default()).unwrap().len()
    }

    /// No mount, container state, rootfs or job dir left below the root.
    pub(super) fn assert_clean(&self) {
        dockless_testkit::assert_clean(
            self.path(),
            &[
                "rootfs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
                "jobs-v1",
            ],
        );
    }
}

/// No cgroup directory of this container id is left anywhere in the cgroup tree.
fn assert_no_cgroup(id: &str) {
    fn walk(dir: &Path, id: &str, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                assert_ne!(
                    entry.file_name(),
                    id,
                    "cgroup left: {}",
                    entry.path().display()
                );
                if depth < 4 {
                    walk(&entry.path(), id, depth + 1);
                }
            }
        }
    }
    assert!(!id.is_empty());
    walk(Path::new("/sys/fs/cgroup"), id, 0);
}

pub(super) struct Job {
    pub(super) code: Option<i32>,
    pub(super) result: Value,
    pub(super) stderr: String,
}

impl Job {
    pub(super) fn message(&self) -> &str {
        self.result["message"].as_str().unwrap_or("")
    }
}

pub(super) const ORDERS_1: &str =
    "id,customer,amount\n1,alice,10.00\n2,bob,5.50\n3,alice,20.00\n4,carol,7.25\n";
pub(super) const ORDERS_2: &str = "id,customer,amount\n5,bob,4.50\n6,dave,12.00\n";

pub(super) fn demo_config(parameters: Value) -> Value {
    json!({
        "storage": {"input": {"tables": [{"source": "in.c-demo.orders", "destination": "orders.csv"}]}},
        "parameters": parameters,
    })
}

pub(super) const JOB_FLAGS: &[&str] = &["--component-id", "demo", "--config-id", "cfg-1"];

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_killed_jobs_directory_is_collected_by_the_next_job() {
    let root = Root::new();
    // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
    let stale = root.path().join("jobs-v1/123-4194305");
    std::fs::create_dir_all(stale.join("data/in")).unwrap();
    let job = root.job(
        demo_image(),
        &json!({"action": "test-connection"}),
        JOB_FLAGS,
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert!(!stale.exists());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_sigkilled_jobs_directory_is_removed_by_gc() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let config = demo_config(json!({"simulate": "timeout", "#api_token": SECRET}));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root.path())
        .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
        .args(["run", image, "--config", "-", "--json"])
        .args(JOB_FLAGS)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        input.write_all(config.to_string().as_bytes()).unwrap();
    }
    let jobs = root.path().join("jobs-v1");
    let job_dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&jobs)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // Wait for the container: config.json (with the decrypted secret) is in the job's dir.
    let started = std::time::Instant::now();
    let config_json = loop {
        let found = job_dirs()
            .into_iter()
            .map(|d| d.join("data/config.json"))
            .find(|c| c.exists());
        if let Some(found) = found {
            break found;
        }
        assert!(started.elapsed().as_secs() < 60, "the job never staged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: nothing of dockless's own cleanup runs
    child.wait().unwrap();
    assert!(config_json.exists(), "the killed job's dir is still there");

    let out = root.dockless(&["gc"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 abandoned job directory"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        job_dirs(),
        Vec::<std::path::PathBuf>::new(),
        "dir and lock gone"
    );
    // The killed run's container goes with the next collections.
    for _ in 0..50 {
        root.dockless(&["gc"], None);
        if std::fs::read_dir(root.path().join("run/containers-v1/runs"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_live_jobs_directory_is_kept_by_gc() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({"simulate": "timeout"}));
    config["runtime"] = json!({"process_timeout": 4});
    let config_file = root.path().join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let path = root.path().to_path_buf();
    let job = std::thread::spawn(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", &path)
            .env("DOCKLESS_RUN_ROOT", path.join("run"))
            .args(["run", image, "--json", "--config"])
            .arg(&config_file)
            .args(JOB_FLAGS)
            .output()
            .unwrap();
        out.status.code()
    });
    let jobs = root.path().join("jobs-v1");
    let started = std::time::Instant::now();
    while !std::fs::read_dir(&jobs)
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("data/config.json").exists())))
    {
        assert!(started.elapsed().as_secs() < 60, "the job never staged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = root.dockless(&["gc"], None);
    assert!(
        text(&out.stdout).contains("0 abandoned job directory"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(job.join().unwrap(), Some(1), "the job ran to its timeout");
    root.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn invalid_timeouts_are_user_errors_naming_the_setting_before_anything_runs() {
    let root = Root::new();
    // Nothing listens there: a pull would be an application error (exit 2), not exit 1.
    let image = "127.0.0.1:9/nothing-listens:1";
    for bad in [
        json!("2"),
        json!("abc"),
        json!(-5),
        json!(0),
        json!(1.5),
        json!(true),
        json!({"seconds": 2}),
    ] {
        let config = json!({"parameters": {}, "runtime": {"process_timeout": bad}});
        let job = root.job(image, &config, &["--pull-retries", "1"]);
        assert_eq!(job.code, Some(1), "{bad}: {}", job.stderr);
        assert_eq!(job.result["class"], "user", "{bad}");
        assert!(
            job.message().contains("runtime.process_timeout"),
            "{bad}: {}",
            job.message()
        );
        assert_eq!(job.result["containers"], json!([]), "{bad}");
        assert_eq!(job.result["digest"], Value::Null, "{bad}: nothing pulled");
    }
    let job = root.job(
        image,
        &json!({"parameters": {}}),
        &["--pull-retries", "1", "--timeout", "0"],
    );
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(job.message().contains("--timeout"), "{}", job.message());
    assert_eq!(job.result["digest"], Value::Null, "nothing pulled");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_jobs_timeout_covers_a_pull_from_a_registry_that_never_answers() {
    let root = Root::new();
    // Accepts connections and never sends a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let image = format!("127.0.0.1:{port}/silent:1");
    let started = std::time::Instant::now();
    let job = root.job(&image, &json!({"parameters": {}}), &["--timeout", "2"]);
    let took = started.elapsed();
    assert!(took.as_secs() < 15, "the pull was not stopped: {took:?}");
    assert!(took.as_millis() >= 1900, "stopped too early: {took:?}");
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.result["class"], "user");
    assert_eq!(job.result["timed_out"], true);
    assert!(
        job.message().starts_with(&format!(
            "Job exceeded the timeout of 2 seconds while pulling {image}"
        )),
        "{}",
        job.message()
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_component_running_as_a_non_root_user_owns_data_and_tmp() {
    let root = Root::new();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let job = root.job(
        demo_image_as_1000(),
        &demo_config(json!({"vat_rate": 0.21})),
        JOB_FLAGS,
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert_eq!(job.result["class"], "success");
    assert_eq!(job.result["tables"].as_array().unwrap().len(), 2);
    assert!(
        root.state("cfg-1").is_some(),
        "the state written as uid 1000 was stored"
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn demo_two_runs_read_state_and_upsert() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let config = demo_config(json!({"vat_rate": 0.21}));

    let first = root.job(image, &config, JOB_FLAGS);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.result["class"], "success");
    assert_eq!(first.result["exit_code"], 0);
    assert!(
        first.result["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        first
            .stderr
            .contains("run 1, config cfg-1, orders after id 0"),
        "{}",
        first.stderr
    );
    let tables = first.result["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    assert!(
        tables
            .iter()
            .any(|t| t["destination"] == "out.c-demo.orders_enriched" && t["rows"] == 4)
    );
    let file = &first.result["files"][0];
    assert_eq!(file["name"], "summary.txt");
    assert!(file["tags"].as_array().unwrap().contains(&json!("demo")));
    for phase in ["pull_ms", "input_ms", "run_ms", "output_ms", "cleanup_ms"] {
        assert!(
            first.result["timings"][phase].as_f64().unwrap() > 0.0,
            "{phase}"
        );
    }
    assert_eq!(
        root.state("cfg-1").unwrap()["component"]["last_id"],
        4,
        "state after run 1"
    );

    root.import(ORDERS_2, "in.c-demo.orders", true);
    let second = root.job(image, &config, JOB_FLAGS);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    // The second run saw the first run's state: only the new orders, run number 2.
    assert!(
        second
            .stderr
            .contains("run 2, config cfg-1, orders after id 4"),
        "{}",
        second.stderr
    );
    assert_eq!(
        root.rows("out.c-demo.customer_totals"),
        [
            "\"customer\",\"total\"",
            "\"alice\",\"30.00\"",
            "\"bob\",\"10.00\"",
            "\"carol\",\"7.25\"",
            "\"dave\",\"12.00\"",
        ]
    );
    let enriched = root.rows("out.c-demo.orders_enriched");
    assert_eq!(enriched.len(), 7, "{enriched:?}");
    assert!(enriched.contains(&"\"6\",\"dave\",\"12.00\",\"14.52\",\"2\"".to_string()));
    let state = root.state("cfg-1").unwrap();
    assert_eq!(state["component"]["last_id"], 6);
    assert_eq!(state["component"]["runs"], 2);
    assert_eq!(root.file_count(), 2);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_missing_out_state_clears_the_state() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let first = root.job(image, &demo_config(json!({})), JOB_FLAGS);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(root.state("cfg-1").unwrap()["component"]["runs"], 1);

    let second = root.job(image, &demo_config(json!({"keep_state": false})), JOB_FLAGS);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(root.state("cfg-1").unwrap()["component"], json!({}));

    let third = root.job(image, &demo_config(json!({})), JOB_FLAGS);
    assert!(
        third
            .stderr
            .contains("run 1, config cfg-1, orders after id 0"),
        "{}",
        third.stderr
    );

    // Without a config id nothing is stored at all.
    let unnamed = root.job(image, &demo_config(json!({})), &["--component-id", "demo"]);
    assert_eq!(unnamed.code, Some(0), "{}", unnamed.stderr);
    assert_eq!(unnamed.result["state_stored"], false);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn exit_1_is_a_user_error_and_only_write_always_tables_are_loaded() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let first = root.job(image, &demo_config(json!({})), JOB_FLAGS);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let totals_before = root.rows("out.c-demo.customer_totals");

    root.import(ORDERS_2, "in.c-demo.orders", true);
    let mut config = demo_config(json!({"simulate": "user-error"}));
    config["storage"]["output"] = json!({"tables": [
        {"source": "orders_enriched.csv", "destination": "out.c-demo.orders_enriched", "write_always": true}
    ]});
    let failed = root.job(image, &config, JOB_FLAGS);
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert_eq!(failed.result["class"], "user");
    assert_eq!(failed.result["status"], "error");
    assert_eq!(failed.result["exit_code"], 1);
    assert_eq!(
        failed.message(),
        "simulated user error: the orders do not add up"
    );
    // The write_always table got the new rows; nothing else changed.
    assert_eq!(root.rows("out.c-demo.orders_enriched").len(), 7);
    assert_eq!(root.rows("out.c-demo.customer_totals"), totals_before);
    assert_eq!(root.state("cfg-1").unwrap()["component"]["last_id"], 4);
    assert_eq!(root.file_count(), 1);
    assert!(
        failed.stderr.contains("exit code 1: user error"),
        "{}",
        failed.stderr
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn other_exit_codes_are_application_errors() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let job = root.job(
        image,
        &demo_config(json!({"simulate": "application-error"})),
        JOB_FLAGS,
    );
    assert_eq!(job.code, Some(2), "{}", job.stderr);
    assert_eq!(job.result["class"], "application");
    assert_eq!(job.result["exit_code"], 2);
    assert!(
        job.message().starts_with(&format!("{image} container '"))
            && job.message().ends_with("failed: (2) simulated crash"),
        "{}",
        job.message()
    );
    assert!(!root.table_exists("out.c-demo.orders_enriched"));
    assert_eq!(root.state("cfg-1"), None);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn out_of_memory_and_timeout_are_user_errors_with_keboolas_wording() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--memory", "32m"]);
    let oom = root.job(image, &demo_config(json!({"simulate": "oom"})), &flags);
    assert_eq!(oom.code, Some(1), "{}", oom.stderr);
    assert_eq!(oom.result["class"], "user");
    assert_eq!(oom.result["oom_killed"], true);
    assert_eq!(oom.message(), "Component out of memory (exceeded 32m)");

    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--timeout", "2"]);
    let started = std::time::Instant::now();
    let slow = root.job(image, &demo_config(json!({"simulate": "timeout"})), &flags);
    assert!(started.elapsed().as_secs() < 30);
    assert_eq!(slow.code, Some(1), "{}", slow.stderr);
    assert_eq!(slow.result["timed_out"], true);
    assert_eq!(
        slow.message(),
        format!("Running {image} container exceeded the timeout of 2 seconds.")
    );
    assert!(!root.table_exists("out.c-demo.orders_enriched"));
    assert_eq!(root.state("cfg-1"), None);

    // The configuration's own runtime.process_timeout wins over the component's.
    let mut config = demo_config(json!({"simulate": "timeout"}));
    config["runtime"] = json!({"process_timeout": 1});
    let slow = root.job(image, &config, JOB_FLAGS);
    assert_eq!(slow.code, Some(1), "{}", slow.stderr);
    assert_eq!(
        slow.message(),
        format!("Running {image} container exceeded the timeout of 1 seconds.")
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn secrets_are_hidden_in_output_result_and_messages() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    // Plain mode: the component's stdout streamed to ours.
    let config = demo_config(json!({"#api_token": SECRET}));
    let out = root.dockless(
        &["run", image, "--config", "-", "--component-id", "demo"],
        Some(&config.to_string()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("authenticating with token [hidden]"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !text(&out.stderr).contains(SECRET));
    root.assert_clean();

    // The message of a failure (here the component echoes the secret on stderr).
    let config = demo_config(json!({"#api_token": SECRET, "simulate": SECRET}));
    let job = root.job(image, &config, &["--component-id", "demo"]);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.message(), "unknown simulate value: [hidden]");
    let all = format!("{} {}", job.result, job.stderr);
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        job.result["stdout_tail"]
            .as_str()
            .unwrap()
            .contains("token [hidden]")
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn bad_configurations_and_mappings_are_user_errors() {
    let root = Root::new();
    // The image does not exist: had anything been pulled, the error would say so.
    let image = format!("{}/no-such-component:1", test_env().registry);
    let job = root.job(&image, &json!({"parameters": {}, "bogus": 1}), JOB_FLAGS);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.result["class"], "user");
    assert!(job.message().contains("bogus"), "{}", job.message());
    assert_eq!(job.result["exit_code"], Value::Null);
    assert_eq!(job.result["digest"], Value::Null);
    assert!(!root.path().join("storage.db").exists());
    assert!(!root.path().join("store").exists(), "nothing may be pulled");

    // A missing input table: refused by input mapping, before any container.
    let image = demo_image();
    let config = json!({"storage": {"input": {"tables": [{"source": "in.c-demo.missing", "destination": "orders.csv"}]}}});
    let job = root.job(image, &config, JOB_FLAGS);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("in.c-demo.missing"),
        "{}",
        job.message()
    );
    assert_eq!(job.result["containers"], json!([]));

    // An output mapping naming a file the component did not write: a user error after the run.
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["storage"]["output"] =
        json!({"tables": [{"source": "nope.csv", "destination": "out.c-demo.nope"}]});
    let job = root.job(image, &config, JOB_FLAGS);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message()
            .starts_with("Failed to process output mapping: "),
        "{}",
        job.message()
    );
    assert!(job.message().contains("nope.csv"), "{}", job.message());
    assert_eq!(job.result["exit_code"], 0);
    assert!(!root.table_exists("out.c-demo.orders_enriched"));
    assert_eq!(root.state("cfg-1"), None);

    // A configuration that would carry a component secret out is refused.
    let params = root.path().join("image-parameters.json");
    std::fs::write(&params, json!({"#api_key": "component-secret"}).to_string()).unwrap();
    let config = demo_config(json!({"#token": "component-secret"}));
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--image-parameters", params.to_str().unwrap()]);
    let job = root.job(image, &config, &flags);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("secret image parameter"),
        "{}",
        job.message()
    );
    assert_eq!(job.result["containers"], json!([]));

    let image = format!("{}/no-such-component:1", test_env().registry);
    let not_json = root.dockless(&["run", &image, "--config", "-", "--json"], Some("{oops"));
    assert_eq!(not_json.status.code(), Some(1));
    assert!(text(&not_json.stdout).contains("not valid JSON"));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn image_not_found_is_a_user_error_and_an_unreachable_registry_an_application_error() {
    let root = Root::new();
    let image = format!("{}/no-such-component:1", test_env().registry);
    let job = root.job(&image, &json!({"parameters": {}}), JOB_FLAGS);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(
        job.message(),
        format!("Image \"{image}\" not found in the registry.")
    );

    let job = root.job(
        "127.0.0.1:9/nothing-listens:1",
        &json!({"parameters": {}}),
        &["--pull-retries", "1"],
    );
    assert_eq!(job.code, Some(2), "{}", job.stderr);
    assert_eq!(job.result["class"], "application");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_sync_action_answers_with_json_and_maps_nothing() {
    let root = Root::new();
    let image = demo_image();
    let config = json!({"action": "test-connection", "parameters": {}});
    let out = root.dockless(
        &["run", image, "--config", "-", "--component-id", "demo"],
        Some(&config.to_string()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["action"], "test-connection");
    assert_eq!(answer["component"], "demo");
    assert_eq!(answer["datadir"], "/data/");
    // Contract §7's variables, no token or Storage URL (there is none to forward).
    assert_eq!(
        answer["kbc"],
        "KBC_BRANCHID KBC_COMPONENTID KBC_COMPONENT_RUN_MODE KBC_CONFIGID KBC_CONFIGVERSION KBC_DATADIR \
         KBC_DATA_TYPE_SUPPORT KBC_PROJECTID KBC_PROJECT_FEATURE_GATES KBC_RUNID KBC_STACKID KBC_STAGING_FILE_PROVIDER"
    );
    let job = root.job(image, &config, &["--component-id", "demo"]);
    assert_eq!(job.result["action_result"]["status"], "success");
    assert_eq!(job.result["tables"], json!([]));
    assert_eq!(job.result["files"], json!([]));
    assert_eq!(job.result["state_stored"], false);

    // A sync action that does not answer with JSON is an application error.
    let config = json!({"action": "test-connection", "parameters": {"simulate": "bad-answer"}});
    let job = root.job(image, &config, &["--component-id", "demo"]);
    assert_eq!(job.code, Some(2), "{}", job.stderr);
    assert!(
        job.message().contains("not valid JSON"),
        "{}",
        job.message()
    );
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn processors_run_before_and_after_with_their_own_config() {
    let root = Root::new();
    let (image, processor) = (demo_image(), processor_image());
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["processors"] = json!({
        "before": [{"definition": {"component": "demo.upper"}, "parameters": {"upper_column": "customer"}}],
        "after": [{"definition": {"component": "demo.log"}, "parameters": {"log_table": "processor_log"}}]
    });
    let upper = format!("demo.upper={processor}");
    let log = format!("demo.log={processor}");
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--processor", &upper, "--processor", &log]);
    let job = root.job(image, &config, &flags);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    let roles: Vec<&str> = job.result["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["before", "main", "after"]);
    // The before-processor's output was the main image's input.
    assert_eq!(
        root.rows("out.c-demo.customer_totals"),
        [
            "\"customer\",\"total\"",
            "\"ALICE\",\"30.00\"",
            "\"BOB\",\"5.50\"",
            "\"CAROL\",\"7.25\"",
        ]
    );
    // The after-processor saw the main image's output, with its own component id and a config
    // without the job's storage; its output is what was loaded.
    assert_eq!(
        root.rows("out.c-demo.processor_log"),
        [
            "\"entry\",\"component\",\"saw_storage\"",
            "\"customer_totals.csv\",\"demo.log\",\"no\"",
            "\"customer_totals.csv.manifest\",\"demo.log\",\"no\"",
            "\"orders_enriched.csv\",\"demo.log\",\"no\"",
            "\"orders_enriched.csv.manifest\",\"demo.log\",\"no\"",
        ]
    );
    // The main image's state survived the after-processor.
    assert_eq!(root.state("cfg-1").unwrap()["component"]["last_id"], 4);
    // Only the main image sees in/state.json; the second run's main image reads it.
    assert_eq!(
        job.stderr
            .matches("demo processor: state visible: no")
            .count(),
        2,
        "{}",
        job.stderr
    );
    assert!(!job.stderr.contains("state visible: yes"), "{}", job.stderr);
    let again = root.job(image, &config, &flags);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("orders after id 4"),
        "{}",
        again.stderr
    );
    assert_eq!(
        again
            .stderr
            .matches("demo processor: state visible: no")
            .count(),
        2,
        "{}",
        again.stderr
    );

    // A failing processor fails the job as the main image would; nothing is stored.
    let root = Root::new();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["processors"] = json!({"before": [{"definition": {"component": "demo.upper"}, "parameters": {"fail": true}}]});
    let job = root.job(image, &config, &flags);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert_eq!(job.message(), "demo processor: failing as asked");
    assert_eq!(job.result["containers"].as_array().unwrap().len(), 1);
    assert_eq!(job.result["exit_code"], Value::Null);
    assert!(!root.table_exists("out.c-demo.customer_totals"));
    assert_eq!(root.state("cfg-1"), None);

    // A malformed processor entry is refused before anything runs.
    let mut config = demo_config(json!({}));
    config["processors"] = json!({"before": [{"parameters": {}}]});
    let job = root.job(image, &config, JOB_FLAGS);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message()
            .contains("processors.before[0].definition.component"),
        "{}",
        job.message()
    );
    assert_eq!(job.result["containers"], json!([]));
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_job_file_carries_image_configuration_and_settings() {
    let root = Root::new();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let dir = root.path().join("jobdef");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        demo_config(json!({"vat_rate": 0.5})).to_string(),
    )
    .unwrap();
    let job = json!({
        "image": demo_image(),
        "config_file": "config.json",
        "component_id": "demo",
        "config_id": "from-file",
        "memory": "64m",
        "timeout": 120,
    });
    std::fs::write(dir.join("job.json"), job.to_string()).unwrap();
    let job_path = dir.join("job.json");
    let out = root.dockless(
        &["run", "--job", job_path.to_str().unwrap(), "--json"],
        None,
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(result["class"], "success");
    assert!(
        text(&out.stderr).contains("config from-file"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        root.state("from-file").is_some(),
        "state stored under the file's config id"
    );

    // A flag wins over the file; an unknown key in the file is refused with its name.
    let out = root.dockless(
        &[
            "run",
            "--job",
            job_path.to_str().unwrap(),
            "--config-id",
            "from-flag",
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(root.state("from-flag").is_some());
    std::fs::write(
        dir.join("bad.json"),
        r#"{"image": "x", "configuraton": {}}"#,
    )
    .unwrap();
    let out = root.dockless(
        &["run", "--job", dir.join("bad.json").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("configuraton"),
        "{}",
        text(&out.stderr)
    );
    root.assert_clean();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn links_planted_in_data_are_never_followed_between_images() {
    let root = Root::new();
    let (image, processor) = (demo_image(), processor_image());
    root.import(ORDERS_1, "in.c-demo.orders", false);
    // A host directory the component must not be able to touch through the runner.
    let victim = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(victim.path().join("tables")).unwrap();
    std::fs::write(victim.path().join("tables/keep.csv"), "precious\n").unwrap();
    std::fs::write(victim.path().join("state.json"), "{\"precious\": true}").unwrap();
    let mut config = demo_config(json!({
        "simulate": "hostile-links",
        "link_target": victim.path().to_str().unwrap(),
    }));
    config["processors"] = json!({
        "after": [{"definition": {"component": "demo.log"}, "parameters": {"log_table": "processor_log"}}]
    });
    let log = format!("demo.log={processor}");
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--processor", &log]);
    let job = root.job(image, &config, &flags);
    assert_eq!(job.code, Some(1), "a user error: {}", job.stderr);
    assert!(job.message().contains("symlink"), "{}", job.message());
    assert_eq!(
        std::fs::read_to_string(victim.path().join("tables/keep.csv")).unwrap(),
        "precious\n"
    );
    assert_eq!(
        std::fs::read_to_string(victim.path().join("state.json")).unwrap(),
        "{\"precious\": true}"
    );
    assert_eq!(root.state("cfg-1"), None, "nothing stored");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn sigterm_terminates_a_job_without_output_mapping_or_state() {
    let root = Root::new();
    let image = demo_image();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let first = root.job(image, &demo_config(json!({})), JOB_FLAGS);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let state_before = root.state("cfg-1");
    let rows_before = root.rows("out.c-demo.orders_enriched");
    root.import(ORDERS_2, "in.c-demo.orders", true);

    // The component writes its tables and state, then sleeps (sh as init: SIGTERM is
    // ignored, SIGKILL after the 1 s grace ends it).
    let config = demo_config(json!({"simulate": "timeout"}));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root.path())
        .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
        .args([
            "run",
            image,
            "--config",
            "-",
            "--json",
            "--stop-timeout",
            "1",
        ])
        .args(JOB_FLAGS)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        input.write_all(config.to_string().as_bytes()).unwrap();
    }
    let jobs = root.path().join("jobs-v1");
    let started = std::time::Instant::now();
    // Its outputs are written: the container is in its sleep.
    while !std::fs::read_dir(&jobs)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().join("data/out/state.json").exists())
        })
        .unwrap_or(false)
    {
        assert!(started.elapsed().as_secs() < 60, "the job never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON result ({e}): {stderr}"));
    assert_eq!(result["status"], "terminated", "{result}");
    assert_eq!(result["class"], "terminated", "{result}");
    assert!(
        result["message"].as_str().unwrap().contains("SIGTERM"),
        "{result}"
    );
    assert_eq!(result["tables"], json!([]), "{result}");
    assert_eq!(result["files"], json!([]), "{result}");
    assert_eq!(result["state_stored"], false, "{result}");
    assert_eq!(root.state("cfg-1"), state_before, "state unchanged");
    assert_eq!(
        root.rows("out.c-demo.orders_enriched"),
        rows_before,
        "no table written"
    );
    root.assert_clean();
    for container in result["containers"].as_array().unwrap() {
        assert_no_cgroup(container["id"].as_str().unwrap());
    }
}
