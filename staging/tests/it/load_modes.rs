//! Full, incremental-with-key and incremental-without-key loads; columns and keys.

use dockless_staging::{Error, ExportOptions, ImportOptions, Storage, import_file};

use crate::{Backend, TestStorage, export_sorted, id, seed, storage};

fn load(
    storage: &mut TestStorage,
    csv: &str,
    pk: &[&str],
    incremental: bool,
) -> Result<u64, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.csv");
    std::fs::write(&path, csv).unwrap();
    let options = ImportOptions {
        primary_key: pk.iter().map(|s| s.to_string()).collect(),
        incremental,
        ..ImportOptions::default()
    };
    import_file(storage, &path, &id("out.c-m.t"), &options, "test").map(|l| l.rows)
}

fn changed_since(storage: &dyn Storage, since: i64) -> String {
    let mut out = Vec::new();
    let options = ExportOptions {
        changed_since: Some(since),
        ..ExportOptions::default()
    };
    storage
        .export_table(&id("out.c-m.t"), &options, &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn full_load_replaces_and_deduplicates_keys(backend: Backend) {
    let (_d, mut s) = storage(backend);
    load(&mut s, "id,v\n1,a\n2,b\n", &["id"], false).unwrap();
    load(&mut s, "id,v\n3,c\n3,c2\n", &["id"], false).unwrap();
    let out = export_sorted(&s, "out.c-m.t");
    assert!(
        out == "\"id\",\"v\"\n\"3\",\"c\"\n" || out == "\"id\",\"v\"\n\"3\",\"c2\"\n",
        "{out}"
    );
    assert_eq!(s.table(&id("out.c-m.t")).unwrap().unwrap().rows, 1);
}

fn incremental_with_key_upserts_and_keeps_timestamps_of_identical_rows(backend: Backend) {
    let (_d, mut s) = storage(backend);
    load(&mut s, "id,v\n1,a\n2,b\n3,c\n", &["id"], false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let between = dockless_staging::time::now_micros();
    std::thread::sleep(std::time::Duration::from_millis(5));
    load(&mut s, "id,v\n1,a\n2,B\n4,d\n", &["id"], true).unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-m.t"),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"2\",\"B\"\n\"3\",\"c\"\n\"4\",\"d\"\n"
    );
    // Only the changed and the new row carry the second load's _timestamp.
    let mut changed: Vec<String> = changed_since(&s, between)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    changed.sort();
    assert_eq!(changed, ["\"2\",\"B\"", "\"4\",\"d\""]);
}

fn incremental_without_key_appends(backend: Backend) {
    let (_d, mut s) = storage(backend);
    load(&mut s, "id,v\n1,a\n", &[], false).unwrap();
    load(&mut s, "id,v\n1,a\n", &[], true).unwrap();
    assert_eq!(
        export_sorted(&s, "out.c-m.t"),
        "\"id\",\"v\"\n\"1\",\"a\"\n\"1\",\"a\"\n"
    );
}

fn new_columns_are_added_and_missing_ones_refused(backend: Backend) {
    let (_d, mut s) = storage(backend);
    load(&mut s, "id,v\n1,a\n", &["id"], false).unwrap();
    load(&mut s, "v,id,extra\nb,2,x\n", &["id"], true).unwrap();
    let info = s.table(&id("out.c-m.t")).unwrap().unwrap();
    assert_eq!(info.columns, ["id", "v", "extra"]);
    assert_eq!(
        export_sorted(&s, "out.c-m.t"),
        "\"id\",\"v\",\"extra\"\n\"1\",\"a\",\"\"\n\"2\",\"b\",\"x\"\n"
    );
    let err = load(&mut s, "id\n3\n", &["id"], true).unwrap_err();
    assert!(
        matches!(&err, Error::MissingColumns { missing, .. } if missing == &["v", "extra"]),
        "{err:?}"
    );
    assert!(err.is_user_error());
}

fn primary_key_follows_the_load_unless_the_rows_have_duplicates(backend: Backend) {
    let (_d, mut s) = storage(backend);
    load(&mut s, "a,b\n1,x\n2,y\n", &["a"], false).unwrap();
    load(&mut s, "a,b\n3,z\n", &["b"], true).unwrap();
    assert_eq!(
        s.table(&id("out.c-m.t")).unwrap().unwrap().primary_key,
        ["b"]
    );
    load(&mut s, "a,b\n4,w\n", &[], true).unwrap();
    assert!(
        s.table(&id("out.c-m.t"))
            .unwrap()
            .unwrap()
            .primary_key
            .is_empty()
    );

    // Duplicates in the requested key: the old key stays (Keboola rolls the change back).
    let (_d, mut s) = storage(backend);
    seed(&mut s, "out.c-m.t", "a,b\n1,x\n2,x\n", &["a"]);
    load(&mut s, "a,b\n9,z\n", &["b"], true).unwrap();
    assert_eq!(
        s.table(&id("out.c-m.t")).unwrap().unwrap().primary_key,
        ["a"]
    );
}

crate::backends!(
    full_load_replaces_and_deduplicates_keys,
    incremental_with_key_upserts_and_keeps_timestamps_of_identical_rows,
    incremental_without_key_appends,
    new_columns_are_added_and_missing_ones_refused,
    primary_key_follows_the_load_unless_the_rows_have_duplicates,
);
