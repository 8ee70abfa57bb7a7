//! The scenarios: each starts what it needs (fresh webhookd with a fresh
//! data directory, a fresh receiver), loads it, checks correctness, and
//! returns its figures. Everything is stopped at the end of each scenario,
//! also on error (the guards' Drop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;
use webhookd_harness::check::Check;
use webhookd_harness::client::Conn;
use webhookd_harness::load::Spec;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::process::ChildGuard;
use webhookd_harness::server::next_link;
use webhookd_harness::sqlite;

use crate::load::{self, quantile, LoadResult};
use crate::procs::{self, read_listen_line, Peak, Rss, Sampler};
use crate::servers::{self, Mode, Record};

/// Size of each webhook body.
pub const BODY_SIZE: usize = 500;
/// Delay of the slow receiver.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);
/// Retry delay in the retries scenario.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Answer delay of the isolation scenario's hanging receiver ("hang30"):
/// longer than webhookd's default delivery timeout (10 s), so every attempt
/// to it times out.
pub const HANG_DELAY: Duration = Duration::from_secs(30);
/// Send rate of the isolation scenario's healthy load: the healthy
/// subscription's latency, not webhookd's throughput, is measured. At
/// 2,000 webhooks the load lasts about 13 s, past the first timeouts of the
/// hanging receiver's attempts (10 s) and so past its circuit opening.
pub const ISOLATION_RATE: f64 = 150.0;
/// Send rate of the recovery scenario's live load (alone, then during the
/// recovery), like the isolation scenario's healthy load.
pub const RECOVERY_RATE: f64 = 150.0;
/// Webhooks per page when the recovery scenario counts failed webhooks
/// through `GET /webhooks` (its largest `limit`).
const PAGE_LIMIT: usize = 500;
/// How long the recovery scenario waits for the next webhook to fail before
/// giving up: longer than the 30 s for which webhookd's deliveries were
/// seen to stop now and then while 10,000 webhooks failed at once (the
/// expiry of its pull request), so that recovery is still measured then;
/// the time until all failed is reported.
const FAIL_STALL: Duration = Duration::from_secs(65);

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub n: usize,
    pub half_n: usize,
    pub retries_n: usize,
    pub fanin_subs: usize,
    pub slow_n: usize,
    /// Isolation: webhooks for the healthy subscription (each phase).
    pub iso_n: usize,
    /// Isolation: webhooks queued for the hanging receiver.
    pub iso_hang_n: usize,
    /// Recovery: webhooks that fail, then are recovered.
    pub rec_n: usize,
    /// Recovery: webhooks of the live subscription (each phase).
    pub rec_live_n: usize,
    /// Bound on one load run.
    pub max_load: Duration,
    /// Bound on waiting for deliveries.
    pub max_wait: Duration,
    /// Waiting with no new delivery for this long ends the wait.
    pub stall: Duration,
    /// Wait after the last delivery before reading the idle RSS.
    pub idle_wait: Duration,
}

impl Sizes {
    pub fn new(quick: bool, n: Option<usize>) -> Sizes {
        let base = if quick {
            Sizes {
                n: 2_000,
                half_n: 1_000,
                retries_n: 2_000,
                fanin_subs: 100,
                slow_n: 600,
                iso_n: 1_000,
                iso_hang_n: 300,
                rec_n: 1_000,
                rec_live_n: 600,
                max_load: Duration::from_secs(60),
                max_wait: Duration::from_secs(60),
                stall: Duration::from_secs(20),
                idle_wait: Duration::from_secs(1),
            }
        } else {
            Sizes {
                n: 50_000,
                half_n: 25_000,
                retries_n: 10_000,
                fanin_subs: 1_000,
                slow_n: 8_000,
                iso_n: 2_000,
                iso_hang_n: 600,
                rec_n: 10_000,
                rec_live_n: 2_000,
                max_load: Duration::from_secs(120),
                max_wait: Duration::from_secs(180),
                stall: Duration::from_secs(30),
                idle_wait: Duration::from_secs(10),
            }
        };
        match n {
            Some(n) => Sizes {
                n,
                half_n: (n / 2).max(1),
                retries_n: base.retries_n.min(n),
                fanin_subs: base.fanin_subs.min(n),
                slow_n: base.slow_n.min(n),
                iso_n: base.iso_n.min(n),
                iso_hang_n: base.iso_hang_n.min(n),
                rec_n: base.rec_n.min(n),
                rec_live_n: base.rec_live_n.min(n),
                ..base
            },
            None => base,
        }
    }
}

/// What every scenario needs.
#[derive(Debug, Clone)]
pub struct Env {
    pub quick: bool,
    pub sizes: Sizes,
    pub concurrency: usize,
    pub delivery_concurrency: usize,
    pub self_exe: PathBuf,
    pub webhookd_bin: PathBuf,
    /// Extra arguments for every webhookd started (after the scenario's
    /// own), e.g. `--scheduler-wait nak`.
    pub webhookd_args: Vec<String>,
    pub nats_bin: PathBuf,
    /// Temporary data directories go here (on the same disk as a real
    /// deployment's data, not a tmpfs).
    pub work_dir: PathBuf,
}

impl Env {
    /// A fresh directory under the work directory, removed when dropped
    /// (its name starts with `prefix`, which `remove_stale_dirs` knows).
    fn data_dir(&self, prefix: &str) -> Result<TempDir> {
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_dir)
            .with_context(|| format!("creating a {prefix} directory"))
    }
}

/// One line of the results table, and its JSON.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub n: usize,
    pub c: usize,
    /// Accepted/s (ingest) or delivered/s (delivery scenarios).
    pub rate: Option<f64>,
    pub rate_unit: &'static str,
    /// Latency percentiles in ms: request latency or arrival − send.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub lat_kind: &'static str,
    pub errors: Option<usize>,
    pub lost: Option<usize>,
    pub dups: Option<usize>,
    pub note: String,
    /// CPU seconds used by each process during the scenario.
    pub cpu: Vec<(String, f64)>,
    pub json: Value,
}

/// Figures later scenarios and the targets need.
#[derive(Debug, Default, Clone)]
pub struct Carry {
    pub baseline_rate: Option<f64>,
    pub baseline_rss_kib: Option<u64>,
    pub floor_rate: Option<f64>,
    /// e2e-floor: delivered/s, and CPU ms per delivered webhook of the
    /// e2e-floor process + its nats-server.
    pub e2e_floor_rate: Option<f64>,
    pub e2e_floor_cpu_ms: Option<f64>,
    pub ingest_rate: Option<f64>,
    pub ingest_p99_ms: Option<f64>,
    pub e2e_rate: Option<f64>,
    /// CPU ms per delivered webhook in e2e, webhookd + its nats-server.
    pub e2e_cpu_ms: Option<f64>,
    pub half_p99_ms: Option<f64>,
    pub load_rss_kib: Option<u64>,
    pub idle_rss_kib: Option<u64>,
    pub nats_load_rss_kib: Option<u64>,
    pub nats_idle_rss_kib: Option<u64>,
    /// Isolation: the healthy subscription's p99 arrival − send with the
    /// hanging backlog there, and alone.
    pub isolation_p99_ms: Option<f64>,
    pub isolation_alone_p99_ms: Option<f64>,
    /// Recovery: the live subscription's p99 arrival − send of the webhooks
    /// sent while the recovered ones were delivered, and alone.
    pub recovery_p99_ms: Option<f64>,
    pub recovery_alone_p99_ms: Option<f64>,
}

impl Carry {
    /// The whole service's peak RSS under the e2e load: webhookd's peak plus
    /// its nats-server's, each sampled on its own (the two peaks may come at
    /// different times, so the sum is a conservative upper bound).
    pub fn service_load_rss_kib(&self) -> Option<u64> {
        self.load_rss_kib
            .zip(self.nats_load_rss_kib)
            .map(|(w, n)| w + n)
    }

    /// The whole service's idle RSS: webhookd's plus its nats-server's.
    pub fn service_idle_rss_kib(&self) -> Option<u64> {
        self.idle_rss_kib
            .zip(self.nats_idle_rss_kib)
            .map(|(w, n)| w + n)
    }

