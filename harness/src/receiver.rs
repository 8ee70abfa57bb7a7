//! The recording webhook receiver: an HTTP/1.1 server on 127.0.0.1, on raw
//! TCP so that besides answering (any status, headers, body, after a delay)
//! it can also misbehave at the byte level (close without an answer, or
//! after part of an answer head). Every request read in full is recorded
//! with its arrival time and, once answered, with what came of it.
//!
//! It reads what webhookd sends: a request head and a `Content-Length`
//! body, keep-alive. A chunked body is answered 400 and the connection
//! closed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::now_us;
use crate::net::accept_forever;
use crate::wait::{eventually, DEADLINE};

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(120);
/// Bound on the requests one connection serves.
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;

/// What the receiver did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not answered yet (the script's delay is running).
    Pending,
    /// This status was written in full.
    Status(u16),
    /// This status was chosen, but writing it failed (the client was gone).
    Unsent(u16),
    /// The connection was closed without a byte of answer.
    Closed,
    /// Part of an answer head was written, then the connection closed.
    Partial,
}

impl Answer {
    /// The receiver answered 2xx (in full).
    pub fn ok(self) -> bool {
        matches!(self, Answer::Status(s) if (200..300).contains(&s))
    }
}

/// One request the receiver read in full.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Lower-case header names to values (the last one of a repeated name).
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Bytes,
    /// When it was read in full.
    pub at: Instant,
    /// The same moment in µs since the epoch ([`now_us`]).
    pub at_us: u64,
    /// What the receiver did with it (as of when this copy was taken).
    pub answer: Answer,
}

impl Received {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `webhook-id` header ("-" without one).
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id").unwrap_or("-")
    }
}

/// How a reply ends when it is not a whole answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// Close the connection without a byte of answer.
    Silently,
    /// Write part of a `200 OK` head, then close.
    MidHead,
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Waited before answering (or hanging up).
    pub delay: Duration,
    /// Extra answer headers.
    pub headers: Vec<(&'static str, String)>,
    /// The answer body.
    pub body: String,
    /// Instead of the answer: hang up.
    pub hang_up: Option<HangUp>,
}

impl Reply {
    /// `status` at once, empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: String::new(),
            hang_up: None,
        }
    }

    /// Hang up as `how` says instead of answering.
    pub fn hang_up(how: HangUp) -> Reply {
        Reply {
            hang_up: Some(how),
            ..Reply::status(0)
        }
    }
}

/// The receiver's script: `n` is the 0-based index of the request.
type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// A script answering `fail` to the first request of each `webhook-id` and
/// `then` to every later one: a first attempt that fails, a retry that
/// succeeds.
pub fn fail_first(fail: Reply, then: Reply) -> impl Fn(usize, &Received) -> Reply + Send + Sync {
    let seen: Mutex<HashSet<String>> = Mutex::default();
    move |_, r| {
        let first = seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.webhook_id().to_string());
        if first {
            fail.clone()
        } else {
            then.clone()
        }
    }
}

/// How a receiver is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (loopback; port 0: any free port).
    pub listen: SocketAddr,
    /// Keep every request (false: only count them, for a long benchmark
    /// whose script keeps what it needs).
    pub keep: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            listen: ([127, 0, 0, 1], 0).into(),
            keep: true,
        }
    }
}

struct Shared {
    keep: bool,
    count: AtomicUsize,
    log: Mutex<Vec<Received>>,
    script: Box<Script>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Vec<Received>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A receiver listening on loopback; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver answering 200 to everything (panics if it cannot bind).
    pub async fn ok() -> Receiver {
        Receiver::scripted(|_, _| Reply::status(200)).await
    }

    /// A receiver answering `script(n, request)` (panics if it cannot bind).
    pub async fn scripted(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start(Options::default(), script)
            .await
            .expect("a receiver on 127.0.0.1")
    }

