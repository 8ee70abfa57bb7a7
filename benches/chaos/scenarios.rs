//! The chaos scenarios. Each starts what it needs in a fresh directory,
//! loads webhookd while doing something bad to it, waits (bounded) for the
//! deliveries, stops webhookd gracefully, and judges the result from the
//! load's answers, the receiver's records and the SQLite file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
use webhookd_harness::client::{answers_2xx, Conn};
use webhookd_harness::load::{now_us, Spec};
use webhookd_harness::nats::NatsServer;
use webhookd_harness::process;
use webhookd_harness::receiver::{first_ok, Answer, Receiver};
use webhookd_harness::sqlite;
use webhookd_harness::webhookd::{Lifecycle, Webhookd};

use crate::check::{accepted_ids, check_succeeded, hist_text, judge, statuses_between, Db, Row};
use crate::disk::{self, Tmpfs};
use crate::faults::{self, Event, Fault};
use crate::ingest::{Load, Post};
use crate::receiver::{self, Mode};
use crate::rng::Rng;

/// Size of each webhook body.
const BODY_SIZE: usize = 400;

/// What every scenario needs.
pub struct Env {
    pub quick: bool,
    pub seed: u64,
    pub n: Option<usize>,
    pub concurrency: usize,
    pub webhookd_bin: PathBuf,
    pub nats_bin: PathBuf,
    pub work_dir: PathBuf,
    /// CI=true: a scenario that cannot run is a failure, not a skip.
    pub ci: bool,
}

impl Env {
    fn n(&self, full: usize, quick: usize) -> usize {
        self.n.unwrap_or(if self.quick { quick } else { full })
    }

    fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    fn tempdir(&self, name: &str) -> Result<TempDir> {
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("creating {}", self.work_dir.display()))?;
        tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(&self.work_dir)
            .context("creating a scenario directory")
    }

    fn rng(&self, salt: u64) -> Rng {
        Rng::new(self.seed ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }

    /// A webhookd (not started) on `data`, quiet but for warnings.
    fn webhookd(&self, data: &Path, args: &[&str]) -> Result<Webhookd> {
        Ok(Webhookd::new(&self.webhookd_bin, data)?
            .nats_server_bin(&self.nats_bin)
            .args(&["--log", "warn"])
            .args(args))
    }

    fn spec(&self, tag: &str, n: usize, rate: Option<f64>, sub: &str) -> Spec {
        let sending = rate.map_or(Duration::from_secs(60), |r| {
            Duration::from_secs_f64(n as f64 / r)
        });
        Spec {
            n,
            concurrency: self.concurrency,
            rate,
            // Bounded: the planned sending time plus room for the faults.
            max_time: sending + Duration::from_secs(120),
            tag: tag.to_string(),
            body_size: BODY_SIZE,
            paths: Arc::new(vec![format!("/ingest/{sub}")]),
        }
    }
}

/// Longest wait for deliveries after the load (a redelivery after a lost
/// ack or NAK takes the 30 s ack wait).
const DELIVERY_LIMIT: Duration = Duration::from_secs(150);
/// Bound on waiting for the end of a load.
const LOAD_LIMIT: Duration = Duration::from_secs(400);

/// Waits until every id in `accepted` got a 2xx at the receiver, then
/// until SQLite says `succeeded` for every webhook the receiver answered
/// 2xx (an attempt in flight at a kill -9 has no row; its message comes
/// back after the ack wait and is logged then), then for the receiver to go
/// quiet (late duplicates). Notes how long the log took to catch up.
async fn wait_all_ok(
    wh: &mut Webhookd,
    rx: &Receiver,
    accepted: &HashSet<String>,
    limit: Duration,
    row: &mut Row,
) -> Result<bool> {
    wait_all_ok_at(wh, &[rx], accepted, limit, row).await
}

