//! Real CSV edge cases through import and export.

use std::io::Write;

use dockless_staging::{Error, ImportOptions, Storage, import_file};

use crate::{Backend, TestStorage, export, export_sorted, id, storage};

fn import_bytes(
    backend: Backend,
    bytes: &[u8],
    name: &str,
    options: &ImportOptions,
) -> (crate::Fixture, TestStorage, Result<u64, Error>) {
    let (dir, mut storage) = storage(backend);
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let result = import_file(&mut storage, &path, &id("in.c-t.t"), options, "test").map(|l| l.rows);
    (dir, storage, result)
}

fn quotes_newlines_delimiters_and_empty_values_round_trip(backend: Backend) {
    let csv = "id,text,empty\n1,\"say \"\"hi\"\"\",\n2,\"a,b\",\"\"\n3,\"line1\nline2\",x\n4,back\\slash,\n";
    let (_d, storage, rows) =
        import_bytes(backend, csv.as_bytes(), "a.csv", &ImportOptions::default());
    assert_eq!(rows.unwrap(), 4);
    // Rows come back in load order for a table loaded once.
    assert_eq!(
        export(&storage, "in.c-t.t"),
        "\"id\",\"text\",\"empty\"\n\"1\",\"say \"\"hi\"\"\",\"\"\n\"2\",\"a,b\",\"\"\n\"3\",\"line1\nline2\",\"x\"\n\"4\",\"back\\slash\",\"\"\n"
    );
}

fn export_is_keboola_input_csv_byte_for_byte(backend: Backend) {
    // Same content as the sample data folder's in/tables/source.csv.
    let (_d, storage, rows) = import_bytes(
        backend,
        b"number,someText\n10,ab\n20,cd\n25,ed\n26,fg\n30,ij\n",
        "s.csv",
        &ImportOptions::default(),
    );
    assert_eq!(rows.unwrap(), 5);
    let expected = std::fs::read_to_string(
        crate::examples().join("01-docs-sample-data-folder/in/tables/source.csv"),
    )
    .unwrap();
    assert_eq!(export(&storage, "in.c-t.t"), expected);
}

fn bom_crlf_and_gzip_are_read(backend: Backend) {
    let (_d, storage, rows) = import_bytes(
        backend,
        b"\xEF\xBB\xBFa,b\r\n1,2\r\n3,\"x\r\ny\"\r\n",
        "bom.csv",
        &ImportOptions::default(),
    );
    assert_eq!(rows.unwrap(), 2);
    let info = storage.table(&id("in.c-t.t")).unwrap().unwrap();
    assert_eq!(info.columns, ["a", "b"]);
    assert_eq!(
        export(&storage, "in.c-t.t"),
        "\"a\",\"b\"\n\"1\",\"2\"\n\"3\",\"x\r\ny\"\n"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"k,v\n1,one\n2,two\n").unwrap();
    let (_d, storage, rows) = import_bytes(
        backend,
        &gz.finish().unwrap(),
        "t.csv.gz",
        &ImportOptions::default(),
    );
    assert_eq!(rows.unwrap(), 2);
    assert_eq!(
        export_sorted(&storage, "in.c-t.t"),
        "\"k\",\"v\"\n\"1\",\"one\"\n\"2\",\"two\"\n"
    );
}

fn zero_rows_and_wide_rows(backend: Backend) {
    let (_d, storage, rows) =
        import_bytes(backend, b"a,b,c\n", "empty.csv", &ImportOptions::default());
    assert_eq!(rows.unwrap(), 0);
    assert_eq!(export(&storage, "in.c-t.t"), "\"a\",\"b\",\"c\"\n");

    let width = 1500;
    let header: Vec<String> = (0..width).map(|i| format!("col{i}")).collect();
    let row: Vec<String> = (0..width).map(|i| format!("v{i}")).collect();
    let csv = format!("{}\n{}\n", header.join(","), row.join(","));
    let (_d, storage, rows) = import_bytes(
        backend,
        csv.as_bytes(),
        "wide.csv",
        &ImportOptions::default(),
    );
    assert_eq!(rows.unwrap(), 1);
    let out = export(&storage, "in.c-t.t");
    assert!(
        out.ends_with("\"v1498\",\"v1499\"\n"),
        "{}",
        &out[out.len() - 40..]
    );
}

fn custom_delimiter_and_enclosure(backend: Backend) {
    let options = ImportOptions {
        delimiter: b'|',
        enclosure: Some(b'_'),
        ..ImportOptions::default()
    };
    let (_d, storage, rows) = import_bytes(backend, b"a|b\n_x|y_|2\n", "p.csv", &options);
    assert_eq!(rows.unwrap(), 1);
    assert_eq!(export(&storage, "in.c-t.t"), "\"a\",\"b\"\n\"x|y\",\"2\"\n");
}

