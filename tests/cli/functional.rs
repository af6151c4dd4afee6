//! End-to-end: `dockless test`, the demo component's functional test folders
//! (examples/demo-component/tests/functional) and cases that fail in every way a case can,
//! run in real containers; `--build` from a local git repository. Needs root and
//! `scripts/test-env up`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dockless_testkit::test_env;
use serde_json::Value;

use crate::job::demo_image;
use crate::support::{self, Spawned, git, json_of, text};

/// The demo component's own cases.
fn demo_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/tests/functional")
}

/// Copies a folder tree (the cases are only files and folders).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The case named `name` of a `--json` result.
fn case<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {result:#}"))
}

/// Nothing of a run is left in `root`: no job directory, no mount, no rootfs.
fn assert_nothing_left(root: &Path) {
    let jobs = root.join("jobs-v1");
    if jobs.exists() {
        let left: Vec<_> = std::fs::read_dir(&jobs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "job directories left: {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = root.to_string_lossy();
    assert!(
        !mounts.lines().any(|l| l.contains(root.as_ref())),
        "mounts left under {root}"
    );
}

/// The cases of the failure test: the demo's three, and one of each way to fail.
fn failing_cases(dir: &Path) {
    copy_tree(&demo_cases(), dir);
    let derive = |from: &str, name: &str| {
        copy_tree(&dir.join(from), &dir.join(name));
        dir.join(name)
    };
    // A value the component does not write.
    let wrong = derive("first-run", "wrong-content");
    let table = wrong.join("expected/data/out/tables/orders_enriched.csv");
    let expected = std::fs::read_to_string(&table).unwrap();
    std::fs::write(&table, expected.replace("\"12.10\"", "\"12.11\"")).unwrap();
    // An output it does not write.
    let missing = derive("first-run", "missing-file");
    std::fs::write(missing.join("expected/data/out/files/report.txt"), "x\n").unwrap();
    // An output not expected.
    let extra = derive("first-run", "extra-file");
    std::fs::remove_file(extra.join("expected/data/out/files/summary.txt")).unwrap();
    std::fs::remove_file(extra.join("expected/data/out/files/summary.txt.manifest")).unwrap();
    // A manifest that differs as JSON (not only in its layout).
    let manifest = derive("first-run", "wrong-manifest");
    std::fs::write(
        manifest.join("expected/data/out/tables/customer_totals.csv.manifest"),
        "{\n  \"incremental\": false,\n  \"primary_key\": [\"customer\"],\n  \"destination\": \"out.c-demo.customer_totals\"\n}\n",
    )
    .unwrap();
    // An exit code not expected (the demo exits 1 without its input).
    let code = derive("missing-input", "wrong-code");
    std::fs::remove_file(code.join("expected-code")).unwrap();
    // A component that never ends.
    let hangs = derive("first-run", "hangs");
    std::fs::write(
        hangs.join("source/data/config.json"),
        r#"{"parameters": {"simulate": "timeout"}}"#,
    )
    .unwrap();
    // Malformed cases.
    std::fs::create_dir_all(dir.join("no-source/expected/data/out")).unwrap();
    std::fs::create_dir_all(dir.join("no-expected/source/data")).unwrap();
    // Not a case (datadirtest skips `_` folders).
    std::fs::create_dir_all(dir.join("_shared/source/data")).unwrap();
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn cases_pass_fail_and_error_each_with_its_first_difference() {
    let root = support::Root::new("dockless test needs root here");
    let cases = root.path().join("cases");
    failing_cases(&cases);
    let image = demo_image();
    let out = root.dockless_with(
        &[
            "test",
            image,
            cases.to_str().unwrap(),
            "--json",
            "--keep",
            "--jobs",
            "2",
            "--timeout",
            "5s",
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let result = json_of(&out);
    let names: Vec<&str> = result["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "extra-file",
            "first-run",
            "hangs",
            "missing-file",
            "missing-input",
            "next-run",
            "no-expected",
            "no-source",
            "wrong-code",
            "wrong-content",
            "wrong-manifest"
        ]
    );
    assert_eq!(
        (&result["passed"], &result["failed"], &result["errors"]),
        (&Value::from(3), &Value::from(6), &Value::from(2)),
        "{result:#}"
    );
    for name in ["first-run", "next-run", "missing-input"] {
        assert_eq!(case(&result, name)["status"], "pass", "{name}: {result:#}");
        assert!(case(&result, name).get("kept").is_none());
    }
    assert_eq!(case(&result, "missing-input")["exit_code"], 1);
    let message = |name: &str| case(&result, name)["message"].as_str().unwrap().to_string();
    assert_eq!(
        message("wrong-content"),
        r#"out/tables/orders_enriched.csv line 2: expected "\"1\",\"alice\",\"10.00\",\"12.11\",\"1\"", got "\"1\",\"alice\",\"10.00\",\"12.10\",\"1\"""#,
        "{result:#}"
    );
    assert_eq!(message("missing-file"), "missing out/files/report.txt");
    assert_eq!(
        message("extra-file"),
        "unexpected out/files/summary.txt (and 1 more difference)"
    );
    assert_eq!(
        message("wrong-manifest"),
        "out/tables/customer_totals.csv.manifest at \"/incremental\": expected false, got true"
    );
    assert!(
        message("wrong-code")
            .starts_with("exit code 1, expected 0 (stderr: input table orders.csv is missing"),
        "{}",
        message("wrong-code")
    );
    let hangs = case(&result, "hangs");
    assert_eq!(hangs["status"], "fail");
    assert_eq!(hangs["timed_out"], true);
    assert_eq!(message("hangs"), "timed out and was killed");
    assert!(message("no-source").starts_with("no source/data folder"));
    assert!(message("no-expected").starts_with("no expected/data/out folder"));
    assert_eq!(case(&result, "no-source")["status"], "error");
    // Every case that ran and did not pass kept its data folder, with what the component left.
    for name in [
        "wrong-content",
        "missing-file",
        "extra-file",
        "wrong-code",
        "hangs",
    ] {
        let kept = PathBuf::from(case(&result, name)["kept"].as_str().unwrap());
        assert!(kept.starts_with(root.path().join("tests-kept")), "{kept:?}");
        assert!(kept.join("in/tables").is_dir(), "{name}: {kept:?}");
    }
    let kept = PathBuf::from(case(&result, "wrong-content")["kept"].as_str().unwrap());
    assert!(
        std::fs::read_to_string(kept.join("out/tables/orders_enriched.csv"))
            .unwrap()
            .contains("\"12.10\"")
    );
    // The case folders are never written.
    assert!(!cases.join("first-run/source/data/out").exists());
    assert!(!cases.join("first-run/source/data/in/state.json").exists());
    assert_nothing_left(root.path());

    // The human form: a line per case with the first difference, and a summary.
    let out = root.dockless_with(
        &[
            "test",
            image,
            cases.to_str().unwrap(),
            "--case",
            "first-run",
            "--case",
            "wrong-content",
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PASS  first-run ("), "{stdout}");
    assert!(
        stdout.contains("FAIL  wrong-content (")
            && stdout.contains("): out/tables/orders_enriched.csv line 2: expected "),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n2 cases: 1 passed, 1 failed, 0 errors ("),
        "{stdout}"
    );
    assert_nothing_left(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn env_overrides_a_missing_image_and_an_unknown_case() {
    let root = support::Root::new("dockless test needs root here");
    let cases = demo_cases();
    let cases = cases.to_str().unwrap();
    // `-e` replaces a job's variable (the demo prints its config id) and adds new ones.
    let out = root.dockless_with(
        &[
            "test",
            demo_image(),
            cases,
            "--case",
            "first-run",
            "-e",
            "KBC_CONFIGID=from-e",
            "--json",
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = json_of(&out);
    let stdout = case(&result, "first-run")["stdout_tail"].as_str().unwrap();
    assert!(stdout.contains("config from-e,"), "{stdout}");
    // Without it, the job's own (the parameters' hash) is used.
    let out = root.dockless_with(
        &["test", demo_image(), cases, "--case", "first-run", "--json"],
        &[],
        "",
    );
    let result = json_of(&out);
    let stdout = case(&result, "first-run")["stdout_tail"].as_str().unwrap();
    assert!(
        !stdout.contains("from-e") && stdout.contains("config "),
        "{stdout}"
    );

    // As root with --userns: the cases run in an unprivileged range, with the same results.
    let out = root.dockless_with(
        &["test", demo_image(), cases, "--userns", "--json"],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["passed"], 3);

    // An image that does not exist: every case says so, none runs.
    let missing = format!("{}/no-such-component:1", test_env().registry);
    let out = root.dockless_with(&["test", &missing, cases, "--json"], &[], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let result = json_of(&out);
    assert_eq!(result["errors"], 3, "{result:#}");
    let message = case(&result, "next-run")["message"].as_str().unwrap();
    assert!(message.contains("no-such-component"), "{message}");

    // A case name that is not there: refused before anything runs.
    let out = root.dockless_with(&["test", demo_image(), cases, "--case", "nope"], &[], "");
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no case named \"nope\"")
            && stderr.contains("first-run, missing-input, next-run"),
        "{stderr}"
    );
    // Build flags without --build.
    let out = root.dockless_with(
        &[
            "test",
            demo_image(),
            cases,
            "--base",
            "x",
            "--repo",
            ".",
            "--ref",
            "HEAD",
            "--entrypoint",
            "sh",
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("add --build"),
        "{}",
        text(&out.stderr)
    );
    assert_nothing_left(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn build_from_the_working_tree_then_test_it() {
    let root = support::Root::new("dockless test --build needs root here");
    // A component repository as developers keep one: the code and its functional tests.
    let repo = root.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/component.sh"),
        repo.join("main.sh"),
    )
    .unwrap();
    copy_tree(&demo_cases(), &repo.join("tests/functional"));
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "component"]);
    let base = format!("{}/busybox:latest", test_env().registry);
    let functional = repo.join("tests/functional");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "test",
            "--build",
            "--base",
            &base,
            "--repo",
            repo.to_str().unwrap(),
            "--ref",
            "HEAD",
            "--entrypoint",
            "/bin/sh /home/main.sh",
            "--command",
            "chmod 0755 /home/main.sh",
        ];
        args.extend_from_slice(extra);
        args.push(functional.to_str().unwrap());
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let args = args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        root.dockless_with(&args, &[], "")
    };
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = json_of(&out);
    assert_eq!(result["passed"], 3, "{result:#}");
    assert!(
        result["image"]
            .as_str()
            .unwrap()
            .starts_with("localhost/build/repo:"),
        "{result:#}"
    );
    // A change in the working tree that breaks the component, committed: the next run builds
    // it and the cases catch it.
    let script = std::fs::read_to_string(repo.join("main.sh")).unwrap();
    std::fs::write(
        repo.join("main.sh"),
        script.replace("(1 + vat)", "(1 + vat + 0.01)"),
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "off by one percent"]);
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let result = json_of(&out);
    assert_eq!(case(&result, "first-run")["status"], "fail", "{result:#}");
    assert!(
        case(&result, "first-run")["message"]
            .as_str()
            .unwrap()
            .starts_with("out/tables/orders_enriched.csv line 2:"),
        "{result:#}"
    );
    assert_eq!(case(&result, "missing-input")["status"], "pass");
    assert_nothing_left(root.path());
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_signal_stops_the_running_case_and_starts_no_other() {
    let root = support::Root::new("dockless test needs root here");
    let cases = root.path().join("cases");
    for name in ["a-hangs", "b-hangs"] {
        copy_tree(&demo_cases().join("first-run"), &cases.join(name));
        std::fs::write(
            cases.join(name).join("source/data/config.json"),
            r#"{"parameters": {"simulate": "timeout"}}"#,
        )
        .unwrap();
    }
    let child = Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root.path())
        .env("DOCKLESS_RUN_ROOT", root.path().join("run"))
        .args([
            "test",
            demo_image(),
            cases.to_str().unwrap(),
            "--json",
            "--stop-timeout",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Spawned::new(child);
    // Until the first case's container runs (its job directory holds a data folder).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let jobs = root.path().join("jobs-v1");
    while !std::fs::read_dir(&jobs)
        .map(|d| d.flatten().any(|e| e.path().join("data/out").exists()))
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the case never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let result = json_of(&out);
    assert_eq!(case(&result, "a-hangs")["status"], "error", "{result:#}");
    assert_eq!(case(&result, "a-hangs")["message"], "stopped by SIGTERM");
    assert_eq!(case(&result, "b-hangs")["message"], "not run: SIGTERM");
    assert_nothing_left(root.path());
}
