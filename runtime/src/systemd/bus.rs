//! The little of the D-Bus wire protocol that asking systemd for a transient scope needs: a
//! Unix socket, `AUTH EXTERNAL`, `Hello`, one method call at a time and its reply.
//!
//! Written here rather than taken from a D-Bus crate: zbus and dbus-rs start threads or need
//! libdbus, and a rootless runner must ask for its scope while it is still single-threaded
//! (before it enters its user namespace). libcgroups carries a client of its own, but private.
//! Only little-endian messages are written; replies in either byte order are read.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SystemdError;

/// How long one reply may take before the call fails (systemd answers in milliseconds).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A value of a method call's body, as far as systemd's unit properties need them.
#[derive(Debug, Clone)]
pub enum Value {
    /// `s`
    Str(String),
    /// `b`
    Bool(bool),
    /// `au`
    U32Array(Vec<u32>),
}

impl Value {
    fn signature(&self) -> &'static str {
        match self {
            Value::Str(_) => "s",
            Value::Bool(_) => "b",
            Value::U32Array(_) => "au",
        }
    }
}

/// One connection to a bus (or to systemd's private socket), used for one call at a time.
#[derive(Debug)]
pub struct Bus {
    stream: UnixStream,
    path: PathBuf,
    serial: u32,
}

