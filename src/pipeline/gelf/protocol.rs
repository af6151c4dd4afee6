//! GELF on the wire, pure and bounded: UDP datagrams (plain, zlib, gzip, chunked), TCP's
//! null-delimited frames, HTTP requests, and the JSON of one message as Keboola's GELF
//! server (`keboola/gelf-server`) and runner (`Container::runWithLogger`) read it.
//!
//! Nothing here allocates beyond the caps below; whatever breaks a rule is a [`Malformed`]
//! with Keboola's wording where it has one, counted and skipped by the server.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Largest message (after decompression and reassembly) that is read; a larger one is
/// malformed. Chunked UDP tops out near 1 MiB (128 chunks of a datagram each).
pub const MAX_MESSAGE_BYTES: usize = 2 << 20;

/// GELF's limit on the chunks of one message.
pub const MAX_CHUNKS: u8 = 128;

/// How long the chunks of one message may take to arrive (GELF's 5 seconds): an
/// incomplete sequence is dropped after it.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes held in incomplete chunk sequences at once; the oldest sequence is dropped to make
/// room, so a stream of never-completed sequences keeps memory flat.
pub const MAX_PENDING_CHUNK_BYTES: usize = 8 << 20;

/// The two bytes a chunk starts with.
pub const CHUNK_MAGIC: [u8; 2] = [0x1e, 0x0f];

/// Why an input was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(text: impl Into<String>) -> Malformed {
    Malformed(text.into())
}

/// Reassembles chunked UDP messages: chunks keyed by message id, joined in sequence order
/// once all have arrived; sequences older than [`CHUNK_TIMEOUT`] are dropped.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: HashMap<[u8; 8], Partial>,
    pending_bytes: usize,
    /// Incomplete sequences dropped for room since the last [`Reassembler::take_evicted`].
    evicted: u64,
}

#[derive(Debug)]
struct Partial {
    first_seen: Instant,
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
}

impl Reassembler {
    /// One datagram: `Ok(Some(payload))` when it completes a message (decompressed),
    /// `Ok(None)` when it is a chunk of one still incomplete.
    pub fn datagram(&mut self, data: &[u8], now: Instant) -> Result<Option<Vec<u8>>, Malformed> {
        if !data.starts_with(&CHUNK_MAGIC) {
            return decode_payload(data).map(Some);
        }
        if data.len() < 12 {
            return Err(malformed("Chunk shorter than its 12-byte header."));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[2..10]);
        let (seq, count) = (data[10], data[11]);
        if count == 0 || count > MAX_CHUNKS || seq >= count {
            return Err(malformed(format!(
                "Chunk {seq} of {count}: a message has 1 to {MAX_CHUNKS} chunks."
            )));
        }
        let body = &data[12..];
        let entry = self.partial.entry(id).or_insert_with(|| Partial {
            first_seen: now,
            parts: vec![None; count as usize],
            received: 0,
            bytes: 0,
        });
        if entry.parts.len() != count as usize {
            let dropped = self.partial.remove(&id).map_or(0, |p| p.bytes);
            self.pending_bytes -= dropped;
            return Err(malformed("Chunks of one message disagree on their count."));
        }
        let slot = &mut entry.parts[seq as usize];
        if slot.is_none() {
            if entry.bytes + body.len() > MAX_MESSAGE_BYTES {
                let dropped = self.partial.remove(&id).map_or(0, |p| p.bytes);
                self.pending_bytes -= dropped;
                return Err(malformed(format!(
                    "Chunked message larger than {MAX_MESSAGE_BYTES} bytes."
                )));
            }
            *slot = Some(body.to_vec());
            entry.received += 1;
            entry.bytes += body.len();
            self.pending_bytes += body.len();
        }
        if entry.received == entry.parts.len() {
            let done = self.partial.remove(&id).unwrap_or_else(|| unreachable!());
            self.pending_bytes -= done.bytes;
            let joined: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
            if joined.starts_with(&CHUNK_MAGIC) {
                return Err(malformed("A chunked message made of chunks."));
            }
            return decode_payload(&joined).map(Some);
        }
        self.evict_beyond_cap();
        Ok(None)
    }

    /// Drops sequences older than [`CHUNK_TIMEOUT`] (all of them with `all`); returns how
    /// many were dropped.
    pub fn expire(&mut self, now: Instant, all: bool) -> usize {
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let keep = !all && now.saturating_duration_since(p.first_seen) < CHUNK_TIMEOUT;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.pending_bytes -= freed;
        before - self.partial.len()
    }

