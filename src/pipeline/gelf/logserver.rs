//! One main container's log server from the pipeline's side: where it listens (the
//! container's own loopback, or the host's for `--network host`), the variables that name
//! it, the server thread while the container runs, and what it leaves in the result.

use std::os::fd::OwnedFd;

use dockless_runtime::bundle::{NetworkMode, RunSpec};
use dockless_runtime::container::{ListenKind, ListenSocket, Stream};

use super::events::Sink;
use super::server::{Server, bind_on_host, random_port};
use super::{Logging, ServerType, Summary};
use crate::pipeline::Failure;
use crate::pipeline::classify::Class;
use crate::pipeline::redact::Secrets;
use crate::pipeline::result::JobResult;

/// `KBC_LOGGER_ADDR`: the server is on the container's loopback (its own namespace's, or
/// the host's with `--network host`).
pub const LOGGER_ADDR: &str = "127.0.0.1";

/// A log server being set up, running, then finished.
pub struct LogServer {
    kind: ServerType,
    port: u16,
    /// The socket the runtime makes in the container's namespace (empty with host network).
    pub listen: Vec<ListenSocket>,
    sink: Option<Sink>,
    server: Option<Server>,
    /// Set when the server could not start (the job goes on without it).
    failed: Option<String>,
}

impl LogServer {
    /// Picks the port, names it in `spec`'s environment and, on the host's network, binds and
    /// starts serving at once.
    pub(in crate::pipeline) fn prepare(
        logging: &Logging,
        network: NetworkMode,
        spec: &mut RunSpec,
        secrets: &Secrets,
        stdout_to: Option<Stream>,
    ) -> Result<LogServer, Failure> {
        let kind = logging.gelf_server_type;
        // Below warning: where the component's stdout goes (stderr when that is kept).
        let sink = Sink::new(
            logging.clone(),
            secrets.clone(),
            stdout_to.or(Some(Stream::Stderr)),
        );
        let mut log = LogServer {
            kind,
            port: 0,
            listen: Vec::new(),
            sink: Some(sink),
            server: None,
            failed: None,
        };
        if network == NetworkMode::Host {
            let (fd, port) = bind_on_host(kind).map_err(|e| {
                Failure::new(Class::Application, format!("Failed to start server {e}"))
            })?;
            log.port = port;
            log.serve(vec![fd]);
        } else {
            log.port = random_port();
            log.listen.push(ListenSocket {
                kind: match kind {
                    ServerType::Udp => ListenKind::Udp,
                    ServerType::Tcp | ServerType::Http => ListenKind::Tcp,
                },
                port: log.port,
            });
        }
        spec.env.push(format!("KBC_LOGGER_ADDR={LOGGER_ADDR}"));
        spec.env.push(format!("KBC_LOGGER_PORT={}", log.port));
        Ok(log)
    }

    /// The listening socket exists: serve it on a thread of its own.
    pub fn serve(&mut self, fds: Vec<OwnedFd>) {
        let (Some(fd), Some(sink)) = (fds.into_iter().next(), self.sink.take()) else {
            return;
        };
        match Server::start(self.kind, fd, sink) {
            Ok(server) => self.server = Some(server),
            Err(e) => self.failed = Some(format!("cannot start the GELF server: {e}")),
        }
    }

    /// The container has ended: drains the server and records its events and counts in
    /// `result`; returns the last message of level warning or worse.
    pub fn finish(self, result: &mut JobResult) -> Option<String> {
        if let Some(why) = self.failed {
            result.warnings.push(why);
        }
        let collected = self.server?.finish();
        result.events = collected.events;
        result.logging = Some(Summary {
            server_type: self.kind,
            address: LOGGER_ADDR.to_string(),
            port: self.port,
            counts: collected.counts,
        });
        collected.last_error
    }
}