impl Bus {
    /// Connects to `path`, authenticates as `uid` (the caller's uid as the bus sees it) and,
    /// unless `direct` (systemd's private socket, which has no bus daemon), says `Hello`.
    pub fn connect(path: &Path, uid: u32, direct: bool) -> Result<Self, SystemdError> {
        let io = |what: &'static str| {
            let path = path.to_owned();
            move |source| SystemdError::Io { what, path, source }
        };
        let stream = UnixStream::connect(path).map_err(io("cannot connect to"))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(io("cannot set a timeout on"))?;
        let mut bus = Self {
            stream,
            path: path.to_owned(),
            serial: 0,
        };
        bus.authenticate(uid)?;
        if !direct {
            bus.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Hello",
                "",
                &[],
            )?;
        }
        Ok(bus)
    }

    /// The socket this connection talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn authenticate(&mut self, uid: u32) -> Result<(), SystemdError> {
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hello = format!("\0AUTH EXTERNAL {hex}\r\n");
        self.write_all(hello.as_bytes())?;
        let answer = self.read_line()?;
        if !answer.starts_with("OK ") {
            return Err(SystemdError::Refused {
                path: self.path.clone(),
                name: "AUTH EXTERNAL".to_owned(),
                message: answer,
            });
        }
        self.write_all(b"BEGIN\r\n")
    }

    fn read_line(&mut self) -> Result<String, SystemdError> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 4096 {
                return Err(self.protocol("an authentication line longer than 4 KiB"));
            }
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(self.protocol("the bus closed the connection")),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(self.io_error("cannot read from", source)),
            }
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SystemdError> {
        self.stream
            .write_all(bytes)
            .map_err(|source| SystemdError::Io {
                what: "cannot write to",
                path: self.path.clone(),
                source,
            })
    }

    fn io_error(&self, what: &'static str, source: std::io::Error) -> SystemdError {
        SystemdError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, what: &str) -> SystemdError {
        SystemdError::Protocol {
            path: self.path.clone(),
            what: what.to_owned(),
        }
    }

    /// Calls `interface.member` on `destination`'s object `object` with a body already
    /// marshalled for `signature`; returns the reply's body (an error reply is an error).
    pub fn call(
        &mut self,
        destination: &str,
        object: &str,
        interface: &str,
        member: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<Reply, SystemdError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let mut fields = Writer::default();
        let field = |w: &mut Writer, code: u8, sig: &str, put: &dyn Fn(&mut Writer)| {
            w.align(8);
            w.byte(code);
            w.signature(sig);
            put(w);
        };
        // The header's field array starts at offset 12 of the message: 4 bytes of length at
        // 12, the first struct at 16, so offsets within `fields` keep their 8-alignment.
        let mut header = Writer::default();
        header.bytes(b"l\x01\0\x01");
        header.u32(body.len() as u32);
        header.u32(serial);
        field(&mut fields, 1, "o", &|w| w.string(object));
        field(&mut fields, 2, "s", &|w| w.string(interface));
        field(&mut fields, 3, "s", &|w| w.string(member));
        field(&mut fields, 6, "s", &|w| w.string(destination));
        if !signature.is_empty() {
            field(&mut fields, 8, "g", &|w| w.signature(signature));
        }
        header.u32(fields.buf.len() as u32);
        header.bytes(&fields.buf);
        header.align(8);
        header.bytes(body);
        self.write_all(&header.buf)?;
        loop {
            let reply = self.read_message()?;
            if reply.reply_serial != Some(serial) {
                // A signal (NameAcquired after Hello) or a reply to someone else: skip it.
                continue;
            }
            if let Some(name) = reply.error_name.clone() {
                let message = reply.first_string().unwrap_or_default();
                return Err(SystemdError::Refused {
                    path: self.path.clone(),
                    name,
                    message,
                });
            }
            return Ok(reply);
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SystemdError> {
        self.stream
            .read_exact(buf)
            .map_err(|source| self.io_error("cannot read a reply from", source))
    }

    fn read_message(&mut self) -> Result<Reply, SystemdError> {
        let mut fixed = [0u8; 16];
        self.read_exact(&mut fixed)?;
        let little = match fixed[0] {
            b'l' => true,
            b'B' => false,
            _ => return Err(self.protocol("a message with an unknown byte order")),
        };
        let u32_at = |b: &[u8], at: usize| {
            let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if little {
                u32::from_le_bytes(bytes)
            } else {
                u32::from_be_bytes(bytes)
            }
        };
        let body_len = u32_at(&fixed, 4) as usize;
        let fields_len = u32_at(&fixed, 12) as usize;
        if body_len > 1 << 24 || fields_len > 1 << 16 {
            return Err(self.protocol("a message larger than 16 MiB"));
        }
        let padded = (16 + fields_len).div_ceil(8) * 8 - 16;
        let mut rest = vec![0u8; padded + body_len];
        self.read_exact(&mut rest)?;
        let mut whole = fixed.to_vec();
        whole.extend_from_slice(&rest);
        let mut reader = Reader {
            buf: &whole,
            at: 16,
            little,
        };
        let mut reply = Reply {
            reply_serial: None,
            error_name: None,
            body: whole[16 + padded..].to_vec(),
            little,
        };
        let end = 16 + fields_len;
        while reader.at < end {
            reader.align(8);
            if reader.at >= end {
                break;
            }
            let code = reader
                .byte()
                .ok_or_else(|| self.protocol("a short header"))?;
            let sig = reader
                .signature()
                .ok_or_else(|| self.protocol("a bad header field"))?;
            match sig.as_str() {
                "u" => {
                    let v = reader
                        .u32()
                        .ok_or_else(|| self.protocol("a short header"))?;
                    if code == 5 {
                        reply.reply_serial = Some(v);
                    }
                }
                "s" | "o" => {
                    let v = reader
                        .string()
                        .ok_or_else(|| self.protocol("a bad header string"))?;
                    if code == 4 {
                        reply.error_name = Some(v);
                    }
                }
                "g" => {
                    reader
                        .signature()
                        .ok_or_else(|| self.protocol("a bad header signature"))?;
                }
                _ => return Err(self.protocol("an unexpected header field type")),
            }
        }
        Ok(reply)
    }
}

/// A reply's body, read only as far as its first string (an error's message, a job's path).
#[derive(Debug)]
pub struct Reply {
    reply_serial: Option<u32>,
    error_name: Option<String>,
    body: Vec<u8>,
    little: bool,
}

impl Reply {
    /// The first argument when it is a string or object path.
    pub fn first_string(&self) -> Option<String> {
        Reader {
            buf: &self.body,
            at: 0,
            little: self.little,
        }
        .string()
    }
}

/// Marshals values little-endian with D-Bus alignment, offsets relative to the buffer's start
/// (a body starts 8-aligned in its message, so that is the same alignment).
#[derive(Debug, Default)]
pub struct Writer {
    /// The marshalled bytes.
    pub buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }
    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// `u`
    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `s` or `o`
    pub fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes());
        self.byte(0);
    }
    /// `g`
    pub fn signature(&mut self, s: &str) {
        self.byte(s.len() as u8);
        self.bytes(s.as_bytes());
        self.byte(0);
    }
    /// An array whose elements `put` writes; `elem_align` is the element type's alignment.
    pub fn array(&mut self, elem_align: usize, put: impl FnOnce(&mut Writer)) {
        self.align(4);
        let len_at = self.buf.len();
        self.u32(0);
        self.align(elem_align);
        let start = self.buf.len();
        put(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }
    /// A `(sv)` struct: a unit property.
    pub fn property(&mut self, name: &str, value: &Value) {
        self.align(8);
        self.string(name);
        self.signature(value.signature());
        match value {
            Value::Str(s) => self.string(s),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::U32Array(vs) => self.array(4, |w| {
                for v in vs {
                    w.u32(*v);
                }
            }),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    little: bool,
}

impl Reader<'_> {
    fn align(&mut self, n: usize) {
        self.at = self.at.div_ceil(n) * n;
    }
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.align(4);
        let b: [u8; 4] = self.buf.get(self.at..self.at + 4)?.try_into().ok()?;
        self.at += 4;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let s = self.buf.get(self.at..self.at + len)?;
        self.at += len + 1;
        Some(String::from_utf8_lossy(s).into_owned())
    }
    fn signature(&mut self) -> Option<String> {
        let len = self.byte()? as usize;
        let s = self.buf.get(self.at..self.at + len)?;
        self.at += len + 1;
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_aligned_as_dbus_wants() {
        let mut w = Writer::default();
        w.array(8, |w| {
            w.property("Delegate", &Value::Bool(true));
            w.property("PIDs", &Value::U32Array(vec![7]));
        });
        // Array length, padding to 8, "Delegate" (len 8 + 8 bytes + NUL), signature "b",
        // pad to 4, the bool; then the next struct at an 8-aligned offset.
        assert_eq!(&w.buf[0..4], &[48, 0, 0, 0]);
        assert_eq!(&w.buf[8..12], &[8, 0, 0, 0]);
        assert_eq!(&w.buf[12..21], b"Delegate\0");
        assert_eq!(&w.buf[21..24], &[1, b'b', 0]);
        assert_eq!(&w.buf[24..28], &[1, 0, 0, 0]);
        assert_eq!(&w.buf[32..36], &[4, 0, 0, 0]);
        assert_eq!(&w.buf[36..41], b"PIDs\0");
        assert_eq!(&w.buf[41..45], &[2, b'a', b'u', 0]);
        assert_eq!(&w.buf[48..52], &[4, 0, 0, 0]);
        assert_eq!(&w.buf[52..56], &[7, 0, 0, 0]);
    }

    #[test]
    fn reads_back_a_string() {
        let mut w = Writer::default();
        w.string("/org/freedesktop/systemd1/job/42");
        let reply = Reply {
            reply_serial: Some(1),
            error_name: None,
            body: w.buf,
            little: true,
        };
        assert_eq!(
            reply.first_string().as_deref(),
            Some("/org/freedesktop/systemd1/job/42")
        );
    }
}
