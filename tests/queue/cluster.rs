//! A PostgreSQL 15 cluster of one test's own (initdb in a temp dir, run as the `postgres` OS
//! user on a free loopback port), for the test that restarts the database under running
//! workers without disturbing the tests that share the test environment's cluster.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use crate::support::text;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running private cluster, stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/queue` (trust on loopback: a throwaway cluster).
    pub url: String,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser")
}

impl Cluster {
    /// initdb, start, and a database `queue`.
    pub fn start() -> Cluster {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("dockless-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let chown = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(chown.status.success(), "{}", text(&chown.stderr));
        let data = dir.join("data");
        let out = as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        assert!(out.status.success(), "initdb: {}", text(&out.stderr));
        let cluster = Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/queue"),
            dir,
        };
        cluster.ctl(&["start"], port);
        let out = Command::new("psql")
            .args(["-X", "-q", "-d"])
            .arg(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .args(["-c", "CREATE DATABASE queue"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        cluster
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    fn ctl(&self, what: &[&str], port: u16) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.dir.display()
        );
        let mut args = vec![
            format!("{BIN}/pg_ctl"),
            "-D".into(),
            data.to_str().unwrap().into(),
            "-l".into(),
            log.to_str().unwrap().into(),
            "-o".into(),
            options,
            "-w".into(),
            "-t".into(),
            "60".into(),
        ];
        args.extend(what.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_postgres(&args);
        assert!(
            out.status.success(),
            "pg_ctl {what:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is back when it returns.
    pub fn restart(&self) {
        self.ctl(&["restart", "-m", "fast"], self.port());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
