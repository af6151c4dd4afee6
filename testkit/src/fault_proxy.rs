//! A small HTTP/1.1 proxy in front of the real registry that injects faults by rule.
//!
//! One request per connection (`Connection: close` both ways) keeps it simple and makes
//! every attempt of the client visible in the log. Bodies are buffered: the proxy is meant
//! for the small test images, not for benchmarks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` if given) without asking the registry.
    Status(u16, Option<String>),
    /// Forward, but close the connection after this many body bytes.
    CutAfter(usize),
    /// Forward with the body byte at this offset flipped.
    CorruptByte(usize),
    /// Forward with this many extra bytes appended (and Content-Length raised to match).
    ExtraBytes(usize),
    /// Forward this many body bytes, then stall without closing (for kill tests).
    StallAfter(usize),
    /// Drop the client's `Range` header, as a registry without range support would.
    IgnoreRange,
    /// Forward the body, then keep sending filler bytes without a `Content-Length` until the
    /// client hangs up (or [`ENDLESS_CAP`] bytes were sent, so a test that fails stays bounded).
    Endless,
    /// Forward `after` body bytes at once, then `bytes` bytes every `every` (a trickling
    /// registry).
    Trickle {
        /// Bytes sent at full speed first.
        after: usize,
        /// Bytes per tick afterwards.
        bytes: usize,
        /// The tick.
        every: Duration,
    },
    /// Rewrite an image manifest so that every layer descriptor declares this size (a lying
    /// descriptor). The `Docker-Content-Digest` header is dropped, as the body changed.
    LayerSize(u64),
    /// Rewrite an image manifest so that it names this many layers, repeating its own.
    RepeatLayers(usize),
}

/// The most an [`Fault::Endless`] body sends: far above any test cap, far below a full disk.
pub const ENDLESS_CAP: usize = 64 << 20;

/// Applies `fault` to requests whose path contains `path`, for hits `first..first+times`
/// (1-based) of that rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Substring of the request path, e.g. `/blobs/`.
    pub path: String,
    /// First matching hit the fault applies to (1 = the first request).
    pub first: usize,
    /// How many consecutive hits it applies to.
    pub times: usize,
    /// The fault.
    pub fault: Fault,
}

