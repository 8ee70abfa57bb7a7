//! Operations: the retention purge, `/metrics`, what the logs may say, and
//! `/readyz` — against a real nats-server, a real SQLite file, real
//! receivers on loopback, and (for the logs) the real `webhookd` binary.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde_json::{json, Value};
use webhookd::metrics::Metrics;
use webhookd::store::Store;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::net::refused_url;
use webhookd_harness::receiver::{fail_first, Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::sign::inbound_signature;
use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_harness::webhookd::Webhookd;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

// ---------------------------------------------------------------------------
// Small helpers of this file.
// ---------------------------------------------------------------------------

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A connection of the test's own to webhookd's SQLite file.
fn open_db(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the SQLite file");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn insert_subscription(conn: &Connection, id: &str, created_ms: i64) {
    conn.execute(
        "INSERT INTO subscriptions (id, target_url, secret, events, created_at, updated_at)
         VALUES (?1, 'http://127.0.0.1:9/hook', NULL, NULL, ?2, ?2)",
        params![id, created_ms],
    )
    .unwrap();
}

fn insert_webhook(conn: &Connection, id: &str, sub: &str, received_ms: i64) {
    conn.prepare_cached(
        "INSERT INTO webhooks (id, subscription_id, event_type, received_at, status, attempts)
         VALUES (?1, ?2, 'test.event', ?3, 'succeeded', 1)",
    )
    .unwrap()
    .execute(params![id, sub, received_ms])
    .unwrap();
}

fn insert_attempt(conn: &Connection, webhook: &str, sub: &str, ts_ms: i64) {
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (webhook_id, subscription_id, target_url, timestamp,
             attempt_number, outcome, status_code, error, duration_ms, response_body)
         VALUES (?1, ?2, 'http://127.0.0.1:9/hook', ?3, 1, 'success', 200, NULL, 12, 'ok')",
    )
    .unwrap()
    .execute(params![webhook, sub, ts_ms])
    .unwrap();
}

fn count(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> i64 {
    conn.query_row(sql, p, |r| r.get(0)).unwrap()
}

/// Rows older than `cutoff_ms` in both purged tables.
fn old_rows(conn: &Connection, cutoff_ms: i64) -> i64 {
    count(
        conn,
        "SELECT (SELECT count(*) FROM delivery_attempts WHERE timestamp < ?1)
              + (SELECT count(*) FROM webhooks WHERE received_at < ?1)",
        [cutoff_ms],
    )
}

/// The samples of a Prometheus / OpenMetrics text page: `name{labels}` (as
/// written) to value. Comments and `# EOF` are skipped.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("metrics line with a bad value: {line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

/// One scrape of `/metrics`.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn of(server: &TestServer) -> Scrape {
        let resp = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.contains("text/plain") || content_type.contains("openmetrics-text"),
            "content-type {content_type:?}"
        );
        Scrape(parse_metrics(&resp.text().await.unwrap()))
    }

    /// A sample's value; 0 when the series does not exist (yet): label sets
    /// of a family appear on first use.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.0.contains_key(series)
    }
}

