//! The HTTP/1.1 client side: a single keep-alive connection ([`Conn`]) and
//! the load generator, which runs C workers, each owning one pre-opened
//! connection (a "pool" of exactly C connections, opened before the clock
//! starts), taking request numbers from a shared counter until N are sent or
//! the time limit passes. With a target rate, request `i` is sent no earlier
//! than `start + i / rate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::procs::ensure_loopback;

/// Waits until webhookd at `addr` answers `GET /readyz` with a 2xx.
/// `exited` tells whether its process ended meanwhile; the tail of `log`
/// goes into the error either way.
pub async fn wait_ready(
    addr: SocketAddr,
    log: &std::path::Path,
    limit: Duration,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> Result<()> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = exited() {
            anyhow::bail!(
                "webhookd exited ({status}) before it was ready:\n{}",
                crate::procs::tail(log, 20)
            );
        }
        if let Ok(mut conn) = Conn::connect(addr).await {
            if let Ok((status, _)) = conn.get("/readyz").await {
                if status.is_success() {
                    return Ok(());
                }
            }
        }
        if Instant::now() > until {
            anyhow::bail!(
                "webhookd not ready within {limit:?}:\n{}",
                crate::procs::tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Time one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Microseconds since the Unix epoch (comparable across processes).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        ensure_loopback(addr)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {addr}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            driver,
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let call = async {
            self.sender.ready().await?;
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, &self.host);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn post_json(&mut self, path: &str, body: String) -> Result<(StatusCode, Bytes)> {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Requests to send.
    pub n: usize,
    /// Connections (and requests in flight).
    pub concurrency: usize,
    /// Requests per second to aim at; None: as fast as answers come.
    pub rate: Option<f64>,
    /// No request is started after this much time.
    pub max_time: Duration,
    /// Distinguishes this run's ids.
    pub tag: String,
    /// Approximate size of each JSON body.
    pub body_size: usize,
}

/// What came of a load run.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests started.
    pub attempted: usize,
    /// Answered 202.
    pub accepted: usize,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Connection errors and timeouts.
    pub transport_errors: usize,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Latency of every answered request, µs, sorted.
    pub latencies_us: Vec<u64>,
    /// Which request numbers were accepted.
    pub accepted_seq: Vec<bool>,
    /// First send to last answer.
    pub elapsed: Duration,
    /// Wall clock of the first send, µs since the epoch.
    pub first_send_us: u64,
    /// The time limit stopped the run before N requests were sent.
    pub timed_out: bool,
}

impl LoadResult {
    /// Requests that did not get a 202.
    pub fn errors(&self) -> usize {
        self.attempted - self.accepted
    }

    /// Accepted requests per second.
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The body of request `seq`: JSON of about `size` bytes with a unique id
/// and the send time.
pub fn body(tag: &str, seq: usize, sent_us: u64, size: usize) -> Bytes {
    let mut s = format!(
        r#"{{"id":"{tag}-{seq:08}","seq":{seq},"sent_us":{sent_us},"type":"bench.event","data":{{"pad":""#
    );
    let pad = size.saturating_sub(s.len() + 3);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}}");
    Bytes::from(s)
}

#[derive(Default)]
struct WorkerOut {
    attempted: usize,
    accepted: Vec<usize>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
    samples: Vec<String>,
    latencies_us: Vec<u64>,
    timed_out: bool,
}

impl WorkerOut {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.transport_errors += 1;
        if self.samples.len() < 3 {
            self.samples.push(e.to_string());
        }
    }
}

/// POSTs `spec.n` webhooks to `addr`, request `i` to `paths[i % len]`.
pub async fn run(addr: SocketAddr, paths: Arc<Vec<String>>, spec: &LoadSpec) -> Result<LoadResult> {
    anyhow::ensure!(!paths.is_empty(), "no path to load");
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        conns.push(Conn::connect(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let first_send_us = now_us();
    let deadline = start + spec.max_time;
    let spec = Arc::new(spec.clone());
    let mut workers = JoinSet::new();
    for conn in conns {
        let (next, paths, spec) = (next.clone(), paths.clone(), spec.clone());
        workers.spawn(worker(addr, conn, next, paths, spec, start, deadline));
    }
    let mut result = LoadResult {
        accepted_seq: vec![false; spec.n],
        first_send_us,
        ..LoadResult::default()
    };
    while let Some(out) = workers.join_next().await {
        let out = out.context("a load worker panicked")?;
        result.attempted += out.attempted;
        result.accepted += out.accepted.len();
        for seq in out.accepted {
            result.accepted_seq[seq] = true;
        }
        for (status, count) in out.statuses {
            *result.statuses.entry(status).or_default() += count;
        }
        result.transport_errors += out.transport_errors;
        for s in out.samples {
            if result.error_samples.len() < 5 {
                result.error_samples.push(s);
            }
        }
        result.latencies_us.extend(out.latencies_us);
        result.timed_out |= out.timed_out;
    }
    result.elapsed = start.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

async fn worker(
    addr: SocketAddr,
    conn: Conn,
    next: Arc<AtomicUsize>,
    paths: Arc<Vec<String>>,
    spec: Arc<LoadSpec>,
    start: Instant,
    deadline: Instant,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut conn = Some(conn);
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= spec.n {
            break;
        }
        if let Some(rate) = spec.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if due >= deadline {
                out.timed_out = true;
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            break;
        }
        out.attempted += 1;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.error(format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let path = &paths[seq % paths.len()];
        let sent_us = now_us();
        let body = body(&spec.tag, seq, sent_us, spec.body_size);
        let t0 = Instant::now();
        let answer = c
            .request(
                Method::POST,
                path,
                &[
                    (CONTENT_TYPE.as_str(), "application/json"),
                    ("x-event-type", "bench.event"),
                ],
                body,
            )
            .await;
        match answer {
            Ok((status, _)) => {
                out.latencies_us.push(t0.elapsed().as_micros() as u64);
                *out.statuses.entry(status.as_u16()).or_default() += 1;
                if status == StatusCode::ACCEPTED {
                    out.accepted.push(seq);
                } else if out.samples.len() < 3 {
                    out.samples.push(format!("answered {status}"));
                }
            }
            Err(e) => {
                out.error(format!("{e:#}"));
                conn = None;
            }
        }
    }
    out
}

/// The `q`-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