impl Rule {
    /// A rule for the first `times` requests matching `path`.
    pub fn new(path: &str, times: usize, fault: Fault) -> Rule {
        Rule {
            path: path.to_string(),
            first: 1,
            times,
            fault,
        }
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// HTTP method.
    pub method: String,
    /// Request path with query.
    pub path: String,
    /// The `Range` header the client sent, if any.
    pub range: Option<String>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:5000`) on a free loopback port. It runs on a
    /// thread with its own runtime, so it serves async and blocking tests alike.
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let upstream = upstream.to_string();
        let rules = Arc::new(rules);
        let hits = Arc::new(Mutex::new(vec![0usize; rules.len()]));
        let task_log = log.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((conn, _)) = accepted else { return };
                            let (upstream, rules, hits, log) =
                                (upstream.clone(), rules.clone(), hits.clone(), task_log.clone());
                            tokio::spawn(async move {
                                let _ = serve(conn, &upstream, &rules, &hits, &log).await;
                            });
                        }
                    }
                }
            });
        });
        FaultProxy {
            addr,
            log,
            stop: Some(stop),
        }
    }

    /// `127.0.0.1:PORT`, to use as the registry host in references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().expect("log lock").clone()
    }

    /// Requests whose path contains `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.path.contains(path))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: &[Rule],
    hits: &Mutex<Vec<usize>>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let range = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.clone());

    let fault = {
        let mut hits = hits.lock().expect("hits lock");
        let mut chosen = None;
        for (i, rule) in rules.iter().enumerate() {
            if path.contains(&rule.path) {
                hits[i] += 1;
                if chosen.is_none() && hits[i] >= rule.first && hits[i] < rule.first + rule.times {
                    chosen = Some(rule.fault.clone());
                }
            }
        }
        chosen
    };
    log.lock().expect("log lock").push(Logged {
        method: method.clone(),
        path: path.clone(),
        range,
        fault: fault.clone(),
    });

    if let Some(Fault::Status(code, retry_after)) = &fault {
        let mut resp =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(r) = retry_after {
            resp.push_str(&format!("Retry-After: {r}\r\n"));
        }
        resp.push_str("\r\n");
        client.write_all(resp.as_bytes()).await?;
        return client.shutdown().await;
    }

    let mut forwarded = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("connection")
            || (matches!(fault, Some(Fault::IgnoreRange)) && k.eq_ignore_ascii_case("range"))
        {
            continue;
        }
        forwarded.push_str(&format!("{k}: {v}\r\n"));
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(forwarded.as_bytes()).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(response.len());
    let (resp_head, body) = response.split_at(split);
    let mut body = body.to_vec();
    let resp_head = String::from_utf8_lossy(resp_head).to_string();
    let rewrite = matches!(fault, Some(Fault::LayerSize(_) | Fault::RepeatLayers(_)));
    if rewrite && !body.is_empty() {
        body = rewrite_manifest(&body, fault.as_ref().expect("a rewrite fault"));
    }
    let mut out_head = String::new();
    for line in resp_head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:")
            || lower.starts_with("connection:")
            || (rewrite && lower.starts_with("docker-content-digest:"))
        {
            continue;
        }
        out_head.push_str(line);
        out_head.push_str("\r\n");
    }
    let is_body_request = method != "HEAD";
    let mut cut = None;
    let mut stall = false;
    let mut tail = None;
    match &fault {
        Some(Fault::CorruptByte(at)) if is_body_request && *at < body.len() => body[*at] ^= 0xff,
        Some(Fault::ExtraBytes(n)) if is_body_request => body.extend(std::iter::repeat_n(0x5a, *n)),
        Some(Fault::CutAfter(n)) if is_body_request => cut = Some(*n),
        Some(Fault::StallAfter(n)) if is_body_request => {
            cut = Some(*n);
            stall = true;
        }
        Some(f @ (Fault::Endless | Fault::Trickle { .. })) if is_body_request => {
            tail = Some(f.clone());
        }
        _ => {}
    }
    if matches!(tail, Some(Fault::Endless)) {
        // No length: the body ends when the connection does.
        out_head.push_str("Connection: close\r\n\r\n");
    } else {
        out_head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
    }
    client.write_all(out_head.as_bytes()).await?;
    if !is_body_request {
        return client.shutdown().await;
    }
    match tail {
        Some(Fault::Endless) => {
            client.write_all(&body).await?;
            let filler = vec![0x5a; 64 << 10];
            let mut sent = 0;
            // Ends with an error as soon as the client hangs up.
            while sent < ENDLESS_CAP {
                client.write_all(&filler).await?;
                sent += filler.len();
            }
            return client.shutdown().await;
        }
        Some(Fault::Trickle {
            after,
            bytes,
            every,
        }) => {
            let first = after.min(body.len());
            client.write_all(&body[..first]).await?;
            client.flush().await?;
            for piece in body[first..].chunks(bytes.max(1)) {
                tokio::time::sleep(every).await;
                client.write_all(piece).await?;
                client.flush().await?;
            }
            return client.shutdown().await;
        }
        _ => {}
    }
    let send = cut.map(|n| n.min(body.len())).unwrap_or(body.len());
    client.write_all(&body[..send]).await?;
    client.flush().await?;
    if stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    client.shutdown().await
}

/// Applies a manifest-rewriting fault; a body that is not an image manifest passes unchanged.
fn rewrite_manifest(body: &[u8], fault: &Fault) -> Vec<u8> {
    let Ok(mut manifest) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    let Some(layers) = manifest.get_mut("layers").and_then(|l| l.as_array_mut()) else {
        return body.to_vec();
    };
    match fault {
        Fault::LayerSize(size) => {
            for layer in layers.iter_mut() {
                layer["size"] = serde_json::json!(size);
            }
        }
        Fault::RepeatLayers(count) if !layers.is_empty() => {
            let own = layers.clone();
            *layers = own.iter().cycle().take(*count).cloned().collect();
        }
        _ => {}
    }
    serde_json::to_vec(&manifest).expect("a JSON value serialises")
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
        if head.len() > 64 << 10 {
            break;
        }
    }
    Ok(head)
}