fn malformed_rows_name_file_and_line(backend: Backend) {
    let (_d, storage, result) = import_bytes(
        backend,
        b"a,b\n1,2\n3,4,5\n",
        "bad.csv",
        &ImportOptions::default(),
    );
    let err = result.unwrap_err();
    assert!(err.is_user_error());
    let text = err.to_string();
    assert!(
        text.contains("bad.csv") && text.contains("line 3"),
        "{text}"
    );
    assert!(
        storage.table(&id("in.c-t.t")).unwrap().is_none(),
        "a failed import must not create the table"
    );

    let (_d, _s, result) = import_bytes(
        backend,
        b"a,b\n1,\xff\xfe\n",
        "latin.csv",
        &ImportOptions::default(),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Csv { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("latin.csv"), "{err}");
}

fn header_names_are_sanitized_and_checked(backend: Backend) {
    let (_d, storage, rows) = import_bytes(
        backend,
        "user-id#123,jméno\n1,2\n".as_bytes(),
        "h.csv",
        &ImportOptions::default(),
    );
    assert_eq!(rows.unwrap(), 1);
    assert_eq!(
        storage.table(&id("in.c-t.t")).unwrap().unwrap().columns,
        ["user_id_123", "jmeno"]
    );

    let (_d, _s, result) = import_bytes(
        backend,
        b"a,_timestamp\n1,2\n",
        "ts.csv",
        &ImportOptions::default(),
    );
    assert!(result.unwrap_err().to_string().contains("_timestamp"));
    let (_d, _s, result) =
        import_bytes(backend, b"a,a\n1,2\n", "dup.csv", &ImportOptions::default());
    assert!(matches!(result.unwrap_err(), Error::Columns { .. }));
}

fn more_columns_than_storage_holds_is_a_user_error_naming_limit_and_table(backend: Backend) {
    // 10,000 columns: SQLite's raw "too many columns" used to come out as a database
    // (application) error after the table had been half created.
    let width = 10_000;
    let header: Vec<String> = (0..width).map(|i| format!("col{i}")).collect();
    let csv = format!("{}\n", header.join(","));
    let limit = crate::max_columns(backend);
    let (dir, storage, result) = import_bytes(
        backend,
        csv.as_bytes(),
        "huge.csv",
        &ImportOptions::default(),
    );
    let err = result.unwrap_err();
    assert!(err.is_user_error(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("in.c-t.t") && text.contains(&limit.to_string()) && text.contains("10000"),
        "{text}"
    );
    assert!(storage.table(&id("in.c-t.t")).unwrap().is_none());
    drop(storage);
    assert!(!dir.dump().contains("in.c-t.t"), "nothing may be written");

    // The limit itself is accepted; adding columns past it to an existing table is refused.
    let header: Vec<String> = (0..limit).map(|i| format!("col{i}")).collect();
    let csv = format!("{}\n", header.join(","));
    let (dir, mut storage, result) = import_bytes(
        backend,
        csv.as_bytes(),
        "max.csv",
        &ImportOptions::default(),
    );
    result.unwrap();
    let path = dir.path().join("more.csv");
    let header: Vec<String> = (0..limit + 2).map(|i| format!("col{i}")).collect();
    std::fs::write(&path, format!("{}\n", header.join(","))).unwrap();
    let err = import_file(
        &mut storage,
        &path,
        &id("in.c-t.t"),
        &ImportOptions::default(),
        "test",
    )
    .unwrap_err();
    assert!(err.is_user_error(), "{err:?}");
    assert!(err.to_string().contains(&limit.to_string()), "{err}");
    assert_eq!(
        storage
            .table(&id("in.c-t.t"))
            .unwrap()
            .unwrap()
            .columns
            .len(),
        limit
    );
}

fn a_component_writing_too_wide_a_table_fails_the_job_as_a_user_error(backend: Backend) {
    let (dir, mut storage) = storage(backend);
    let limit = crate::max_columns(backend);
    let before = dir.dump();
    let header: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let (_w, result) =
        crate::output_mapping::run_job(&mut storage, serde_json::json!({}), true, |out| {
            std::fs::write(out.join("tables/out.c-main.ok.csv"), "a\n1\n").unwrap();
            std::fs::write(
                out.join("tables/out.c-main.wide.csv"),
                header.join(",") + "\n",
            )
            .unwrap();
        });
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyColumns {
                count: 10_000,
                limit: l,
                ..
            } if l == limit
        ),
        "{err:?}"
    );
    assert!(
        err.is_user_error() && err.to_string().contains("wide"),
        "{err}"
    );
    drop(storage);
    assert_eq!(dir.dump(), before);
}

crate::backends!(
    quotes_newlines_delimiters_and_empty_values_round_trip,
    export_is_keboola_input_csv_byte_for_byte,
    bom_crlf_and_gzip_are_read,
    zero_rows_and_wide_rows,
    custom_delimiter_and_enclosure,
    malformed_rows_name_file_and_line,
    header_names_are_sanitized_and_checked,
    more_columns_than_storage_holds_is_a_user_error_naming_limit_and_table,
    a_component_writing_too_wide_a_table_fails_the_job_as_a_user_error,
);
