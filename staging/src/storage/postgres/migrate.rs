//! Versioned schema of the PostgreSQL Storage: the ordered list of migrations and the one
//! function that applies them.
//!
//! Everything lives in the schema `dockless`; `dockless.schema_version` holds one row per
//! applied migration. A database without that table is set up on first open (as the embedded
//! backend creates its file); a database at an older version is refused with the advice to run
//! `dockless storage migrate`, because upgrading a schema that other hosts share is the
//! operator's decision (their older dockless would then refuse it); a newer version is refused
//! too, naming both versions.

use postgres::Client;

use crate::error::{Error, Result};

/// One step of the schema: applied once, in order, inside the migration's transaction.
pub struct Migration {
    /// The version this step creates (1, 2, ...: its position in [`MIGRATIONS`] plus one).
    pub version: i64,
    /// A short name, kept in `schema_version` for whoever looks at the database.
    pub name: &'static str,
    /// The SQL (several statements; `search_path` is `dockless`).
    pub sql: &'static str,
}

/// Every migration, in order. Adding one is adding an entry here (and its file).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "storage",
        sql: include_str!("migrations/0001_storage.sql"),
    },
    Migration {
        version: 2,
        name: "queue",
        sql: include_str!("migrations/0002_queue.sql"),
    },
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Key of the session-independent advisory lock that serialises migrations of one database
/// (`dockless` in ASCII), so that two hosts migrating at once apply each step once.
const MIGRATION_LOCK: i64 = 0x646f_636b_6c65_7373;

/// The schema's version: 0 when dockless never set the database up.
pub fn current(client: &mut Client) -> Result<i64> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('dockless.schema_version') IS NOT NULL",
            &[],
        )
        .map_err(Error::pg("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = client
        .query_one(
            "SELECT max(version)::bigint FROM dockless.schema_version",
            &[],
        )
        .map_err(Error::pg("reading the schema version"))?
        .get(0);
    Ok(version.unwrap_or(0))
}

/// Brings the schema to [`latest`]; returns the versions before and after. Safe to run from
/// several hosts at once: the steps run in one transaction under an advisory lock.
pub fn migrate(client: &mut Client, target: &str) -> Result<(i64, i64)> {
    let mut tx = client
        .transaction()
        .map_err(Error::pg("starting the schema migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(Error::pg("waiting for another host's schema migration"))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS dockless;
         CREATE TABLE IF NOT EXISTS dockless.schema_version (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         SET LOCAL search_path TO dockless;",
    )
    .map_err(Error::pg("creating the schema"))?;
    let before: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_version",
            &[],
        )
        .map_err(Error::pg("reading the schema version"))?
        .get(0);
    if before > latest() {
        return Err(newer(target, before));
    }
    for step in MIGRATIONS.iter().filter(|m| m.version > before) {
        tx.batch_execute(step.sql).map_err(Error::pg(format!(
            "migrating the schema to version {} ({})",
            step.version, step.name
        )))?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[&step.version, &step.name],
        )
        .map_err(Error::pg("recording the schema version"))?;
    }
    tx.commit()
        .map_err(Error::pg("committing the schema migration"))?;
    Ok((before, latest()))
}

/// Checks an opened database: sets up an empty one, refuses an older or newer one.
pub fn check_on_open(client: &mut Client, target: &str) -> Result<()> {
    match current(client)? {
        v if v == latest() => Ok(()),
        0 => migrate(client, target).map(|_| ()),
        v if v > latest() => Err(newer(target, v)),
        v => Err(Error::PgSchema {
            target: target.to_string(),
            found: v,
            supported: latest(),
            advice: "run `dockless storage migrate` to upgrade it (every host sharing it \
                     then needs this dockless or a newer one)",
        }),
    }
}

fn newer(target: &str, found: i64) -> Error {
    Error::PgSchema {
        target: target.to_string(),
        found,
        supported: latest(),
        advice: "it was set up by a newer dockless; use that version (or newer) here",
    }
}
