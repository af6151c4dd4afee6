//! Output mapping: discovery, validation, precedence, destinations, atomicity.

use std::path::Path;

use dockless_staging::{DataDir, Error, Job, JobSpec, Storage};
use serde_json::{Value, json};

use crate::{Backend, TestStorage, export, export_sorted, id, seed, storage};

/// A job with `configuration`, run against a fresh data dir whose out/ is filled by `write`.
pub fn run_job(
    storage: &mut TestStorage,
    configuration: Value,
    succeeded: bool,
    write: impl FnOnce(&Path),
) -> (
    tempfile::TempDir,
    Result<dockless_staging::JobReport, Error>,
) {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        configuration,
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(storage, &dir).unwrap();
    write(&dir.data().join("out"));
    let result = job.finish(storage, &dir, succeeded, None);
    (work, result)
}

fn put(out: &Path, rel: &str, content: &str) {
    let path = out.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn mapping_loads_tables_with_manifest_metadata_and_files_with_system_tags(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let config = json!({"storage": {"output": {
        "tables": [{"source": "res.csv", "destination": "out.c-main.res", "primary_key": ["id"],
                    "metadata": [{"key": "k1", "value": "mapping"}]}],
        "files": [{"source": "report.txt", "tags": ["report"]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/res.csv", "id,name\n1,a\n2,b\n");
        put(
            out,
            "tables/res.csv.manifest",
            r#"{"metadata": [{"key": "k1", "value": "manifest"}, {"key": "k2", "value": "m2"}]}"#,
        );
        put(out, "files/report.txt", "hello");
        put(out, "files/other.bin", "xyz");
        put(
            out,
            "files/other.bin.manifest",
            r#"{"tags": ["x"], "is_permanent": true}"#,
        );
    });
    let report = result.unwrap();
    assert_eq!(report.output.tables.len(), 1);
    assert_eq!(report.output.tables[0].rows, 2);
    let info = s.table(&id("out.c-main.res")).unwrap().unwrap();
    assert_eq!(info.primary_key, ["id"]);
    let meta: Vec<(String, String)> = info
        .metadata
        .iter()
        .filter(|m| m.provider == "keboola.test")
        .map(|m| (m.key.clone(), m.value.clone()))
        .collect();
    assert_eq!(
        meta,
        [
            ("k1".to_string(), "mapping".to_string()),
            ("k2".to_string(), "m2".to_string())
        ]
    );
    assert!(
        info.metadata
            .iter()
            .any(|m| m.key == "KBC.createdBy.component.id" && m.value == "keboola.test")
    );
    let files = s.files(&Default::default()).unwrap();
    assert_eq!(files.len(), 2);
    let report_file = files.iter().find(|f| f.name == "report.txt").unwrap();
    assert_eq!(
        report_file.tags,
        [
            "componentId: keboola.test",
            "configurationId: cfg1",
            "report"
        ]
    );
    assert!(!report_file.is_permanent && report_file.is_encrypted);
    let other = files.iter().find(|f| f.name == "other.bin").unwrap();
    assert!(other.is_permanent && other.tags.contains(&"x".to_string()));
    let mut content = String::new();
    for mut r in s.open_file(report_file.id).unwrap() {
        std::io::Read::read_to_string(&mut r, &mut content).unwrap();
    }
    assert_eq!(content, "hello");
}

fn mapping_incremental_false_does_not_override_manifest_true(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-main.t", "id,v\n1,a\n", &[]);
    let config = json!({"storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-main.t"}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/t.csv", "id,v\n2,b\n");
        put(
            out,
            "tables/t.csv.manifest",
            r#"{"incremental": true, "primary_key": ["id"]}"#,
        );
    });
    result.unwrap();
    // Appended (manifest incremental wins) and the mapping's default [] key replaced the manifest's.
    assert_eq!(
        export_sorted(&s, "out.c-main.t"),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"b\"\n"
    );
    assert!(
        s.table(&id("out.c-main.t"))
            .unwrap()
            .unwrap()
            .primary_key
            .is_empty()
    );
}

fn destinations_resolve_from_manifest_file_name_and_default_bucket(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let config = json!({"storage": {"output": {"default_bucket": "in.c-default"}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/plain.csv", "a\n1\n");
        put(out, "tables/named", "a\n2\n");
        put(
            out,
            "tables/named.manifest",
            r#"{"destination": "renamed"}"#,
        );
        put(out, "tables/full", "a\n3\n");
        put(
            out,
            "tables/full.manifest",
            r#"{"destination": "out.c-x.full"}"#,
        );
        put(out, "tables/out.c-legacy.fromname.csv", "a\n4\n");
    });
    let report = result.unwrap();
    let mut dest: Vec<String> = report
        .output
        .tables
        .iter()
        .map(|t| t.destination.to_string())
        .collect();
    dest.sort();
    assert_eq!(
        dest,
        [
            "in.c-default.plain",
            "in.c-default.renamed",
            "out.c-legacy.fromname",
            "out.c-x.full"
        ]
    );
    // Without a default bucket, a bare name is a user error naming the file.
    let (_w, result) = run_job(&mut s, json!({}), true, |out| {
        put(out, "tables/plain.csv", "a\n1\n")
    });
    let err = result.unwrap_err();
    assert!(
        err.is_user_error() && err.to_string().contains("plain.csv"),
        "{err}"
    );
}

fn validation_errors_are_user_errors_naming_the_file(backend: Backend) {
    let cases: Vec<(&str, Value, crate::WriteOut<'static>)> = vec![
        (
            "orphaned",
            json!({}),
            Box::new(|o: &Path| put(o, "tables/x.csv.manifest", "{}")),
        ),
        (
            "res.csv",
            json!({"storage": {"output": {"tables": [{"source": "res.csv", "destination": "out.c-a.b"}]}}}),
            Box::new(|_: &Path| {}),
        ),
        (
            "sliced",
            json!({}),
            Box::new(|o: &Path| {
                put(o, "tables/sliced.csv/part1", "1,2\n");
                put(
                    o,
                    "tables/sliced.csv.manifest",
                    r#"{"destination": "out.c-a.s"}"#,
                );
            }),
        ),
        (
            "_timestamp",
            json!({}),
            Box::new(|o: &Path| {
                put(o, "tables/t.csv", "a,_timestamp\n1,2\n");
                put(
                    o,
                    "tables/t.csv.manifest",
                    r#"{"destination": "out.c-a.t"}"#,
                );
            }),
        ),
        (
            "destination",
            json!({}),
            Box::new(|o: &Path| {
                put(o, "tables/t.csv", "a\n1\n");
                put(
                    o,
                    "tables/t.csv.manifest",
                    r#"{"destination": "sys.c-a.t"}"#,
                );
            }),
        ),
        (
            "unrecognized",
            json!({}),
            Box::new(|o: &Path| {
                put(o, "tables/t.csv", "a\n1\n");
                put(
                    o,
                    "tables/t.csv.manifest",
                    r#"{"destination": "out.c-a.t", "bogus": 1}"#,
                );
            }),
        ),
        (
            "line 3",
            json!({}),
            Box::new(|o: &Path| {
                put(o, "tables/t.csv", "a,b\n1,2\n3\n");
                put(
                    o,
                    "tables/t.csv.manifest",
                    r#"{"destination": "out.c-a.t"}"#,
                );
            }),
        ),
    ];
    for (needle, config, write) in cases {
        let (_d, mut s) = storage(backend);
        let (_w, result) = run_job(&mut s, config, true, |o| write(o));
        let err = result.expect_err(needle);
        assert!(err.is_user_error(), "{needle}: {err:?}");
        let text = format!("{err}");
        assert!(text.contains(needle), "expected {needle:?} in {text:?}");
    }
}

fn sliced_gzipped_and_headless_tables(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let (_w, result) = run_job(&mut s, json!({}), true, |out| {
        let dir = out.join("tables/big.csv");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part-a"), "1,x\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"2,y\n3,z\n").unwrap();
        std::fs::write(dir.join("part-b.gz"), gz.finish().unwrap()).unwrap();
        put(
            out,
            "tables/big.csv.manifest",
            r#"{"destination": "out.c-a.big", "columns": ["id", "v"]}"#,
        );
        // Empty sliced folder with columns: an empty table.
        std::fs::create_dir_all(out.join("tables/none")).unwrap();
        put(
            out,
            "tables/none.manifest",
            r#"{"destination": "out.c-a.none", "columns": ["c"]}"#,
        );
        put(out, "tables/headless.csv", "5;\"q;r\"\n");
        put(
            out,
            "tables/headless.csv.manifest",
            r#"{"destination": "out.c-a.h", "columns": ["a", "b"], "delimiter": ";"}"#,
        );
    });
    result.unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-a.big"),
        "\"id\",\"v\"\n\"1\",\"x\"\n\"2\",\"y\"\n\"3\",\"z\"\n"
    );
    assert_eq!(export(&s, "out.c-a.none"), "\"c\"\n");
    assert_eq!(export(&s, "out.c-a.h"), "\"a\",\"b\"\n\"5\",\"q;r\"\n");
}

fn delete_where_runs_before_the_load(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-a.t", "id,cat\n1,a\n2,b\n3,c\n", &["id"]);
    let config = json!({"storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t",
        "incremental": true, "primary_key": ["id"], "delete_where_column": "cat", "delete_where_values": ["a", "b"]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/t.csv", "id,cat\n4,d\n")
    });
    result.unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-a.t"),
        "\"id\",\"cat\"\n\"3\",\"c\"\n\"4\",\"d\"\n"
    );
    let config = json!({"storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t",
        "incremental": true, "primary_key": ["id"],
        "delete_where": [{"where_filters": [{"column": "cat", "operator": "ne", "values_from_set": ["d"]}]}]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/t.csv", "id,cat\n5,e\n")
    });
    result.unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-a.t"),
        "\"id\",\"cat\"\n\"4\",\"d\"\n\"5\",\"e\"\n"
    );
}

fn a_failing_output_mapping_leaves_storage_byte_identical(backend: Backend) {
    let (d, mut s) = storage(backend);
    seed(&mut s, "out.c-a.keep", "id,v\n1,a\n", &["id"]);
    let before = d.dump();
    let config = json!({"storage": {"output": {"tables": [
        {"source": "good.csv", "destination": "out.c-a.keep", "incremental": true},
        {"source": "new.csv", "destination": "out.c-a.new"},
        {"source": "bad.csv", "destination": "out.c-a.bad"}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/good.csv", "id,v\n2,b\n");
        put(out, "tables/new.csv", "x\n1\n");
        put(out, "tables/bad.csv", "a,b\n1,2\n\"unterminated,3\n4,5,6\n");
        put(out, "files/f.txt", "file");
        put(out, "state.json", r#"{"cursor": 5}"#);
    });
    assert!(result.is_err());
    drop(s);
    assert_eq!(d.dump(), before);
}

fn failed_job_loads_only_write_always_tables(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let manifest = std::fs::read_to_string(
        crate::examples()
            .join("05-docker-bundle-test-derived/out-tables-write-always.csv.manifest"),
    )
    .unwrap();
    let (_w, result) = run_job(&mut s, json!({}), false, |out| {
        put(out, "tables/write-always.csv", "a\n1\n");
        put(out, "tables/write-always.csv.manifest", &manifest);
        put(out, "tables/other.csv", "a\n1\n");
        put(
            out,
            "tables/other.csv.manifest",
            r#"{"destination": "out.c-x.other"}"#,
        );
        put(out, "tables/broken.csv", "a\n1\n");
        put(out, "tables/broken.csv.manifest", "{not json");
        put(out, "files/f.txt", "x");
    });
    let report = result.unwrap();
    assert_eq!(report.output.tables.len(), 1);
    assert!(!report.state_stored);
    let tables: Vec<String> = s
        .tables()
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(tables, ["out.c-runner-test.write-always"]);
    assert!(s.files(&Default::default()).unwrap().is_empty());
}

fn native_types_manifest_sets_key_and_column_metadata(backend: Backend) {
    let (d, mut s) = storage(backend);
    let example = std::fs::read_to_string(
        crate::examples().join("04-php-component-manifests/expectedNewDataTypesManifest.manifest"),
    )
    .unwrap();
    let config = json!({"storage": {"output": {"default_bucket": "out.c-typed"}}});
    let write = |manifest: &str| {
        let manifest = manifest.to_string();
        move |out: &Path| {
            put(
                out,
                "tables/my-table.csv",
                "id,number,other_column\n1,2,3\n",
            );
            put(out, "tables/my-table.csv.manifest", &manifest);
        }
    };
    // The example (php-component's test fixture) declares base type VARCHAR, which is not one
    // of Keboola's base types: refused, naming the table, the column and the value.
    let before = d.dump();
    let (_w, result) = run_job(&mut s, config.clone(), true, write(&example));
    let err = result.unwrap_err();
    assert!(err.is_user_error());
    let text = err.to_string();
    assert!(
        text.contains("out.c-typed.my-table")
            && text.contains("\"number\"")
            && text.contains("\"VARCHAR\""),
        "{text}"
    );
    drop(s);
    assert_eq!(d.dump(), before);
    let mut s = d.open();
    let (_w, result) = run_job(
        &mut s,
        config,
        true,
        write(&example.replace("VARCHAR", "STRING")),
    );
    result.unwrap();
    let info = s.table(&id("out.c-typed.my-table")).unwrap().unwrap();
    assert_eq!(info.columns, ["id", "number", "other_column"]);
    assert_eq!(info.primary_key, ["id"]);
    assert!(
        info.metadata
            .iter()
            .any(|m| m.key == "KBC.description" && m.value == "Best table")
    );
    let id_meta = &info
        .column_metadata
        .iter()
        .find(|(c, _)| c == "id")
        .unwrap()
        .1;
    assert!(
        id_meta
            .iter()
            .any(|m| m.key == "KBC.datatype.basetype" && m.value == "INTEGER")
    );
    let id_type = info.column_type("id").unwrap();
    assert_eq!(id_type.base, dockless_staging::BaseType::Integer);
    assert_eq!(
        (
            id_type.length.as_deref(),
            id_type.default.as_deref(),
            id_type.nullable
        ),
        (Some("11"), Some("123"), false)
    );
    assert_eq!(
        export(&s, "out.c-typed.my-table"),
        "\"id\",\"number\",\"other_column\"\n\"1\",\"2\",\"3\"\n"
    );
}

fn a_file_mapping_replaces_the_manifest_and_an_empty_sliced_folder_empties_a_table(
    backend: Backend,
) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-a.t", "c\n1\n2\n", &[]);
    let config =
        json!({"storage": {"output": {"files": [{"source": "f.txt", "tags": ["from-mapping"]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "files/f.txt", "x");
        put(
            out,
            "files/f.txt.manifest",
            r#"{"tags": ["from-manifest"], "is_permanent": true}"#,
        );
        std::fs::create_dir_all(out.join("tables/t")).unwrap();
        put(
            out,
            "tables/t.manifest",
            r#"{"destination": "out.c-a.t", "columns": ["c"]}"#,
        );
    });
    result.unwrap();
    let file = &s.files(&Default::default()).unwrap()[0];
    assert!(file.tags.contains(&"from-mapping".to_string()));
    assert!(!file.tags.contains(&"from-manifest".to_string()));
    assert!(!file.is_permanent, "the manifest's flags are not merged in");
    assert_eq!(export(&s, "out.c-a.t"), "\"c\"\n");
}

fn yaml_components_write_yaml_manifests(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        format: dockless_staging::Format::Yaml,
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    put(&dir.data().join("out"), "tables/t.csv", "a,b\n1,2\n");
    put(
        &dir.data().join("out"),
        "tables/t.csv.manifest",
        "destination: out.c-y.t\nprimary_key:\n  - a\n",
    );
    put(&dir.data().join("out"), "state.yml", "cursor: 3\n");
    let report = job.finish(&mut s, &dir, true, None).unwrap();
    assert!(report.state_stored);
    assert_eq!(
        s.table(&id("out.c-y.t")).unwrap().unwrap().primary_key,
        ["a"]
    );
    let key = dockless_staging::StateKey {
        component: "keboola.test".into(),
        config: "cfg1".into(),
        row: None,
    };
    assert_eq!(
        s.state(&key).unwrap().unwrap()["component"],
        json!({"cursor": 3})
    );
}

fn delete_where_by_time_window(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-a.t", "id\n1\n", &["id"]);
    let config = json!({"storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t",
        "incremental": true, "primary_key": ["id"], "delete_where": [{"changed_since": "-1 hour"}]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/t.csv", "id\n2\n")
    });
    result.unwrap();
    assert_eq!(
        export(&s, "out.c-a.t"),
        "\"id\"\n\"2\"\n",
        "rows changed in the last hour were deleted first"
    );
    let config = json!({"storage": {"output": {"tables": [{"source": "t.csv", "destination": "out.c-a.t",
        "incremental": true, "primary_key": ["id"], "delete_where": [{"changed_until": "-1 hour"}]}]}}});
    let (_w, result) = run_job(&mut s, config, true, |out| {
        put(out, "tables/t.csv", "id\n3\n")
    });
    result.unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-a.t"),
        "\"id\"\n\"2\"\n\"3\"\n",
        "nothing older than an hour to delete"
    );
}

crate::backends!(
    mapping_loads_tables_with_manifest_metadata_and_files_with_system_tags,
    mapping_incremental_false_does_not_override_manifest_true,
    destinations_resolve_from_manifest_file_name_and_default_bucket,
    validation_errors_are_user_errors_naming_the_file,
    sliced_gzipped_and_headless_tables,
    delete_where_runs_before_the_load,
    a_failing_output_mapping_leaves_storage_byte_identical,
    failed_job_loads_only_write_always_tables,
    native_types_manifest_sets_key_and_column_metadata,
    a_file_mapping_replaces_the_manifest_and_an_empty_sliced_folder_empties_a_table,
    yaml_components_write_yaml_manifests,
    delete_where_by_time_window,
);
