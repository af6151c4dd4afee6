//! Native data types: both output manifest forms, base type validation, Keboola's
//! `authoritative` and `hints` rules, types kept with the table, typed input manifests, and a
//! Storage file from before types.

use std::path::Path;

use dockless_staging::{
    BaseType, DataDir, DataTypeSupport, Error, Job, JobReport, JobSpec, Storage,
};
use serde_json::{Value, json};

use crate::{Backend, TestStorage, id, seed, storage};

/// Runs a job of a component with `support`, its out/ filled by `write`.
fn run(
    s: &mut TestStorage,
    configuration: Value,
    support: DataTypeSupport,
    write: impl FnOnce(&Path),
) -> Result<JobReport, Error> {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        configuration,
        component_id: "keboola.typed".into(),
        config_id: Some("cfg".into()),
        action: "run".into(),
        data_type_support: support,
        ..JobSpec::default()
    })?;
    job.stage(s, &dir).unwrap();
    write(&dir.data().join("out"));
    job.finish(s, &dir, true, None)
}

/// Stages `table` into `in/tables/t.csv` for a component with `support`; returns its manifest.
fn input_manifest(s: &TestStorage, table: &str, support: DataTypeSupport) -> Value {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        configuration: json!({"storage": {"input": {"tables": [
            {"source": table, "destination": "t.csv"}]}}}),
        component_id: "keboola.reader".into(),
        action: "run".into(),
        data_type_support: support,
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(s, &dir).unwrap();
    let text = std::fs::read_to_string(dir.data().join("in/tables/t.csv.manifest")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn put(out: &Path, rel: &str, content: &str) {
    let path = out.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn typed_manifest() -> Value {
    json!({
        "destination": "out.c-t.orders",
        "schema": [
            {"name": "id", "primary_key": true, "nullable": false,
             "data_type": {"base": {"type": "INTEGER"},
                           "snowflake": {"type": "NUMBER", "length": "38,0"}}},
            {"name": "amount", "description": "gross amount",
             "data_type": {"base": {"type": "numeric", "length": 12.2, "default": 0}}},
            {"name": "paid", "data_type": {"base": {"type": "BOOLEAN"}}}
        ]
    })
}

fn write_typed(out: &Path) {
    put(out, "tables/orders.csv", "1,10.50,true\n2,3.00,false\n");
    put(
        out,
        "tables/orders.csv.manifest",
        &typed_manifest().to_string(),
    );
}

fn schema_form_types_are_kept_with_the_table_and_typed_input_manifests_carry_them(
    backend: Backend,
) {
    let (_d, mut s) = storage(backend);
    run(
        &mut s,
        json!({}),
        DataTypeSupport::Authoritative,
        write_typed,
    )
    .unwrap();
    let info = s.table(&id("out.c-t.orders")).unwrap().unwrap();
    assert_eq!(info.columns, ["id", "amount", "paid"]);
    assert_eq!(info.primary_key, ["id"]);
    let types: Vec<(&str, BaseType)> = info
        .column_types
        .iter()
        .map(|(c, t)| (c.as_str(), t.base))
        .collect();
    assert_eq!(
        types,
        [
            ("id", BaseType::Integer),
            ("amount", BaseType::Numeric),
            ("paid", BaseType::Boolean)
        ]
    );
    let amount = info.column_type("amount").unwrap();
    assert_eq!(
        (amount.length.as_deref(), amount.default.as_deref()),
        (Some("12.2"), Some("0"))
    );
    assert!(amount.nullable && !info.column_type("id").unwrap().nullable);
    assert_eq!(
        info.column_type("id").unwrap().backends["snowflake"].type_name,
        "NUMBER"
    );

    let typed = input_manifest(&s, "out.c-t.orders", DataTypeSupport::Hints);
    assert_eq!(
        typed["schema"],
        json!([
            {"name": "id",
             "data_type": {"base": {"type": "INTEGER"},
                           "snowflake": {"type": "NUMBER", "length": "38,0"}},
             "nullable": false, "primary_key": true},
            {"name": "amount",
             "data_type": {"base": {"type": "NUMERIC", "length": "12.2", "default": "0"}},
             "nullable": true, "primary_key": false, "description": "gross amount"},
            {"name": "paid", "data_type": {"base": {"type": "BOOLEAN"}},
             "nullable": true, "primary_key": false}
        ])
    );
    // The typed form keeps the legacy keys, as Keboola's input mapping writes them.
    assert_eq!(typed["columns"], json!(["id", "amount", "paid"]));
    assert_eq!(typed["primary_key"], json!(["id"]));

    let legacy = input_manifest(&s, "out.c-t.orders", DataTypeSupport::None);
    assert!(legacy.get("schema").is_none(), "{legacy}");
    let amount_meta = legacy["column_metadata"]["amount"].as_array().unwrap();
    let has = |key: &str, value: &str| {
        amount_meta
            .iter()
            .any(|m| m["key"] == key && m["value"] == value)
    };
    assert!(has("KBC.datatype.basetype", "NUMERIC"), "{legacy}");
    assert!(has("KBC.datatype.length", "12.2"));
    assert!(has("KBC.datatype.nullable", "1"));
}

fn legacy_form_column_metadata_types_the_table(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let manifest = json!({
        "destination": "out.c-t.legacy",
        "columns": ["id", "name"],
        "primary_key": ["id"],
        "metadata": [{"key": "KBC.datatype.backend", "value": "snowflake"}],
        "column_metadata": {
            // No KBC.datatype.nullable: a key column is not nullable all the same.
            "id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"},
                   {"key": "KBC.datatype.type", "value": "NUMBER"}],
            "name": [{"key": "KBC.datatype.basetype", "value": "STRING"},
                     {"key": "KBC.datatype.length", "value": 255}]
        }
    });
    run(&mut s, json!({}), DataTypeSupport::None, |out| {
        put(out, "tables/l.csv", "1,a\n");
        put(out, "tables/l.csv.manifest", &manifest.to_string());
    })
    .unwrap();
    let info = s.table(&id("out.c-t.legacy")).unwrap().unwrap();
    let id_type = info.column_type("id").unwrap();
    assert_eq!(id_type.base, BaseType::Integer);
    assert!(!id_type.nullable);
    assert_eq!(id_type.backends["snowflake"].type_name, "NUMBER");
    let name = info.column_type("name").unwrap();
    assert_eq!(
        (name.base, name.length.as_deref(), name.nullable),
        (BaseType::String, Some("255"), true)
    );
    let typed = input_manifest(&s, "out.c-t.legacy", DataTypeSupport::Authoritative);
    assert_eq!(
        typed["schema"][1],
        json!({"name": "name", "data_type": {"base": {"type": "STRING", "length": "255"}},
               "nullable": true, "primary_key": false})
    );
}

fn an_unknown_base_type_stores_nothing_in_either_form(backend: Backend) {
    for (name, manifest) in [
        (
            "schema",
            json!({"destination": "out.c-t.bad",
                   "schema": [{"name": "a", "data_type": {"base": {"type": "STRING"}}},
                              {"name": "b", "data_type": {"base": {"type": "DECIMAL"}}}]}),
        ),
        (
            "legacy",
            json!({"destination": "out.c-t.bad", "columns": ["a", "b"],
                   "column_metadata": {"b": [{"key": "KBC.datatype.basetype", "value": "DECIMAL"}]}}),
        ),
    ] {
        let (d, mut s) = storage(backend);
        seed(&mut s, "out.c-t.other", "x\n1\n", &[]);
        let before = d.dump();
        let err = run(&mut s, json!({}), DataTypeSupport::None, |out| {
            // A good table first: it must not be stored either.
            put(out, "tables/good.csv", "x\n2\n");
            put(
                out,
                "tables/good.csv.manifest",
                r#"{"destination": "out.c-t.other", "incremental": true}"#,
            );
            put(out, "tables/z.csv", "1,2\n");
            put(out, "tables/z.csv.manifest", &manifest.to_string());
        })
        .unwrap_err();
        assert!(err.is_user_error(), "{name}: {err}");
        let text = err.to_string();
        for part in ["out.c-t.bad", "\"b\"", "\"DECIMAL\"", "STRING, INTEGER"] {
            assert!(text.contains(part), "{name}: {text} lacks {part}");
        }
        drop(s);
        assert_eq!(d.dump(), before, "{name}");
    }
}

fn authoritative_checks_with_keboola_wording(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let missing_types = json!({"destination": "out.c-t.a", "schema": [
        {"name": "a", "data_type": {"base": {"type": "STRING"}}},
        {"name": "b"}, {"name": "c"}]});
    let write = |manifest: Value| {
        move |out: &Path| {
            put(out, "tables/a.csv", "1,2,3\n");
            put(out, "tables/a.csv.manifest", &manifest.to_string());
        }
    };
    let err = run(
        &mut s,
        json!({}),
        DataTypeSupport::Authoritative,
        write(missing_types.clone()),
    )
    .unwrap_err();
    assert!(err.is_user_error());
    assert!(
        err.to_string()
            .ends_with("Missing data type for columns: b, c"),
        "{err}"
    );
    // A legacy manifest (or none at all) has no schema: refused with authoritative and hints.
    for support in [DataTypeSupport::Authoritative, DataTypeSupport::Hints] {
        let err = run(&mut s, json!({}), support, |out| {
            put(out, "tables/a.csv", "a\n1\n");
            put(
                out,
                "tables/a.csv.manifest",
                r#"{"destination": "out.c-t.a", "columns": ["a"], "has_header": true}"#,
            );
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("Configuration schema is missing."),
            "{err}"
        );
    }
    assert!(s.table(&id("out.c-t.a")).unwrap().is_none());
    // The configuration's storage.output.data_type_support wins over the component's, both
    // ways.
    let relaxed = json!({"storage": {"output": {"data_type_support": "none"}}});
    run(
        &mut s,
        relaxed,
        DataTypeSupport::Authoritative,
        write(missing_types.clone()),
    )
    .unwrap();
    let info = s.table(&id("out.c-t.a")).unwrap().unwrap();
    assert_eq!(info.column_types.len(), 1);
    let strict = json!({"storage": {"output": {"data_type_support": "authoritative"}}});
    let err = run(&mut s, strict, DataTypeSupport::None, write(missing_types)).unwrap_err();
    assert!(
        err.to_string()
            .contains("Missing data type for columns: b, c")
    );
    let bad = json!({"storage": {"output": {"data_type_support": "sometimes"}}});
    let err = run(&mut s, bad, DataTypeSupport::None, |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Config { at, .. } if at == "storage.output.data_type_support"),
        "{err}"
    );
}

fn hints_create_string_columns_and_keep_the_types_as_metadata(backend: Backend) {
    let (_d, mut s) = storage(backend);
    run(&mut s, json!({}), DataTypeSupport::Hints, write_typed).unwrap();
    let info = s.table(&id("out.c-t.orders")).unwrap().unwrap();
    assert!(
        info.column_types
            .iter()
            .all(|(_, t)| t.base == BaseType::String && t.backends.is_empty())
    );
    assert!(!info.column_type("id").unwrap().nullable);
    assert!(info.column_type("paid").unwrap().nullable);
    let id_meta: Vec<(&str, &str)> = info
        .column_metadata
        .iter()
        .find(|(c, _)| c == "id")
        .unwrap()
        .1
        .iter()
        .map(|m| (m.key.as_str(), m.value.as_str()))
        .collect();
    assert!(id_meta.contains(&("KBC.datatype.basetype", "INTEGER")));
    assert!(id_meta.contains(&("KBC.datatype.nullable", "0")));
}

fn a_typed_table_keeps_its_base_types_and_an_untyped_one_stays_untyped(backend: Backend) {
    let (_d, mut s) = storage(backend);
    run(&mut s, json!({}), DataTypeSupport::None, write_typed).unwrap();
    let mut changed = typed_manifest();
    changed["schema"][2]["data_type"]["base"]["type"] = json!("STRING");
    let err = run(&mut s, json!({}), DataTypeSupport::None, |out| {
        put(out, "tables/orders.csv", "3,1.00,yes\n");
        put(out, "tables/orders.csv.manifest", &changed.to_string());
    })
    .unwrap_err();
    assert!(
        err.to_string().ends_with(
            "Table \"out.c-t.orders\" column \"paid\" has different type than the schema. \
             Table type: \"BOOLEAN\", schema type: \"STRING\"."
        ),
        "{err}"
    );
    // Same base type, new length and a new typed column: taken.
    let mut grown = typed_manifest();
    grown["schema"][1]["data_type"]["base"]["length"] = json!("14,2");
    grown["schema"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "note", "data_type": {"base": {"type": "STRING"}}}));
    run(&mut s, json!({}), DataTypeSupport::None, |out| {
        put(out, "tables/orders.csv", "3,1.00,true,x\n");
        put(out, "tables/orders.csv.manifest", &grown.to_string());
    })
    .unwrap();
    let info = s.table(&id("out.c-t.orders")).unwrap().unwrap();
    assert_eq!(
        info.column_type("amount").unwrap().length.as_deref(),
        Some("14,2")
    );
    assert_eq!(info.column_type("note").unwrap().base, BaseType::String);
    // Legacy metadata does not rewrite a typed column (id stays NOT NULL), only types new ones.
    let legacy = json!({"destination": "out.c-t.orders", "columns": ["id", "amount", "paid", "note", "extra"],
        "column_metadata": {"id": [{"key": "KBC.datatype.basetype", "value": "INTEGER"}],
                            "extra": [{"key": "KBC.datatype.basetype", "value": "DATE"}]}});
    run(&mut s, json!({}), DataTypeSupport::None, |out| {
        put(out, "tables/orders.csv", "4,1.00,true,y,2024-01-01\n");
        put(out, "tables/orders.csv.manifest", &legacy.to_string());
    })
    .unwrap();
    let info = s.table(&id("out.c-t.orders")).unwrap().unwrap();
    assert!(!info.column_type("id").unwrap().nullable);
    assert_eq!(info.column_type("extra").unwrap().base, BaseType::Date);

    seed(&mut s, "out.c-t.plain", "id,amount,paid\n9,1,0\n", &[]);
    let mut into_plain = typed_manifest();
    into_plain["destination"] = json!("out.c-t.plain");
    let report = run(&mut s, json!({}), DataTypeSupport::None, |out| {
        put(out, "tables/orders.csv", "1,2,true\n");
        put(out, "tables/orders.csv.manifest", &into_plain.to_string());
    })
    .unwrap();
    assert!(
        report
            .output
            .warnings
            .iter()
            .any(|w| w.contains("out.c-t.plain is not typed")),
        "{:?}",
        report.output.warnings
    );
    assert!(!s.table(&id("out.c-t.plain")).unwrap().unwrap().is_typed());
}