    /// The reference figures (baseline, floors) of `this` side, for the
    /// other side of an A/B run, whose rows are compared with them too.
    pub fn take_references(&mut self, this: &Carry) {
        self.baseline_rate = this.baseline_rate;
        self.baseline_rss_kib = this.baseline_rss_kib;
        self.floor_rate = this.floor_rate;
        self.e2e_floor_rate = this.e2e_floor_rate;
        self.e2e_floor_cpu_ms = this.e2e_floor_cpu_ms;
    }
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- processes

/// The receiver process and a control connection to it.
struct Receiver {
    /// Stopped when the receiver is dropped.
    guard: ChildGuard,
    addr: SocketAddr,
    control: Option<Conn>,
}

impl Receiver {
    async fn start(env: &Env, mode: Mode, delay: Duration) -> Result<Receiver> {
        let mut cmd = Command::new(&env.self_exe);
        cmd.args([
            "receiver",
            "--listen",
            "127.0.0.1:0",
            "--mode",
            mode.as_arg(),
        ])
        .arg("--delay-ms")
        .arg(delay.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut guard = ChildGuard::spawn("receiver", &mut cmd)?;
        let addr = read_listen_line(&mut guard, "receiver", Duration::from_secs(15)).await?;
        Ok(Receiver {
            guard,
            addr,
            control: None,
        })
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// GETs a control path; a kept connection the receiver closed meanwhile
    /// (idle for longer than its keep-alive) is replaced once.
    async fn get(&mut self, path: &str) -> Result<bytes::Bytes> {
        let reused = self.control.is_some();
        match self.get_once(path).await {
            Err(_) if reused => self.get_once(path).await,
            result => result,
        }
    }

    async fn get_once(&mut self, path: &str) -> Result<bytes::Bytes> {
        if self.control.is_none() {
            self.control = Some(Conn::connect(self.addr).await?);
        }
        let conn = self.control.as_mut().context("no control connection")?;
        match conn.get(path).await {
            Ok((status, body)) if status.is_success() => Ok(body),
            Ok((status, _)) => bail!("receiver answered {status} to {path}"),
            Err(e) => {
                self.control = None;
                Err(e.context(format!("asking the receiver {path}")))
            }
        }
    }

    /// (arrivals, distinct request numbers delivered).
    async fn count(&mut self) -> Result<(u64, u64)> {
        let body = self.get("/_bench/count").await?;
        let v: Value = serde_json::from_slice(&body)?;
        Ok((
            v["arrivals"].as_u64().unwrap_or(0),
            v["delivered"].as_u64().unwrap_or(0),
        ))
    }

    async fn records(&mut self) -> Result<Vec<Record>> {
        let body = self.get("/_bench/records").await?;
        servers::parse_records(std::str::from_utf8(&body)?)
    }

    /// Forgets every arrival (for a second load numbered from 0 again).
    async fn reset(&mut self) -> Result<()> {
        self.get("/_bench/reset").await.map(|_| ())
    }

    /// `flip` mode: answer 200 from now on.
    async fn flip(&mut self) -> Result<()> {
        self.get("/_bench/flip").await.map(|_| ())
    }
}

/// A webhookd process with its own data directory and embedded nats-server,
/// at its default log level (`info`: one line per delivery attempt, read
/// line by line and kept by the harness).
/// Field order matters: the process is stopped before the directory goes.
struct Webhookd {
    process: webhookd_harness::webhookd::Webhookd,
    nats_pid: Option<u32>,
    _data: TempDir,
}

impl Webhookd {
    /// Starts webhookd with the arguments every scenario passes, then
    /// `extra`, then the run's `--webhookd-args`.
    async fn start(env: &Env, extra: &[String]) -> Result<Webhookd> {
        let data = env.data_dir("webhookd-data-")?;
        let concurrency = env.delivery_concurrency.to_string();
        let mut process =
            webhookd_harness::webhookd::Webhookd::new(&env.webhookd_bin, data.path())?
                .nats_server_bin(&env.nats_bin)
                .args(&["--shutdown-timeout", "2s"])
                .args(&["--delivery-concurrency", &concurrency])
                .args(extra)
                .args(&env.webhookd_args);
        process.start().await?;
        let nats_pid = process.nats_pid();
        if nats_pid.is_none() {
            eprintln!(
                "bench: warning: webhookd's nats-server child not found; its RSS is not measured"
            );
        }
        Ok(Webhookd {
            process,
            nats_pid,
            _data: data,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// Lines and bytes of the log captured so far (kept in the bench's
    /// memory by the harness).
    fn log_size(&self) -> (usize, usize) {
        let log = self.process.log();
        (log.lines().count(), log.len())
    }

    /// Creates `count` subscriptions to `target`/hook/<k>; returns their ids.
    async fn subscribe(&self, target: SocketAddr, count: usize) -> Result<Vec<String>> {
        let targets: Vec<String> = (0..count)
            .map(|k| format!("http://{target}/hook/{k}"))
            .collect();
        self.process.subscribe_all(&targets).await
    }

    fn procs(&self) -> Vec<(String, u32)> {
        let mut p = vec![("webhookd".to_string(), self.process.pid())];
        if let Some(pid) = self.nats_pid {
            p.push(("nats-server".to_string(), pid));
        }
        p
    }

    /// SIGTERM and wait for the graceful stop (flushes the attempt writer).
    /// Returns whether it exited cleanly.
    fn stop(&mut self) -> bool {
        matches!(self.process.term(Duration::from_secs(15)), Ok((Some(s), _)) if s.success())
    }

    fn db_path(&self) -> &Path {
        &self.process.db
    }
}

/// A server process that must stay up while deliveries are waited for.
trait Alive {
    /// Fails if the process is not running.
    fn alive(&mut self) -> Result<()>;
}

impl Alive for Webhookd {
    fn alive(&mut self) -> Result<()> {
        self.process.ensure_alive()
    }
}

impl Alive for ChildGuard {
    fn alive(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => bail!("a server process exited unexpectedly ({status})"),
            None => Ok(()),
        }
    }
}

// ------------------------------------------------------------------ helpers

fn load_spec(env: &Env, tag: &str, n: usize, rate: Option<f64>, paths: Arc<Vec<String>>) -> Spec {
    Spec {
        n,
        concurrency: env.concurrency,
        rate,
        max_time: env.sizes.max_load,
        tag: tag.to_string(),
        body_size: BODY_SIZE,
        paths,
    }
}

fn ingest_paths(subs: &[String]) -> Arc<Vec<String>> {
    Arc::new(subs.iter().map(|s| format!("/ingest/{s}")).collect())
}

/// Every accepted webhook arrived (`lost`: the check's name), each with one
/// webhook-id, and nothing arrived that this run did not send.
fn delivered_checks(
    scenario: &str,
    lost: &str,
    complete: bool,
    d: &Delivery,
    checks: &mut Vec<Check>,
) {
    checks.push(Check {
        scenario: scenario.into(),
        name: lost.into(),
        ok: complete && d.lost == 0,
        detail: format!("{} of {} accepted delivered", d.delivered, d.accepted),
    });
    checks.push(Check {
        scenario: scenario.into(),
        name: "one webhook-id per webhook".into(),
        ok: d.id_mismatch == 0 && d.unexpected == 0,
        detail: format!(
            "{} with differing webhook-ids, {} arrivals not sent by this run",
            d.id_mismatch, d.unexpected
        ),
    });
}

fn load_checks(scenario: &str, load: &LoadResult, checks: &mut Vec<Check>) {
    checks.push(Check {
        scenario: scenario.to_string(),
        name: "no ingest errors".into(),
        ok: load.errors() == 0,
        detail: format!(
            "{} of {} not accepted (statuses {:?}, transport errors {}){}",
            load.errors(),
            load.attempted,
            load.statuses,
            load.transport_errors,
            if load.error_samples.is_empty() {
                String::new()
            } else {
                format!(": {}", load.error_samples.join("; "))
            }
        ),
    });
    checks.push(Check {
        scenario: scenario.to_string(),
        name: "all requests sent in time".into(),
        ok: !load.timed_out,
        detail: format!("{} of {} sent", load.attempted, load.accepted_seq.len()),
    });
}

fn load_json(load: &LoadResult) -> Value {
    let l = &load.latencies_us;
    json!({
        "attempted": load.attempted,
        "accepted": load.accepted,
        "errors": load.errors(),
        "transport_errors": load.transport_errors,
        "statuses": load.statuses,
        "error_samples": load.error_samples,
        "elapsed_s": load.elapsed.as_secs_f64(),
        "accepted_per_s": load.accepted_per_s(),
        "latency_ms": {
            "p50": ms(quantile(l, 0.50)), "p95": ms(quantile(l, 0.95)),
            "p99": ms(quantile(l, 0.99)), "max": ms(l.last().copied()),
        },
        "timed_out": load.timed_out,
    })
}

/// The bench's own process: the load generator (and the orchestration,
/// which is idle while loading).
fn generator() -> (String, u32) {
    ("generator".to_string(), std::process::id())
}

fn cpu_of(peaks: &HashMap<String, Peak>, procs: &[(String, u32)]) -> Vec<(String, f64)> {
    procs
        .iter()
        .filter_map(|(name, _)| Some((name.clone(), peaks.get(name)?.cpu_s)))
        .collect()
}

/// CPU ms per webhook of the processes `names` together (None unless each
/// was measured and `webhooks` > 0).
fn cpu_ms_per_webhook(
    peaks: &HashMap<String, Peak>,
    names: &[&str],
    webhooks: usize,
) -> Option<f64> {
    let cpu_s: Option<f64> = names.iter().map(|n| peaks.get(*n).map(|p| p.cpu_s)).sum();
    cpu_s
        .filter(|_| webhooks > 0)
        .map(|s| s * 1000.0 / webhooks as f64)
}

/// p50, p90, p99 and max (ms) of sorted latencies in µs, for the JSON.
fn pct_json(sorted_us: &[u64]) -> Value {
    json!({"p50": ms(quantile(sorted_us, 0.5)), "p90": ms(quantile(sorted_us, 0.9)),
           "p99": ms(quantile(sorted_us, 0.99)), "max": ms(sorted_us.last().copied())})
}

/// CPU seconds per second of `window`, per process.
fn cpu_per_second(peaks: &HashMap<String, Peak>, window: Duration) -> HashMap<String, f64> {
    peaks
        .iter()
        .map(|(k, p)| (k.clone(), p.cpu_s / window.as_secs_f64().max(1e-9)))
        .collect()
}

fn peaks_json(peaks: &HashMap<String, Peak>) -> Value {
    let mut m = serde_json::Map::new();
    for (name, p) in peaks {
        m.insert(
            name.clone(),
            json!({
                "max_rss_mib": mib(p.max_rss_kib),
                "hwm_mib": mib(p.hwm_kib),
                "samples": p.samples,
                "cpu_s": p.cpu_s,
            }),
        );
    }
    Value::Object(m)
}

/// Waits until the receiver has `expected` distinct deliveries, or no new
/// one came for `stall`, or `max_wait` passed. Returns whether complete.
async fn wait_delivered(
    env: &Env,
    wh: &mut impl Alive,
    rx: &mut Receiver,
    expected: usize,
    stall: Duration,
) -> Result<bool> {
    let started = Instant::now();
    let mut last_seen = (0, Instant::now());
    loop {
        wh.alive()?;
        let (arrivals, delivered) = rx.count().await?;
        if delivered as usize >= expected {
            return Ok(true);
        }
        if arrivals != last_seen.0 {
            last_seen = (arrivals, Instant::now());
        }
        if last_seen.1.elapsed() > stall || started.elapsed() > env.sizes.max_wait {
            eprintln!(
                "bench: gave up waiting: {delivered} of {expected} delivered after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One paced load and what arrived of it: the load, the delivery counts and
/// the arrival − send percentiles.
fn phase_json(load: &LoadResult, d: &Delivery) -> Value {
    json!({
        "load": load_json(load),
        "delivery": delivery_json(d),
        "arrival_minus_send_ms": pct_json(&d.lat_us),
    })
}

/// What the receiver saw, against what was accepted.
#[derive(Debug, Default)]
struct Delivery {
    accepted: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
    non_200: usize,
    unexpected: usize,
    id_mismatch: usize,
    last_arrival_us: u64,
    window_s: f64,
    delivered_per_s: f64,
    /// arrival − send of each webhook's delivering attempt, µs, sorted.
    lat_us: Vec<u64>,
    /// Retries scenario: webhooks seen exactly as 500 then 200.
    fail_then_ok: usize,
    /// Gaps between first and second attempt, µs, sorted.
    gaps_us: Vec<u64>,
}

fn analyze(load: &LoadResult, records: &[Record]) -> Delivery {
    let mut d = Delivery {
        accepted: load.accepted,
        ..Delivery::default()
    };
    let by_seq = servers::by_seq(records);
    for (seq, list) in &by_seq {
        let accepted = usize::try_from(*seq)
            .ok()
            .and_then(|s| load.accepted_seq.get(s).copied())
            .unwrap_or(false);
        if !accepted {
            d.unexpected += list.len();
            continue;
        }
        let oks: Vec<&&Record> = list.iter().filter(|r| r.status == 200).collect();
        d.non_200 += list.len() - oks.len();
        if let Some(first) = oks.first() {
            d.delivered += 1;
            d.duplicates += oks.len() - 1;
            d.last_arrival_us = d.last_arrival_us.max(first.arrival_us);
            d.lat_us
                .push(first.arrival_us.saturating_sub(first.sent_us));
        }
        if list.iter().any(|r| r.webhook_id != list[0].webhook_id) {
            d.id_mismatch += 1;
        }
        if list.len() == 2 && list[0].status == 500 && list[1].status == 200 {
            d.fail_then_ok += 1;
            d.gaps_us
                .push(list[1].arrival_us.saturating_sub(list[0].arrival_us));
        }
    }
    d.lost = d.accepted - d.delivered;
    d.window_s = d.last_arrival_us.saturating_sub(load.first_send_us) as f64 / 1e6;
    d.delivered_per_s = d.delivered as f64 / d.window_s.max(1e-9);
    d.lat_us.sort_unstable();
    d.gaps_us.sort_unstable();
    d
}

fn delivery_json(d: &Delivery) -> Value {
    let l = &d.lat_us;
    json!({
        "accepted": d.accepted,
        "delivered": d.delivered,
        "lost": d.lost,
        "duplicates": d.duplicates,
        "non_200_answers": d.non_200,
        "unexpected_arrivals": d.unexpected,
        "webhook_id_mismatches": d.id_mismatch,
        "first_post_to_last_arrival_s": d.window_s,
        "delivered_per_s": d.delivered_per_s,
        "arrival_minus_send_ms": {
            "p50": ms(quantile(l, 0.50)), "p95": ms(quantile(l, 0.95)),
            "p99": ms(quantile(l, 0.99)), "max": ms(l.last().copied()),
        },
    })
}

/// Attempt-log figures read from the SQLite file after webhookd stopped.
#[derive(Debug, Default)]
struct DbCounts {
    rows: i64,
    webhooks_attempted: i64,
    webhooks_not_two_rows: i64,
    outcomes: HashMap<String, i64>,
    statuses: HashMap<String, i64>,
}

fn read_db(path: &Path) -> Result<DbCounts> {
    let conn = sqlite::read_only(path)?;
    let groups = |sql: &str| -> Result<HashMap<String, i64>> {
        Ok(sqlite::pairs(&conn, sql)?.into_iter().collect())
    };
    Ok(DbCounts {
        rows: sqlite::count(&conn, "SELECT count(*) FROM delivery_attempts")?,
        webhooks_attempted: sqlite::count(
            &conn,
            "SELECT count(DISTINCT webhook_id) FROM delivery_attempts",
        )?,
        webhooks_not_two_rows: sqlite::count(
            &conn,
            "SELECT count(*) FROM (SELECT webhook_id FROM delivery_attempts
             GROUP BY webhook_id HAVING count(*) != 2)",
        )?,
        outcomes: groups("SELECT outcome, count(*) FROM delivery_attempts GROUP BY outcome")?,
        statuses: groups("SELECT status, count(*) FROM webhooks GROUP BY status")?,
    })
}

// ---------------------------------------------------------------- scenarios

/// The bare baseline: a minimal hyper server answering 202, loaded like
/// webhookd.
pub async fn baseline(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    let (mut guard, addr) = spawn_server(env, "baseline", &[], Duration::from_secs(15)).await?;
    let procs = vec![("baseline".to_string(), guard.pid()), generator()];
    let (load, peaks) = load_reference(env, "baseline", addr, &procs).await?;
    guard.stop(Duration::from_secs(5));
    load_checks("baseline", &load, checks);
    carry.baseline_rate = Some(load.accepted_per_s());
    carry.baseline_rss_kib = peaks.get("baseline").map(|p| p.max_rss_kib);
    Ok(reference_row(
        env,
        "baseline",
        &load,
        &peaks,
        &procs,
        "bare hyper server answering 202".into(),
    ))
}

/// The JetStream floor: the baseline plus a publish to a file-storage
/// stream on its own nats-server (fresh store on the same disk as
/// webhookd's), the ack awaited before the 202. Keeping "202 = stored" makes every
/// webhookd ingest pay that; the rest is webhookd's own work.
pub async fn floor(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    // Declared first, removed last: after both processes stopped.
    let store = env.data_dir("webhookd-data-floor-")?;
    let nats = NatsServer::start_in(&env.nats_bin, store.path()).await?;
    let args = ["--nats-url".to_string(), nats.url()];
    let (mut guard, addr) = spawn_server(env, "floor", &args, Duration::from_secs(30)).await?;
    let procs = vec![
        ("floor".to_string(), guard.pid()),
        ("nats-server".to_string(), nats.pid()),
        generator(),
    ];
    let (load, peaks) = load_reference(env, "floor", addr, &procs).await?;
    guard.stop(Duration::from_secs(5));
    drop(nats);
    load_checks("floor", &load, checks);
    let rate = load.accepted_per_s();
    carry.floor_rate = Some(rate);
    let note = match carry.baseline_rate {
        Some(b) => format!(
            "{:.0}% of baseline; baseline + JetStream publish, ack awaited",
            rate / b * 100.0
        ),
        None => "baseline + JetStream publish, ack awaited".into(),
    };
    Ok(reference_row(env, "floor", &load, &peaks, &procs, note))
}

/// The end-to-end floor: `bench e2e-floor` (the floor's ingest plus, in
/// the same process, a durable pull consumer POSTing each webhook to the
/// receiver over pooled connections, `--delivery-concurrency` in flight,
/// ack on a 2xx) on its own nats-server, loaded like `e2e` and waited for
/// until the receiver saw every accepted webhook. What any server that
/// stores before its 202 and delivers at least once can do here; the rest
/// of e2e is webhookd's own work.
pub async fn e2e_floor(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    let name = "e2e-floor";
    // Declared first, removed last: after every process stopped.
    let store = env.data_dir("webhookd-data-e2e-floor-")?;
    let nats = NatsServer::start_in(&env.nats_bin, store.path()).await?;
    let mut rx = Receiver::start(env, Mode::Ok, SLOW_DELAY).await?;
    let args = [
        "--nats-url".to_string(),
        nats.url(),
        "--target".to_string(),
        format!("http://{}/hook/0", rx.addr),
        "--concurrency".to_string(),
        env.delivery_concurrency.to_string(),
    ];
    let (mut guard, addr) = spawn_server(env, name, &args, Duration::from_secs(30)).await?;
    let procs = vec![
        (name.to_string(), guard.pid()),
        ("nats-server".to_string(), nats.pid()),
        ("receiver".to_string(), rx.pid()),
        generator(),
    ];
    let sampler = Sampler::start(procs.clone());
    let spec = load_spec(env, name, env.sizes.n, None, reference_paths());
    let load = load::run(addr, &spec).await?;
    let complete = wait_delivered(env, &mut guard, &mut rx, load.accepted, env.sizes.stall).await?;
    let peaks = sampler.finish(&procs).await;
    let records = rx.records().await?;
    guard.alive()?;
    guard.stop(Duration::from_secs(5));
    drop(nats);
    drop(rx);
    let d = analyze(&load, &records);
    load_checks(name, &load, checks);
    delivered_checks(name, "0 lost", complete, &d, checks);
    carry.e2e_floor_rate = Some(d.delivered_per_s);
    carry.e2e_floor_cpu_ms = cpu_ms_per_webhook(&peaks, &[name, "nats-server"], d.delivered);
    let note = format!(
        "floor + durable consumer, a POST per webhook, ack on 2xx; first post to last \
         arrival {:.1} s; CPU {} ms/webhook (server + nats-server)",
        d.window_s,
        carry
            .e2e_floor_cpu_ms
            .map_or("-".into(), |c| format!("{c:.3}"))
    );
    Ok(Row {
        note,
        cpu: cpu_of(&peaks, &procs),
        json: json!({
            "load": load_json(&load),
            "delivery": delivery_json(&d),
            "delivery_concurrency": env.delivery_concurrency,
            "cpu_ms_per_delivered_webhook": carry.e2e_floor_cpu_ms,
            "rss_under_load": peaks_json(&peaks),
        }),
        ..delivered_row(env, name, env.sizes.n, &load, &d)
    })
}

/// Starts this binary as the server `bench <name> --listen 127.0.0.1:0
/// <args>` and waits (at most `timeout`) for the address it announces.
async fn spawn_server(
    env: &Env,
    name: &str,
    args: &[String],
    timeout: Duration,
) -> Result<(ChildGuard, SocketAddr)> {
    let mut cmd = Command::new(&env.self_exe);
    cmd.args([name, "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn(name, &mut cmd)?;
    let addr = read_listen_line(&mut guard, name, timeout).await?;
    Ok((guard, addr))
}

/// The path every reference server is loaded on (they ignore it): one
/// subscription's ingest path, like webhookd's.
fn reference_paths() -> Arc<Vec<String>> {
    Arc::new(vec![
        "/ingest/01a226b1-c139-7356-95c3-dfee749c1717".to_string()
    ])
}

/// Loads a reference server like webhookd, sampling `procs`.
async fn load_reference(
    env: &Env,
    tag: &str,
    addr: SocketAddr,
    procs: &[(String, u32)],
) -> Result<(LoadResult, HashMap<String, Peak>)> {
    let sampler = Sampler::start(procs.to_vec());
    let spec = load_spec(env, tag, env.sizes.n, None, reference_paths());
    let load = load::run(addr, &spec).await?;
    let peaks = sampler.finish(procs).await;
    Ok((load, peaks))
}

fn reference_row(
    env: &Env,
    name: &str,
    load: &LoadResult,
    peaks: &HashMap<String, Peak>,
    procs: &[(String, u32)],
    note: String,
) -> Row {
    let l = &load.latencies_us;
    Row {
        name: name.into(),
        n: env.sizes.n,
        c: env.concurrency,
        rate: Some(load.accepted_per_s()),
        rate_unit: "acc/s",
        p50: ms(quantile(l, 0.5)),
        p95: ms(quantile(l, 0.95)),
        p99: ms(quantile(l, 0.99)),
        lat_kind: "request",
        errors: Some(load.errors()),
        note,
        cpu: cpu_of(peaks, procs),
        json: json!({"load": load_json(load), "rss": peaks_json(peaks)}),
        ..Row::default()
    }
}

/// Ingest alone: the receiver holds every delivery (answers after 60 s), so
/// after the first 256 deliveries start, webhookd's CPU goes to ingest only.
pub async fn ingest(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    let hold = env.sizes.max_load.min(Duration::from_secs(60));
    let rx = Receiver::start(env, Mode::Delay, hold).await?;
    let mut wh = Webhookd::start(env, &[]).await?;
    let subs = wh.subscribe(rx.addr, 1).await?;
    let mut procs = wh.procs();
    procs.push(("receiver".to_string(), rx.pid()));
    procs.push(generator());
    let sampler = Sampler::start(procs.clone());
    let spec = load_spec(env, "ingest", env.sizes.n, None, ingest_paths(&subs));
    let load = load::run(wh.addr(), &spec).await?;
    let peaks = sampler.finish(&procs).await;
    wh.alive()?;
    drop(rx); // held deliveries fail now; webhookd stops without waiting for them
    let clean = wh.stop();
    load_checks("ingest", &load, checks);
    let rate = load.accepted_per_s();
    let l = &load.latencies_us;
    carry.ingest_rate = Some(rate);
    carry.ingest_p99_ms = ms(quantile(l, 0.99));
    let ratio = carry.baseline_rate.map(|b| rate / b);
    let of_floor = carry.floor_rate.map(|f| rate / f);
    Ok(Row {
        name: "ingest".into(),
        n: env.sizes.n,
        c: env.concurrency,
        rate: Some(rate),
        rate_unit: "acc/s",
        p50: ms(quantile(l, 0.5)),
        p95: ms(quantile(l, 0.95)),
        p99: ms(quantile(l, 0.99)),
        lat_kind: "request",
        errors: Some(load.errors()),
        note: match (ratio, of_floor) {
            (Some(r), Some(f)) => format!(
                "{:.0}% of baseline, {:.0}% of floor; deliveries held",
                r * 100.0,
                f * 100.0
            ),
            (Some(r), None) => format!("{:.0}% of baseline; deliveries held", r * 100.0),
            _ => "deliveries held".into(),
        },
        cpu: cpu_of(&peaks, &procs),
        json: json!({
            "load": load_json(&load),
            "ratio_to_baseline": ratio,
            "ratio_to_floor": of_floor,
            "rss": peaks_json(&peaks),
            "clean_exit": clean,
        }),
        ..Row::default()
    })
}

/// Which delivery scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EndToEnd,
    HalfRate,
    Retries,
    FanIn,
    Slow,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::EndToEnd => "e2e",
            Kind::HalfRate => "e2e-half",
            Kind::Retries => "retries",
            Kind::FanIn => "fan-in",
            Kind::Slow => "slow",
        }
    }
}

/// The columns of a delivery row (delivered/s, arrival − send, errors,
/// lost, duplicates); the caller adds its note, CPU and JSON.
fn delivered_row(env: &Env, name: &str, n: usize, load: &LoadResult, d: &Delivery) -> Row {
    Row {
        name: name.into(),
        n,
        c: env.concurrency,
        rate: Some(d.delivered_per_s),
        rate_unit: "dlv/s",
        p50: ms(quantile(&d.lat_us, 0.5)),
        p95: ms(quantile(&d.lat_us, 0.95)),
        p99: ms(quantile(&d.lat_us, 0.99)),
        lat_kind: "arrival-send",
        errors: Some(load.errors()),
        lost: Some(d.lost),
        dups: Some(d.duplicates),
        ..Row::default()
    }
}

/// webhookd's and its nats-server's RSS after `idle_wait` with nothing to
/// do.
async fn idle_rss(env: &Env, wh: &Webhookd) -> HashMap<String, Rss> {
    tokio::time::sleep(env.sizes.idle_wait).await;
    wh.procs()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, procs::rss(pid)?)))
        .collect()
}

/// The e2e row's figures: those the targets need go to `carry`; returns
/// the row's note and details.
fn e2e_figures(
    env: &Env,
    carry: &mut Carry,
    load: &LoadResult,
    d: &Delivery,
    peaks: &HashMap<String, Peak>,
    idle: &HashMap<String, Rss>,
) -> (String, Value) {
    carry.e2e_rate = Some(d.delivered_per_s);
    carry.e2e_cpu_ms = cpu_ms_per_webhook(peaks, &["webhookd", "nats-server"], d.delivered);
    carry.load_rss_kib = peaks.get("webhookd").map(|p| p.max_rss_kib);
    carry.nats_load_rss_kib = peaks.get("nats-server").map(|p| p.max_rss_kib);
    carry.idle_rss_kib = idle.get("webhookd").map(|r| r.rss_kib);
    carry.nats_idle_rss_kib = idle.get("nats-server").map(|r| r.rss_kib);
    let of_floor = carry
        .e2e_floor_rate
        .filter(|f| *f > 0.0)
        .map(|f| d.delivered_per_s / f);
    let cpu = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.3}"));
    let note = format!(
        "{}first post to last arrival {:.1} s; ingest {:.0} acc/s (p99 {:.1} ms) meanwhile; \
         CPU {} ms/webhook (webhookd + nats-server), floor's {}",
        of_floor.map_or(String::new(), |r| format!(
            "{:.0}% of e2e floor; ",
            r * 100.0
        )),
        d.window_s,
        load.accepted_per_s(),
        ms(quantile(&load.latencies_us, 0.99)).unwrap_or(f64::NAN),
        cpu(carry.e2e_cpu_ms),
        cpu(carry.e2e_floor_cpu_ms),
    );
    let idle_json: HashMap<&String, Value> = idle
        .iter()
        .map(|(k, r)| {
            (
                k,
                json!({"rss_mib": mib(r.rss_kib), "hwm_mib": mib(r.hwm_kib)}),
            )
        })
        .collect();
    let details = json!({
        "idle_after_s": env.sizes.idle_wait.as_secs_f64(),
        "idle_rss": idle_json,
        "ratio_to_e2e_floor": of_floor,
        "cpu_ms_per_delivered_webhook": carry.e2e_cpu_ms,
        "e2e_floor_cpu_ms_per_delivered_webhook": carry.e2e_floor_cpu_ms,
    });
    (note, details)
}

/// A delivery scenario: post, wait for the receiver to see every accepted
/// webhook, analyse, stop webhookd gracefully, read its attempt log.
pub async fn delivery(
    env: &Env,
    kind: Kind,
    carry: &mut Carry,
    checks: &mut Vec<Check>,
) -> Result<Row> {
    let name = kind.name();
    let s = &env.sizes;
    let (n, subs_count, mode, rate) = match kind {
        Kind::EndToEnd => (s.n, 1, Mode::Ok, None),
        Kind::HalfRate => {
            let max = carry
                .e2e_rate
                .ok_or_else(|| anyhow!("e2e-half needs the e2e scenario's rate"))?;
            (s.half_n, 1, Mode::Ok, Some((max / 2.0).max(1.0)))
        }
        Kind::Retries => (s.retries_n, 1, Mode::FailFirst, None),
        Kind::FanIn => (s.n, s.fanin_subs, Mode::Ok, None),
        Kind::Slow => (s.slow_n, 1, Mode::Delay, None),
    };
    let mut extra = Vec::new();
    if kind == Kind::Retries {
        extra.push("--retry-schedule".to_string());
        extra.push(format!("{}ms", RETRY_DELAY.as_millis()));
        // Every first attempt fails, so the circuit breaker would open after
        // the first five and hold the rest for its cooldown: this scenario
        // measures the retry path, the `isolation` scenario the breaker.
        extra.push("--circuit-failures".to_string());
        extra.push("0".to_string());
        // The check below wants each retry at least 90% of the delay after
        // its failure: the default ±20% jitter may bring it to 80%.
        extra.push("--retry-jitter".to_string());
        extra.push("0".to_string());
    }
    let mut rx = Receiver::start(env, mode, SLOW_DELAY).await?;
    let mut wh = Webhookd::start(env, &extra).await?;
    let subs = wh.subscribe(rx.addr, subs_count).await?;
    let mut procs = wh.procs();
    procs.push(("receiver".to_string(), rx.pid()));
    procs.push(generator());
    let sampler = Sampler::start(procs.clone());
    let spec = load_spec(env, name, n, rate, ingest_paths(&subs));
    let load = load::run(wh.addr(), &spec).await?;
    let complete = wait_delivered(env, &mut wh, &mut rx, load.accepted, s.stall).await?;
    let peaks = sampler.finish(&procs).await;
    let idle = match kind {
        Kind::EndToEnd => idle_rss(env, &wh).await,
        _ => HashMap::new(),
    };
    let records = rx.records().await?;
    wh.alive()?;
    let (log_lines, log_bytes) = wh.log_size();
    let clean = wh.stop();
    drop(rx);
    let db = read_db(wh.db_path());
    let d = analyze(&load, &records);

    load_checks(name, &load, checks);
    delivered_checks(name, "0 lost", complete, &d, checks);
    let mut db_json = Value::Null;
    match &db {
        Ok(c) => {
            db_json = json!({
                "attempt_rows": c.rows,
                "webhooks_attempted": c.webhooks_attempted,
                "webhooks_without_two_rows": c.webhooks_not_two_rows,
                "outcomes": c.outcomes,
                "webhook_statuses": c.statuses,
            });
        }
        Err(e) => checks.push(Check {
            scenario: name.into(),
            name: "attempt log readable".into(),
            ok: false,
            detail: format!("{e:#}"),
        }),
    }
    let note;
    let extra_json;
    match kind {
        Kind::EndToEnd => {
            (note, extra_json) = e2e_figures(env, carry, &load, &d, &peaks, &idle);
        }
        Kind::HalfRate => {
            carry.half_p99_ms = ms(quantile(&d.lat_us, 0.99));
            note = format!(
                "target rate {:.0}/s (half of e2e); sent at {:.0}/s",
                rate.unwrap_or(0.0),
                load.accepted_per_s()
            );
            extra_json = json!({"target_rate": rate});
        }
        Kind::Retries => {
            let rows = db.as_ref().map(|c| c.rows).unwrap_or(-1);
            let outcome = |o: &str| {
                db.as_ref()
                    .ok()
                    .and_then(|c| c.outcomes.get(o).copied())
                    .unwrap_or(0)
            };
            let not_two = db.as_ref().map(|c| c.webhooks_not_two_rows).unwrap_or(-1);
            let acc = d.accepted as i64;
            checks.push(Check {
                scenario: name.into(),
                name: "2 attempt rows per webhook".into(),
                ok: rows == 2 * acc
                    && not_two == 0
                    && outcome("failed_attempt") == acc
                    && outcome("success") == acc,
                detail: format!(
                    "{rows} rows for {acc} webhooks, {not_two} webhooks without exactly 2, \
                     failed_attempt {}, success {}",
                    outcome("failed_attempt"),
                    outcome("success")
                ),
            });
            let min_gap = d.gaps_us.first().copied();
            let floor = RETRY_DELAY.as_micros() as u64 * 9 / 10;
            checks.push(Check {
                scenario: name.into(),
                name: "each delivered once, after its retry".into(),
                ok: d.fail_then_ok == d.accepted && min_gap.is_some_and(|g| g >= floor),
                detail: format!(
                    "{} of {} seen as 500 then 200; retry gap min {:.1} ms, p50 {:.1} ms \
                     (schedule {} ms)",
                    d.fail_then_ok,
                    d.accepted,
                    ms(min_gap).unwrap_or(f64::NAN),
                    ms(quantile(&d.gaps_us, 0.5)).unwrap_or(f64::NAN),
                    RETRY_DELAY.as_millis()
                ),
            });
            note = format!(
                "{rows} attempt rows ({:.2}/webhook); retry gap p50 {:.0} ms",
                rows as f64 / acc.max(1) as f64,
                ms(quantile(&d.gaps_us, 0.5)).unwrap_or(f64::NAN)
            );
            extra_json = json!({
                "retry_schedule_ms": RETRY_DELAY.as_millis() as u64,
                "fail_then_ok": d.fail_then_ok,
                "retry_gap_ms": {"min": ms(min_gap), "p50": ms(quantile(&d.gaps_us, 0.5)),
                                 "max": ms(d.gaps_us.last().copied())},
            });
        }
        Kind::FanIn => {
            note = format!(
                "{} subscriptions; first post to last arrival {:.1} s",
                subs.len(),
                d.window_s
            );
            extra_json = json!({"subscriptions": subs.len()});
        }
        Kind::Slow => {
            let bound = env.delivery_concurrency as f64 / SLOW_DELAY.as_secs_f64();
            note = format!(
                "bound {:.0}/s = {} in flight / {} ms: {:.0}% of it",
                bound,
                env.delivery_concurrency,
                SLOW_DELAY.as_millis(),
                d.delivered_per_s / bound * 100.0
            );
            extra_json = json!({
                "receiver_delay_ms": SLOW_DELAY.as_millis() as u64,
                "delivery_concurrency": env.delivery_concurrency,
                "theoretical_bound_per_s": bound,
                "fraction_of_bound": d.delivered_per_s / bound,
            });
        }
    }
    Ok(Row {
        note,
        cpu: cpu_of(&peaks, &procs),
        json: json!({
            "load": load_json(&load),
            "delivery": delivery_json(&d),
            "attempt_log": db_json,
            "rss_under_load": peaks_json(&peaks),
            "webhookd_log": {"lines": log_lines, "bytes": log_bytes},
            "clean_exit": clean,
            "details": extra_json,
        }),
        ..delivered_row(env, name, n, &load, &d)
    })
}

/// Receiver isolation, webhookd at its default settings: a backlog is
/// queued for a receiver answering only after 30 s ("hang30": its own
/// process and port, every attempt to it times out), then a healthy
/// subscription gets a paced load; its arrival − send is compared with the
/// same load (count, rate, body) sent alone earlier in the same run to the
/// same webhookd, before the backlog existed (its own receiver and
/// subscription). The hanging receiver's webhooks are not waited for: it is
/// stopped first, which fails its held attempts at once, then webhookd
/// (bounded by the `--shutdown-timeout 2s` every scenario passes).
pub async fn isolation(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    let name = "isolation";
    let s = &env.sizes;
    let (n, hang_n) = (s.iso_n, s.iso_hang_n);
    let mut alone_rx = Receiver::start(env, Mode::Ok, SLOW_DELAY).await?;
    let mut rx = Receiver::start(env, Mode::Ok, SLOW_DELAY).await?;
    let mut hang = Receiver::start(env, Mode::Delay, HANG_DELAY).await?;
    let mut wh = Webhookd::start(env, &[]).await?;
    let alone_sub = wh.subscribe(alone_rx.addr, 1).await?;
    let healthy_sub = wh.subscribe(rx.addr, 1).await?;
    let hang_sub = wh.subscribe(hang.addr, 1).await?;
    // Without isolation the backlog holds every worker: nothing arrives
    // for a delivery timeout (10 s) or a few.
    let stall = s.stall.max(HANG_DELAY * 2);

    // Phase 1: the healthy load alone.
    let rate = Some(ISOLATION_RATE);
    let spec = load_spec(env, "iso-alone", n, rate, ingest_paths(&alone_sub));
    let alone_load = load::run(wh.addr(), &spec).await?;
    let alone_complete =
        wait_delivered(env, &mut wh, &mut alone_rx, alone_load.accepted, stall).await?;
    let alone = analyze(&alone_load, &alone_rx.records().await?);

    // Phase 2: the backlog, then the same healthy load.
    let mut procs = wh.procs();
    procs.push(("receiver".to_string(), rx.pid()));
    procs.push(("hang30".to_string(), hang.pid()));
    procs.push(generator());
    let sampler = Sampler::start(procs.clone());
    let started = Instant::now();
    let spec = load_spec(env, "iso-hang", hang_n, None, ingest_paths(&hang_sub));
    let hang_load = load::run(wh.addr(), &spec).await?;
    // The backlog is there once the hanging receiver holds attempts
    // (bounded: 5 s at most).
    let want = hang_load.accepted.min(32) as u64;
    let until = Instant::now() + Duration::from_secs(5);
    let mut held_at_start = 0;
    while Instant::now() < until {
        held_at_start = hang.count().await?.0;
        if held_at_start >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec = load_spec(env, name, n, rate, ingest_paths(&healthy_sub));
    let load = load::run(wh.addr(), &spec).await?;
    let complete = wait_delivered(env, &mut wh, &mut rx, load.accepted, stall).await?;
    let window = started.elapsed();
    let peaks = sampler.finish(&procs).await;
    let (hang_arrivals, _) = hang.count().await?;
    let records = rx.records().await?;
    wh.alive()?;
    // Its held attempts fail now: webhookd stops without waiting for them.
    drop(hang);
    let clean = wh.stop();
    drop(rx);
    drop(alone_rx);
    let db = read_db(wh.db_path());
    let d = analyze(&load, &records);

    load_checks("isolation (alone)", &alone_load, checks);
    load_checks("isolation (hang30 backlog)", &hang_load, checks);
    load_checks(name, &load, checks);
    for (scenario, complete, d) in [
        ("isolation (alone)", alone_complete, &alone),
        (name, complete, &d),
    ] {
        delivered_checks(
            scenario,
            "0 lost (healthy subscription)",
            complete,
            d,
            checks,
        );
    }
    let q = |l: &[u64], p: f64| ms(quantile(l, p)).unwrap_or(f64::NAN);
    carry.isolation_p99_ms = ms(quantile(&d.lat_us, 0.99));
    carry.isolation_alone_p99_ms = ms(quantile(&alone.lat_us, 0.99));
    let note = format!(
        "p50/p90/p99 {:.1}/{:.1}/{:.1} ms with {} queued for hang30 ({} attempts to it), \
         {:.1}/{:.1}/{:.1} ms alone; {:.0}/s paced",
        q(&d.lat_us, 0.5),
        q(&d.lat_us, 0.9),
        q(&d.lat_us, 0.99),
        hang_load.accepted,
        hang_arrivals,
        q(&alone.lat_us, 0.5),
        q(&alone.lat_us, 0.9),
        q(&alone.lat_us, 0.99),
        ISOLATION_RATE
    );
    let cpu_per_s = cpu_per_second(&peaks, window);
    Ok(Row {
        errors: Some(load.errors() + hang_load.errors()),
        note,
        cpu: cpu_of(&peaks, &procs),
        json: json!({
            "webhookd_args": env.webhookd_args,
            "hang_delay_s": HANG_DELAY.as_secs_f64(),
            "healthy_rate_per_s": ISOLATION_RATE,
            "healthy": phase_json(&load, &d),
            "alone": phase_json(&alone_load, &alone),
            "hang30": {
                "load": load_json(&hang_load),
                "attempts_seen_before_healthy_load": held_at_start,
                "attempts_seen": hang_arrivals,
            },
            "measured_window_s": window.as_secs_f64(),
            "cpu_s_per_s": cpu_per_s,
            "attempt_log_outcomes": db.as_ref().ok().map(|c| c.outcomes.clone()),
            "rss": peaks_json(&peaks),
            "clean_exit": clean,
        }),
        ..delivered_row(env, name, n, &load, &d)
    })
}

/// The given-up webhooks webhookd counts (`/metrics`), 0 before the first.
async fn given_up(conn: &mut Conn) -> Result<u64> {
    let (status, body) = conn.get("/metrics").await?;
    if !status.is_success() {
        bail!("GET /metrics answered {status}");
    }
    let text = std::str::from_utf8(&body).context("reading /metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("webhookd_webhooks_given_up_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// How many webhooks of `sub` `GET /webhooks?status=failed` lists, page by
/// page along the `Link` headers (at most enough pages for `expected`, and
/// one more).
async fn count_failed(
    client: &reqwest::Client,
    addr: SocketAddr,
    sub: &str,
    expected: usize,
) -> Result<usize> {
    webhookd_harness::net::ensure_loopback(addr)?;
    let mut path = Some(format!(
        "/webhooks?subscription_id={sub}&status=failed&limit={PAGE_LIMIT}"
    ));
    let mut count = 0;
    for _ in 0..expected / PAGE_LIMIT + 2 {
        let Some(p) = path.take() else {
            break;
        };
        if !p.starts_with('/') {
            bail!("GET /webhooks: a next page outside the API: {p}");
        }
        let resp = client
            .get(format!("http://{addr}{p}"))
            .send()
            .await
            .with_context(|| format!("GET {p}"))?;
        let status = resp.status();
        let next = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let body = resp.bytes().await.with_context(|| format!("GET {p}"))?;
        if !status.is_success() {
            bail!(
                "GET {p} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let page: Vec<Value> =
            serde_json::from_slice(&body).with_context(|| format!("GET {p}: not a JSON array"))?;
        count += page.len();
        path = next;
    }
    Ok(count)
}

/// Waits until `GET /webhooks` lists `expected` failed webhooks of `sub`
/// (counted once `/metrics` has given up that many), or nothing new was
/// given up for `stall`, or `max_wait` passed. Returns the count listed.
async fn wait_failed(
    env: &Env,
    wh: &mut Webhookd,
    sub: &str,
    expected: usize,
    stall: Duration,
) -> Result<usize> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;
    let mut metrics = Conn::connect(wh.addr()).await?;
    let started = Instant::now();
    let mut last_seen = (0, Instant::now());
    loop {
        wh.alive()?;
        let gave_up = given_up(&mut metrics).await?;
        if gave_up as usize >= expected {
            let listed = count_failed(&client, wh.addr(), sub, expected).await?;
            if listed >= expected {
                return Ok(listed);
            }
        }
        if gave_up != last_seen.0 {
            last_seen = (gave_up, Instant::now());
        }
        if last_seen.1.elapsed() > stall || started.elapsed() > env.sizes.max_wait {
            let listed = count_failed(&client, wh.addr(), sub, expected).await?;
            eprintln!(
                "bench: gave up waiting: {listed} of {expected} failed ({gave_up} given up) \
                 after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(listed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// arrival − send (µs, sorted) of the first 200 of each webhook sent
/// between `from_us` and `to_us`.
fn lat_sent_between(records: &[Record], from_us: u64, to_us: u64) -> Vec<u64> {
    let mut lat: Vec<u64> = servers::by_seq(records)
        .values()
        .filter_map(|list| list.iter().find(|r| r.status == 200))
        .filter(|r| (from_us..=to_us).contains(&r.sent_us))
        .map(|r| r.arrival_us.saturating_sub(r.sent_us))
        .collect();
    lat.sort_unstable();
    lat
}

/// Recovery of failed webhooks (`POST /subscriptions/{id}/recover`),
/// webhookd at its default settings except what makes webhooks fail fast
/// (a 100 ms retry schedule, no circuit breaker). Phase 1: a subscription
/// whose receiver answers 500 (`flip` mode) gets `rec_n` webhooks, all
/// waited for until `GET /webhooks` lists them `failed`. Phase 2: a live
/// subscription gets a paced load alone; its arrival − send. Phase 3: the
/// failing receiver answers 200 from now on, the recover call (since before
/// phase 1) and the same paced live load start together; the recovered
/// webhooks are delivered beside it. Measured: the recover call's time to
/// its 202, its counts, the time until every recovered webhook arrived
/// (each exactly once), and the live p99 of the webhooks sent while the
/// recovered ones were delivered against the p99 alone.
pub async fn recovery(env: &Env, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    let name = "recovery";
    let s = &env.sizes;
    let (rec_n, live_n) = (s.rec_n, s.rec_live_n);
    let extra = [
        "--retry-schedule".to_string(),
        format!("{}ms", RETRY_DELAY.as_millis()),
        // Every attempt fails: the breaker would open after five and hold
        // the rest for its cooldown; recovery, not the breaker, is measured.
        "--circuit-failures".to_string(),
        "0".to_string(),
    ];
    let mut rx = Receiver::start(env, Mode::Flip, SLOW_DELAY).await?;
    let mut live_rx = Receiver::start(env, Mode::Ok, SLOW_DELAY).await?;
    let mut wh = Webhookd::start(env, &extra).await?;
    let rec_sub = wh.subscribe(rx.addr, 1).await?;
    let live_sub = wh.subscribe(live_rx.addr, 1).await?;
    let rec_id = rec_sub.first().context("no subscription created")?.clone();
    let live_paths = ingest_paths(&live_sub);

    // Phase 1: every webhook of the failing subscription ends `failed`.
    let since = (chrono::Utc::now() - chrono::TimeDelta::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let fail_started = Instant::now();
    let spec = load_spec(env, "rec-fail", rec_n, None, ingest_paths(&rec_sub));
    let rec_load = load::run(wh.addr(), &spec).await?;
    let stall = s.stall.max(FAIL_STALL);
    let failed = wait_failed(env, &mut wh, &rec_id, rec_load.accepted, stall).await?;
    let fail_s = fail_started.elapsed().as_secs_f64();

    // Phase 2: the live load alone.
    let rate = Some(RECOVERY_RATE);
    let spec = load_spec(env, "rec-live-alone", live_n, rate, live_paths.clone());
    let alone_load = load::run(wh.addr(), &spec).await?;
    let alone_complete =
        wait_delivered(env, &mut wh, &mut live_rx, alone_load.accepted, s.stall).await?;
    let alone = analyze(&alone_load, &live_rx.records().await?);
    live_rx.reset().await?;

    // Phase 3: recover, and the same live load meanwhile.
    rx.flip().await?;
    let mut procs = wh.procs();
    procs.push(("recovered".to_string(), rx.pid()));
    procs.push(("live".to_string(), live_rx.pid()));
    procs.push(generator());
    let sampler = Sampler::start(procs.clone());
    let mut api = Conn::connect(wh.addr()).await?;
    let path = format!("/subscriptions/{rec_id}/recover");
    let body = json!({"since": since, "status": ["failed"], "dry_run": false}).to_string();
    let spec = load_spec(env, name, live_n, rate, live_paths);
    let addr = wh.addr();
    let recover_start_us = webhookd_harness::load::now_us();
    let started = Instant::now();
    let recover = async {
        let answer = api.post_json(&path, body).await;
        (answer, started.elapsed())
    };
    let ((answer, recover_latency), load) = tokio::join!(recover, load::run(addr, &spec));
    let load = load?;
    let (status, answer) = answer.context("calling recover")?;
    if status.as_u16() != 202 {
        bail!(
            "POST {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let recovered: Value =
        serde_json::from_slice(&answer).context("recover's answer is not JSON")?;
    let count = |k: &str| recovered[k].as_u64();
    let (matched, queued, unavailable) = (count("matched"), count("queued"), count("unavailable"));
    let rec_complete = wait_delivered(env, &mut wh, &mut rx, rec_load.accepted, s.stall).await?;
    let complete = wait_delivered(env, &mut wh, &mut live_rx, load.accepted, s.stall).await?;
    let window = started.elapsed();
    let peaks = sampler.finish(&procs).await;
    let rec_records = rx.records().await?;
    let records = live_rx.records().await?;
    wh.alive()?;
    let clean = wh.stop();
    drop(rx);
    drop(live_rx);
    let db = read_db(wh.db_path());
    let rd = analyze(&rec_load, &rec_records);
    let d = analyze(&load, &records);
    // The recovery lasts from the call until the last recovered webhook's
    // arrival; the live webhooks sent in that time are those measured
    // "during" it (the rest of the load runs after it).
    let recovery_end_us = rd.last_arrival_us.max(recover_start_us);
    let all_delivered_s = rec_complete.then(|| (recovery_end_us - recover_start_us) as f64 / 1e6);
    let rec_rate = all_delivered_s.map(|t| rd.delivered as f64 / t.max(1e-9));
    let during = lat_sent_between(&records, recover_start_us, recovery_end_us);
    // The same, split at the 202: while the call queued the webhooks again,
    // and while they were delivered after it.
    let answered_us = recover_start_us + recover_latency.as_micros() as u64;
    let during_call = lat_sent_between(&records, recover_start_us, answered_us);
    let after_call = lat_sent_between(&records, answered_us + 1, recovery_end_us);

    let acc = rec_load.accepted as u64;
    load_checks("recovery (failing)", &rec_load, checks);
    load_checks("recovery (live alone)", &alone_load, checks);
    load_checks(name, &load, checks);
    checks.push(Check {
        scenario: name.into(),
        name: "every webhook failed before recovery".into(),
        ok: failed == rec_load.accepted,
        detail: format!(
            "{failed} of {} listed failed after {fail_s:.1} s ({} attempts answered 500)",
            rec_load.accepted, rd.non_200
        ),
    });
    checks.push(Check {
        scenario: name.into(),
        name: "recover matched and queued every failed webhook".into(),
        ok: matched == Some(acc) && queued == Some(acc) && unavailable == Some(0),
        detail: format!(
            "matched {matched:?}, queued {queued:?}, unavailable {unavailable:?} of {acc} failed"
        ),
    });
    delivered_checks(
        "recovery (recovered)",
        "every recovered webhook delivered",
        rec_complete,
        &rd,
        checks,
    );
    // Delivery is at-least-once, but duplicates come only after a crash or
    // a pause longer than the ack wait (README): none is expected here.
    checks.push(Check {
        scenario: "recovery (recovered)".into(),
        name: "each recovered webhook delivered once".into(),
        ok: rd.duplicates == 0,
        detail: format!(
            "{} duplicate 200s over {} recovered webhooks",
            rd.duplicates, rd.delivered
        ),
    });
    for (scenario, complete, d) in [
        ("recovery (live alone)", alone_complete, &alone),
        (name, complete, &d),
    ] {
        delivered_checks(scenario, "0 lost (live subscription)", complete, d, checks);
    }
    match &db {
        Ok(c) => {
            let total = (rec_load.accepted + alone_load.accepted + load.accepted) as i64;
            let succeeded = c.statuses.get("succeeded").copied().unwrap_or(0);
            checks.push(Check {
                scenario: name.into(),
                name: "every webhook succeeded in the store".into(),
                ok: succeeded == total && c.statuses.len() == 1,
                detail: format!("statuses {:?} for {total} webhooks", c.statuses),
            });
        }
        Err(e) => checks.push(Check {
            scenario: name.into(),
            name: "attempt log readable".into(),
            ok: false,
            detail: format!("{e:#}"),
        }),
    }

    let q = |l: &[u64], p: f64| ms(quantile(l, p)).unwrap_or(f64::NAN);
    let p99_text = |l: &[u64]| ms(quantile(l, 0.99)).map_or("-".into(), |v| format!("{v:.1}"));
    let during_p99 = ms(quantile(&during, 0.99));
    let alone_p99 = ms(quantile(&alone.lat_us, 0.99));
    let ratio = during_p99
        .zip(alone_p99)
        .filter(|(_, a)| *a > 0.0)
        .map(|(p, a)| p / a);
    // The target compares two complete loads on a settled webhookd only.
    let settled = failed == rec_load.accepted && alone_complete && complete && rec_complete;
    if settled {
        carry.recovery_p99_ms = during_p99;
        carry.recovery_alone_p99_ms = alone_p99;
    }
    let note = format!(
        "all failed in {fail_s:.1} s; recover 202 in {:.0} ms (matched {}, queued {}); all \
         delivered in {} s; live p99 \
         {:.1} ms during ({} sent; {} ms until the 202, {} after) vs {:.1} ms alone \
         ({:.2}x), whole load {:.1} ms; {:.0}/s paced",
        recover_latency.as_secs_f64() * 1000.0,
        matched.map_or("-".into(), |v| v.to_string()),
        queued.map_or("-".into(), |v| v.to_string()),
        all_delivered_s.map_or("-".into(), |t| format!("{t:.1}")),
        q(&during, 0.99),
        during.len(),
        p99_text(&during_call),
        p99_text(&after_call),
        q(&alone.lat_us, 0.99),
        ratio.unwrap_or(f64::NAN),
        q(&d.lat_us, 0.99),
        RECOVERY_RATE
    );
    let cpu_per_s = cpu_per_second(&peaks, window);
    Ok(Row {
        name: name.into(),
        n: rec_n,
        c: env.concurrency,
        rate: rec_rate,
        rate_unit: "dlv/s",
        p50: ms(quantile(&during, 0.5)),
        p95: ms(quantile(&during, 0.95)),
        p99: ms(quantile(&during, 0.99)),
        lat_kind: "arrival-send",
        errors: Some(rec_load.errors() + alone_load.errors() + load.errors()),
        lost: Some(rd.lost + alone.lost + d.lost),
        dups: Some(rd.duplicates + alone.duplicates + d.duplicates),
        note,
        cpu: cpu_of(&peaks, &procs),
        json: json!({
            "webhookd_args": env.webhookd_args,
            "retry_schedule_ms": RETRY_DELAY.as_millis() as u64,
            "live_rate_per_s": RECOVERY_RATE,
            "recover": {
                "since": since,
                "status": status.as_u16(),
                "latency_ms": recover_latency.as_secs_f64() * 1000.0,
                "matched": matched,
                "queued": queued,
                "unavailable": unavailable,
            },
            "failing": {
                "load": load_json(&rec_load),
                "listed_failed": failed,
                "attempts_answered_500": rd.non_200,
                "until_all_failed_s": fail_s,
            },
            "recovered": {
                "delivery": delivery_json(&rd),
                "all_delivered_s": all_delivered_s,
                "delivered_per_s": rec_rate,
            },
            "live_alone": phase_json(&alone_load, &alone),
            "live_during_recovery": {
                "sent": during.len(),
                "arrival_minus_send_ms": pct_json(&during),
                "ratio_p99_to_alone": ratio,
                "target_evaluated": settled,
                "until_202": {"sent": during_call.len(), "arrival_minus_send_ms": pct_json(&during_call)},
                "after_202": {"sent": after_call.len(), "arrival_minus_send_ms": pct_json(&after_call)},
            },
            "live_whole_load": phase_json(&load, &d),
            "measured_window_s": window.as_secs_f64(),
            "cpu_s_per_s": cpu_per_s,
            "attempt_log_outcomes": db.as_ref().ok().map(|c| c.outcomes.clone()),
            "webhook_statuses": db.as_ref().ok().map(|c| c.statuses.clone()),
            "rss": peaks_json(&peaks),
            "clean_exit": clean,
        }),
    })
}
