//! Either backend behind one type: what `--storage` names, opened.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use super::postgres::{self, PostgresStorage};
use super::sqlite::SqliteStorage;
use super::{
    ExportOptions, Exported, FileInfo, FileQuery, StateKey, Storage, TableInfo, Transaction,
};
use crate::error::Result;
use crate::id::TableId;

/// Where the Storage is: a SQLite file (the embedded default) or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded backend's database file.
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (completed from the `PG*` variables).
    Postgres(String),
}

impl Location {
    /// A `--storage` value: a `postgres://`/`postgresql://` URL, or a file path. Another
    /// `scheme://` is refused rather than taken as a file name (it would silently create a
    /// SQLite file named like the URL).
    pub fn parse(text: &str) -> std::result::Result<Location, String> {
        if postgres::is_url(text) {
            return Ok(Location::Postgres(text.to_string()));
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(format!(
                "{scheme}:// is not a Storage backend dockless has (a SQLite file path or a \
                 postgres:// URL is): the value is not taken as a file name"
            ));
        }
        Ok(Location::Sqlite(PathBuf::from(text)))
    }

    /// Opens the Storage (a SQLite file is created on first use, an empty PostgreSQL
    /// database set up).
    pub fn open(&self) -> Result<AnyStorage> {
        Ok(match self {
            Location::Sqlite(path) => AnyStorage::Sqlite(SqliteStorage::open(path)?),
            Location::Postgres(url) => {
                AnyStorage::Postgres(Box::new(PostgresStorage::connect(url)?))
            }
        })
    }
}

/// The value as given, with a URL's password replaced by `***`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// `scheme://user:secret@host...` as `scheme://user:***@host...`; a `password=` parameter too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***".to_string()
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// An opened Storage of either backend.
pub enum AnyStorage {
    /// The embedded SQLite file.
    Sqlite(SqliteStorage),
    /// A shared PostgreSQL database (boxed: its connection is much larger than SQLite's).
    Postgres(Box<PostgresStorage>),
}

impl AnyStorage {
    /// The PostgreSQL backend, when it is one (the queue lives in the same database).
    pub fn postgres(&self) -> Option<&PostgresStorage> {
        match self {
            AnyStorage::Postgres(s) => Some(s),
            AnyStorage::Sqlite(_) => None,
        }
    }

    /// [`AnyStorage::postgres`], mutable (for [`PostgresStorage::begin_pg`]).
    pub fn postgres_mut(&mut self) -> Option<&mut PostgresStorage> {
        match self {
            AnyStorage::Postgres(s) => Some(s),
            AnyStorage::Sqlite(_) => None,
        }
    }
}

macro_rules! both {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            AnyStorage::Sqlite($s) => $body,
            AnyStorage::Postgres($s) => $body,
        }
    };
}

impl Storage for AnyStorage {
    fn tables(&self) -> Result<Vec<TableInfo>> {
        both!(self, s => s.tables())
    }

    fn table(&self, id: &TableId) -> Result<Option<TableInfo>> {
        both!(self, s => s.table(id))
    }

    fn export_table(
        &self,
        id: &TableId,
        options: &ExportOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<Exported> {
        both!(self, s => s.export_table(id, options, out))
    }

    fn files(&self, query: &FileQuery) -> Result<Vec<FileInfo>> {
        both!(self, s => s.files(query))
    }

    fn file(&self, id: i64) -> Result<Option<FileInfo>> {
        both!(self, s => s.file(id))
    }

    fn open_file(&self, id: i64) -> Result<Vec<Box<dyn Read + Send>>> {
        both!(self, s => s.open_file(id))
    }

    fn state(&self, key: &StateKey) -> Result<Option<Value>> {
        both!(self, s => s.state(key))
    }

    fn begin(&mut self) -> Result<Box<dyn Transaction + '_>> {
        both!(self, s => s.begin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart_and_passwords_hidden() {
        assert_eq!(
            Location::parse("/tmp/s.db").unwrap(),
            Location::Sqlite("/tmp/s.db".into())
        );
        let pg = Location::parse("postgresql://u:pw@h:5/db?sslmode=require&password=x").unwrap();
        assert_eq!(
            pg.to_string(),
            "postgresql://u:***@h:5/db?sslmode=require&password=***"
        );
        assert!(Location::parse("mysql://x").is_err());
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
