//! A fresh PostgreSQL database per test, on the cluster `scripts/test-env up` starts.
//!
//! `DOCKLESS_TEST_POSTGRES` (from `scripts/test-env env`) names a role that may create
//! databases. [`TestDatabase::create`] makes `dockless_test_<pid>_<n>_<random>` and drops it
//! (with any sessions still connected) when dropped, so tests run in parallel without seeing
//! each other's tables, jobs or locks.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that names the test cluster.
pub const POSTGRES_VAR: &str = "DOCKLESS_TEST_POSTGRES";

/// A database of its own for one test; dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    /// `postgres://user:password@host:port/<name>`: what `--storage` takes.
    pub url: String,
    /// The database name.
    pub name: String,
    admin: String,
}

/// The cluster's URL from the environment; panics naming the command when it is missing, so
/// a missing test environment fails the test instead of skipping it.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{POSTGRES_VAR} is not set: run `scripts/test-env up` and \
                 `eval \"$(scripts/test-env env)\"` first"
            )
        })
}

impl TestDatabase {
    /// Creates an empty database on the test cluster.
    pub fn create() -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = postgres_url();
        let random = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "dockless_test_{}_{}_{random:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = connect(&admin);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let url = with_database(&admin, &name);
        TestDatabase { url, name, admin }
    }

    /// A new session on this database (plain SQL for assertions).
    pub fn client(&self) -> postgres::Client {
        connect(&self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // As the superuser when the environment names one: autovacuum, which only a
        // superuser may end, may be working on a table the test loaded.
        let admin = std::env::var("DOCKLESS_TEST_POSTGRES_ADMIN")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.admin.clone());
        if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test PostgreSQL ({POSTGRES_VAR}): {e}; is \
             `scripts/test-env up` done?"
        )
    })
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u:p@h:1/dockless", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h:1?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
    }
}