/// SQLite only: the embedded file's own schema versions (PostgreSQL's are tested in
/// postgres.rs).
#[test]
fn a_storage_file_from_before_types_is_migrated_and_keeps_its_tables() {
    let (d, mut s) = storage(Backend::Sqlite);
    seed(&mut s, "in.c-old.t", "id,v\n1,a\n", &["id"]);
    drop(s);
    let db = d.path().join("storage.db");
    {
        // Make it a version 1 file, as the dockless before native types wrote it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DROP TABLE column_types; PRAGMA user_version=1;")
            .unwrap();
    }
    let mut s = d.open();
    let old = s.table(&id("in.c-old.t")).unwrap().unwrap();
    assert_eq!((old.rows, old.is_typed()), (1, false));
    run(&mut s, json!({}), DataTypeSupport::None, write_typed).unwrap();
    assert!(s.table(&id("out.c-t.orders")).unwrap().unwrap().is_typed());
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    // Dropping a typed table drops its types.
    let mut tx = s.begin().unwrap();
    tx.drop_table(&id("out.c-t.orders")).unwrap();
    tx.commit().unwrap();
    let left: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM column_types", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // A file from a newer dockless is refused, never half-read.
    drop(s);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version=3;")
        .unwrap();
    match d.location.open() {
        Err(Error::SchemaVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (3, 2)),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a version 3 file was opened"),
    }
}

