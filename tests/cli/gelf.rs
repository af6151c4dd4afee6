//! End-to-end: GELF logging of a job's main container (`--logging gelf`, or a job file's
//! `logging` section). A Python component (tests/cli/gelf_sender.py, built with `dockless
//! build` on the test registry's python image) sends over UDP (plain, zlib, gzip, chunked),
//! TCP and HTTP from inside its container with the default `--network none`: the server's
//! socket lives in the container's own network namespace. Needs root and
//! `scripts/test-env up`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use dockless_testkit::test_env;
use serde_json::{Value, json};

use crate::support::{self, text};

const SECRET: &str = "gelf-S3cret-77";

/// A root with the sender's repository (`component/`, one commit) beside its job files.
struct Root(support::Root);

/// What one job did.
struct Job {
    code: Option<i32>,
    result: Value,
    stderr: String,
    /// Peak RSS of dockless and every process it waited for (helper, container), in KiB.
    max_rss_kib: i64,
}

impl Job {
    fn messages(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["level"].as_str().unwrap(),
                    e["message"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn events(&self) -> &Vec<Value> {
        self.result["events"].as_array().expect("events")
    }

    fn count(&self, name: &str) -> u64 {
        self.result["logging"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no logging.{name} in {}", self.result["logging"]))
    }
}

impl Root {
    fn new() -> Root {
        let root = support::Root::new("dockless run needs root here");
        // `--userns`: the container's root (an unprivileged host uid) passes through.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let repo = root.path().join("component");
        support::commit_repo(&repo, &[("main.py", include_str!("gelf_sender.py"))]);
        Root(root)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Runs a job file with `parameters` (and `logging` when given) plus `flags`, `--json`;
    /// output goes to files (a flood's lines need not fit in memory here).
    fn job(&self, name: &str, parameters: Value, logging: Option<Value>, flags: &[&str]) -> Job {
        let mut file = json!({
            "build": {
                "base": format!("{}/python:latest", test_env().registry),
                "repository": "component",
                "ref": "HEAD",
                "entrypoint": "python3 /home/main.py",
            },
            "component_id": "gelf-sender",
            "configuration": {"parameters": parameters},
        });
        if let Some(l) = logging {
            file["logging"] = l;
        }
        let job_file = self.path().join(format!("{name}.json"));
        std::fs::write(&job_file, file.to_string()).unwrap();
        let out_path = self.path().join(format!("{name}.out"));
        let err_path = self.path().join(format!("{name}.err"));
        // Reaped by `wait4` below, which also reports its peak memory.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(env!("CARGO_BIN_EXE_dockless"))
            .env("DOCKLESS_ROOT", self.path())
            .env("DOCKLESS_RUN_ROOT", self.path().join("run"))
            .args(["run", "--job", job_file.to_str().unwrap(), "--json"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("run dockless");
        let (code, max_rss_kib) = wait4(child.id() as i32);
        let stdout = std::fs::read(&out_path).unwrap();
        let stderr = text(&std::fs::read(&err_path).unwrap());
        let result: Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON result ({e}): stdout {} stderr {stderr}",
                text(&stdout)
            )
        });
        dockless_testkit::assert_clean(
            self.path(),
            &[
                "rootfs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
                "jobs-v1",
            ],
        );
        Job {
            code,
            result,
            stderr,
            max_rss_kib,
        }
    }
}

/// Reaps `pid` (a child of this process) and returns its exit code and the peak RSS of it
/// and of the processes it reaped.
fn wait4(pid: i32) -> (Option<i32>, i64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not waited for elsewhere; both pointers are valid.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss)
}

fn port_in_keboolas_range(job: &Job) {
    let port = job.result["logging"]["port"].as_u64().unwrap();
    assert!((12202..=13202).contains(&port), "port {port}");
    assert_eq!(job.result["logging"]["address"], "127.0.0.1");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_component_logs_over_udp_tcp_and_http_from_its_own_network_namespace() {
    let root = Root::new();

    // UDP: plain, zlib, gzip and chunked datagrams; Keboola's default verbosity (debug
    // hidden, critical camouflaged); a secret hidden; malformed input counted.
    let udp = root.job(
        "udp",
        json!({"mode": "udp", "#token": SECRET}),
        Some(json!({"type": "gelf", "gelf_server_type": "udp"})),
        &[],
    );
    assert_eq!(udp.code, Some(0), "{}", udp.stderr);
    assert_eq!(
        udp.messages(),
        [
            "info: plain udp",
            "warning: zlib udp",
            "error: gzip udp",
            "notice: chunked udp",
            "info: token is [hidden]",
            "critical: Application error",
        ]
    );
    let critical = &udp.events()[5];
    assert_eq!(critical["description"], "Contact support@keboola.com");
    assert!(udp.events()[0]["timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(udp.result["logging"]["server_type"], "udp");
    port_in_keboolas_range(&udp);
    assert_eq!(
        [
            udp.count("received"),
            udp.count("shown"),
            udp.count("hidden"),
            udp.count("camouflaged"),
            udp.count("malformed"),
            udp.count("incomplete_chunked"),
            udp.count("events_dropped"),
        ],
        [7, 6, 1, 1, 4, 1, 0]
    );
    // The live lines, with their levels; nothing hidden shows.
    for line in [
        "INFO: plain udp",
        "WARNING: zlib udp",
        "NOTICE: chunked udp",
        "INFO: token is [hidden]",
        "CRITICAL: Application error (Contact support@keboola.com)",
        "dockless: GELF: Invalid message: Cannot parse JSON data in event",
    ] {
        assert!(udp.stderr.contains(line), "no {line:?} in {}", udp.stderr);
    }
    for hidden in [SECRET, "debug hidden by default", "critical detail"] {
        assert!(
            !udp.stderr.contains(hidden),
            "{hidden:?} shown: {}",
            udp.stderr
        );
        assert!(
            !udp.result.to_string().contains(hidden),
            "{hidden:?} in the result"
        );
    }

    // TCP (Keboola's default type) with the verbosity of a specification: debug verbose
    // (every field, `_extra` decoded), the last frame without its null byte still read.
    let registry_port = test_env().registry.rsplit(':').next().unwrap().to_string();
    let tcp = root.job(
        "tcp",
        json!({"mode": "tcp", "probe_port": registry_port}),
        Some(json!({"type": "gelf", "verbosity": {"100": "verbose"}})),
        &[],
    );
    assert_eq!(tcp.code, Some(0), "{}", tcp.stderr);
    assert_eq!(
        tcp.messages(),
        [
            "info: tcp one",
            "debug: tcp debug",
            "warning: tcp last without null"
        ]
    );
    assert_eq!(tcp.events()[1]["context"]["_extra"], json!({"rows": 3}));
    assert!(tcp.events()[0].get("context").is_none());
    assert_eq!(tcp.result["logging"]["server_type"], "tcp");
    // The host's registry on 127.0.0.1 is not on the container's loopback.
    let said = tcp.result["stdout_tail"].as_str().unwrap();
    assert!(
        said.contains("probe refused: ConnectionRefusedError"),
        "{said}"
    );
    assert_eq!(tcp.count("malformed"), 0);

    // A silent failure: Keboola's message falls back to the last message of level warning or
    // worse; `no_application_errors` makes exit 2 the user's error.
    let failed = root.job(
        "failed",
        json!({"mode": "tcp", "fail": true}),
        Some(json!({"type": "gelf", "no_application_errors": true})),
        &[],
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert_eq!(failed.result["class"], "user");
    let message = failed.result["message"].as_str().unwrap();
    assert!(
        message.ends_with("failed: (2) tcp last without null"),
        "{message}"
    );

    // HTTP from the flags alone; each request answered 202 (the sender fails otherwise).
    let http = root.job(
        "http",
        json!({"mode": "http"}),
        None,
        &["--logging", "gelf", "--gelf-server-type", "http"],
    );
    assert_eq!(http.code, Some(0), "{}", http.stderr);
    assert_eq!(http.messages(), ["info: http one", "info: http two"]);

    // The host's network: the server listens on the host's loopback instead.
    let host = root.job(
        "host",
        json!({"mode": "tcp"}),
        Some(json!({"type": "gelf"})),
        &["--network", "host"],
    );
    assert_eq!(host.code, Some(0), "{}", host.stderr);
    // Keboola's default verbosity: the debug message is hidden.
    assert_eq!(
        host.messages(),
        ["info: tcp one", "warning: tcp last without null"],
        "{}",
        host.stderr
    );
    assert_eq!(host.count("received"), 3);
    port_in_keboolas_range(&host);

    // Root's --userns: the namespace belongs to the container's user namespace.
    let userns = root.job(
        "userns",
        json!({"mode": "udp", "#token": SECRET}),
        Some(json!({"type": "gelf", "gelf_server_type": "udp"})),
        &["--userns"],
    );
    assert_eq!(userns.code, Some(0), "{}", userns.stderr);
    assert_eq!(userns.events().len(), 6, "{}", userns.stderr);
    assert_eq!(userns.count("malformed"), 4);

    // Standard logging: no server, no variables (the sender fails on the missing
    // KBC_LOGGER_ADDR: a user error), no events.
    let standard = root.job("standard", json!({"mode": "udp"}), None, &[]);
    assert_eq!(standard.code, Some(1), "{}", standard.stderr);
    assert!(
        standard.stderr.contains("KBC_LOGGER_ADDR"),
        "{}",
        standard.stderr
    );
    assert!(standard.result.get("logging").is_none());
    assert_eq!(standard.events().len(), 0);

    // A bad section is the user's error, in Keboola's words.
    let bad = root.job(
        "bad",
        json!({"mode": "udp"}),
        Some(json!({"type": "syslog"})),
        &[],
    );
    assert_eq!(bad.code, Some(1));
    assert_eq!(bad.result["message"], "Invalid logging type \"syslog\".");
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_gelf_flood_keeps_memory_flat_and_is_counted() {
    let root = Root::new();
    // A small run first: the pull and build (whose memory counts too) are done by then.
    let small = root.job(
        "small",
        json!({"mode": "flood", "count": 10}),
        Some(json!({"type": "gelf"})),
        &[],
    );
    assert_eq!(small.code, Some(0), "{}", small.stderr);
    assert_eq!(small.events().len(), 10);
    let started = std::time::Instant::now();
    let flood = root.job(
        "flood",
        json!({"mode": "flood", "count": 100_000}),
        Some(json!({"type": "gelf"})),
        &[],
    );
    let took = started.elapsed();
    assert_eq!(flood.code, Some(0), "{}", tail(&flood.stderr));
    // 100,000 messages of ~600 bytes kept would be over 60 MB of text alone (and their JSON
    // once more); kept to 10,000 the whole run stays far below.
    eprintln!(
        "flood: 100000 messages in {took:?}, peak RSS {} MiB (10 messages: {} MiB)",
        flood.max_rss_kib / 1024,
        small.max_rss_kib / 1024
    );
    assert!(
        flood.max_rss_kib < small.max_rss_kib + 40 * 1024,
        "peak RSS {} KiB, {} KiB for 10 messages",
        flood.max_rss_kib,
        small.max_rss_kib
    );
    assert_eq!(flood.count("received"), 100_000);
    assert_eq!(flood.count("shown"), 100_000);
    assert_eq!(flood.events().len(), 10_000);
    assert_eq!(flood.count("events_dropped"), 90_000);
    assert_eq!(flood.count("malformed"), 0);
    // Every message was a live line.
    assert_eq!(flood.stderr.matches("INFO: flood ").count(), 100_000);
}

fn tail(text: &str) -> &str {
    let mut from = text.len().saturating_sub(4000);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

/// A component of Keboola's Python library that logs the way its template does: the library's
/// `set_gelf_logger()` (TCP, the runner's `KBC_LOGGER_*`), unchanged.
const LIBRARY_COMPONENT: &str = r##"import logging
from keboola.component import CommonInterface

CommonInterface.set_gelf_logger(log_level=logging.DEBUG)
ci = CommonInterface()
logging.info("library says hello")
logging.warning("token is %s", ci.configuration.parameters["#token"])
logging.debug("a debug line")
try:
    1 / 0
except ZeroDivisionError:
    logging.exception("caught it")
"##;

#[test]
#[ignore = "needs root and scripts/test-env"]
fn keboola_components_set_gelf_logger_reaches_the_runner() {
    let root = support::Root::new("dockless run needs root here");
    let repo = root.path().join("component");
    support::commit_repo(&repo, &[("main.py", LIBRARY_COMPONENT)]);
    let job = json!({
        "build": {
            "base": format!("{}/keboola-python:latest", test_env().registry),
            "repository": "component",
            "ref": "HEAD",
            "entrypoint": "python3 -u /home/main.py",
        },
        "component_id": "kbc-python-gelf",
        "configuration": {"parameters": {"#token": SECRET}},
        "logging": {"type": "gelf"},
    });
    let file = root.path().join("job.json");
    std::fs::write(&file, job.to_string()).unwrap();
    let out = root.dockless_with(&["run", "--job", file.to_str().unwrap(), "--json"], &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = support::json_of(&out);
    let events = result["events"].as_array().expect("events");
    let shown: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["level"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        shown.contains(&"info: library says hello".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"warning: token is [hidden]".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|m| m.starts_with("error: caught it")),
        "{shown:?}"
    );
    // Keboola's default verbosity hides debug; the secret is nowhere.
    assert!(
        !shown.iter().any(|m| m.contains("a debug line")),
        "{shown:?}"
    );
    assert!(!result.to_string().contains(SECRET));
    assert!(!text(&out.stderr).contains(SECRET));
    assert_eq!(result["logging"]["malformed"], 0, "{}", result["logging"]);
}
