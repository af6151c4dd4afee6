//! The log server's thread: reads the listening socket (made in the container's network
//! namespace by the runtime, or on the host's loopback for `--network host`) while the
//! container runs, drains what is left once it has ended, and hands back what it collected.

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{RecvFlags, SocketFlags};

use super::ServerType;
use super::events::{Collected, Sink};
use super::protocol::{
    HTTP_ACCEPTED, HttpReader, Malformed, NullFramer, Reassembler, parse_payload,
};

/// Connections served at once (TCP and HTTP); more are closed at once, each counted as a
/// malformed input.
pub const MAX_CONNECTIONS: usize = 64;

/// A running server; [`Server::finish`] stops it.
pub struct Server {
    stop: UnixStream,
    thread: JoinHandle<Collected>,
}

impl Server {
    /// Serves `socket` (UDP bound, or TCP listening; non-blocking) as `kind` on a thread of
    /// its own, handing each message to `sink`.
    pub fn start(kind: ServerType, socket: OwnedFd, sink: Sink) -> std::io::Result<Server> {
        let (stop, stop_rx) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("gelf".into())
            .spawn(move || serve(kind, socket, stop_rx, sink))?;
        Ok(Server { stop, thread })
    }

    /// The container has ended: reads what is still queued, drops incomplete chunk
    /// sequences, and returns everything collected.
    pub fn finish(self) -> Collected {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

enum Reader {
    Tcp(NullFramer),
    Http(HttpReader),
}

struct Conn {
    fd: OwnedFd,
    reader: Reader,
}

fn serve(kind: ServerType, socket: OwnedFd, stop: UnixStream, mut sink: Sink) -> Collected {
    let mut conns: Vec<Conn> = Vec::new();
    let mut chunks = Reassembler::default();
    let mut buf = vec![0u8; 64 << 10];
    let tick = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let stopping = {
            let mut fds = vec![
                PollFd::new(&stop, PollFlags::IN),
                PollFd::new(&socket, PollFlags::IN),
            ];
            fds.extend(conns.iter().map(|c| PollFd::new(&c.fd, PollFlags::IN)));
            match poll(&mut fds, Some(&tick)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                // Nothing can be served any more: what was collected is the answer.
                Err(_) => break,
            }
            !fds[0].revents().is_empty()
        };
        // Readiness is not needed: every socket is non-blocking, and a pass over all of them
        // is cheap next to a message's parsing.
        match kind {
            ServerType::Udp => read_datagrams(&socket, &mut buf, &mut chunks, &mut sink),
            ServerType::Tcp | ServerType::Http => {
                accept_all(&socket, kind, &mut conns, &mut sink);
                conns.retain_mut(|c| read_conn(c, &mut buf, &mut sink));
            }
        }
        sink.incomplete(chunks.expire(Instant::now(), false) as u64 + chunks.take_evicted());
        if stopping {
            // The container is gone: its sockets are closed, so every connection reads to
            // its end; a last frame without its null byte still counts.
            for mut c in conns.drain(..) {
                if let Reader::Tcp(f) = &mut c.reader
                    && let Some(frame) = f.finish()
                {
                    payload(&frame, &mut sink);
                }
            }
            sink.incomplete(chunks.expire(Instant::now(), true) as u64);
            break;
        }
    }
    sink.finish()
}

fn read_datagrams(socket: &OwnedFd, buf: &mut [u8], chunks: &mut Reassembler, sink: &mut Sink) {
    loop {
        match rustix::net::recv(socket, &mut *buf, RecvFlags::TRUNC) {
            // TRUNC: the datagram's full length, even past the buffer.
            Ok((n, total)) if total > n => sink.malformed(&Malformed(format!(
                "Datagram of {total} bytes, larger than {n} bytes."
            ))),
            Ok((n, _)) => match chunks.datagram(&buf[..n], Instant::now()) {
                Ok(Some(p)) => payload(&p, sink),
                Ok(None) => {}
                Err(e) => sink.malformed(&e),
            },
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

fn accept_all(listener: &OwnedFd, kind: ServerType, conns: &mut Vec<Conn>, sink: &mut Sink) {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(fd) if conns.len() >= MAX_CONNECTIONS => {
                drop(fd);
                sink.malformed(&Malformed(format!(
                    "More than {MAX_CONNECTIONS} connections at once; one was closed."
                )));
            }
            Ok(fd) => conns.push(Conn {
                fd,
                reader: match kind {
                    ServerType::Http => Reader::Http(HttpReader::default()),
                    _ => Reader::Tcp(NullFramer::default()),
                },
            }),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Reads `c` until it would block; false once it has ended (or must be closed).
fn read_conn(c: &mut Conn, buf: &mut [u8], sink: &mut Sink) -> bool {
    loop {
        match rustix::io::read(&c.fd, &mut *buf) {
            Ok(0) => {
                if let Reader::Tcp(f) = &mut c.reader
                    && let Some(frame) = f.finish()
                {
                    payload(&frame, sink);
                }
                return false;
            }
            Ok(n) => match &mut c.reader {
                Reader::Tcp(f) => {
                    for frame in f.push(&buf[..n]) {
                        match frame {
                            Ok(frame) => payload(&frame, sink),
                            Err(e) => sink.malformed(&e),
                        }
                    }
                }
                Reader::Http(h) => match h.push(&buf[..n]) {
                    Ok(bodies) => {
                        for body in bodies {
                            match super::protocol::decode_payload(&body) {
                                Ok(p) => payload(&p, sink),
                                Err(e) => sink.malformed(&e),
                            }
                            // Best effort: a client that does not read its answers only
                            // misses them.
                            let _ = rustix::io::write(&c.fd, HTTP_ACCEPTED);
                        }
                    }
                    Err(e) => {
                        sink.malformed(&e);
                        return false;
                    }
                },
            },
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return true,
            Err(_) => return false,
        }
    }
}

fn payload(data: &[u8], sink: &mut Sink) {
    for m in parse_payload(data) {
        match m {
            Ok(m) => sink.message(m),
            Err(e) => sink.malformed(&e),
        }
    }
}

/// A port of Keboola's range, picked at random (the namespace's own loopback has nothing
/// else listening, so the first pick binds).
pub fn random_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs());
    let mixed = nanos
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(std::process::id() as u64);
    let span = (*super::PORT_RANGE.end() - *super::PORT_RANGE.start()) as u64 + 1;
    *super::PORT_RANGE.start() + ((mixed >> 17) % span) as u16
}

/// For a container on the host's network: a socket on the host's 127.0.0.1, at a random
/// port of Keboola's range, trying 10 ports as Keboola's server does.
pub fn bind_on_host(kind: ServerType) -> std::io::Result<(OwnedFd, u16)> {
    let mut last = std::io::Error::from(ErrorKind::AddrInUse);
    for _ in 0..10 {
        let port = random_port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let bound: std::io::Result<OwnedFd> = match kind {
            ServerType::Udp => std::net::UdpSocket::bind(addr).map(OwnedFd::from),
            ServerType::Tcp | ServerType::Http => {
                std::net::TcpListener::bind(addr).map(OwnedFd::from)
            }
        };
        match bound {
            Ok(fd) => {
                rustix::io::ioctl_fionbio(&fd, true)?;
                return Ok((fd, port));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::gelf::Logging;
    use crate::pipeline::redact::Secrets;
    use std::io::Write;

    fn sink() -> Sink {
        let secrets = Secrets::collect([&serde_json::json!({})]).unwrap();
        Sink::new(Logging::default(), secrets, None)
    }

    fn msg(text: &str) -> String {
        format!(r#"{{"host":"c","short_message":"{text}","level":6,"timestamp":1}}"#)
    }

    #[test]
    fn random_ports_are_in_keboolas_range() {
        for _ in 0..100 {
            assert!(super::super::PORT_RANGE.contains(&random_port()));
        }
    }

    #[test]
    fn udp_and_tcp_on_loopback() {
        let (fd, port) = bind_on_host(ServerType::Udp).unwrap();
        let server = Server::start(ServerType::Udp, fd, sink()).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(msg("u").as_bytes(), ("127.0.0.1", port))
            .unwrap();
        client.send_to(b"garbage", ("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let c = server.finish();
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].message, "u");
        assert_eq!(c.counts.malformed, 1);

        let (fd, port) = bind_on_host(ServerType::Tcp).unwrap();
        let server = Server::start(ServerType::Tcp, fd, sink()).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "{}\0{}", msg("t1"), msg("t2")).unwrap();
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let c = server.finish();
        let texts: Vec<_> = c.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(texts, ["t1", "t2"]);
    }
}