    /// Incomplete sequences dropped for room (oldest first) since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    fn evict_beyond_cap(&mut self) {
        while self.pending_bytes > MAX_PENDING_CHUNK_BYTES {
            let Some(oldest) = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(p) = self.partial.remove(&oldest) {
                self.pending_bytes -= p.bytes;
                self.evicted += 1;
            }
        }
    }

    /// Bytes held in incomplete sequences.
    #[cfg(test)]
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

/// A payload as Keboola's UDP server reads it: zlib (first byte 0x78) and gzip (0x1f 0x8b)
/// are inflated, anything else is taken as it is.
pub fn decode_payload(data: &[u8]) -> Result<Vec<u8>, Malformed> {
    match data {
        [0x78, ..] => inflate(
            flate2::read::ZlibDecoder::new(data),
            "Cannot GZ uncompress datagram.",
        ),
        [0x1f, 0x8b, ..] => inflate(
            flate2::read::GzDecoder::new(data),
            "Cannot GZ decode datagram.",
        ),
        _ if data.len() > MAX_MESSAGE_BYTES => Err(malformed(format!(
            "Message larger than {MAX_MESSAGE_BYTES} bytes."
        ))),
        _ => Ok(data.to_vec()),
    }
}

fn inflate(reader: impl Read, error: &str) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::new();
    // One byte past the cap tells "too large" from "exactly the cap".
    match reader
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(_) if out.len() > MAX_MESSAGE_BYTES => Err(malformed(format!(
            "Message larger than {MAX_MESSAGE_BYTES} bytes once decompressed."
        ))),
        Ok(_) => Ok(out),
        Err(_) => Err(malformed(error)),
    }
}

/// Splits a TCP stream on null bytes (GELF over TCP): feed bytes, take whole frames.
#[derive(Debug, Default)]
pub struct NullFramer {
    buf: Vec<u8>,
    /// Inside a frame already over the cap: skip to its end.
    skipping: bool,
}

impl NullFramer {
    /// Appends `data`; returns the frames it completed (empty ones left out) and, for a frame
    /// over [`MAX_MESSAGE_BYTES`], one error (the rest of it is skipped).
    pub fn push(&mut self, data: &[u8]) -> Vec<Result<Vec<u8>, Malformed>> {
        let mut out = Vec::new();
        for part in data.split_inclusive(|b| *b == 0) {
            let ends = part.last() == Some(&0);
            let body = if ends { &part[..part.len() - 1] } else { part };
            if !self.skipping {
                if self.buf.len() + body.len() > MAX_MESSAGE_BYTES {
                    self.buf = Vec::new();
                    self.skipping = true;
                    out.push(Err(malformed(format!(
                        "Message larger than {MAX_MESSAGE_BYTES} bytes."
                    ))));
                } else {
                    self.buf.extend_from_slice(body);
                }
            }
            if ends {
                self.skipping = false;
                let frame = std::mem::take(&mut self.buf);
                if !frame.is_empty() {
                    out.push(Ok(frame));
                }
            }
        }
        out
    }

    /// The stream ended: a last frame without its null byte still counts (as Keboola's
    /// server takes what is left in its buffer at the end).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let frame = std::mem::take(&mut self.buf);
        (!frame.is_empty() && !std::mem::take(&mut self.skipping)).then_some(frame)
    }
}

/// Largest header block of an HTTP request.
pub const MAX_HTTP_HEADER_BYTES: usize = 16 << 10;

/// What the HTTP server answers to each accepted message (Keboola's answer).
pub const HTTP_ACCEPTED: &[u8] =
    b"HTTP/1.1 202 Accepted\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";

/// Reads HTTP/1.1 requests off one connection: `POST` with a `Content-Length` body, one
/// GELF message each.
#[derive(Debug, Default)]
pub struct HttpReader {
    buf: Vec<u8>,
}

