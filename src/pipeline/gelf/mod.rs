//! GELF logging for a job's main container, as Keboola's runner offers it to components
//! whose specification says `"logging": {"type": "gelf"}`: a GELF server (UDP, TCP or
//! HTTP) on a port of Keboola's range, named to the component in `KBC_LOGGER_ADDR` and
//! `KBC_LOGGER_PORT`; each message a log line with its level, `#` secrets hidden, the
//! component's `verbosity` applied, and kept (bounded) for the result's `events`.
//!
//! [`Logging`] is the component's `logging` section (Keboola's defaults); [`protocol`] is
//! the wire format (pure); [`events`] turns messages into lines and events; [`server`] reads
//! the sockets on a thread of its own while the container runs.

pub mod events;
pub mod logserver;
pub mod protocol;
pub mod server;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Keboola's port range for the log server (`Runner`'s `minLogPort`/`maxLogPort`,
/// inclusive).
pub const PORT_RANGE: std::ops::RangeInclusive<u16> = 12202..=13202;

/// `logging.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoggingType {
    /// stdout and stderr only.
    #[default]
    Standard,
    /// A GELF server besides them.
    Gelf,
}

/// `logging.gelf_server_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerType {
    /// Null-byte delimited messages over TCP (Keboola's default).
    #[default]
    Tcp,
    /// Datagrams: plain, zlib, gzip, chunked.
    Udp,
    /// `POST` requests, one message each.
    Http,
}

impl ServerType {
    /// The name in a specification.
    pub fn name(self) -> &'static str {
        match self {
            ServerType::Tcp => "tcp",
            ServerType::Udp => "udp",
            ServerType::Http => "http",
        }
    }
}

/// What happens to a message of one level (Keboola's `StorageApiHandler` verbosities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// Not shown, not kept.
    None,
    /// The message as sent.
    Normal,
    /// The message and every field of it.
    Verbose,
    /// Replaced by [`CAMOUFLAGE_MESSAGE`] (and [`CAMOUFLAGE_DESCRIPTION`]).
    Camouflage,
}

/// What a camouflaged message says instead (Keboola's wording).
pub const CAMOUFLAGE_MESSAGE: &str = "Application error";
/// The description a camouflaged message carries (Keboola's wording).
pub const CAMOUFLAGE_DESCRIPTION: &str = "Contact support@keboola.com";

impl Verbosity {
    fn parse(text: &str) -> Option<Verbosity> {
        Some(match text {
            "none" => Verbosity::None,
            "normal" => Verbosity::Normal,
            "verbose" => Verbosity::Verbose,
            "camouflage" => Verbosity::Camouflage,
            _ => return None,
        })
    }
}

/// Monolog's levels, which `verbosity` is keyed by.
pub const MONOLOG_LEVELS: [(u16, &str); 8] = [
    (100, "debug"),
    (200, "info"),
    (250, "notice"),
    (300, "warning"),
    (400, "error"),
    (500, "critical"),
    (550, "alert"),
    (600, "emergency"),
];

/// A component's `logging` section: what its specification (or `--logging`) says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logging {
    /// `type`.
    #[serde(rename = "type")]
    pub kind: LoggingType,
    /// `verbosity`: Monolog level -> what is shown of it; levels not given keep Keboola's
    /// default.
    pub verbosity: BTreeMap<u16, Verbosity>,
    /// `gelf_server_type`.
    pub gelf_server_type: ServerType,
    /// `no_application_errors`: exit codes other than 0 and 1 are user errors.
    pub no_application_errors: bool,
}

impl Default for Logging {
    /// Keboola's defaults: standard logging; debug hidden, critical and worse camouflaged.
    fn default() -> Self {
        let verbosity = MONOLOG_LEVELS
            .iter()
            .map(|(level, _)| {
                let v = match level {
                    100 => Verbosity::None,
                    500.. => Verbosity::Camouflage,
                    _ => Verbosity::Normal,
                };
                (*level, v)
            })
            .collect();
        Logging {
            kind: LoggingType::Standard,
            verbosity,
            gelf_server_type: ServerType::Tcp,
            no_application_errors: false,
        }
    }
}