fn an_identical_row_bumps_the_change_time_of_a_typed_table_only(backend: Backend) {
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-t.plain", "id,v\n1,a\n", &["id"]);
    let typed = json!({"destination": "out.c-t.typed", "incremental": true, "schema": [
        {"name": "id", "primary_key": true, "data_type": {"base": {"type": "INTEGER"}}},
        {"name": "v", "data_type": {"base": {"type": "STRING"}}}]});
    let plain = json!({"destination": "out.c-t.plain", "incremental": true, "primary_key": ["id"]});
    let load = |s: &mut TestStorage| {
        run(s, json!({}), DataTypeSupport::None, |out| {
            put(out, "tables/typed.csv", "1,a\n");
            put(out, "tables/typed.csv.manifest", &typed.to_string());
            put(out, "tables/plain.csv", "id,v\n1,a\n");
            put(out, "tables/plain.csv.manifest", &plain.to_string());
        })
        .unwrap();
    };
    load(&mut s);
    let changed = |s: &TestStorage, t: &str| s.table(&id(t)).unwrap().unwrap().last_change;
    let (typed_before, plain_before) = (changed(&s, "out.c-t.typed"), changed(&s, "out.c-t.plain"));
    std::thread::sleep(std::time::Duration::from_millis(5));
    load(&mut s);
    assert!(changed(&s, "out.c-t.typed") > typed_before);
    assert_eq!(changed(&s, "out.c-t.plain"), plain_before);
}

crate::backends!(
    schema_form_types_are_kept_with_the_table_and_typed_input_manifests_carry_them,
    legacy_form_column_metadata_types_the_table,
    an_unknown_base_type_stores_nothing_in_either_form,
    authoritative_checks_with_keboola_wording,
    hints_create_string_columns_and_keep_the_types_as_metadata,
    a_typed_table_keeps_its_base_types_and_an_untyped_one_stays_untyped,
    an_identical_row_bumps_the_change_time_of_a_typed_table_only,
);