impl HttpReader {
    /// Appends `data`; returns the bodies of the requests it completed. An error ends the
    /// connection (its framing can no longer be trusted).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, Malformed> {
        self.buf.extend_from_slice(data);
        let mut bodies = Vec::new();
        loop {
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                if self.buf.len() > MAX_HTTP_HEADER_BYTES {
                    return Err(malformed("HTTP request headers too large."));
                }
                return Ok(bodies);
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let request = lines.next().unwrap_or_default();
            if !request.starts_with("POST ") {
                return Err(malformed(format!(
                    "Only POST requests carry GELF messages, not {:?}.",
                    request.split(' ').next().unwrap_or_default()
                )));
            }
            let length = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .ok_or_else(|| malformed("Unknown content length."))?;
            if length > MAX_MESSAGE_BYTES {
                return Err(malformed(format!(
                    "Message larger than {MAX_MESSAGE_BYTES} bytes."
                )));
            }
            let start = end + 4;
            if self.buf.len() < start + length {
                return Ok(bodies);
            }
            bodies.push(self.buf[start..start + length].to_vec());
            self.buf.drain(..start + length);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One GELF message, as the runner reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Syslog level (0 emergency .. 7 debug) as sent.
    pub level: i64,
    /// Seconds since the epoch, as sent.
    pub timestamp: f64,
    /// `short_message`.
    pub short_message: String,
    /// Every field of the message (`_` fields JSON-decoded where they hold JSON), for the
    /// `verbose` verbosity.
    pub fields: Map<String, Value>,
}

/// The messages in one payload: the payload as one JSON object or, failing that, each of
/// its lines as one (Keboola's server retries a payload line by line).
pub fn parse_payload(payload: &[u8]) -> Vec<Result<Message, Malformed>> {
    match parse_object(payload) {
        Ok(m) => vec![m],
        Err(whole) => {
            let lines: Vec<&[u8]> = payload
                .split(|b| *b == b'\n')
                .map(<[u8]>::trim_ascii)
                .filter(|l| !l.is_empty())
                .collect();
            if lines.len() <= 1 {
                return vec![Err(whole)];
            }
            lines
                .into_iter()
                .map(|l| parse_object(l).and_then(|m| m))
                .collect()
        }
    }
}

/// `Err` when the bytes are not a JSON object (then lines are tried); `Ok(Err)` when they
/// are one that is not a usable message.
fn parse_object(data: &[u8]) -> Result<Result<Message, Malformed>, Malformed> {
    let value: Value = serde_json::from_slice(data).map_err(|e| {
        malformed(format!(
            "Cannot parse JSON data in event: \"{}\". Data: \"{}\".",
            e,
            preview(data)
        ))
    })?;
    let Value::Object(mut fields) = value else {
        return Err(malformed(format!(
            "Message data is not array: \"{}\".",
            preview(data)
        )));
    };
    for (key, value) in fields.iter_mut() {
        // Custom fields may arrive JSON-encoded twice (Keboola decodes them).
        if key.starts_with('_')
            && let Value::String(s) = value
            && let Ok(decoded) = serde_json::from_str::<Value>(s)
        {
            *value = decoded;
        }
    }
    Ok(message(fields))
}

/// Keboola's runner drops a message without `host`, `level`, `timestamp` or
/// `short_message` ("Missing required field from event."). Unlike PHP's `empty()`, level 0
/// (emergency) and a timestamp of 0 count as present.
fn message(fields: Map<String, Value>) -> Result<Message, Malformed> {
    let missing = || malformed("Missing required field from event.");
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let host = fields.get("host").map(text).unwrap_or_default();
    let short_message = fields.get("short_message").map(text).unwrap_or_default();
    let level = fields.get("level").and_then(number).ok_or_else(missing)?;
    let timestamp = fields
        .get("timestamp")
        .and_then(number)
        .ok_or_else(missing)?;
    if host.is_empty() || short_message.is_empty() {
        return Err(missing());
    }
    Ok(Message {
        level: level as i64,
        timestamp,
        short_message,
        fields,
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// At most 200 characters of `data`, for messages about it.
pub fn preview(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn msg(text: &str) -> Vec<u8> {
        format!(
            r#"{{"version":"1.1","host":"c","short_message":"{text}","level":6,"timestamp":1.5}}"#
        )
        .into_bytes()
    }

    fn chunk(id: u8, seq: u8, count: u8, body: &[u8]) -> Vec<u8> {
        let mut d = vec![0x1e, 0x0f, id, 0, 0, 0, 0, 0, 0, 0, seq, count];
        d.extend_from_slice(body);
        d
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn plain_zlib_and_gzip_datagrams() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        for data in [msg("a"), zlib(&msg("a")), gzip(&msg("a"))] {
            assert_eq!(r.datagram(&data, now).unwrap(), Some(msg("a")));
        }
        let bad = r.datagram(&[0x78, 1, 2, 3], now).unwrap_err();
        assert_eq!(bad.0, "Cannot GZ uncompress datagram.");
        assert!(r.datagram(&[0x1f, 0x8b, 0], now).is_err());
    }

    #[test]
    fn chunks_join_in_sequence_order_whatever_their_arrival() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let payload = zlib(&msg("chunked"));
        let (a, rest) = payload.split_at(payload.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        assert_eq!(r.datagram(&chunk(7, 2, 3, c), now).unwrap(), None);
        assert_eq!(r.datagram(&chunk(7, 0, 3, a), now).unwrap(), None);
        // A repeated chunk changes nothing.
        assert_eq!(r.datagram(&chunk(7, 0, 3, a), now).unwrap(), None);
        assert_eq!(
            r.datagram(&chunk(7, 1, 3, b), now).unwrap(),
            Some(msg("chunked"))
        );
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn bad_chunk_headers_and_incomplete_sequences() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        assert!(r.datagram(&[0x1e, 0x0f, 1], now).is_err());
        assert!(r.datagram(&chunk(1, 0, 0, b"x"), now).is_err());
        assert!(r.datagram(&chunk(1, 0, 129, b"x"), now).is_err());
        assert!(r.datagram(&chunk(1, 3, 3, b"x"), now).is_err());
        assert_eq!(r.datagram(&chunk(2, 0, 2, b"x"), now).unwrap(), None);
        assert!(r.datagram(&chunk(2, 0, 3, b"x"), now).is_err());
        assert_eq!(r.datagram(&chunk(3, 0, 2, b"x"), now).unwrap(), None);
        assert_eq!(r.expire(now + Duration::from_secs(1), false), 0);
        assert_eq!(r.expire(now + CHUNK_TIMEOUT, false), 1);
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn pending_chunks_stay_bounded() {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let body = vec![b'x'; 8000];
        for i in 0..5000u32 {
            let mut d = vec![0x1e, 0x0f];
            d.extend_from_slice(&(i as u64).to_be_bytes());
            d.extend_from_slice(&[0, 2]);
            d.extend_from_slice(&body);
            assert_eq!(r.datagram(&d, now).unwrap(), None);
        }
        assert!(r.pending_bytes() <= MAX_PENDING_CHUNK_BYTES);
        assert!(r.take_evicted() > 3000);
        assert_eq!(r.take_evicted(), 0);
    }

    #[test]
    fn decompression_is_capped() {
        let bomb = zlib(&vec![b' '; MAX_MESSAGE_BYTES + 10]);
        assert!(bomb.len() < 10_000);
        let err = decode_payload(&bomb).unwrap_err();
        assert!(err.0.contains("once decompressed"), "{err}");
    }

    #[test]
    fn tcp_frames_split_on_null_bytes() {
        let mut f = NullFramer::default();
        let mut all = [msg("a"), vec![0], msg("b"), vec![0, 0], msg("c")].concat();
        let tail = all.split_off(10);
        assert!(f.push(&all).is_empty());
        let frames: Vec<_> = f.push(&tail).into_iter().map(Result::unwrap).collect();
        assert_eq!(frames, [msg("a"), msg("b")]);
        assert_eq!(f.finish(), Some(msg("c")));
        assert_eq!(f.finish(), None);
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 1];
        let out = f.push(&big);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        let out = f.push(&[b"more\0".as_slice(), &msg("d"), b"\0"].concat());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].clone().unwrap(), msg("d"));
    }

    #[test]
    fn http_requests_in_pieces() {
        let mut h = HttpReader::default();
        let body = msg("h");
        let req = [
            format!(
                "POST /gelf HTTP/1.1\r\nHost: x\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.clone(),
        ]
        .concat();
        let twice = [req.clone(), req].concat();
        let (a, b) = twice.split_at(30);
        assert!(h.push(a).unwrap().is_empty());
        assert_eq!(h.push(b).unwrap(), [body.clone(), body]);
        let mut h = HttpReader::default();
        assert_eq!(
            h.push(b"POST /gelf HTTP/1.1\r\n\r\n").unwrap_err().0,
            "Unknown content length."
        );
        let mut h = HttpReader::default();
        assert!(h.push(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn messages_as_keboola_reads_them() {
        let m = parse_payload(
            br#"{"host":"h","short_message":"hi","level":"3","timestamp":2,"_extra":"{\"a\":1}","_s":"text"}"#,
        );
        let m = m[0].clone().unwrap();
        assert_eq!(
            (m.level, m.timestamp, m.short_message.as_str()),
            (3, 2.0, "hi")
        );
        assert_eq!(m.fields["_extra"], serde_json::json!({"a": 1}));
        assert_eq!(m.fields["_s"], "text");
        let missing = parse_payload(br#"{"host":"h","short_message":"hi","level":3}"#);
        assert_eq!(
            missing[0].clone().unwrap_err().0,
            "Missing required field from event."
        );
        let bad = parse_payload(b"not json");
        assert!(
            bad[0]
                .clone()
                .unwrap_err()
                .0
                .starts_with("Cannot parse JSON data in event")
        );
        assert!(parse_payload(b"[1]")[0].is_err());
        // Line by line when the whole is not one object.
        let two = [msg("a"), b"\n".to_vec(), msg("b"), b"\nbroken".to_vec()].concat();
        let parsed = parse_payload(&two);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].clone().unwrap().short_message, "b");
        assert!(parsed[2].is_err());
    }
}
