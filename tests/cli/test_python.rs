//! End-to-end: `dockless test --build` with a component written on Keboola's Python library
//! (`tests/support/kbc-python-component`: `main.py` and its datadirtest-layout cases), built
//! from a git repository made here onto the test registry's `keboola-python` image (Debian's
//! python3 plus `keboola-component`, `testenv/images/keboola-python.sh`), each case in a real
//! container. The library picks the manifest form from `KBC_DATA_TYPE_SUPPORT`, so the typed
//! cases pass only with `-e KBC_DATA_TYPE_SUPPORT=authoritative`. Needs root and
//! `scripts/test-env up`.

use std::path::{Path, PathBuf};
use std::process::Output;

use dockless_testkit::test_env;
use serde_json::Value;

use crate::support::{self, text};

/// The component and its cases, in the source tree.
fn component_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kbc-python-component")
}

/// A git repository holding the component's `main.py` (committed at a fixed time).
fn component_repo(dir: &Path) {
    let main = std::fs::read_to_string(component_dir().join("main.py")).unwrap();
    support::commit_repo(dir, &[("main.py", &main)]);
}

/// A root and a repository of the component for one test.
struct Fixture {
    root: support::Root,
    repo: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let root = support::Root::new("dockless test runs containers as root here");
        let repo = tempfile::tempdir().unwrap();
        component_repo(repo.path());
        Fixture { root, repo }
    }

    /// `dockless test --build ... --json <cases> DIR` with `extra` flags; the exit code and the
    /// JSON report.
    fn test(&self, cases: &str, extra: &[&str]) -> (Option<i32>, Value, Output) {
        let base = format!("{}/keboola-python:latest", test_env().registry);
        let repo = self.repo.path().to_str().unwrap();
        let dir = component_dir().join(cases);
        let mut args = vec![
            "test",
            "--build",
            "--base",
            &base,
            "--repo",
            repo,
            "--ref",
            "HEAD",
            "--entrypoint",
            "python3 -u /home/main.py",
            "--json",
        ];
        args.extend_from_slice(extra);
        args.push(dir.to_str().unwrap());
        let out = self.root.dockless_with(&args, &[], "");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); stdout: {}\nstderr: {}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        dockless_testkit::assert_clean(
            self.root.path(),
            &[
                "rootfs-v1",
                "run/containers-v1/runs",
                "run/containers-v1/containers",
                "jobs-v1",
                "builds-v1/tmp",
                "store/ingest",
            ],
        );
        (out.status.code(), report, out)
    }
}

/// The report's case `name`.
fn case<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {report:#}"))
}

/// An expected manifest of the component's cases, parsed.
fn expected_manifest(case_dir: &str) -> Value {
    let path = component_dir()
        .join(case_dir)
        .join("expected/data/out/tables/output.csv.manifest");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn python_component_legacy_cases_pass_including_the_user_error() {
    let fixture = Fixture::new();
    let (code, report, out) = fixture.test("tests/functional", &[]);
    assert_eq!(code, Some(0), "{report:#}\nstderr: {}", text(&out.stderr));
    assert_eq!(
        (&report["passed"], &report["failed"], &report["errors"]),
        (&3.into(), &0.into(), &0.into()),
        "{report:#}"
    );
    for name in ["first-run", "next-run", "bad-multiplier"] {
        let c = case(&report, name);
        assert_eq!(c["status"], "pass", "{c:#}");
        assert_eq!(c["differences"], Value::Array(vec![]), "{c:#}");
    }
    // The user error is the component's own: exit 1 with the library's UserException.
    let bad = case(&report, "bad-multiplier");
    assert_eq!(
        (&bad["exit_code"], &bad["expected_code"]),
        (&1.into(), &1.into())
    );
    assert!(
        bad["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("UserException: Parameter 'multiplier' must be a number, got 'three'"),
        "{bad:#}"
    );
    // The passing cases ran the component's code, not a stub: the library logged its default.
    assert!(
        case(&report, "first-run")["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("using the default run action"),
        "{report:#}"
    );
    // The legacy manifest the cases expect: a top-level primary key, no typed schema.
    for dir in ["tests/functional/first-run", "tests/functional/next-run"] {
        let manifest = expected_manifest(dir);
        assert_eq!(manifest["primary_key"], serde_json::json!(["id"]), "{dir}");
        assert!(manifest.get("schema").is_none(), "{dir}: {manifest:#}");
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn python_component_typed_cases_pass_only_with_data_type_support() {
    let fixture = Fixture::new();
    let manifest = expected_manifest("tests/functional-typed/first-run-typed");
    let schema = manifest["schema"]
        .as_array()
        .expect("a typed manifest has a schema");
    assert!(
        schema
            .iter()
            .any(|c| c["name"] == "id" && c["primary_key"] == true),
        "{manifest:#}"
    );
    assert!(manifest.get("primary_key").is_none(), "{manifest:#}");

    let (code, report, out) = fixture.test(
        "tests/functional-typed",
        &["-e", "KBC_DATA_TYPE_SUPPORT=authoritative"],
    );
    assert_eq!(code, Some(0), "{report:#}\nstderr: {}", text(&out.stderr));
    assert_eq!(report["passed"], 1, "{report:#}");
    assert_eq!(
        case(&report, "first-run-typed")["status"],
        "pass",
        "{report:#}"
    );

    // Without the variable the library writes the legacy manifest: the same table, another
    // manifest, and the comparison must say so.
    let (code, report, _) = fixture.test("tests/functional-typed", &[]);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        (&report["passed"], &report["failed"], &report["errors"]),
        (&0.into(), &1.into(), &0.into()),
        "{report:#}"
    );
    let c = case(&report, "first-run-typed");
    assert_eq!(
        (&c["status"], &c["exit_code"]),
        (&"fail".into(), &0.into()),
        "{c:#}"
    );
    let differences = c["differences"].as_array().unwrap();
    assert!(!differences.is_empty(), "{c:#}");
    assert!(
        differences
            .iter()
            .all(|d| d["kind"] == "json" && d["path"] == "out/tables/output.csv.manifest"),
        "only the manifest differs: {c:#}"
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("out/tables/output.csv.manifest at "),
        "{c:#}"
    );
}
