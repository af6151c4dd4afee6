//! End-to-end: native data types through real containers. A busybox component
//! (tests/support/typed-component.sh, built like the demo component) writes a typed table;
//! Storage keeps the types (`dockless storage table` shows them); the next job's input
//! manifest carries them in the typed form with `--data-type-support authoritative` and in
//! the legacy form without it. Needs root and `scripts/test-env up`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use dockless_staging::{FileQuery, SqliteStorage, Storage};
use dockless_testkit::test_env;
use serde_json::{Value, json};

use crate::support::{self, text};

/// The typed component's reference in the test registry, built and pushed on first use.
fn typed_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let reference = format!("{}/typed-component:test", test_env().registry);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-component/build-image");
        // build-image takes its script relative to the demo component's folder.
        let out = Command::new(&script)
            .arg(&reference)
            .arg("../../tests/support/typed-component.sh")
            .output()
            .expect("run build-image");
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            text(&out.stderr)
        );
        reference
    })
}

struct Root(support::Root);

impl Root {
    fn new() -> Root {
        Root(support::Root::new("dockless run needs root here"))
    }

    fn dockless(&self, args: &[&str], stdin: &str) -> Output {
        self.0.dockless_with(args, &[], stdin)
    }

    /// Runs a job of the typed component with `--json`; returns the exit code and result.
    fn job(&self, config: &Value, flags: &[&str]) -> (Option<i32>, Value) {
        let mut args = vec![
            "run",
            typed_image(),
            "--config",
            "-",
            "--json",
            "--component-id",
            "typed",
            "--config-id",
            "c1",
        ];
        args.extend_from_slice(flags);
        let out = self.dockless(&args, &config.to_string());
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON result ({e}): stdout {} stderr {}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (out.status.code(), result)
    }

    fn storage(&self) -> SqliteStorage {
        SqliteStorage::open(&self.0.path().join("storage.db")).unwrap()
    }

    /// The content of the newest Storage file called `name`.
    fn newest_file(&self, name: &str) -> String {
        let storage = self.storage();
        let file = storage
            .files(&FileQuery::default())
            .unwrap()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no file {name} in Storage"));
        let mut content = String::new();
        for mut reader in storage.open_file(file.id).unwrap() {
            std::io::Read::read_to_string(&mut reader, &mut content).unwrap();
        }
        content
    }

    /// The input manifest of orders.csv the component saw in its last successful run.
    fn seen_manifest(&self) -> Value {
        serde_json::from_str(&self.newest_file("seen-orders.csv.json")).unwrap()
    }
}