    /// A receiver set up by `options`, answering `script(n, request)`.
    pub async fn start(
        options: Options,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Result<Receiver> {
        crate::net::ensure_loopback(options.listen)?;
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding a receiver on {}", options.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            keep: options.keep,
            count: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            script: Box::new(script),
        });
        let s = shared.clone();
        let task = tokio::spawn(accept_forever(
            listener,
            "harness receiver",
            move |stream| {
                tokio::spawn(connection(stream, s.clone()));
            },
        ));
        Ok(Receiver { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything received so far (empty unless [`Options::keep`]).
    pub fn received(&self) -> Vec<Received> {
        self.shared.log().clone()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Arrival time of the last request, µs since the epoch (0: none yet).
    pub fn last_arrival_us(&self) -> u64 {
        self.shared.log().last().map_or(0, |r| r.at_us)
    }

    /// webhook-id → time of its first 2xx answer.
    pub fn first_ok(&self) -> HashMap<String, u64> {
        first_ok(&self.shared.log())
    }

    /// Waits until at least `n` requests arrived; panics after [`DEADLINE`].
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(
            &format!("{n} requests at the receiver"),
            DEADLINE,
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// webhook-id → time of its first 2xx answer (µs since the epoch).
pub fn first_ok(received: &[Received]) -> HashMap<String, u64> {
    let mut m: HashMap<String, u64> = HashMap::new();
    for r in received.iter().filter(|r| r.answer.ok()) {
        let e = m.entry(r.webhook_id().to_string()).or_insert(r.at_us);
        *e = (*e).min(r.at_us);
    }
    m
}

/// Asserts that `receiver` keeps exactly `expected` requests for `window`,
/// polling every 20 ms. Only called once the status API shows the system is
/// past the point where a further delivery could be scheduled; the window is
/// a bounded extra observation (a few times the largest schedule step).
pub async fn assert_count_stays(receiver: &Receiver, expected: usize, window: Duration) {
    let started = Instant::now();
    while started.elapsed() < window {
        assert_eq!(
            receiver.count(),
            expected,
            "unexpected delivery {:?} after the system settled",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.count(), expected);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; false on EOF, error or idle timeout.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// The request line and headers of a head.
fn parse_head(head: &str) -> (String, String, HashMap<String, String>) {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (method, path, headers)
}

/// An answer head and body, as written.
fn answer_bytes(reply: &Reply) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    // No body, and no Content-Length, on 1xx, 204 and 304 (RFC 9110).
    let bodiless = matches!(reply.status, 100..=199 | 204 | 304);
    if !bodiless {
        head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !bodiless {
        bytes.extend_from_slice(reply.body.as_bytes());
    }
    bytes
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD || !fill(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let (method, path, headers) = parse_head(&head);
        let content_length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked || content_length > MAX_BODY {
            // Not what webhookd sends; answer and hang up.
            eprintln!("harness receiver: unsupported request head: {head:?}");
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        while buf.len() < head_end + content_length {
            if !fill(&mut stream, &mut buf).await {
                return;
            }
        }
        let body = Bytes::copy_from_slice(&buf[head_end..head_end + content_length]);
        buf.drain(..head_end + content_length);
        let received = Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
            at_us: now_us(),
            answer: Answer::Pending,
        };
        // Numbered and logged under one lock: `n` is the request's index.
        let n = {
            let mut log = shared.log();
            let n = shared.count.fetch_add(1, Ordering::SeqCst);
            if shared.keep {
                log.push(received.clone());
            }
            n
        };
        let reply = (shared.script)(n, &received);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let (answer, keep_open) = match reply.hang_up {
            None => match stream.write_all(&answer_bytes(&reply)).await {
                Ok(()) => (Answer::Status(reply.status), true),
                Err(_) => (Answer::Unsent(reply.status), false),
            },
            Some(HangUp::MidHead) => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                let _ = stream.flush().await;
                (Answer::Partial, false)
            }
            Some(HangUp::Silently) => (Answer::Closed, false),
        };
        if shared.keep {
            if let Some(r) = shared.log().get_mut(n) {
                r.answer = answer;
            }
        }
        if !keep_open {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
