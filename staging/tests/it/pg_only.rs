//! What only the PostgreSQL backend has: connection errors, schema versions, migrations from
//! several hosts at once, snapshots across a full load, file content in chunks.

use std::io::Read;

use dockless_staging::storage::postgres::migrate;
use dockless_staging::storage::{NewFile, Slice};
use dockless_staging::{Error, PostgresStorage, Storage};
use dockless_testkit::TestDatabase;
use dockless_testkit::postgres::{postgres_url, with_database};

use crate::{Backend, export, seed, storage};

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn connection_errors_name_the_server_and_what_failed_never_the_password() {
    let url = postgres_url();
    let wrong = url.replacen("dockless-pg-pass", "not-the-password", 1);
    assert_ne!(wrong, url, "the test URL carries the test password");
    let err = PostgresStorage::connect(&wrong).err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1") && text.contains("password authentication failed"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!err.is_user_error());

    let err = PostgresStorage::connect(&with_database(&url, "no_such_db"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("database no_such_db does not exist"),
        "{err}"
    );

    // Nothing listens on port 1.
    let down = url.replacen(":5010/", ":1/", 1);
    let err = PostgresStorage::connect(&down).err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:1") && text.contains("cannot reach the server"),
        "{text}"
    );
    assert!(!text.contains("dockless-pg-pass"), "{text}");
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn an_empty_database_is_set_up_and_other_versions_are_refused_naming_both() {
    let db = TestDatabase::create();
    PostgresStorage::connect(&db.url).unwrap();
    let mut sql = db.client();
    let latest = migrate::latest();
    let version: i64 = sql
        .query_one("SELECT max(version) FROM dockless.schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, latest);

    sql.execute(
        "INSERT INTO dockless.schema_version (version, name) VALUES ($1, 'future')",
        &[&(latest + 1)],
    )
    .unwrap();
    match PostgresStorage::connect(&db.url) {
        Err(Error::PgSchema {
            found, supported, ..
        }) => assert_eq!((found, supported), (latest + 1, latest)),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    let err = PostgresStorage::migrate(&db.url).err().unwrap();
    assert!(err.to_string().contains("newer dockless"), "{err}");

    // An older schema (the catalog of migration 1 alone): refused until `dockless storage
    // migrate` once a second migration exists; with one, it is simply current.
    sql.batch_execute(
        "DROP SCHEMA dockless CASCADE; CREATE SCHEMA dockless;
         CREATE TABLE dockless.schema_version (version bigint PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());",
    )
    .unwrap();
    if latest > 1 {
        // A real older version (1) is the catalog of migration 1 alone.
        sql.batch_execute(&format!(
            "SET search_path TO dockless; {}; INSERT INTO schema_version VALUES (1, 'storage')",
            migrate::MIGRATIONS[0].sql
        ))
        .unwrap();
        let err = PostgresStorage::connect(&db.url).err().unwrap();
        assert!(
            err.to_string().contains("dockless storage migrate"),
            "{err}"
        );
        assert_eq!(PostgresStorage::migrate(&db.url).unwrap(), (1, latest));
    } else {
        sql.batch_execute(&format!(
            "SET search_path TO dockless; {}; INSERT INTO schema_version VALUES (1, 'storage')",
            migrate::MIGRATIONS[0].sql
        ))
        .unwrap();
        assert_eq!(PostgresStorage::migrate(&db.url).unwrap(), (1, 1));
    }
    PostgresStorage::connect(&db.url).unwrap();
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn hosts_migrating_at_once_apply_each_step_once() {
    let db = TestDatabase::create();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || PostgresStorage::migrate(&url).unwrap())
        })
        .collect();
    let mut fresh = 0;
    for h in handles {
        let (before, after) = h.join().unwrap();
        assert_eq!(after, migrate::latest());
        if before == 0 {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one host set the schema up");
    let rows: i64 = db
        .client()
        .query_one("SELECT count(*) FROM dockless.schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, migrate::latest());
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn a_reader_keeps_its_snapshot_across_a_full_load_and_old_rows_are_dropped_later() {
    let (fixture, mut s) = storage(Backend::Postgres);
    seed(&mut s, "in.c-a.t", "id,v\n1,old\n2,old\n", &["id"]);
    assert!(fixture.dump().contains("\"old\""));
    // A reader in REPEATABLE READ sees the catalog of its snapshot; the table it names must
    // still hold that snapshot's rows after another host's full load commits.
    let StorageLocationPg(url) = StorageLocationPg::of(&fixture.location);
    let mut reader = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut snapshot = reader
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    let seq: i64 = snapshot
        .query_one("SELECT seq FROM dockless.tables WHERE id = 'in.c-a.t'", &[])
        .unwrap()
        .get(0);
    seed(&mut s, "in.c-a.t", "id,v\n3,new\n", &["id"]);
    assert_eq!(export(&s, "in.c-a.t"), "\"id\",\"v\"\n\"3\",\"new\"\n");
    let old: i64 = snapshot
        .query_one(&format!("SELECT count(*) FROM dockless.t{seq}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(old, 2, "the reader's snapshot still has its rows");
    snapshot.commit().unwrap();
    // The old table is retired, and dropped by a write once the grace period is over.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let retired: i64 = admin
        .query_one(
            "UPDATE dockless.retired_tables SET retired = 0 WHERE name = $1
             RETURNING 1::bigint",
            &[&format!("t{seq}")],
        )
        .unwrap()
        .get(0);
    assert_eq!(retired, 1);
    s.begin().unwrap().commit().unwrap();
    let left: Option<String> = admin
        .query_one(&format!("SELECT to_regclass('dockless.t{seq}')::text"), &[])
        .unwrap()
        .get(0);
    assert_eq!(left, None, "the retired table was dropped");
}

/// The URL of a PostgreSQL fixture.
struct StorageLocationPg(String);

impl StorageLocationPg {
    fn of(location: &dockless_staging::StorageLocation) -> StorageLocationPg {
        match location {
            dockless_staging::StorageLocation::Postgres(url) => StorageLocationPg(url.clone()),
            other => panic!("not a PostgreSQL fixture: {other}"),
        }
    }
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn file_content_is_stored_and_read_in_chunks() {
    let (fixture, mut s) = storage(Backend::Postgres);
    // 2.5 MiB of varied bytes: three chunks of a plain file, plus a sliced file of two.
    let content: Vec<u8> = (0..(5u32 << 19))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut tx = s.begin().unwrap();
    let new = |name: &str| NewFile {
        name: name.into(),
        tags: vec!["t".into()],
        is_public: false,
        is_permanent: true,
        is_encrypted: false,
    };
    let slice = |name: &str, bytes: Vec<u8>| Slice {
        name: name.into(),
        reader: Box::new(std::io::Cursor::new(bytes)),
        origin: name.into(),
    };
    let plain = tx
        .add_file(
            &new("big.bin"),
            &mut std::iter::once(slice("big.bin", content.clone())),
        )
        .unwrap();
    let sliced = tx
        .add_file(
            &new("parts"),
            &mut vec![slice("a", b"first".to_vec()), slice("b", Vec::new())].into_iter(),
        )
        .unwrap();
    tx.commit().unwrap();
    let chunks: i64 = count_chunks(&fixture, plain);
    assert_eq!(chunks, 3);
    let info = s.file(plain).unwrap().unwrap();
    assert_eq!((info.size, info.is_sliced), (content.len() as u64, false));
    let mut back = Vec::new();
    for mut r in s.open_file(plain).unwrap() {
        r.read_to_end(&mut back).unwrap();
    }
    assert!(back == content, "the content came back changed");
    let info = s.file(sliced).unwrap().unwrap();
    assert_eq!(info.slices, ["a", "b"]);
    let parts: Vec<Vec<u8>> = s
        .open_file(sliced)
        .unwrap()
        .into_iter()
        .map(|mut r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            v
        })
        .collect();
    assert_eq!(parts, [b"first".to_vec(), Vec::new()]);
    // Deleting the file deletes its chunks.
    let mut tx = s.begin().unwrap();
    tx.delete_file(plain).unwrap();
    tx.commit().unwrap();
    assert_eq!(count_chunks(&fixture, plain), 0);
}

fn count_chunks(fixture: &crate::Fixture, file: i64) -> i64 {
    let StorageLocationPg(url) = StorageLocationPg::of(&fixture.location);
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap()
        .query_one(
            "SELECT count(*) FROM dockless.file_chunks WHERE file_id = $1",
            &[&file],
        )
        .unwrap()
        .get(0)
}

#[test]
#[ignore = "needs scripts/test-env (PostgreSQL)"]
fn every_sslmode_connects_as_libpq_would_and_a_wrong_root_is_refused() {
    use dockless_staging::storage::postgres::ConnectTarget;
    let url = postgres_url();
    let ca = std::env::var("DOCKLESS_TEST_POSTGRES_CA")
        .expect("DOCKLESS_TEST_POSTGRES_CA is not set: eval \"$(scripts/test-env env)\"");
    let encrypted = |query: &str| -> bool {
        let target = ConnectTarget::resolve(&format!("{url}?{query}")).unwrap();
        target
            .connect()
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert!(!encrypted("sslmode=disable"));
    assert!(encrypted("sslmode=prefer"));
    assert!(encrypted("sslmode=require"));
    assert!(encrypted(&format!("sslmode=verify-ca&sslrootcert={ca}")));
    assert!(encrypted(&format!("sslmode=verify-full&sslrootcert={ca}")));
    // The server's certificate is self-signed: the system's roots do not vouch for it.
    let err = ConnectTarget::resolve(&format!("{url}?sslmode=verify-full&sslrootcert=system"))
        .unwrap()
        .connect()
        .err()
        .expect("a certificate no root vouches for was accepted");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:5010") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    // A certificate for another name: fine for verify-ca, refused by verify-full.
    let elsewhere = url.replacen("@127.0.0.1:", "@db.elsewhere.test:", 1);
    let named = |mode: &str| {
        ConnectTarget::resolve(&format!(
            "{elsewhere}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}"
        ))
        .unwrap()
        .connect()
    };
    named("verify-ca").unwrap();
    let err = named("verify-full")
        .err()
        .expect("verify-full ignored the name");
    assert!(err.to_string().contains("db.elsewhere.test"), "{err}");
    // The whole Storage over verify-full.
    let db = TestDatabase::create();
    let mut s = dockless_staging::AnyStorage::Postgres(Box::new(
        PostgresStorage::connect(&format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url))
            .unwrap(),
    ));
    seed(&mut s, "in.c-tls.t", "a\n1\n", &[]);
    assert_eq!(export(&s, "in.c-tls.t"), "\"a\"\n\"1\"\n");
}