fn reader_config() -> Value {
    json!({
        "storage": {"input": {"tables": [
            {"source": "out.c-types.orders", "destination": "orders.csv"}]}},
        "parameters": {},
    })
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_typed_table_round_trips_through_output_and_input_mapping() {
    let root = Root::new();

    // 1. The component writes a typed table (native-types form) as an authoritative one.
    let (code, result) = root.job(
        &json!({"parameters": {"form": "schema"}}),
        &["--data-type-support", "authoritative"],
    );
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(
        root.newest_file("data-type-support.txt").trim(),
        "authoritative"
    );
    let out = root.dockless(&["storage", "table", "out.c-types.orders"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        "type:        id INTEGER NOT NULL [snowflake: NUMBER(38,0)]",
        "type:        amount NUMERIC(12,2) DEFAULT \"0\"",
        "type:        paid BOOLEAN",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line:?} not in:\n{shown}"
        );
    }
    let info = root
        .storage()
        .table(&"out.c-types.orders".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(info.primary_key, ["id"]);
    assert_eq!(info.rows, 2);

    // 2. A component that supports types gets the typed form: schema with data_type.
    let (code, result) = root.job(&reader_config(), &["--data-type-support", "authoritative"]);
    assert_eq!(code, Some(0), "{result}");
    let typed = root.seen_manifest();
    assert_eq!(
        typed["schema"],
        json!([
            {"name": "id",
             "data_type": {"base": {"type": "INTEGER"},
                           "snowflake": {"type": "NUMBER", "length": "38,0"}},
             "nullable": false, "primary_key": true},
            {"name": "amount",
             "data_type": {"base": {"type": "NUMERIC", "length": "12,2", "default": "0"}},
             "nullable": true, "primary_key": false, "description": "gross amount"},
            {"name": "paid", "data_type": {"base": {"type": "BOOLEAN"}},
             "nullable": true, "primary_key": false}
        ]),
        "{typed}"
    );
    assert_eq!(typed["columns"], json!(["id", "amount", "paid"]));

    // 3. Without type support: the legacy form, the types only as KBC.datatype.* metadata.
    let (code, result) = root.job(&reader_config(), &[]);
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(root.newest_file("data-type-support.txt").trim(), "none");
    let legacy = root.seen_manifest();
    assert!(legacy.get("schema").is_none(), "{legacy}");
    let amount = legacy["column_metadata"]["amount"].as_array().unwrap();
    assert!(
        amount
            .iter()
            .any(|m| m["key"] == "KBC.datatype.basetype" && m["value"] == "NUMERIC"),
        "{legacy}"
    );

    // 4. The legacy output form loads into the typed table with the same base types...
    let (code, result) = root.job(&json!({"parameters": {"form": "legacy"}}), &[]);
    assert_eq!(code, Some(0), "{result}");
    // ...but not when the configuration makes the outputs authoritative, and not for a
    // component whose job file says `hints`: both need the native-types form.
    let (code, result) = root.job(
        &json!({"storage": {"output": {"data_type_support": "authoritative"}},
                "parameters": {"form": "legacy"}}),
        &[],
    );
    assert_eq!(code, Some(1), "{result}");
    assert_eq!(result["class"], "user");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .ends_with("Configuration schema is missing."),
        "{result}"
    );
    let dir = root.0.path().join("jobdef");
    std::fs::create_dir_all(&dir).unwrap();
    let job_file = dir.join("job.json");
    std::fs::write(
        &job_file,
        json!({"image": typed_image(), "configuration": {"parameters": {"form": "legacy"}},
               "component_id": "typed", "data_type_support": "hints"})
        .to_string(),
    )
    .unwrap();
    let out = root.dockless(&["run", "--job", job_file.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Configuration schema is missing."),
        "{}",
        text(&out.stdout)
    );
    dockless_testkit::assert_clean(root.0.path(), &["rootfs-v1", "jobs-v1"]);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn an_unknown_base_type_is_a_user_error_and_nothing_is_stored() {
    let root = Root::new();
    let (code, result) = root.job(&json!({"parameters": {"form": "bad-type"}}), &[]);
    assert_eq!(code, Some(1), "{result}");
    assert_eq!(result["class"], "user");
    let message = result["message"].as_str().unwrap();
    for part in ["out.c-types.orders", "\"amount\"", "\"MONEY\""] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    let storage = root.storage();
    assert!(storage.tables().unwrap().is_empty());
    assert!(storage.files(&FileQuery::default()).unwrap().is_empty());
}

/// A git repository of the Keboola Python library test component
/// (tests/support/kbc-python-component/main.py), committed at a fixed time.
fn python_component_repo(dir: &Path) {
    let main =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kbc-python-component/main.py");
    let main = std::fs::read_to_string(main).unwrap();
    support::commit_repo(dir, &[("main.py", &main)]);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn keboolas_python_library_round_trips_a_typed_table() {
    let root = Root::new();
    let repo = tempfile::tempdir().unwrap();
    python_component_repo(repo.path());
    let csv = root.0.path().join("input.csv");
    std::fs::write(&csv, "id,name,amount\n1,alice,10.50\n2,bob,3\n").unwrap();
    let out = root.dockless(
        &[
            "storage",
            "import",
            csv.to_str().unwrap(),
            "in.c-python.input",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One job file per source table and data type support: the image is built from the
    // repository on the test registry's keboola-python image (cached after the first job).
    let run = |source: &str, support: &str| {
        let job = json!({
            "build": {"base": format!("{}/keboola-python:latest", test_env().registry),
                      "repository": repo.path(), "ref": "HEAD",
                      "entrypoint": "python3 -u /home/main.py"},
            "configuration": {
                "storage": {"input": {"tables": [{"source": source, "destination": "input.csv"}]}},
                "parameters": {"multiplier": 2}},
            "component_id": "kbc-python",
            "config_id": "py",
            "data_type_support": support,
        });
        let path = root.0.path().join("job.json");
        std::fs::write(&path, job.to_string()).unwrap();
        let out = root.dockless(&["run", "--job", path.to_str().unwrap(), "--json"], "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{source} {support}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    let types = |table: &str| -> Vec<(String, String, Option<String>, bool)> {
        root.storage()
            .table(&table.parse().unwrap())
            .unwrap()
            .unwrap()
            .column_types
            .into_iter()
            .map(|(c, t)| (c, t.base.to_string(), t.length, t.nullable))
            .collect()
    };
    let expected = vec![
        ("id".to_string(), "INTEGER".to_string(), None, false),
        ("name".to_string(), "STRING".to_string(), None, true),
        (
            "amount".to_string(),
            "NUMERIC".to_string(),
            Some("12,2".to_string()),
            true,
        ),
        (
            "amount_multiplied".to_string(),
            "NUMERIC".to_string(),
            Some("12,2".to_string()),
            true,
        ),
    ];
    // The library writes the native-types form for an authoritative component: a typed table.
    run("in.c-python.input", "authoritative");
    assert_eq!(types("out.c-python.output"), expected);
    // It reads the typed input manifest of that table (and writes it again, typed)...
    run("out.c-python.output", "authoritative");
    // ...and without type support reads the legacy form and writes legacy manifests, which
    // load into the typed table with the same base types.
    run("out.c-python.output", "none");
    assert_eq!(types("out.c-python.output"), expected);
    let out = root.dockless(&["storage", "export", "out.c-python.output"], "");
    let exported = text(&out.stdout);
    assert!(
        exported.contains("\"1\",\"alice\",\"10.50\",\"21.00\""),
        "{exported}"
    );
}
