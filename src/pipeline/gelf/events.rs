//! From GELF messages to what the job shows: one line per message on our stdout or stderr
//! (its level first), the component's verbosity applied as Keboola's Storage handler applies
//! it, `#` secrets hidden in every field, and the events kept for `--json`, bounded.

use std::io::Write;

use dockless_runtime::container::Stream;
use serde::Serialize;
use serde_json::Value;

use super::protocol::{Malformed, Message};
use super::{CAMOUFLAGE_DESCRIPTION, CAMOUFLAGE_MESSAGE, Logging, Verbosity};
use super::{level_name, monolog_level};
use crate::pipeline::classify::{MESSAGE_LIMIT, cut};
use crate::pipeline::redact::Secrets;

/// Events kept for the result; later ones are shown and counted, not kept.
pub const MAX_EVENTS: usize = 10_000;
/// Bytes of event text kept for the result (messages and verbose fields).
pub const MAX_EVENT_BYTES: usize = 8 << 20;
/// Invalid messages described on stderr; later ones are only counted.
pub const MAX_NOTES: u64 = 10;

/// One message as the job's result lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Monolog's level name (`debug` .. `emergency`).
    pub level: &'static str,
    /// `short_message` (redacted, cut to Keboola's event length), or the camouflage text.
    pub message: String,
    /// Seconds since the epoch, as the component sent it.
    pub timestamp: f64,
    /// Keboola's description of a camouflaged message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'static str>,
    /// Every field of the message, for the `verbose` verbosity (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// What the log server saw, for the result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Valid messages received.
    pub received: u64,
    /// Shown (normal, verbose or camouflaged).
    pub shown: u64,
    /// Hidden by a `none` verbosity.
    pub hidden: u64,
    /// Shown as Keboola's camouflage text.
    pub camouflaged: u64,
    /// Shown but not kept in `events` (beyond [`MAX_EVENTS`] or [`MAX_EVENT_BYTES`]).
    pub events_dropped: u64,
    /// Invalid datagrams, frames or requests (skipped).
    pub malformed: u64,
    /// Chunked messages whose chunks did not all arrive in time (dropped).
    pub incomplete_chunked: u64,
}

/// Everything one server run produced.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Events kept, in arrival order.
    pub events: Vec<Event>,
    /// The counts.
    pub counts: Counts,
    /// The last message of level warning or worse (Keboola's fallback failure message).
    pub last_error: Option<String>,
}

/// Turns messages into lines and events.
pub struct Sink {
    logging: Logging,
    secrets: Secrets,
    /// Where messages below warning go (`None`: not shown); warnings and worse (levels
    /// outside 0..7 are errors) go to stderr.
    low_to: Option<Stream>,
    kept_bytes: usize,
    collected: Collected,
}

impl Sink {
    /// A sink applying `logging`'s verbosity and hiding `secrets`.
    pub fn new(logging: Logging, secrets: Secrets, low_to: Option<Stream>) -> Sink {
        Sink {
            logging,
            secrets,
            low_to,
            kept_bytes: 0,
            collected: Collected::default(),
        }
    }

    /// One valid message.
    pub fn message(&mut self, m: Message) {
        let counts = &mut self.collected.counts;
        counts.received += 1;
        let monolog = monolog_level(m.level);
        let text = cut(&self.secrets.redact(&m.short_message), MESSAGE_LIMIT);
        if m.level <= 4 {
            self.collected.last_error = Some(text.clone());
        }
        let verbosity = self.logging.verbosity_of(monolog);
        let (message, description, context) = match verbosity {
            Verbosity::None => {
                counts.hidden += 1;
                return;
            }
            Verbosity::Normal => (text, None, None),
            Verbosity::Verbose => {
                let mut fields = Value::Object(m.fields);
                redact_all(&mut fields, &self.secrets);
                (text, None, Some(fields))
            }
            Verbosity::Camouflage => {
                counts.camouflaged += 1;
                (
                    CAMOUFLAGE_MESSAGE.to_string(),
                    Some(CAMOUFLAGE_DESCRIPTION),
                    None,
                )
            }
        };
        counts.shown += 1;
        let name = level_name(monolog);
        let mut line = format!("{}: {message}", name.to_ascii_uppercase());
        if let Some(d) = description {
            line.push_str(&format!(" ({d})"));
        }
        if let Some(c) = &context {
            line.push(' ');
            line.push_str(&cut(&c.to_string(), MESSAGE_LIMIT));
        }
        line.push('\n');
        let to = if monolog >= 300 {
            Some(Stream::Stderr)
        } else {
            self.low_to
        };
        write_line(to, &line);

        let size = message.len() + context.as_ref().map_or(0, |c| c.to_string().len());
        if self.collected.events.len() >= MAX_EVENTS || self.kept_bytes + size > MAX_EVENT_BYTES {
            self.collected.counts.events_dropped += 1;
            return;
        }
        self.kept_bytes += size;
        self.collected.events.push(Event {
            level: name,
            message,
            timestamp: m.timestamp,
            description,
            context,
        });
    }