impl Logging {
    /// A specification's `logging` object (absent keys take Keboola's defaults); the errors
    /// use Keboola's wording ("Invalid logging type %s.").
    pub fn from_spec(value: &Value) -> Result<Logging, String> {
        let mut logging = Logging::default();
        let Value::Object(map) = value else {
            return Err(format!("logging must be an object, not {value}"));
        };
        for (key, v) in map {
            match key.as_str() {
                "type" => {
                    logging.kind = match v.as_str() {
                        Some("standard") => LoggingType::Standard,
                        Some("gelf") => LoggingType::Gelf,
                        _ => return Err(format!("Invalid logging type {v}.")),
                    }
                }
                "gelf_server_type" => {
                    logging.gelf_server_type = match v.as_str() {
                        Some("tcp") => ServerType::Tcp,
                        Some("udp") => ServerType::Udp,
                        Some("http") => ServerType::Http,
                        _ => return Err(format!("Invalid GELF server type {v}.")),
                    }
                }
                "no_application_errors" => {
                    logging.no_application_errors = v.as_bool().ok_or_else(|| {
                        format!("logging.no_application_errors must be true or false, not {v}")
                    })?
                }
                "verbosity" => {
                    let Value::Object(levels) = v else {
                        return Err(format!("logging.verbosity must be an object, not {v}"));
                    };
                    for (level, what) in levels {
                        let known = level
                            .parse::<u16>()
                            .ok()
                            .filter(|l| MONOLOG_LEVELS.iter().any(|(m, _)| m == l))
                            .ok_or_else(|| {
                                format!(
                                    "logging.verbosity: {level:?} is not a Monolog level \
                                     (100, 200, 250, 300, 400, 500, 550, 600)"
                                )
                            })?;
                        let verbosity = what.as_str().and_then(Verbosity::parse).ok_or_else(|| {
                            format!(
                                "logging.verbosity.{level}: {what} is not none, normal, verbose \
                                 or camouflage"
                            )
                        })?;
                        logging.verbosity.insert(known, verbosity);
                    }
                }
                other => return Err(format!("logging: unknown key {other:?}")),
            }
        }
        Ok(logging)
    }

    /// The verbosity of a Monolog level (normal for one not listed).
    pub fn verbosity_of(&self, monolog: u16) -> Verbosity {
        self.verbosity
            .get(&monolog)
            .copied()
            .unwrap_or(Verbosity::Normal)
    }
}

/// The log server of a job's main container, for the result.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// UDP, TCP or HTTP.
    pub server_type: ServerType,
    /// `KBC_LOGGER_ADDR`.
    pub address: String,
    /// `KBC_LOGGER_PORT`.
    pub port: u16,
    /// What it received.
    #[serde(flatten)]
    pub counts: events::Counts,
}

/// Keboola's `ContainerLogger`: syslog priority (GELF `level`) -> Monolog level; anything
/// outside 0..7 is an error.
pub fn monolog_level(syslog: i64) -> u16 {
    match syslog {
        7 => 100,
        6 => 200,
        5 => 250,
        4 => 300,
        3 => 400,
        2 => 500,
        1 => 550,
        0 => 600,
        _ => 400,
    }
}

/// The lowercase name of a Monolog level.
pub fn level_name(monolog: u16) -> &'static str {
    MONOLOG_LEVELS
        .iter()
        .find(|(l, _)| *l == monolog)
        .map_or("error", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keboola_defaults_and_overrides() {
        let d = Logging::from_spec(&json!({})).unwrap();
        assert_eq!(d, Logging::default());
        assert_eq!(d.verbosity_of(100), Verbosity::None);
        assert_eq!(d.verbosity_of(300), Verbosity::Normal);
        assert_eq!(d.verbosity_of(550), Verbosity::Camouflage);
        let l = Logging::from_spec(&json!({
            "type": "gelf", "gelf_server_type": "udp",
            "verbosity": {"100": "normal", "200": "verbose"}, "no_application_errors": true
        }))
        .unwrap();
        assert_eq!(l.kind, LoggingType::Gelf);
        assert_eq!(l.gelf_server_type, ServerType::Udp);
        assert_eq!(l.verbosity_of(100), Verbosity::Normal);
        assert_eq!(l.verbosity_of(200), Verbosity::Verbose);
        assert_eq!(l.verbosity_of(600), Verbosity::Camouflage);
        assert!(l.no_application_errors);
    }

    #[test]
    fn bad_sections_name_the_key() {
        let e = Logging::from_spec(&json!({"type": "syslog"})).unwrap_err();
        assert_eq!(e, "Invalid logging type \"syslog\".");
        let e = Logging::from_spec(&json!({"gelf_server_type": "quic"})).unwrap_err();
        assert_eq!(e, "Invalid GELF server type \"quic\".");
        assert!(Logging::from_spec(&json!({"verbosity": {"7": "none"}})).is_err());
        assert!(Logging::from_spec(&json!({"verbosity": {"100": "loud"}})).is_err());
    }

    #[test]
    fn syslog_to_monolog() {
        assert_eq!(monolog_level(7), 100);
        assert_eq!(monolog_level(0), 600);
        assert_eq!(monolog_level(42), 400);
        assert_eq!(level_name(250), "notice");
    }
}
