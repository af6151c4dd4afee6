//! Jobs writing to one Storage at once.

use std::sync::mpsc;
use std::time::Duration;

use dockless_staging::{AnyStorage, ImportOptions, SqliteStorage, Storage, import_file};

use crate::{Backend, storage};

fn concurrent_writers_both_succeed_without_lost_rows(backend: Backend) {
    let (fixture, _first) = storage(backend);
    let rows = 20_000;
    let mut handles = Vec::new();
    for worker in 0..2 {
        let location = fixture.location.clone();
        let folder = fixture.path().to_path_buf();
        handles.push(std::thread::spawn(move || {
            let mut storage = location.open().unwrap();
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
    let storage = fixture.open();
    let shared = storage
        .table(&"out.c-shared.log".parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(shared.rows, 2 * 5 * rows);
    let mut out = Vec::new();
    let exported = storage
        .export_table(
            &"out.c-shared.log".parse().unwrap(),
            &Default::default(),
            &mut out,
        )
        .unwrap();
    assert_eq!(exported.rows, 2 * 5 * rows);
    for worker in 0..2 {
        let own = storage
            .table(&format!("out.c-w.own{worker}").parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(own.rows, rows);
    }
}

crate::backends!(concurrent_writers_both_succeed_without_lost_rows);

/// SQLite: one writer at a time for the whole file; a second one gives up after its busy
/// timeout.
#[test]
fn readers_do_not_wait_for_a_long_write_and_a_second_writer_times_out_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storage.db");
    let mut writer = AnyStorage::Sqlite(SqliteStorage::open(&db).unwrap());
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

/// PostgreSQL: writers of one table take turns (the second waits, it does not fail); writers
/// of other tables and readers do not wait.
#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn postgres_writers_of_one_table_take_turns_and_others_do_not_wait() {
    let (fixture, mut first) = storage(Backend::Postgres);
    crate::seed(&mut first, "in.c-a.t", "a\n1\n", &[]);
    let table = crate::id("in.c-a.t");
    let cols = vec!["a".to_string()];
    let mut tx = first.begin().unwrap();
    tx.prepare_table(&table, &cols, &[]).unwrap();

    // Another table: not blocked.
    let mut other = fixture.open();
    let mut tx2 = other.begin().unwrap();
    tx2.prepare_table(&crate::id("in.c-a.other"), &cols, &[])
        .unwrap();
    tx2.commit().unwrap();
    // A reader: not blocked, sees the last commit.
    assert_eq!(crate::export(&other, "in.c-a.t"), "\"a\"\n\"1\"\n");

    // The same table: waits until the first transaction ends.
    let (done_tx, done_rx) = mpsc::channel();
    let location = fixture.location.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = location.open().unwrap();
        let mut tx = s.begin().unwrap();
        tx.prepare_table(
            &crate::id("in.c-a.t"),
            &["a".to_string(), "b".to_string()],
            &[],
        )
        .unwrap();
        tx.commit().unwrap();
        done_tx.send(()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the second writer of the table did not wait"
    );
    drop(tx);
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the second writer went on once the first rolled back");
    waiter.join().unwrap();
    let info = fixture.open().table(&table).unwrap().unwrap();
    assert_eq!(info.columns, ["a", "b"]);
}
