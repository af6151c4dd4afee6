//! `--storage postgres://...`: the storage commands and a job against a real PostgreSQL (a
//! fresh database of the test cluster per test), and what a bad URL or password says.

use std::process::{Command, Output};

use dockless_testkit::TestDatabase;
use dockless_testkit::postgres::{postgres_url, with_database};
use serde_json::json;

use crate::support::{self, text};

/// `dockless --storage URL args...` on a root of its own (the state key lives there).
fn dockless(root: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockless"))
        .env("DOCKLESS_ROOT", root)
        .env("DOCKLESS_RUN_ROOT", root.join("run"))
        .arg("--storage")
        .arg(url)
        .args(args)
        .output()
        .expect("running dockless")
}

fn ok(root: &std::path::Path, url: &str, args: &[&str]) -> String {
    let out = dockless(root, url, args);
    assert!(
        out.status.success(),
        "dockless {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn storage_import_export_tables_files_and_migrate_on_postgres() {
    let db = TestDatabase::create();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let csv = r.join("orders.csv");
    std::fs::write(&csv, "id;name\n1;\"a;b\"\n2;\"say \"\"hi\"\"\"\n").unwrap();
    let csv = csv.to_str().unwrap();
    ok(
        r,
        &db.url,
        &[
            "storage",
            "import",
            csv,
            "in.c-main.orders",
            "--primary-key",
            "id",
            "--delimiter",
            ";",
        ],
    );
    assert_eq!(
        ok(r, &db.url, &["storage", "export", "in.c-main.orders"]),
        "\"id\",\"name\"\n\"1\",\"a;b\"\n\"2\",\"say \"\"hi\"\"\"\n"
    );
    let more = r.join("more.csv");
    std::fs::write(&more, "id,name\n2,two\n3,three\n").unwrap();
    ok(
        r,
        &db.url,
        &[
            "storage",
            "import",
            more.to_str().unwrap(),
            "in.c-main.orders",
            "--primary-key",
            "id",
            "--incremental",
        ],
    );
    let tables = ok(r, &db.url, &["storage", "tables"]);
    assert!(
        tables.starts_with("in.c-main.orders\t3 rows\t2 columns"),
        "{tables}"
    );
    let table = ok(r, &db.url, &["storage", "table", "in.c-main.orders"]);
    assert!(table.contains("primary key: id"), "{table}");
    assert_eq!(
        ok(
            r,
            &db.url,
            &[
                "storage",
                "export",
                "in.c-main.orders",
                "--where",
                "id=2,3",
                "--columns",
                "name"
            ]
        ),
        "\"name\"\n\"two\"\n\"three\"\n"
    );
    // Files: content in the database, back byte for byte.
    let file = r.join("notes.bin");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let id = ok(
        r,
        &db.url,
        &["storage", "upload", file.to_str().unwrap(), "--tag", "t1"],
    );
    let id = id.trim();
    assert!(ok(r, &db.url, &["storage", "files", "--tag", "t1"]).contains("notes.bin"));
    let back = r.join("back.bin");
    ok(
        r,
        &db.url,
        &["storage", "download", id, "-o", back.to_str().unwrap()],
    );
    assert!(std::fs::read(&back).unwrap() == content);
    ok(r, &db.url, &["storage", "rm", "in.c-main.orders"]);
    assert_eq!(ok(r, &db.url, &["storage", "tables"]), "");
    let out = dockless(r, &db.url, &["storage", "migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is at version"),
        "{}",
        text(&out.stderr)
    );
    // The URL's password is never printed.
    assert!(!text(&out.stderr).contains("dockless-pg-pass"));
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_bad_url_a_wrong_password_or_no_database_says_what_failed() {
    let root = tempfile::tempdir().unwrap();
    let url = postgres_url();
    let cases = [
        (
            url.replacen("dockless-pg-pass", "wrong-secret", 1),
            "password authentication failed for user dockless",
        ),
        (
            with_database(&url, "no_such_database"),
            "database no_such_database does not exist",
        ),
        (
            url.replacen(":5010/", ":1/", 1),
            "127.0.0.1:1/dockless: cannot reach the server",
        ),
        (
            format!("{url}?sslmode=sometimes"),
            "sslmode \"sometimes\" is not one of",
        ),
    ];
    for (bad, expected) in cases {
        let out = dockless(root.path(), &bad, &["storage", "tables"]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains(expected), "{bad}: {stderr}");
        assert!(
            !stderr.contains("wrong-secret") && !stderr.contains("dockless-pg-pass"),
            "a password in the message: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_job_reads_and_writes_a_postgres_storage() {
    let db = TestDatabase::create();
    let root = support::Root::new("dockless run needs root here");
    let script = "set -e\n\
        cp /data/in/tables/orders.csv /data/out/tables/copy.csv\n\
        echo '{\"seen\": 1}' > /data/out/state.json\n";
    let image = support::busybox_component(&root, script, "localhost/pg-job:1");
    let env = [("DOCKLESS_STORAGE", db.url.as_str())];
    let csv = root.path().join("orders.csv");
    std::fs::write(&csv, "id,v\n1,a\n2,b\n").unwrap();
    let out = root.dockless_with(
        &[
            "storage",
            "import",
            csv.to_str().unwrap(),
            "in.c-main.orders",
        ],
        &env,
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = json!({
        "storage": {
            "input": {"tables": [{"source": "in.c-main.orders", "destination": "orders.csv"}]},
            "output": {"tables": [{"source": "copy.csv", "destination": "out.c-main.copy",
                                   "primary_key": ["id"]}]}
        },
        "parameters": {}
    });
    let out = root.dockless_with(
        &[
            "run",
            &image,
            "--config",
            "-",
            "--json",
            "--component-id",
            "pg-test",
            "--config-id",
            "cfg-1",
        ],
        &env,
        &config.to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = support::json_of(&out);
    assert_eq!(result["class"], "success", "{result}");
    let out = root.dockless_with(&["storage", "export", "out.c-main.copy"], &env, "");
    assert_eq!(
        text(&out.stdout),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n"
    );
    // The state went to the database, not to a SQLite file under the root.
    let stored: String = db
        .client()
        .query_one(
            "SELECT value FROM dockless.states WHERE component = 'pg-test' AND config = 'cfg-1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored.contains("seen"), "{stored}");
    assert!(!root.path().join("storage.db").exists());
}
