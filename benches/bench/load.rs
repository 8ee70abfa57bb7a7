//! The benchmark's load generator, on the harness's keep-alive [`Conn`]: C
//! workers, each owning one pre-opened connection (a "pool" of exactly C
//! connections, opened before the clock starts), take request numbers from
//! a shared counter until N are sent or the time limit passes. With a
//! target rate, request `i` is sent no earlier than `start + i / rate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};
use tokio::task::JoinSet;
use webhookd_harness::client::Conn;
use webhookd_harness::load::{body, now_us, Spec};

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

/// POSTs `spec.n` webhooks to `addr`, request `i` to `spec.paths[i % len]`.
pub async fn run(addr: SocketAddr, spec: &Spec) -> Result<LoadResult> {
    let paths = spec.paths.clone();
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
    spec: Arc<Spec>,
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
        if !spec.pace(start, deadline, seq).await {
            out.timed_out = true;
            break;
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