/// [`wait_all_ok`] with the webhooks spread over several receivers.
async fn wait_all_ok_at(
    wh: &mut Webhookd,
    rxs: &[&Receiver],
    accepted: &HashSet<String>,
    limit: Duration,
    row: &mut Row,
) -> Result<bool> {
    let first_ok_all = || {
        let mut all: HashMap<String, u64> = HashMap::new();
        for rx in rxs {
            all.extend(rx.first_ok());
        }
        all
    };
    let started = Instant::now();
    loop {
        wh.ensure_alive()?;
        let ok = first_ok_all();
        if accepted.iter().all(|id| ok.contains_key(id)) {
            break;
        }
        if started.elapsed() > limit {
            let have = accepted.iter().filter(|id| ok.contains_key(*id)).count();
            eprintln!(
                "chaos: gave up waiting: {have} of {} delivered after {:.0}s",
                accepted.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after = started.elapsed();
    let answered: HashSet<String> = first_ok_all().into_keys().collect();
    let mut behind = answered.len();
    while started.elapsed() < limit {
        wh.ensure_alive()?;
        behind = answered.len() - Db::count_succeeded(&wh.db, &answered).unwrap_or(0);
        if behind == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logged_after = started.elapsed();
    if behind > 0 {
        let conn = sqlite::read_only(&wh.db)?;
        let done: HashSet<String> =
            sqlite::texts(&conn, "SELECT id FROM webhooks WHERE status = 'succeeded'")?
                .into_iter()
                .collect();
        let mut examples = Vec::new();
        for id in answered.iter().filter(|id| !done.contains(*id)).take(2) {
            examples.push(format!("{id}: {}", attempts_text(&conn, id)?));
        }
        row.note(format!(
            "{behind} webhooks answered 2xx still not `succeeded` in SQLite after {:.0}s; \
             e.g. {}",
            logged_after.as_secs_f64(),
            examples.join(" | ")
        ));
    } else if logged_after > delivered_after + Duration::from_secs(1) {
        row.note(format!(
            "SQLite caught up {:.1}s after the last first delivery (an attempt cut off by the \
             fault, redelivered after the ack wait or retried on schedule)",
            (logged_after - delivered_after).as_secs_f64()
        ));
    }
    for rx in rxs {
        wait_quiet(rx, Duration::from_secs(1), Duration::from_secs(5)).await;
    }
    Ok(true)
}

/// A webhook's attempt rows, one line: number, outcome, status, time (UTC)
/// and the start of the error.
fn attempts_text(conn: &rusqlite::Connection, id: &str) -> Result<String> {
    let steps = sqlite::texts(
        conn,
        &format!(
            "SELECT attempt_number || ' ' || outcome || ' ' || coalesce(status_code, '-') \
             || ' at ' || strftime('%H:%M:%f', timestamp / 1000.0, 'unixepoch') || ' ' \
             || coalesce(substr(error, 1, 60), '') \
             FROM delivery_attempts WHERE webhook_id = '{}' ORDER BY id",
            id.replace('\'', "")
        ),
    )?;
    Ok(steps.join("; "))
}

/// Waits until the receiver saw nothing for `quiet` (at most `limit`).
async fn wait_quiet(rx: &Receiver, quiet: Duration, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let last = rx.last_arrival_us();
        if now_us().saturating_sub(last) > quiet.as_micros() as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_answer_us(posts: &[Post]) -> u64 {
    posts.iter().map(|p| p.answered_us).max().unwrap_or(0)
}

/// Stops webhookd gracefully and records how that went.
fn stop_clean(wh: &mut Webhookd, row: &mut Row) -> Result<()> {
    let (status, took) = wh.term(Duration::from_secs(40))?;
    row.check(
        "graceful stop at the end",
        status.is_some_and(|s| s.success()),
        format!("exit {status:?} after {:.1}s", took.as_secs_f64()),
    );
    Ok(())
}

/// Stops webhookd gracefully, reads its SQLite file and judges the run:
/// every 202 delivered, attempt rows against what the receiver saw,
/// duplicates, and every accepted webhook `succeeded`. `events` are faults
/// outside webhookd's own (NATS kills, the disk filling), if any.
fn stop_and_judge(
    wh: &mut Webhookd,
    row: &mut Row,
    posts: &[Post],
    rx: &Receiver,
    mut events: Vec<Event>,
    drain_from: u64,
) -> Result<()> {
    stop_clean(wh, row)?;
    let db = Db::read(&wh.db)?;
    events.extend(faults::of_webhookd(wh));
    judge(row, posts, &rx.received(), &db, &events, drain_from);
    check_succeeded(row, posts, &db);
    Ok(())
}

/// Ends a scenario whose faults were done to webhookd itself: waits for the
/// end of the load and for every accepted webhook's delivery, then stops
/// webhookd and judges the run, the drain counted from webhookd's last
/// `since` step (or the load's last answer, if later). Returns the posts.
async fn finish_and_judge(
    wh: &mut Webhookd,
    rx: &Receiver,
    load: Load,
    row: &mut Row,
    since: Lifecycle,
) -> Result<Vec<Post>> {
    let posts = load.finish(LOAD_LIMIT).await?;
    let accepted = accepted_ids(&posts);
    wait_all_ok(wh, rx, &accepted, DELIVERY_LIMIT, row).await?;
    let drain_from =
        faults::last(&faults::of_webhookd(wh), Fault::Webhookd(since)).max(last_answer_us(&posts));
    stop_and_judge(wh, row, &posts, rx, Vec::new(), drain_from)?;
    Ok(posts)
}

/// Random points of a load, as fractions in (lo, hi), sorted, apart by
/// at least `gap`.
fn points(rng: &mut Rng, count: usize, lo: f64, hi: f64, gap: f64) -> Vec<f64> {
    let mut tries = 0;
    loop {
        let mut v: Vec<f64> = (0..count).map(|_| rng.range_f64(lo, hi)).collect();
        v.sort_by(f64::total_cmp);
        tries += 1;
        if tries > 1000 || v.windows(2).all(|w| w[1] - w[0] >= gap) {
            return v;
        }
    }
}

// ------------------------------------------------------------ 1. kill -9

/// kill -9 webhookd three times at random moments of the ingest, restart it
/// each time on the same data directory (embedded NATS).
pub async fn webhookd_kill9(env: &Env) -> Result<Row> {
    let mut row = Row {
        name: "1 webhookd kill -9 x3".into(),
        ..Row::default()
    };
    let dir = env.tempdir("kill9")?;
    let rx = receiver::start(Mode::Ok, env.seed, Duration::ZERO).await?;
    let mut wh = env.webhookd(dir.path(), &["--delivery-timeout", "5s"])?;
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(20_000, 1_500);
    let rate = env.pick(2_000.0, 300.0);
    let load = Load::start(wh.addr, env.spec("kill9", n, Some(rate), &sub));
    let mut rng = env.rng(1);
    let mut kills = 0;
    for f in points(&mut rng, 3, 0.1, 0.85, 0.15) {
        let at = (f * n as f64) as usize;
        load.progress.wait_done(at, &load.task, LOAD_LIMIT).await;
        if load.task.is_finished() {
            break;
        }
        let done = load.progress.done();
        let nats_gone = wh.kill9()?;
        let t0 = Instant::now();
        wh.start().await?;
        kills += 1;
        row.note(format!(
            "kill {kills} after {done} posts: old nats-server gone {:.1}s after the kill, \
             webhookd ready again {:.1}s later",
            nats_gone.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        ));
    }
    finish_and_judge(&mut wh, &rx, load, &mut row, Lifecycle::Started).await?;
    row.check(
        "three kills during the ingest",
        kills == 3,
        format!("{kills} kills"),
    );
    Ok(row)
}

// ------------------------------------------------- 2. and 3. NATS kill -9

/// kill -9 of the NATS server during ingest and during retries; external
/// (`NATS_URL`, restarted by the suite after a few seconds) or embedded
/// (webhookd's child, restarted by webhookd).
pub async fn nats_kill9(env: &Env, embedded: bool) -> Result<Row> {
    let mut row = Row {
        name: if embedded {
            "3 embedded nats kill -9 x2".into()
        } else {
            "2 external nats kill -9 x2".into()
        },
        ..Row::default()
    };
    let dir = env.tempdir(if embedded {
        "embedded-nats"
    } else {
        "external-nats"
    })?;
    let mut nats = if embedded {
        None
    } else {
        Some(NatsServer::start_in(&env.nats_bin, &dir.path().join("nats")).await?)
    };
    let mut events: Vec<Event> = Vec::new();
    if nats.is_some() {
        events.push(Event::now(Fault::NatsStarted));
    }
    let rx = receiver::start(Mode::FailFirst, env.seed, Duration::ZERO).await?;
    let retry = Duration::from_secs(3);
    let mut wh = env.webhookd(
        &dir.path().join("data"),
        &[
            "--retry-schedule",
            "3s",
            "--publish-timeout",
            "1s",
            "--delivery-timeout",
            "5s",
            // Every first attempt fails: the circuit breaker would open
            // after five and end webhooks its cooldown outlasts (their life
            // is the 3 s schedule); this scenario checks the retries
            // across the crash, 4c the breaker.
            "--circuit-failures",
            "0",
        ],
    )?;
    if let Some(nats) = &nats {
        wh = wh.nats_url(nats.url());
    }
    std::fs::create_dir_all(&wh.data_dir)?;
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(10_000, 1_500);
    let rate = env.pick(1_000.0, 250.0);
    let down = env.pick(Duration::from_secs(5), Duration::from_secs(3));
    let mut windows: Vec<Window> = Vec::new();

    let load = Load::start(wh.addr, env.spec("nats", n, Some(rate), &sub));
    let at = (env.rng(2).range_f64(0.25, 0.5) * n as f64) as usize;
    load.progress.wait_done(at, &load.task, LOAD_LIMIT).await;
    let w = kill_nats(
        &mut wh,
        nats.as_mut(),
        down,
        &mut events,
        &mut row,
        "during ingest",
    )
    .await?;
    windows.push(w);
    let posts = load.finish(LOAD_LIMIT).await?;

    // Retries pending now: webhooks whose first attempt failed and whose
    // retry (3 s later) has not come yet.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before = rx.received();
    let ok_before: HashSet<String> = before
        .iter()
        .filter(|a| a.answer.ok())
        .map(|a| a.webhook_id().to_string())
        .collect();
    let pending: HashSet<String> = before
        .iter()
        .filter(|a| a.answer == Answer::Status(500) && !ok_before.contains(a.webhook_id()))
        .map(|a| a.webhook_id().to_string())
        .collect();
    let w = kill_nats(
        &mut wh,
        nats.as_mut(),
        down,
        &mut events,
        &mut row,
        "during retries",
    )
    .await?;
    windows.push(w);

    let accepted = accepted_ids(&posts);
    wait_all_ok(&mut wh, &rx, &accepted, DELIVERY_LIMIT, &mut row).await?;
    let drain_from = windows[1].ready.max(last_answer_us(&posts));
    wh.ensure_alive()?;
    stop_and_judge(&mut wh, &mut row, &posts, &rx, events, drain_from)?;
    let arrivals = rx.received();

    // Ingest while the server was down (202s there are counted and must be
    // delivered), and until webhookd was ready again (503s expected).
    let (_, during) = statuses_between(&posts, windows[0].killed, windows[0].back);
    let (hist, _) = statuses_between(&posts, windows[0].killed, windows[0].ready);
    let answered_503 = hist
        .iter()
        .filter(|(k, _)| k.starts_with("503"))
        .map(|(_, n)| n)
        .sum::<usize>();
    let first_ok = first_ok(&arrivals);
    let undelivered: Vec<&String> = during
        .iter()
        .filter(|id| !first_ok.contains_key(*id))
        .collect();
    row.check(
        "ingest answers 503 while NATS is down",
        answered_503 > 0
            && hist
                .keys()
                .all(|k| k.starts_with("202") || k.starts_with("503")),
        format!(
            "answers from the kill until webhookd was ready again ({:.1}s): {}",
            windows[0].ready.saturating_sub(windows[0].killed) as f64 / 1e6,
            hist_text(&hist)
        ),
    );
    row.check(
        "every 202 given while NATS was down is delivered",
        undelivered.is_empty(),
        format!(
            "{} answered 202 between the kill and the server listening again ({:.1}s), \
             {} of them not delivered",
            during.len(),
            windows[0].back.saturating_sub(windows[0].killed) as f64 / 1e6,
            undelivered.len()
        ),
    );
    // Retries scheduled before the second crash.
    let pending_ok = pending
        .iter()
        .filter(|id| first_ok.contains_key(*id))
        .count();
    let mut late = 0usize;
    let kill2 = windows[1].killed;
    for id in &pending {
        if let (Some(ok), Some(first)) = (
            first_ok.get(id),
            arrivals
                .iter()
                .find(|a| a.webhook_id() == id)
                .map(|a| a.at_us),
        ) {
            if ok.saturating_sub(first) > retry.as_micros() as u64 + 10_000_000 {
                late += 1;
            }
        }
    }
    row.check(
        "retries scheduled before the crash happen after it",
        pending_ok == pending.len(),
        format!(
            "{} webhooks waiting for a retry at the kill {}s into the run, {} retried and delivered \
             ({} more than 10 s after their due time: a NAK delay lost in the crash costs the ack wait)",
            pending.len(),
            kill2.saturating_sub(posts.first().map_or(kill2, |p| p.sent_us)) / 1_000_000,
            pending_ok,
            late
        ),
    );
    Ok(row)
}

/// A NATS outage: killed, listening again, webhookd ready again (µs).
#[derive(Debug, Clone, Copy)]
struct Window {
    killed: u64,
    back: u64,
    ready: u64,
}

/// Kills the NATS server and brings it back (external: after `down`;
/// embedded: webhookd's supervisor does), then waits for webhookd to be
/// ready again.
async fn kill_nats(
    wh: &mut Webhookd,
    nats: Option<&mut NatsServer>,
    down: Duration,
    events: &mut Vec<Event>,
    row: &mut Row,
    when: &str,
) -> Result<Window> {
    let killed_at;
    match nats {
        Some(nats) => {
            nats.kill9()?;
            killed_at = now_us();
            events.push(Event::now(Fault::NatsKill));
            tokio::time::sleep(down).await;
            nats.restart().await?;
            events.push(Event::now(Fault::NatsStarted));
            row.note(format!(
                "nats-server killed {when}, restarted after {:.1}s",
                down.as_secs_f64()
            ));
        }
        None => {
            let old = wh
                .nats_pid()
                .context("webhookd's nats-server child not found")?;
            process::signal(old, libc::SIGKILL)?;
            killed_at = now_us();
            events.push(Event {
                at_us: killed_at,
                fault: Fault::NatsKill,
            });
            let t0 = Instant::now();
            let new = loop {
                match wh.nats_pid() {
                    Some(pid) if pid != old => break pid,
                    _ if t0.elapsed() > Duration::from_secs(30) => {
                        bail!("webhookd did not restart its nats-server within 30 s")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            };
            // Listening again?
            let until = Instant::now() + Duration::from_secs(20);
            while !nats_listening(new) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            wh.track_nats();
            events.push(Event::now(Fault::NatsStarted));
            row.note(format!(
                "embedded nats-server killed {when}; webhookd restarted it (pid {old} -> {new}) in {:.2}s",
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    // The server is back (listening); now wait for webhookd to reconnect.
    let back_at = now_us();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        wh.ensure_alive()?;
        if answers_2xx(wh.addr, "/readyz").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Window {
        killed: killed_at,
        back: back_at,
        ready: now_us(),
    })
}

/// Whether a process has a listening TCP socket (/proc/<pid>/net/tcp is
/// per network namespace, so: any of its fds is a socket and the port file
/// is not needed; good enough to wait on).
fn nats_listening(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path())
                    .map(|l| l.to_string_lossy().starts_with("socket:"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

// ------------------------------------------------------ 4. bad receivers

/// A receiver failing half the requests at random, or closing connections
/// mid-response: every webhook ends succeeded or failed, with the
/// schedule's number of attempts.
pub async fn bad_receiver(env: &Env, mode: Mode) -> Result<Row> {
    let mut row = Row {
        name: match mode {
            Mode::FailHalf => "4a receiver fails 50%".into(),
            _ => "4b receiver closes mid-response".into(),
        },
        ..Row::default()
    };
    let dir = env.tempdir("bad-receiver")?;
    let rx = receiver::start(mode, env.seed ^ (mode as u64) << 32, Duration::ZERO).await?;
    let schedule = ["100ms", "200ms", "400ms"];
    let max_attempts = schedule.len() + 1;
    // The circuit breaker would open after five failures in a row (common
    // at 50 %) and end webhooks whose short life its cooldown outlasts
    // without sending them: this scenario checks the retry schedule, 4c
    // the breaker.
    let mut wh = env.webhookd(
        dir.path(),
        &[
            "--retry-schedule",
            &schedule.join(","),
            "--delivery-timeout",
            "5s",
            "--circuit-failures",
            "0",
        ],
    )?;
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(5_000, 1_500);
    let load = Load::start(wh.addr, env.spec("bad", n, None, &sub));
    let posts = load.finish(LOAD_LIMIT).await?;
    let accepted = accepted_ids(&posts);
    let load_end = last_answer_us(&posts);
    // Until every webhook has a final status.
    let started = Instant::now();
    loop {
        wh.ensure_alive()?;
        let done = Db::count_final(&wh.db, &accepted).unwrap_or(0);
        if done == accepted.len() || started.elapsed() > DELIVERY_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_quiet(&rx, Duration::from_secs(1), Duration::from_secs(5)).await;
    let finished_us = now_us();

    // Every accepted webhook through the API.
    let arrivals = rx.received();
    let mut seen: HashMap<&str, (usize, usize)> = HashMap::new();
    for a in &arrivals {
        let e = seen.entry(a.webhook_id()).or_default();
        e.0 += 1;
        if a.answer.ok() {
            e.1 += 1;
        }
    }
    let mut conn = Conn::connect(wh.addr).await?;
    let (mut succeeded, mut failed) = (0usize, 0usize);
    let mut bad: Vec<String> = Vec::new();
    let mut histogram = vec![0usize; max_attempts + 2];
    for id in &accepted {
        let (code, body) = conn.get(&format!("/status/{id}")).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let status = v["status"].as_str().unwrap_or("?").to_string();
        let count = v["attempt_count"].as_u64().unwrap_or(0) as usize;
        let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
        let numbers: Vec<u64> = attempts
            .iter()
            .map(|a| a["attempt_number"].as_u64().unwrap_or(0))
            .collect();
        let outcomes: Vec<&str> = attempts
            .iter()
            .map(|a| a["outcome"].as_str().unwrap_or("?"))
            .collect();
        let (rx_seen, rx_ok) = seen.get(id.as_str()).copied().unwrap_or_default();
        histogram[count.min(max_attempts + 1)] += 1;
        let in_order = numbers.iter().enumerate().all(|(i, n)| *n == i as u64 + 1);
        let problem = if code.as_u16() != 200 {
            Some(format!("GET /status answered {code}"))
        } else {
            match status.as_str() {
                "succeeded" => {
                    succeeded += 1;
                    (!(count <= max_attempts
                        && count == attempts.len()
                        && in_order
                        && outcomes.last() == Some(&"success")
                        && outcomes[..outcomes.len() - 1]
                            .iter()
                            .all(|o| *o == "failed_attempt")
                        && rx_seen == count
                        && rx_ok == 1))
                        .then(|| "succeeded with inconsistent attempts".to_string())
                }
                "failed" => {
                    failed += 1;
                    (!(count == max_attempts
                        && attempts.len() == max_attempts
                        && in_order
                        && outcomes.last() == Some(&"failure")
                        && rx_seen == max_attempts
                        && rx_ok == 0))
                        .then(|| format!("failed after {count} attempts, not {max_attempts}"))
                }
                other => Some(format!("status {other}, not final")),
            }
        };
        if let Some(p) = problem {
            if bad.len() < 5 {
                bad.push(format!(
                    "{id}: {p} (attempts {numbers:?} {outcomes:?}; receiver saw {rx_seen}, {rx_ok} 2xx)"
                ));
            } else {
                bad.push(String::new());
            }
        }
    }
    stop_clean(&mut wh, &mut row)?;
    let db = Db::read(&wh.db)?;
    // Lost here means: neither delivered nor failed past its schedule.
    judge(
        &mut row,
        &posts,
        &arrivals,
        &db,
        &faults::of_webhookd(&wh),
        load_end,
    );
    row.checks.retain(|c| c.name != "no accepted webhook lost");
    row.lost = accepted.len() - succeeded - failed;
    row.drain_s = Some(finished_us.saturating_sub(load_end) as f64 / 1e6);
    row.check(
        "every webhook ends succeeded or failed",
        row.lost == 0,
        format!(
            "{succeeded} succeeded, {failed} failed past the schedule, {} neither, of {} accepted",
            row.lost,
            accepted.len()
        ),
    );
    row.check(
        "attempt counts match the schedule and the receiver",
        bad.is_empty(),
        format!(
            "{} inconsistent{}",
            bad.len(),
            if bad.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    bad.iter()
                        .filter(|b| !b.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ),
    );
    row.note(format!(
        "attempts per webhook (1..{max_attempts}): {:?}; expected failed share 1/16 = {:.0}, got {failed}",
        &histogram[1..=max_attempts],
        accepted.len() as f64 / 16.0
    ));
    // In this scenario "delivered" = succeeded (a failed one is not lost).
    row.delivered = succeeded;
    Ok(row)
}

// ------------------------------------------------ 4c. flapping receivers

/// How long a flapping receiver's hang lasts before it closes the
/// connection (webhookd's delivery timeout in the scenario is 500 ms).
const FLAP_HANG: Duration = Duration::from_secs(2);

/// Several subscriptions whose receivers flap between hanging, answering
/// 500 and healthy (a new mode every 150-600 ms, from the seed) while
/// webhooks are posted to all of them; then the receivers turn healthy.
/// Millisecond retry schedule and circuit cooldowns, so that it ends soon:
/// every accepted webhook is delivered and `succeeded`, logged as a
/// success once; a second 2xx for a webhook is a duplicate at-least-once
/// allows only after an attempt webhookd could not read an answer of
/// (timeout, connection error), whose 2xx may have reached the receiver.
pub async fn receiver_flap(env: &Env) -> Result<Row> {
    let mut row = Row {
        name: "4c receivers flap hang/500/200".into(),
        ..Row::default()
    };
    let dir = env.tempdir("flap")?;
    let subs_count = env.pick(5, 3);
    let flap_for = env.pick(Duration::from_secs(12), Duration::from_secs(5));
    let epoch: Arc<OnceLock<Instant>> = Arc::default();
    let mut rng = env.rng(8);
    let mut rxs = Vec::new();
    let mut plans = Vec::new();
    for _ in 0..subs_count {
        let plan = receiver::flap_plan(
            &mut rng,
            flap_for,
            Duration::from_millis(150),
            Duration::from_millis(600),
        );
        rxs.push(receiver::start_flapping(plan.clone(), epoch.clone(), FLAP_HANG).await?);
        plans.push(plan);
    }
    // Fast first steps, then a second apart: a webhook posted at the start
    // of the flapping has far more steps than the flapping can use up
    // (about 5 + flapping/1 s), and a life (the schedule's span, 30 s)
    // past its end, so neither its attempts nor deferral end it.
    let mut steps: Vec<String> = ["50ms", "100ms", "200ms", "400ms", "800ms"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    steps.extend(std::iter::repeat_n("1s".to_string(), 28));
    let schedule = steps.join(",");
    let mut wh = env.webhookd(
        dir.path(),
        &[
            "--retry-schedule",
            &schedule,
            "--delivery-timeout",
            "500ms",
            "--circuit-cooldown",
            "200ms",
            "--circuit-cooldown-max",
            "1s",
        ],
    )?;
    wh.start().await?;
    let mut subs = Vec::new();
    for rx in &rxs {
        subs.push(wh.subscribe(&rx.url()).await?);
    }
    let n = env.n(6_000, 600);
    // Posted while the receivers flap: the load spans 80 % of it.
    let rate = n as f64 / (flap_for.as_secs_f64() * 0.8);
    let mut spec = env.spec("flap", n, Some(rate), &subs[0]);
    spec.paths = Arc::new(subs.iter().map(|s| format!("/ingest/{s}")).collect());
    let flap_start = Instant::now();
    let _ = epoch.set(flap_start);
    let load = Load::start(wh.addr, spec);
    let posts = load.finish(LOAD_LIMIT).await?;
    let load_end = last_answer_us(&posts);
    // The flapping ends by itself; the drain is counted from its end.
    tokio::time::sleep(flap_for.saturating_sub(flap_start.elapsed())).await;
    let healthy_from = now_us().max(load_end);
    let accepted = accepted_ids(&posts);
    let rx_refs: Vec<&Receiver> = rxs.iter().collect();
    wait_all_ok_at(&mut wh, &rx_refs, &accepted, DELIVERY_LIMIT, &mut row).await?;
    wh.ensure_alive()?;
    stop_clean(&mut wh, &mut row)?;
    let db = Db::read(&wh.db)?;
    let arrivals: Vec<_> = rxs.iter().flat_map(|rx| rx.received()).collect();
    judge(
        &mut row,
        &posts,
        &arrivals,
        &db,
        &faults::of_webhookd(&wh),
        healthy_from,
    );
    check_succeeded(&mut row, &posts, &db);

    // The receivers did flap: each kind of answer was given.
    let mut answers: HashMap<String, usize> = HashMap::new();
    for a in &arrivals {
        let key = match a.answer {
            Answer::Status(s) | Answer::Unsent(s) => s.to_string(),
            Answer::Closed => "hung up".to_string(),
            other => format!("{other:?}"),
        };
        *answers.entry(key).or_default() += 1;
    }
    let kinds = ["200", "500", "hung up"];
    row.check(
        "the receivers hung, failed and answered",
        kinds
            .iter()
            .all(|k| answers.get(*k).is_some_and(|n| *n > 0)),
        format!("answers: {}", hist_text(&answers)),
    );
    // Duplicates: at most one per attempt webhookd got no answer to.
    let conn = sqlite::read_only(&wh.db)?;
    let successes: HashMap<String, i64> = sqlite::pairs(
        &conn,
        "SELECT webhook_id, count(*) FROM delivery_attempts WHERE outcome = 'success' \
         GROUP BY webhook_id",
    )?
    .into_iter()
    .collect();
    // Sent attempts without an answer read (not the "not sent: " rows of
    // an open circuit, which have no request behind them).
    let unanswered: HashMap<String, i64> = sqlite::pairs(
        &conn,
        "SELECT webhook_id, count(*) FROM delivery_attempts WHERE outcome != 'success' \
         AND status_code IS NULL AND coalesce(error, '') NOT LIKE 'not sent: %' \
         GROUP BY webhook_id",
    )?
    .into_iter()
    .collect();
    let mut oks: HashMap<&str, i64> = HashMap::new();
    for a in arrivals.iter().filter(|a| a.answer.ok()) {
        *oks.entry(a.webhook_id()).or_default() += 1;
    }
    let excess: i64 = oks
        .iter()
        .map(|(id, n)| (n - 1 - unanswered.get(*id).copied().unwrap_or(0)).max(0))
        .sum();
    let not_once = accepted
        .iter()
        .filter(|id| successes.get(id.as_str()).copied().unwrap_or(0) != 1)
        .count();
    row.check(
        "no duplicates beyond at-least-once",
        excess == 0 && not_once == 0,
        format!(
            "{} duplicate 2xx, {excess} of them not after an unanswered attempt; {not_once} \
             accepted webhooks without exactly one success row",
            row.duplicates
        ),
    );
    let not_sent = sqlite::count(
        &conn,
        "SELECT count(*) FROM delivery_attempts WHERE error LIKE 'not sent: %'",
    )?;
    // The last webhook delivered, and how it got there.
    let first_ok_all = first_ok(&arrivals);
    if let Some((id, at)) = accepted
        .iter()
        .filter_map(|id| Some((id, *first_ok_all.get(id)?)))
        .max_by_key(|(_, at)| *at)
    {
        row.note(format!(
            "last delivered {id}, {:.1}s after the flapping ended; its attempts: {}",
            at.saturating_sub(healthy_from) as f64 / 1e6,
            attempts_text(&conn, id)?
        ));
    }
    let stretches: usize = plans.iter().map(Vec::len).sum();
    row.note(format!(
        "{subs_count} subscriptions, {stretches} mode changes over {:.0}s (seed-drawn, \
         150-600 ms each), {n} posted at {rate:.0}/s; answers {}; {not_sent} attempts not sent \
         (circuit open)",
        flap_for.as_secs_f64(),
        hist_text(&answers)
    ));
    Ok(row)
}

// --------------------------------------------------------- 5. disk full

/// Size of the file system holding the SQLite file. Not smaller: with
/// SQLite's default WAL auto-checkpoint (1,000 pages, ~4 MiB) the WAL alone
/// outgrows a 2 MiB file system, and a database that fills its disk by
/// itself cannot recover when the filler is deleted (there is nothing else
/// to delete). The filler takes whatever room is left.
const TMPFS_SIZE: &str = "32m";

/// SQLite's file system fills up while webhooks flow.
pub async fn disk_full(env: &Env) -> Result<Row> {
    let mut row = Row {
        name: "5 sqlite disk full".into(),
        ..Row::default()
    };
    let dir = env.tempdir("disk-full")?;
    let mount_dir = dir.path().join("db");
    let mut tmpfs = match Tmpfs::mount(&mount_dir, TMPFS_SIZE) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!(
                "\n!!!!! chaos: scenario 5 (SQLite disk full) SKIPPED: cannot mount a tmpfs: {why} !!!!!\n"
            );
            row.skipped = Some(why);
            return Ok(row);
        }
    };
    let result = disk_full_inner(env, dir.path(), &tmpfs, &mut row).await;
    tmpfs.unmount();
    result?;
    Ok(row)
}

async fn disk_full_inner(env: &Env, dir: &Path, tmpfs: &Tmpfs, row: &mut Row) -> Result<()> {
    let rx = receiver::start(Mode::Ok, env.seed, Duration::ZERO).await?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let db_path = tmpfs.dir.join("webhookd.db");
    let mut wh = env
        .webhookd(&data, &["--delivery-timeout", "5s"])?
        .database(&db_path);
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(6_000, 1_500);
    let rate = env.pick(300.0, 150.0);
    // Full run: longer than the ack wait (30 s), so a held message must be
    // kept from redelivery (in progress) while its row waits for space.
    let hold = env.pick(Duration::from_secs(40), Duration::from_secs(4));
    let load = Load::start(wh.addr, env.spec("disk", n, Some(rate), &sub));
    load.progress.wait_done(n / 4, &load.task, LOAD_LIMIT).await;

    // Fill the file system while webhooks flow.
    let filler = tmpfs.dir.join("filler");
    let full_at = now_us();
    let filled = disk::fill_until_enospc(&filler)?;
    let mut events = vec![Event {
        at_us: full_at,
        fault: Fault::DiskFull,
    }];
    // Watch the API while the disk is full: readiness, the status of a
    // webhook just accepted, and a management write.
    let mut readyz: HashMap<String, usize> = HashMap::new();
    let mut status_api: HashMap<String, usize> = HashMap::new();
    let mut create_sub: HashMap<String, usize> = HashMap::new();
    let mut probes: Vec<Post> = Vec::new();
    let until = Instant::now() + hold;
    let mut alive = true;
    // Bounded by time and by count.
    for k in 0..1_000usize {
        if Instant::now() >= until {
            break;
        }
        if wh.exited().is_some() {
            alive = false;
            break;
        }
        if let Ok(mut c) = Conn::connect(wh.addr).await {
            if let Ok((s, body)) = c.get("/readyz").await {
                *readyz.entry(answer_key(s.as_u16(), &body)).or_default() += 1;
            }
            let sent_us = now_us();
            let probe = format!(r#"{{"probe":{k}}}"#);
            if let Ok((s, body)) = c.post_json(&format!("/ingest/{sub}"), probe).await {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = v["webhook_id"].as_str().map(str::to_string);
                probes.push(Post {
                    seq: usize::MAX - k,
                    sent_us,
                    answered_us: now_us(),
                    status: Some(s.as_u16()),
                    webhook_id: id.clone(),
                    code: v["error"]["code"].as_str().map(str::to_string),
                });
                if let Some(id) = id.filter(|_| s.as_u16() == 202) {
                    if let Ok((s, body)) = c.get(&format!("/status/{id}")).await {
                        *status_api.entry(answer_key(s.as_u16(), &body)).or_default() += 1;
                    }
                }
            }
            let body = serde_json::json!({"target_url": format!("http://{}/hook", rx.addr)});
            if let Ok((s, body)) = c.post_json("/subscriptions", body.to_string()).await {
                *create_sub.entry(answer_key(s.as_u16(), &body)).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows_full = rx.count();
    std::fs::remove_file(&filler).context("removing the filler")?;
    let freed_at = now_us();
    events.push(Event {
        at_us: freed_at,
        fault: Fault::DiskFreed,
    });
    row.check(
        "webhookd stays alive while the disk is full",
        alive,
        if alive {
            "alive".to_string()
        } else {
            format!("exited:\n{}", wh.lines().tail(20))
        },
    );
    if !alive {
        bail!("webhookd died while the disk was full");
    }
    row.check(
        "/readyz says not ready while SQLite cannot write",
        readyz.keys().any(|k| k.starts_with("503")),
        hist_text(&readyz),
    );
    let mut posts = load.finish(LOAD_LIMIT).await?;
    posts.extend(probes);
    let accepted = accepted_ids(&posts);
    wait_all_ok(&mut wh, &rx, &accepted, DELIVERY_LIMIT, row).await?;
    // Recovered: the API answers from SQLite again.
    let mut c = Conn::connect(wh.addr).await?;
    let (rz, _) = c.get("/readyz").await?;
    let some_id = accepted.iter().next().cloned().unwrap_or_default();
    let (st, body) = c.get(&format!("/status/{some_id}")).await?;
    row.check(
        "recovers when space returns",
        rz.as_u16() == 200 && st.as_u16() == 200,
        format!(
            "after freeing: /readyz {rz}, /status {st} {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(80)
                .collect::<String>()
        ),
    );
    let drain_from = freed_at.max(last_answer_us(&posts));
    stop_and_judge(&mut wh, row, &posts, &rx, events, drain_from)?;
    // Held attempts are kept alive with Progress acks and never redelivered.
    // Messages the consumer stream had pulled ahead but no worker had
    // started are not: past the ack wait (30 s) JetStream hands them out
    // again, so an outage longer than that may duplicate at most that
    // read-ahead (two pull batches of 64, the batch webhookd uses with its
    // default 256 workers), never loop.
    let bound = if hold < Duration::from_secs(30) {
        0
    } else {
        2 * 64
    };
    row.check(
        "no redelivery loop while SQLite refused its attempt row",
        row.duplicates <= bound,
        format!(
            "{} duplicate deliveries (bound {bound} for a {:.0}s outage)",
            row.duplicates,
            hold.as_secs_f64()
        ),
    );
    let (hist, _) = statuses_between(&posts, full_at, freed_at);
    row.note(format!(
        "filler {} KiB to ENOSPC; while full ({:.0}s): ingest {}; GET /status of a webhook just \
         accepted {}; POST /subscriptions {}; /readyz {}; receiver got {} requests by then",
        filled / 1024,
        hold.as_secs_f64(),
        hist_text(&hist),
        hist_text(&status_api),
        hist_text(&create_sub),
        hist_text(&readyz),
        rows_full
    ));
    let log = wh.log();
    let not_logged = log.matches("attempt not logged").count();
    let not_written = log.matches("webhook row not written at ingest").count();
    row.note(format!(
        "webhookd log: {not_logged} 'attempt not logged', {not_written} 'webhook row not written at ingest'"
    ));
    Ok(())
}

fn answer_key(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v["error"]["code"].as_str() {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    }
}

// ---------------------------------------------- 6. SIGTERM and SIGSTOP

/// SIGTERM in the middle of a burst, then a restart.
pub async fn sigterm(env: &Env) -> Result<Row> {
    let mut row = Row {
        name: "6a SIGTERM mid-burst".into(),
        ..Row::default()
    };
    let dir = env.tempdir("sigterm")?;
    let rx = receiver::start(Mode::Ok, env.seed, Duration::from_millis(20)).await?;
    let mut wh = env.webhookd(dir.path(), &["--delivery-timeout", "5s"])?;
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(10_000, 1_500);
    let load = Load::start(wh.addr, env.spec("term", n, None, &sub));
    let at = (env.rng(6).range_f64(0.3, 0.6) * n as f64) as usize;
    load.progress.wait_done(at, &load.task, LOAD_LIMIT).await;
    let (status, took) = wh.term(Duration::from_secs(40))?;
    row.check(
        "SIGTERM stops webhookd cleanly",
        status.is_some_and(|s| s.success()),
        format!("exit {status:?} after {:.1}s", took.as_secs_f64()),
    );
    let t0 = Instant::now();
    wh.start().await?;
    row.note(format!(
        "SIGTERM after {} posts: stopped in {:.1}s, ready again {:.1}s later",
        at,
        took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
    let posts = finish_and_judge(&mut wh, &rx, load, &mut row, Lifecycle::Started).await?;
    let (hist, _) = statuses_between(&posts, 0, u64::MAX);
    row.note(format!("ingest answers: {}", hist_text(&hist)));
    Ok(row)
}

/// SIGSTOP of webhookd for longer than the ack wait, then SIGCONT.
pub async fn sigstop(env: &Env) -> Result<Row> {
    // ack_wait = max(30 s, 2 x delivery timeout + 10 s) = 30 s with either
    // timeout used here; the stop lasts past it.
    let (timeout, stop_for) = if env.quick {
        ("1s", Duration::from_secs(31))
    } else {
        ("10s", Duration::from_secs(35))
    };
    let mut row = Row {
        name: format!("6b SIGSTOP {}s", stop_for.as_secs()),
        ..Row::default()
    };
    let dir = env.tempdir("sigstop")?;
    // Deliveries take a while: some are in flight at the stop.
    let rx = receiver::start(Mode::Ok, env.seed, Duration::from_millis(50)).await?;
    let mut wh = env.webhookd(dir.path(), &["--delivery-timeout", timeout])?;
    wh.start().await?;
    let sub = wh.subscribe(&rx.url()).await?;
    let n = env.n(5_000, 1_000);
    let rate = env.pick(500.0, 200.0);
    let load = Load::start(wh.addr, env.spec("stop", n, Some(rate), &sub));
    let at = (env.rng(7).range_f64(0.3, 0.5) * n as f64) as usize;
    load.progress.wait_done(at, &load.task, LOAD_LIMIT).await;
    let seen_at_stop = rx.count();
    wh.sigstop()?;
    tokio::time::sleep(stop_for).await;
    let seen_while_stopped = rx.count() - seen_at_stop;
    wh.cont()?;
    let posts = finish_and_judge(&mut wh, &rx, load, &mut row, Lifecycle::Continued).await?;
    let events = faults::of_webhookd(&wh);
    let stop_at = faults::last(&events, Fault::Webhookd(Lifecycle::Stopped));
    let cont_at = faults::last(&events, Fault::Webhookd(Lifecycle::Continued));
    let (hist, _) = statuses_between(&posts, stop_at, cont_at + 2_000_000);
    row.note(format!(
        "stopped after {at} posts with --delivery-timeout {timeout} (ack wait 30 s); \
         receiver got {seen_while_stopped} requests while stopped; \
         posts answered during the stop (+2 s): {}",
        hist_text(&hist)
    ));
    Ok(row)
}