    /// One invalid input: counted; the first few are described on stderr (redacted).
    pub fn malformed(&mut self, why: &Malformed) {
        let counts = &mut self.collected.counts;
        counts.malformed += 1;
        if counts.malformed <= MAX_NOTES {
            let text = self.secrets.redact(&why.0);
            write_line(
                Some(Stream::Stderr),
                &format!("dockless: GELF: Invalid message: {text}\n"),
            );
            if counts.malformed == MAX_NOTES {
                write_line(
                    Some(Stream::Stderr),
                    "dockless: GELF: further invalid messages are counted, not shown\n",
                );
            }
        }
    }

    /// `n` chunked messages dropped incomplete.
    pub fn incomplete(&mut self, n: u64) {
        self.collected.counts.incomplete_chunked += n;
    }

    /// What was collected.
    pub fn finish(self) -> Collected {
        self.collected
    }
}

/// Every string in `value` with the secrets hidden (as Keboola's runner walks an event).
fn redact_all(value: &mut Value, secrets: &Secrets) {
    match value {
        Value::String(s) => *s = secrets.redact(s),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_all(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| redact_all(v, secrets)),
        Value::Number(n) => {
            let text = n.to_string();
            let hidden = secrets.redact(&text);
            if hidden != text {
                *value = Value::String(hidden);
            }
        }
        _ => {}
    }
}

fn write_line(to: Option<Stream>, line: &str) {
    // A closed stream (say, `| head`) must not stop the server: the events are kept too.
    let _ = match to {
        Some(Stream::Stdout) => {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        }
        Some(Stream::Stderr) => std::io::stderr().lock().write_all(line.as_bytes()),
        None => Ok(()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::gelf::protocol::parse_payload;
    use serde_json::json;

    fn message(level: i64, text: &str) -> Message {
        let body = json!({"host": "h", "level": level, "timestamp": 3.25, "short_message": text,
            "_password": "p4ss-word"});
        parse_payload(body.to_string().as_bytes())
            .remove(0)
            .unwrap()
    }

    fn sink(logging: Logging) -> Sink {
        let secrets = Secrets::collect([&json!({"#pw": "p4ss-word"})]).unwrap();
        Sink::new(logging, secrets, None)
    }

    #[test]
    fn verbosity_as_keboola_applies_it() {
        let mut logging = Logging::default();
        logging.verbosity.insert(200, Verbosity::Verbose);
        let mut s = sink(logging);
        s.message(message(7, "debug is hidden by default"));
        s.message(message(6, "info with p4ss-word"));
        s.message(message(4, "a warning"));
        s.message(message(2, "critical stays private"));
        s.malformed(&Malformed("x".into()));
        s.incomplete(2);
        let c = s.finish();
        assert_eq!(c.counts.received, 4);
        assert_eq!(c.counts.hidden, 1);
        assert_eq!(c.counts.shown, 3);
        assert_eq!(c.counts.camouflaged, 1);
        assert_eq!(c.counts.malformed, 1);
        assert_eq!(c.counts.incomplete_chunked, 2);
        let e = &c.events;
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].level, e[0].message.as_str()),
            ("info", "info with [hidden]")
        );
        assert_eq!(e[0].timestamp, 3.25);
        let context = e[0].context.as_ref().unwrap();
        assert_eq!(context["_password"], "[hidden]");
        assert_eq!(e[1].level, "warning");
        assert!(e[1].context.is_none());
        assert_eq!(e[2].message, CAMOUFLAGE_MESSAGE);
        assert_eq!(e[2].description, Some(CAMOUFLAGE_DESCRIPTION));
        // The real text still is the failure message's fallback, as in Keboola.
        assert_eq!(c.last_error.as_deref(), Some("critical stays private"));
    }

    #[test]
    fn kept_events_are_capped_and_counted() {
        let mut s = sink(Logging::default());
        for _ in 0..MAX_EVENTS + 5 {
            s.message(message(6, "m"));
        }
        let c = s.finish();
        assert_eq!(c.events.len(), MAX_EVENTS);
        assert_eq!(c.counts.events_dropped, 5);
        assert_eq!(c.counts.shown, MAX_EVENTS as u64 + 5);
    }
}