/// What moved between two scrapes.
fn delta(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

/// Waits until every series moved by at least its expected amount since
/// `before`, then checks on a fresh scrape that each moved by exactly that
/// much. (One scrape is not atomic across families: a worker may count an
/// attempt between two of them, so equality is checked once all are there.)
async fn wait_deltas(server: &TestServer, before: &Scrape, expected: &[(&str, f64)]) -> Scrape {
    eventually("the counters to move", DEADLINE, || async {
        let s = Scrape::of(server).await;
        expected
            .iter()
            .all(|(series, n)| delta(before, &s, series) >= *n)
            .then_some(())
    })
    .await;
    let after = Scrape::of(server).await;
    for (series, n) in expected {
        assert_eq!(
            delta(before, &after, series),
            *n,
            "{series}: before {}, after {}",
            before.get(series),
            after.get(series)
        );
    }
    after
}

/// The hex part of `inbound_signature`, as the logs must never show it.
fn hmac_hex(secret: &str, body: &str) -> String {
    inbound_signature(secret, body.as_bytes())["sha256=".len()..].to_string()
}

// ---------------------------------------------------------------------------
// 1. Retention purge.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_rows_older_than_the_cutoff_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = Store::open(&path, 2).expect("open and migrate");
    let now = now_ms();
    let cutoff_ms = now - 72 * HOUR_MS;
    let cutoff = webhookd::store::from_millis(cutoff_ms);

    // Old rows: more than two batches of attempts, so the batch loop runs
    // several times. One row of each table 1 ms before the cut-off goes, one
    // exactly at the cut-off stays.
    let old_attempts = 2 * webhookd::purge::BATCH + 123;
    let old_webhooks = 40;
    let recent_webhooks = 25;
    let recent_attempts = 60;
    let mut conn = open_db(&path);
    let subs = [new_id(), new_id()];
    let mut recent_ids = Vec::new();
    {
        let tx = conn.transaction().unwrap();
        for s in &subs {
            // Subscriptions far older than the retention are never purged.
            insert_subscription(&tx, s, now - 30 * DAY_MS);
        }
        for i in 0..old_webhooks {
            insert_webhook(&tx, &new_id(), &subs[i % 2], now - 10 * DAY_MS + i as i64);
        }
        insert_webhook(&tx, &new_id(), &subs[0], cutoff_ms - 1);
        for i in 0..recent_webhooks {
            let id = new_id();
            insert_webhook(&tx, &id, &subs[i % 2], now - HOUR_MS + i as i64);
            recent_ids.push(id);
        }
        let at_cutoff = new_id();
        insert_webhook(&tx, &at_cutoff, &subs[1], cutoff_ms);
        recent_ids.push(at_cutoff);
        for i in 0..old_attempts {
            insert_attempt(&tx, "w-old", &subs[i % 2], now - 5 * DAY_MS + i as i64);
        }
        insert_attempt(&tx, "w-edge", &subs[0], cutoff_ms - 1);
        for i in 0..recent_attempts {
            insert_attempt(&tx, "w-new", &subs[i % 2], now - 2 * HOUR_MS + i as i64);
        }
        insert_attempt(&tx, "w-at-cutoff", &subs[0], cutoff_ms);
        tx.commit().unwrap();
    }

    let metrics = Metrics::new();
    let purged = webhookd::purge::purge_before(&store, cutoff, &metrics)
        .await
        .expect("purge");
    assert_eq!(purged.attempts, old_attempts as u64 + 1);
    assert_eq!(purged.webhooks, old_webhooks as u64 + 1);

    // Old rows are gone; recent ones, the row at the cut-off and every
    // subscription stay.
    assert_eq!(old_rows(&conn, cutoff_ms), 0);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM delivery_attempts", []),
        recent_attempts as i64 + 1
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM delivery_attempts WHERE webhook_id = 'w-at-cutoff'",
            []
        ),
        1
    );
    let kept: HashSet<String> = conn
        .prepare("SELECT id FROM webhooks")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kept, recent_ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(count(&conn, "SELECT count(*) FROM subscriptions", []), 2);

    let samples = parse_metrics(&metrics.encode());
    assert_eq!(
        samples.get(r#"webhookd_purged_rows_total{table="delivery_attempts"}"#),
        Some(&(old_attempts as f64 + 1.0)),
        "{samples:?}"
    );
    assert_eq!(
        samples.get(r#"webhookd_purged_rows_total{table="webhooks"}"#),
        Some(&(old_webhooks as f64 + 1.0))
    );

    // A second purge finds nothing and counts nothing.
    let again = webhookd::purge::purge_before(&store, cutoff, &metrics)
        .await
        .unwrap();
    assert_eq!(again, webhookd::purge::Purged::default());
    let samples = parse_metrics(&metrics.encode());
    assert_eq!(
        samples.get(r#"webhookd_purged_rows_total{table="delivery_attempts"}"#),
        Some(&(old_attempts as f64 + 1.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_use_the_timestamp_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    drop(Store::open(&path, 1).expect("open and migrate"));
    let conn = open_db(&path);

    let expected_index = HashMap::from([
        ("delivery_attempts", "delivery_attempts_ts"),
        ("webhooks", "webhooks_received_at"),
    ]);
    let tables: HashSet<&str> = webhookd::purge::DELETES.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tables,
        expected_index.keys().copied().collect::<HashSet<_>>(),
        "the purge must cover both tables"
    );
    for (table, sql) in webhookd::purge::DELETES {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![now_ms(), webhookd::purge::BATCH as i64], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let index = expected_index[table];
        assert!(
            plan.iter()
                .any(|d| d.contains(table) && d.contains(&format!("INDEX {index}"))),
            "the batch delete of {table} does not use {index}: {plan:#?}"
        );
        for detail in &plan {
            assert!(
                !detail.starts_with(&format!("SCAN {table}")) || detail.contains("INDEX"),
                "full scan of {table} in the batch delete: {plan:#?}"
            );
            assert!(
                !detail.contains("TEMP B-TREE"),
                "the batch delete of {table} sorts instead of reading the index in order: {plan:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_of_200k_rows_runs_while_ingest_keeps_answering() {
    const OLD_ATTEMPTS: usize = 200_000;
    const OLD_WEBHOOKS: usize = 50_000;
    const MAX_POSTS: usize = 300;

    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("webhookd.db");
    drop(Store::open(&db, 1).expect("open and migrate"));

    // Back-dated rows, 4 to 10 days old, in one transaction.
    let now = now_ms();
    let legacy_sub = new_id();
    let mut conn = open_db(&db);
    {
        let tx = conn.transaction().unwrap();
        insert_subscription(&tx, &legacy_sub, now - 60 * DAY_MS);
        let mut webhook_ids = Vec::with_capacity(OLD_WEBHOOKS);
        for i in 0..OLD_WEBHOOKS {
            let id = new_id();
            insert_webhook(&tx, &id, &legacy_sub, now - 10 * DAY_MS + (i as i64) * 1000);
            webhook_ids.push(id);
        }
        for i in 0..OLD_ATTEMPTS {
            insert_attempt(
                &tx,
                &webhook_ids[i % OLD_WEBHOOKS],
                &legacy_sub,
                now - 10 * DAY_MS + (i as i64) * 200,
            );
        }
        tx.commit().unwrap();
    }
    let cutoff_ms = now - 72 * HOUR_MS;
    assert_eq!(
        old_rows(&conn, cutoff_ms),
        (OLD_ATTEMPTS + OLD_WEBHOOKS) as i64
    );

    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retention = Duration::from_secs(72 * 3600);
    let retention = config.retention;
    let receiver = Receiver::ok().await;
    // The purge starts in the background as the server starts.
    let server = TestServer::start(config).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let started = Instant::now();
    let mut ids = Vec::new();
    let mut answered_while_old_rows = 0;
    let mut old_left = i64::MAX;
    while ids.len() < MAX_POSTS && started.elapsed() < Duration::from_secs(60) {
        let body = format!(r#"{{"n": {}}}"#, ids.len());
        let (code, answer) = server.ingest(&sub, &body, &[]).await;
        assert_eq!(code, 202, "ingest during the purge: {answer}");
        ids.push(webhook_id(&answer));
        // Rows only ever go away: rows still there now were there when the
        // ingest above was answered.
        old_left = tokio::task::block_in_place(|| old_rows(&conn, cutoff_ms));
        if old_left > 0 {
            answered_while_old_rows += 1;
        } else {
            break;
        }
    }
    eprintln!(
        "{} ingests in {:?}, {answered_while_old_rows} answered while old rows existed \
         (old rows left after the loop: {old_left})",
        ids.len(),
        started.elapsed()
    );
    assert!(
        answered_while_old_rows > 0,
        "no ingest was answered while the purge had work left"
    );

    // Every old row goes; the subscription rows stay.
    eventually("the purge to finish", Duration::from_secs(90), || {
        let left = tokio::task::block_in_place(|| old_rows(&conn, cutoff_ms));
        async move { (left == 0).then_some(()) }
    })
    .await;
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM subscriptions WHERE id = ?1",
            [&legacy_sub]
        ),
        1
    );
    // The counter moves just after each batch commits.
    let nothing = Scrape(HashMap::new());
    wait_deltas(
        &server,
        &nothing,
        &[
            (
                r#"webhookd_purged_rows_total{table="delivery_attempts"}"#,
                OLD_ATTEMPTS as f64,
            ),
            (
                r#"webhookd_purged_rows_total{table="webhooks"}"#,
                OLD_WEBHOOKS as f64,
            ),
        ],
    )
    .await;

    // Every webhook ingested meanwhile is delivered and recorded.
    let got = receiver.wait_for(ids.len()).await;
    let arrived: HashSet<&str> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
    for id in &ids {
        assert!(arrived.contains(id.as_str()), "{id} never arrived");
        let status = server.wait_status(id, |s| s["status"] == "succeeded").await;
        assert_eq!(status["attempts"][0]["outcome"], "success");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM delivery_attempts WHERE subscription_id = ?1",
            [&sub]
        ),
        ids.len() as i64
    );

    // The queue keeps payloads exactly as long as the logs.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("WEBHOOKS")
        .await
        .expect("stream WEBHOOKS");
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_age, retention);
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// 2. GET /metrics.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move_as_webhooks_flow() {
    const N: usize = 12;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    // Twelve 503s in a row would open the circuit; this test counts sent
    // attempts only (the breaker's metrics have their own test).
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    // Each webhook's first attempt fails, the second succeeds.
    let receiver = Receiver::scripted(fail_first(Reply::status(503), Reply::status(204))).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let before = Scrape::of(&server).await;
    assert_eq!(before.get(r#"webhookd_build_info{version="0.1.0"}"#), 1.0);
    let mut ids = Vec::new();
    for i in 0..N {
        let (code, answer) = server.ingest(&sub, &format!(r#"{{"i": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }
    // An unknown subscription: a 404 ingest, counted under its own status.
    let (code, _) = server.ingest(&new_id(), "{}", &[]).await;
    assert_eq!(code, 404);

    let n = N as f64;
    let after = wait_deltas(
        &server,
        &before,
        &[
            ("webhookd_webhooks_accepted_total", n),
            (r#"webhookd_ingest_requests_total{status="202"}"#, n),
            (r#"webhookd_ingest_requests_total{status="404"}"#, 1.0),
            (r#"webhookd_deliveries_total{outcome="success"}"#, n),
            (r#"webhookd_deliveries_total{outcome="failed_attempt"}"#, n),
            (r#"webhookd_deliveries_total{outcome="failure"}"#, 0.0),
            ("webhookd_retries_scheduled_total", n),
            ("webhookd_webhooks_given_up_total", 0.0),
            ("webhookd_webhooks_filtered_total", 0.0),
            ("webhookd_delivery_duration_seconds_count", 2.0 * n),
        ],
    )
    .await;
    assert!(after.get("webhookd_delivery_duration_seconds_sum") > 0.0);
    assert_eq!(
        after.get(r#"webhookd_delivery_duration_seconds_bucket{le="+Inf"}"#),
        after.get("webhookd_delivery_duration_seconds_count")
    );
    assert_eq!(receiver.count(), 2 * N);

    // Gauges read at scrape time are there; once everything is acked the
    // consumer has nothing pending, and the writer committed something.
    for gauge in [
        "webhookd_consumer_pending",
        "webhookd_consumer_ack_pending",
        "webhookd_writer_queue_depth",
        "webhookd_writer_batch_size",
    ] {
        assert!(after.has(gauge), "{gauge} missing from /metrics");
    }
    let settled = eventually("the consumer to have nothing pending", DEADLINE, || async {
        let s = Scrape::of(&server).await;
        (s.get("webhookd_consumer_pending") == 0.0 && s.get("webhookd_consumer_ack_pending") == 0.0)
            .then_some(s)
    })
    .await;
    assert!(settled.get("webhookd_writer_batch_size") >= 1.0);
    assert_eq!(settled.get("webhookd_writer_queue_depth"), 0.0);
    for id in &ids {
        server.wait_status(id, |s| s["status"] == "succeeded").await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_given_up_webhooks_and_pending_messages() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), Some(nats.url()));
    let attempts = config.retry_schedule.delays().len() + 1;
    let server = TestServer::start(config).await;
    let failing = Receiver::scripted(|_, _| Reply::status(500)).await;
    let sub = server.subscribe(json!({"target_url": failing.url()})).await;

    let before = Scrape::of(&server).await;
    let (code, answer) = server.ingest(&sub, r#"{"doomed": true}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let given_up = "webhookd_webhooks_given_up_total";
    let retries = (attempts - 1) as f64;
    wait_deltas(
        &server,
        &before,
        &[
            (given_up, 1.0),
            (r#"webhookd_deliveries_total{outcome="failure"}"#, 1.0),
            (
                r#"webhookd_deliveries_total{outcome="failed_attempt"}"#,
                retries,
            ),
            ("webhookd_retries_scheduled_total", retries),
            (r#"webhookd_deliveries_total{outcome="success"}"#, 0.0),
            ("webhookd_delivery_duration_seconds_count", attempts as f64),
        ],
    )
    .await;
    assert_eq!(failing.count(), attempts);
    server
        .wait_status(&webhook, |s| s["status"] == "failed")
        .await;

    // While an attempt is in flight its message is delivered and not yet
    // acknowledged: the ack-pending gauge shows it. The receiver holds the
    // answer 1.5 s (below the 2 s delivery timeout), long enough to scrape.
    let slow = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(1500),
        ..Reply::status(200)
    })
    .await;
    let slow_sub = server.subscribe(json!({"target_url": slow.url()})).await;
    let (code, answer) = server.ingest(&slow_sub, "{}", &[]).await;
    assert_eq!(code, 202, "{answer}");
    let slow_id = webhook_id(&answer);
    slow.wait_for(1).await;
    let during = Scrape::of(&server).await;
    assert_eq!(during.get("webhookd_consumer_ack_pending"), 1.0);
    assert_eq!(during.get("webhookd_consumer_pending"), 0.0);
    server
        .wait_status(&slow_id, |s| s["status"] == "succeeded")
        .await;
    let done = eventually("the consumer to settle", DEADLINE, || async {
        let s = Scrape::of(&server).await;
        (s.get("webhookd_consumer_pending") == 0.0 && s.get("webhookd_consumer_ack_pending") == 0.0)
            .then_some(s)
    })
    .await;
    assert_eq!(delta(&before, &done, given_up), 1.0);
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// 3. Logs never carry secrets or signatures.
// ---------------------------------------------------------------------------

const SECRET: &str = "super-secret-value-123456";

/// What one logging run produced.
struct LogRun {
    log: String,
    /// Strings that must never appear in the log.
    forbidden: Vec<String>,
    /// (webhook id, subscription id, attempt number, status code or None,
    /// outcome) of every attempt, from the status API.
    attempts: Vec<(String, String, u64, Option<u64>, String)>,
}

/// Runs the real binary with `--log debug` (plus `extra` flags), creates a
/// subscription with a secret, ingests signed webhooks that are delivered
/// signed (some failing), stops the process with SIGTERM and returns its
/// stderr.
async fn logging_run(extra: &[&str]) -> LogRun {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--log", "debug", "--retry-schedule", "50ms,100ms"];
    args.extend_from_slice(extra);
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &dir.path().join("data"))
        .unwrap()
        .args(&args)
        .nats_url(nats.url());
    proc.start_healthy().await.expect("webhookd healthy");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // First attempt of each webhook fails with 500, the second succeeds.
    let not_yet = |status| Reply {
        body: "not yet".into(),
        ..Reply::status(status)
    };
    let receiver = Receiver::scripted(fail_first(not_yet(500), not_yet(200))).await;

    let mut forbidden = vec![SECRET.to_string()];
    let mut subs = Vec::new();
    for target in [receiver.url(), refused_url()] {
        let resp = http
            .post(proc.url("/subscriptions"))
            .json(&json!({"target_url": target, "secret": SECRET}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let sub: Value = resp.json().await.unwrap();
        subs.push(sub["id"].as_str().unwrap().to_string());
    }

    let ingest = |sub: &str, body: String, signature: String| {
        let req = http
            .post(proc.url(&format!("/ingest/{sub}")))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut webhooks = Vec::new();
    for i in 0..4 {
        let sub = &subs[if i == 3 { 1 } else { 0 }];
        let body = format!(r#"{{"order": {i}, "note": "signed"}}"#);
        let sig = hmac_hex(SECRET, &body);
        forbidden.push(sig.clone());
        let (code, answer) = ingest(sub, body, format!("sha256={sig}")).await;
        assert_eq!(code, 202, "{answer}");
        webhooks.push(webhook_id(&answer));
    }
    // A wrong signature is refused; it must not be logged either.
    let wrong = hmac_hex("another-secret-entirely", "{}");
    forbidden.push(wrong.clone());
    let (code, _) = ingest(&subs[0], "{}".into(), format!("sha256={wrong}")).await;
    assert_eq!(code, 401);

    // Wait until every webhook is settled: three succeeded after one
    // failure, the one to the refused port failed for good.
    let mut attempts = Vec::new();
    for id in &webhooks {
        let status = eventually(&format!("{id} settled"), DEADLINE, || async {
            let resp = http
                .get(proc.url(&format!("/status/{id}")))
                .send()
                .await
                .ok()?;
            let st: Value = resp.json().await.ok()?;
            (st["status"] == "succeeded" || st["status"] == "failed").then_some(st)
        })
        .await;
        for a in status["attempts"].as_array().unwrap() {
            attempts.push((
                id.clone(),
                status["subscription_id"].as_str().unwrap().to_string(),
                a["attempt_number"].as_u64().unwrap(),
                a["status_code"].as_u64(),
                a["outcome"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        attempts.iter().filter(|a| a.4 == "success").count(),
        3,
        "{attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|a| a.4 == "failure").count(),
        1,
        "{attempts:?}"
    );

    // The outbound signatures the receiver saw, whole and their base64 part.
    let received = receiver.received();
    assert_eq!(received.len(), 6);
    for r in &received {
        let sig = r
            .header("webhook-signature")
            .expect("deliveries are signed")
            .to_string();
        let b64 = sig.strip_prefix("v1,").expect("v1 signature").to_string();
        forbidden.push(sig);
        forbidden.push(b64);
    }

    proc.sigterm().expect("SIGTERM");
    let (status, log) = proc.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "webhookd exited with {status}:\n{log}");
    LogRun {
        log,
        forbidden,
        attempts,
    }
}

fn assert_nothing_secret(run: &LogRun) {
    for needle in &run.forbidden {
        if let Some(line) = run.log.lines().find(|l| l.contains(needle.as_str())) {
            panic!("the log carries {needle:?}:\n{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_never_carry_secrets_or_signatures() {
    let run = logging_run(&[]).await;
    // The grep below means something only if debug logging was on and the
    // deliveries were logged.
    assert!(
        run.log.contains("webhook accepted"),
        "no debug line in the log"
    );
    assert_eq!(
        run.log
            .lines()
            .filter(|l| l.contains("delivery attempt"))
            .count(),
        run.attempts.len(),
        "one `delivery attempt` line per attempt"
    );
    assert!(run.log.contains("webhookd stopped"));
    assert_nothing_secret(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_carry_one_line_per_attempt() {
    let run = logging_run(&["--log-format", "json"]).await;
    assert_nothing_secret(&run);

    let mut lines = Vec::new();
    for line in run.log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "log line is not an object: {line}");
        lines.push(v);
    }
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "no debug line in the log"
    );

    // One info line per attempt carrying webhook_id, subscription_id,
    // attempt, outcome, status and duration_ms itself: at info there is no
    // `delivery` span around it (at debug, as here, there is).
    let mut logged: HashMap<(String, u64), Vec<&Value>> = HashMap::new();
    for l in lines.iter().filter(|l| l["message"] == "delivery attempt") {
        assert_eq!(l["level"], "INFO", "{l}");
        assert_eq!(l["span"]["name"], "delivery", "{l}");
        let webhook = l["webhook_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no webhook_id: {l}"));
        let attempt = l["attempt"]
            .as_u64()
            .unwrap_or_else(|| panic!("no attempt number: {l}"));
        logged
            .entry((webhook.to_string(), attempt))
            .or_default()
            .push(l);
    }
    assert_eq!(
        logged.len(),
        run.attempts.len(),
        "attempt lines {:?} vs attempts {:?}",
        logged.keys(),
        run.attempts
    );
    for (webhook, sub, attempt, status, outcome) in &run.attempts {
        let found = logged
            .get(&(webhook.clone(), *attempt))
            .unwrap_or_else(|| panic!("no log line for {webhook} attempt {attempt}"));
        assert_eq!(found.len(), 1, "{found:?}");
        let l = found[0];
        assert_eq!(l["subscription_id"], sub.as_str(), "{l}");
        assert_eq!(l["outcome"], outcome.as_str(), "{l}");
        assert!(l["duration_ms"].is_u64(), "{l}");
        match status {
            Some(code) => assert_eq!(l["status"].as_u64(), Some(*code), "{l}"),
            // No answer (connection refused): no status, but the error.
            None => {
                assert!(l.get("status").is_none(), "{l}");
                assert!(l["error"].is_string(), "{l}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 5. /readyz.
// ---------------------------------------------------------------------------

async fn readyz(server: &TestServer) -> (u16, Value) {
    server.call("GET", "/readyz", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_nats_and_sqlite() {
    let mut nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready");

    // NATS gone: not ready, and the answer says why.
    nats.kill9().expect("kill nats-server");
    let body = eventually("readyz 503 without NATS", DEADLINE, || async {
        let (code, body) = readyz(&server).await;
        (code == 503).then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nats"),
        "{body}"
    );
    // /healthz is liveness only: still 200.
    assert_eq!(server.call("GET", "/healthz", None).await.0, 200);

    nats.restart().await.expect("restart nats-server");
    eventually("readyz 200 after NATS is back", DEADLINE, || async {
        (readyz(&server).await.0 == 200).then_some(())
    })
    .await;

    // SQLite's write lock held elsewhere: not ready until it is released.
    let db = server.data_dir.join("webhookd.db");
    let locker = open_db(&db);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = eventually("readyz 503 while SQLite is locked", DEADLINE, || async {
        let (code, body) = readyz(&server).await;
        (code == 503).then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("sqlite"), "{body}");
    assert!(!message.contains("nats"), "{body}");
    locker.execute_batch("ROLLBACK").unwrap();
    eventually(
        "readyz 200 after the lock is released",
        DEADLINE,
        || async { (readyz(&server).await.0 == 200).then_some(()) },
    )
    .await;
    drop(locker);
    server.stop().await.unwrap();
}
