//! Two jobs writing to one Storage file at once.

use dockless_staging::{ImportOptions, SqliteStorage, Storage, import_file};

#[test]
fn concurrent_writers_both_succeed_without_lost_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storage.db");
    let rows = 20_000;
    let mut handles = Vec::new();
    for worker in 0..2 {
        let db = db.clone();
        let folder = dir.path().to_path_buf();
        handles.push(std::thread::spawn(move || {
            let mut storage = SqliteStorage::open(&db).unwrap();
            for round in 0..5 {
                let path = folder.join(format!("w{worker}-{round}.csv"));
                let mut csv = String::from("worker,round,n\n");
                for n in 0..rows {
                    csv.push_str(&format!("{worker},{round},{n}\n"));
                }
                std::fs::write(&path, csv).unwrap();
                let shared = ImportOptions {
                    incremental: true,
                    ..ImportOptions::default()
                };
                import_file(
                    &mut storage,
                    &path,
                    &"out.c-shared.log".parse().unwrap(),
                    &shared,
                    "t",
                )
                .unwrap();
                let own = ImportOptions {
                    primary_key: vec!["n".into()],
                    ..ImportOptions::default()
                };
                import_file(
                    &mut storage,
                    &path,
                    &format!("out.c-w.own{worker}").parse().unwrap(),
                    &own,
                    "t",
                )
                .unwrap();
            }
        }));
    }
    for h in handles {
        h.join().expect("a writer failed");
    }
    let storage = SqliteStorage::open(&db).unwrap();
    let shared = storage
        .table(&"out.c-shared.log".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(shared.rows, 2 * 5 * rows);
    for worker in 0..2 {
        let own = storage
            .table(&format!("out.c-w.own{worker}").parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(own.rows, rows);
    }
}

#[test]
fn readers_do_not_wait_for_a_long_write_and_a_second_writer_times_out_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storage.db");
    let mut writer = SqliteStorage::open(&db).unwrap();
    crate::seed(&mut writer, "in.c-a.t", "a\n1\n", &[]);
    let tx = writer.begin().unwrap();
    let quick = dockless_staging::SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let mut other = SqliteStorage::open_with(&db, &quick).unwrap();
    assert_eq!(
        other.tables().unwrap().len(),
        1,
        "a reader sees the last commit"
    );
    let err = other
        .begin()
        .err()
        .expect("the second writer must not get the lock");
    assert!(matches!(err, dockless_staging::Error::Db { .. }), "{err:?}");
    assert!(!err.is_user_error());
    drop(tx);
    other.begin().unwrap().commit().unwrap();
}
