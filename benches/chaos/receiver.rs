//! The recording receiver of the chaos suite: a plain HTTP/1.1 server on
//! raw TCP (so it can also misbehave at the byte level), in this process.
//!
//! Every request that was read completely is recorded with its
//! `webhook-id`, its arrival time and what the
//! receiver did with it: a status written in full, a connection closed
//! without an answer, or a partial answer followed by a close.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::now_us;
use crate::rng::Rng;

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(120);

/// How the receiver answers deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 to everything.
    Ok = 0,
    /// 500 to the first request of each webhook-id, 200 afterwards.
    FailFirst = 1,
    /// 500 or 200 at random, half each.
    FailHalf = 2,
    /// At random: a quarter closed without an answer, a quarter closed
    /// after a partial answer head, half answered 200.
    CloseHalf = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::FailFirst,
            2 => Mode::FailHalf,
            3 => Mode::CloseHalf,
            _ => Mode::Ok,
        }
    }
}

/// What the receiver did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
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

/// One request, read in full.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// µs since the epoch, when the request was read.
    pub at_us: u64,
    /// The `webhook-id` header ("-" without one).
    pub webhook_id: String,
    /// What came of it.
    pub answer: Answer,
}

struct Shared {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    log: Mutex<Vec<Arrival>>,
    seen: Mutex<HashSet<String>>,
    rng: Mutex<Rng>,
}

/// A receiver listening on 127.0.0.1; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start(mode: Mode, seed: u64) -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(mode as u8),
            delay_ms: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            rng: Mutex::new(Rng::new(seed)),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("chaos receiver: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, s.clone()));
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    /// Waits this long before answering (every mode).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Everything recorded so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Requests recorded so far.
    pub fn count(&self) -> usize {
        self.shared.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Arrival time of the last request (0: none yet).
    pub fn last_arrival_us(&self) -> u64 {
        self.shared
            .log
            .lock()
            .ok()
            .and_then(|l| l.last().map(|a| a.at_us))
            .unwrap_or(0)
    }

    /// webhook-id → time of its first 2xx.
    pub fn first_ok(&self) -> HashMap<String, u64> {
        first_ok(&self.arrivals())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// webhook-id → time of its first 2xx answer.
pub fn first_ok(arrivals: &[Arrival]) -> HashMap<String, u64> {
    let mut m: HashMap<String, u64> = HashMap::new();
    for a in arrivals.iter().filter(|a| a.answer.ok()) {
        let e = m.entry(a.webhook_id.clone()).or_insert(a.at_us);
        *e = (*e).min(a.at_us);
    }
    m
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

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    // Bounded: one connection serves at most this many requests.
    for _ in 0..1_000_000 {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD || !fill(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut content_length = 0usize;
        let mut webhook_id = "-".to_string();
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "webhook-id" => webhook_id = value.to_string(),
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        if chunked || content_length > MAX_BODY {
            // Not what webhookd sends; answer and hang up.
            eprintln!("chaos receiver: unsupported request head: {head:?}");
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
        buf.drain(..head_end + content_length);
        let at_us = now_us();

        let mode = Mode::from_u8(shared.mode.load(Ordering::Relaxed));
        let roll = shared.rng.lock().map(|mut r| r.below(4)).unwrap_or(0);
        let planned = match mode {
            Mode::Ok => Answer::Status(200),
            Mode::FailFirst => {
                let first = shared
                    .seen
                    .lock()
                    .map(|mut s| s.insert(webhook_id.clone()))
                    .unwrap_or(false);
                Answer::Status(if first { 500 } else { 200 })
            }
            Mode::FailHalf => Answer::Status(if roll < 2 { 500 } else { 200 }),
            Mode::CloseHalf => match roll {
                0 => Answer::Closed,
                1 => Answer::Partial,
                _ => Answer::Status(200),
            },
        };
        let delay = shared.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let (answer, keep) = match planned {
            Answer::Status(code) => {
                let reason = if code == 200 {
                    "OK"
                } else {
                    "Internal Server Error"
                };
                let text = if code == 200 { "ok" } else { "no" };
                let resp = format!(
                    "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                match stream.write_all(resp.as_bytes()).await {
                    Ok(()) => (Answer::Status(code), true),
                    Err(_) => (Answer::Unsent(code), false),
                }
            }
            Answer::Partial => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                let _ = stream.flush().await;
                (Answer::Partial, false)
            }
            other => (other, false),
        };
        if let Ok(mut log) = shared.log.lock() {
            log.push(Arrival {
                at_us,
                webhook_id,
                answer,
            });
        }
        if !keep {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
