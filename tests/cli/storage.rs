//! End-to-end tests of `dockless storage ...` against a real Storage file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "dockless-storage-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dockless(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockless"))
        .arg("--storage")
        .arg(db)
        .arg("storage")
        .args(args)
        .output()
        .expect("running dockless")
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = dockless(db, args);
    assert!(
        out.status.success(),
        "dockless storage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn import_export_table_and_rm() {
    let dir = Scratch::new("tables");
    let db = dir.path().join("sub/storage.db");
    let csv = dir.path().join("orders.csv");
    std::fs::write(&csv, "id;name\n1;\"a;b\"\n2;x\n").unwrap();
    let csv_arg = csv.to_str().unwrap();
    ok(
        &db,
        &[
            "import",
            csv_arg,
            "in.c-main.orders",
            "--primary-key",
            "id",
            "--delimiter",
            ";",
        ],
    );
    assert!(db.exists(), "the Storage file is created on first use");

    let tables = ok(&db, &["tables"]);
    assert!(
        tables.starts_with("in.c-main.orders\t2 rows\t2 columns"),
        "{tables}"
    );
    let table = ok(&db, &["table", "in.c-main.orders"]);
    assert!(
        table.contains("columns:     id, name")
            && table.contains("primary key: id")
            && table.contains("rows:        2"),
        "{table}"
    );

    std::fs::write(&csv, "id;name\n2;y\n3;z\n").unwrap();
    ok(
        &db,
        &[
            "import",
            csv_arg,
            "in.c-main.orders",
            "--primary-key",
            "id",
            "--delimiter",
            ";",
            "--incremental",
        ],
    );
    let export = ok(&db, &["export", "in.c-main.orders"]);
    let mut lines: Vec<&str> = export.lines().collect();
    lines[1..].sort();
    assert_eq!(
        lines,
        [
            "\"id\",\"name\"",
            "\"1\",\"a;b\"",
            "\"2\",\"y\"",
            "\"3\",\"z\""
        ]
    );

    let out = dir.path().join("out.csv");
    let out_arg = out.to_str().unwrap();
    ok(
        &db,
        &[
            "export",
            "in.c-main.orders",
            "-o",
            out_arg,
            "--columns",
            "name",
            "--where",
            "id!=1,2",
        ],
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "\"name\"\n\"z\"\n");

    ok(&db, &["rm", "in.c-main.orders"]);
    assert_eq!(ok(&db, &["tables"]), "");
}

#[test]
fn upload_list_download_and_remove_files() {
    let dir = Scratch::new("files");
    let db = dir.path().join("storage.db");
    let file = dir.path().join("report.bin");
    std::fs::write(&file, b"\x00\x01binary").unwrap();
    let id = ok(
        &db,
        &["upload", file.to_str().unwrap(), "--tag", "a", "--tag", "b"],
    );
    let id = id.trim();
    let listed = ok(&db, &["files", "--tag", "a"]);
    assert!(
        listed.starts_with(&format!("{id}\treport.bin\t8 bytes")) && listed.contains("[a, b]"),
        "{listed}"
    );
    assert_eq!(ok(&db, &["files", "--tag", "zzz"]), "");
    let out = dockless(&db, &["download", id]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"\x00\x01binary");
    ok(&db, &["rm", id]);
    assert_eq!(ok(&db, &["files"]), "");
}

#[test]
fn bad_input_fails_with_a_message() {
    let dir = Scratch::new("bad");
    let db = dir.path().join("storage.db");
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "a,b\n1,2\n3\n").unwrap();
    let out = dockless(&db, &["import", csv.to_str().unwrap(), "in.c-main.t"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv") && err.contains("line 3"), "{err}");
    let out = dockless(&db, &["import", csv.to_str().unwrap(), "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid table id"));
    let out = dockless(&db, &["table", "in.c-main.missing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
