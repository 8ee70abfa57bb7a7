//! Isolation between subscriptions: a hanging or refusing receiver must not
//! hold up a healthy one (fair scheduling), the circuit breaker stops the
//! traffic to a receiver that keeps failing and lets it back in through one
//! probe at a time, 410 disables a subscription, 429 with Retry-After is
//! honoured and throttles, retry delays are spread by the jitter, and a
//! kill -9 in the middle of all that loses nothing. Real nats-server, real
//! SQLite, real receivers on loopback.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use webhookd::config::Config;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::net::refused_url;
use webhookd_harness::receiver::{assert_count_stays, Options, Received, Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_harness::webhookd::Webhookd;

/// A receiver that never answers in time: every request is held far longer
/// than any delivery timeout used here.
async fn hanging() -> Receiver {
    Receiver::scripted(|_, _| Reply {
        delay: Duration::from_secs(120),
        ..Reply::status(200)
    })
    .await
}

/// The samples of a `/metrics` page: `name{labels}` (as written) to value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
        .collect()
}

/// One sample of `/metrics` (0 when absent).
async fn metric(server: &TestServer, series: &str) -> f64 {
    let (code, page) = server.call("GET", "/metrics", None).await;
    assert_eq!(code, 200, "{page}");
    let text = page.as_str().expect("a text page");
    parse_metrics(text).get(series).copied().unwrap_or(0.0)
}

/// `GET /subscriptions/{id}`.
async fn subscription(server: &TestServer, id: &str) -> Value {
    let (code, sub) = server
        .call("GET", &format!("/subscriptions/{id}"), None)
        .await;
    assert_eq!(code, 200, "{sub}");
    sub
}

/// Every attempt of a subscription, newest first.
async fn attempts_of(server: &TestServer, sub: &str) -> Vec<Value> {
    let (code, attempts) = server
        .call(
            "GET",
            &format!("/subscriptions/{sub}/attempts?limit=1000"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{attempts}");
    attempts.as_array().expect("an array").clone()
}

fn is_not_sent(attempt: &Value) -> bool {
    attempt["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("not sent: circuit open until"))
}

fn timestamp(attempt: &Value) -> DateTime<Utc> {
    attempt["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no timestamp in {attempt}"))
        .with_timezone(&Utc)
}

/// Ingests one webhook per body, noting when each was posted.
async fn post_all(server: &TestServer, sub: &str, n: usize, tag: &str) -> Vec<(String, Instant)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let posted = Instant::now();
        let (code, answer) = server
            .ingest(sub, &format!(r#"{{"{tag}": {i}}}"#), &[])
            .await;
        assert_eq!(code, 202, "{answer}");
        out.push((webhook_id(&answer), posted));
    }
    out
}

/// How long after its post each webhook was first answered 2xx by
/// `receiver` (waits until every one was, at most [`HEALTHY_DEADLINE`]),
/// sorted.
async fn latencies(receiver: &Receiver, posted: &[(String, Instant)]) -> Vec<Duration> {
    let started = Instant::now();
    let got: Vec<Received> = loop {
        let got = receiver.received();
        let ok: HashSet<&str> = got
            .iter()
            .filter(|r| r.answer.ok())
            .map(Received::webhook_id)
            .collect();
        let done = posted
            .iter()
            .filter(|(id, _)| ok.contains(id.as_str()))
            .count();
        if done == posted.len() {
            break got;
        }
        assert!(
            started.elapsed() < HEALTHY_DEADLINE,
            "only {done} of {} healthy webhooks answered 2xx after {HEALTHY_DEADLINE:?}",
            posted.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut first: HashMap<&str, Instant> = HashMap::new();
    for r in got.iter().filter(|r| r.answer.ok()) {
        let e = first.entry(r.webhook_id()).or_insert(r.at);
        *e = (*e).min(r.at);
    }
    let mut lat: Vec<Duration> = posted
        .iter()
        .map(|(id, at)| first[id.as_str()].saturating_duration_since(*at))
        .collect();
    lat.sort_unstable();
    lat
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Hanging webhooks hold their attempts for the whole delivery timeout; a
/// scheduler without fairness would give the healthy ones no slot for that
/// long (2 s here). The bound leaves room for two shared cores.
const PROMPT: Duration = Duration::from_millis(1500);

/// Longest wait for the healthy webhooks before the latencies are checked
/// (fails sooner than the harness's deadline when they are starved).
const HEALTHY_DEADLINE: Duration = Duration::from_secs(8);

/// 40 webhooks to a receiver that never answers, then 50 to a healthy one,
/// with 8 worker slots, 2 s delivery timeout and the given per-subscription
/// cap: every healthy webhook must be delivered promptly.
async fn hanging_beside_healthy(subscription_concurrency: usize) {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.delivery_concurrency = 8;
    config.subscription_concurrency = subscription_concurrency;
    config.delivery_timeout = Duration::from_secs(2);
    // The scheduler is the subject: without the breaker the hanging
    // receiver keeps being attempted, and keeps its attempts hanging.
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    let stuck = hanging().await;
    let healthy = Receiver::ok().await;
    let stuck_sub = server.subscribe(json!({"target_url": stuck.url()})).await;
    let healthy_sub = server.subscribe(json!({"target_url": healthy.url()})).await;

    post_all(&server, &stuck_sub, 40, "stuck").await;
    // Its attempts hold slots now (each for 2 s).
    stuck.wait_for(4).await;
    let posted = post_all(&server, &healthy_sub, 50, "healthy").await;
    let lat = latencies(&healthy, &posted).await;
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    eprintln!(
        "hanging beside healthy (cap {subscription_concurrency}): p50 {p50:?} p99 {p99:?} max {max:?}"
    );
    assert!(
        max < PROMPT,
        "a healthy webhook waited {max:?} beside a hanging receiver (p50 {p50:?}, p99 {p99:?})"
    );
    assert!(p50 < Duration::from_millis(500), "p50 {p50:?}");
    // The hanging receiver still had work the whole time: its 40 first
    // attempts take 2 s each, a few at a time.
    assert!(
        stuck.count() < 40,
        "the hanging receiver was done ({} requests) before the healthy webhooks were measured",
        stuck.count()
    );
    server.stop().await.unwrap();
}

/// The per-subscription cap (default 64) above the slots (8): a hanging
/// lane whose pace is not known yet must not fill the parking (it did once,
/// sized by its cap, and the pull stopped for every subscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_a_healthy_one() {
    hanging_beside_healthy(Config::defaults().subscription_concurrency).await;
}

/// The same with a cap (4) no higher than the hanging lane's fair share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_capped_at_its_share_does_not_delay_a_healthy_one() {
    hanging_beside_healthy(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_hanging_subscriptions_do_not_delay_a_healthy_one() {
    const STUCK: usize = 30;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.delivery_concurrency = 64;
    config.delivery_timeout = Duration::from_secs(2);
    // The scheduler is the subject (see above).
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    // One hanging receiver behind 30 subscriptions: the scheduler works per
    // subscription.
    let stuck = hanging().await;
    let healthy = Receiver::ok().await;
    let mut stuck_subs = Vec::new();
    for _ in 0..STUCK {
        stuck_subs.push(server.subscribe(json!({"target_url": stuck.url()})).await);
    }
    let healthy_sub = server.subscribe(json!({"target_url": healthy.url()})).await;

    // Three rounds, one webhook per subscription each: two run per lane
    // (64 slots / 31 shares), the third is parked.
    for round in 0..3 {
        for sub in &stuck_subs {
            let (code, answer) = server
                .ingest(sub, &format!(r#"{{"round": {round}}}"#), &[])
                .await;
            assert_eq!(code, 202, "{answer}");
        }
    }
    let held = stuck.wait_for(2 * STUCK).await;
    let lanes: HashSet<&str> = held.iter().map(Received::webhook_id).collect();
    assert!(
        lanes.len() >= 2 * STUCK,
        "{} distinct webhooks",
        lanes.len()
    );

    let posted = post_all(&server, &healthy_sub, 30, "healthy").await;
    let lat = latencies(&healthy, &posted).await;
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
    );
    eprintln!("30 hanging beside healthy: p50 {p50:?} p99 {p99:?} max {max:?}");
    assert!(
        max < PROMPT,
        "a healthy webhook waited {max:?} beside {STUCK} hanging subscriptions (p50 {p50:?})"
    );
    assert!(p50 < Duration::from_millis(500), "p50 {p50:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_opens_the_circuit_and_a_single_probe_closes_it() {
    const N: usize = 6;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.circuit_failures = 3;
    config.circuit_cooldown = Duration::from_millis(300);
    config.circuit_cooldown_max = Duration::from_millis(600);
    let cooldown_max = config.circuit_cooldown_max;
    // Long enough a life (6.3 s span) that no webhook ends while the
    // receiver is away; deferrals use no step.
    config.retry_schedule = "100ms,200ms,400ms,800ms,1600ms,3200ms".parse().unwrap();
    let longest_step = config.retry_schedule.max_delay();
    let server = TestServer::start(config).await;

    // A port nothing listens on (bound, then released): connections are
    // refused until the receiver binds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}/hook");
    let sub = server.subscribe(json!({ "target_url": target })).await;
    let mut ids = Vec::new();
    for i in 0..N {
        let (code, answer) = server.ingest(&sub, &format!(r#"{{"i": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }

    // Open after three failures in a row.
    let first_open = eventually("the circuit to open", DEADLINE, || async {
        let s = subscription(&server, &sub).await;
        let h = &s["health"];
        (h["circuit"] == "open").then(|| h.clone())
    })
    .await;
    assert!(
        first_open["consecutive_failures"].as_u64().unwrap() >= 3,
        "{first_open}"
    );
    assert_eq!(first_open["max_in_flight"], 0, "{first_open}");
    let until = first_open["circuit_open_until"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        metric(&server, r#"webhookd_circuits{state="open"}"#).await,
        1.0
    );
    // Webhooks are deferred with a "not sent" row while it is open...
    eventually("a not-sent attempt row", DEADLINE, || async {
        attempts_of(&server, &sub)
            .await
            .iter()
            .any(is_not_sent)
            .then_some(())
    })
    .await;
    assert!(metric(&server, "webhookd_attempts_not_sent_total").await >= 1.0);
    // ...and a probe goes after the cool-down, fails, and reopens it for
    // longer.
    eventually("a failed probe to reopen the circuit", DEADLINE, || async {
        let h = subscription(&server, &sub).await["health"].clone();
        (h["circuit"] == "open" && h["circuit_open_until"].as_str() > Some(until.as_str()))
            .then_some(())
    })
    .await;

    // While it was open, sent attempts (the probes) went one at a time,
    // a cool-down apart: never a burst. Rows after the first deferral
    // (plus a margin for attempts admitted just before the opening).
    let rows = attempts_of(&server, &sub).await;
    let first_deferral = rows
        .iter()
        .filter(|a| is_not_sent(a))
        .map(timestamp)
        .min()
        .unwrap();
    for a in rows.iter().filter(|a| is_not_sent(a)) {
        assert_eq!(a["status_code"], Value::Null, "{a}");
        assert_eq!(a["duration_ms"], 0, "{a}");
    }
    let mut probes: Vec<DateTime<Utc>> = rows
        .iter()
        .filter(|a| !is_not_sent(a))
        .map(timestamp)
        .filter(|t| *t > first_deferral + chrono::Duration::milliseconds(100))
        .collect();
    probes.sort();
    assert!(!probes.is_empty(), "no probe while open: {rows:?}");
    for w in probes.windows(2) {
        let gap = (w[1] - w[0]).to_std().unwrap();
        assert!(
            gap >= Duration::from_millis(250),
            "two sent attempts {gap:?} apart while the circuit was open: {probes:?}"
        );
    }

    // The receiver comes back on the same port; its first answer (the
    // probe's) takes 300 ms.
    let back = Instant::now();
    let receiver = Receiver::start(
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            keep: true,
        },
        |n, _| Reply {
            delay: if n == 0 {
                Duration::from_millis(300)
            } else {
                Duration::ZERO
            },
            ..Reply::status(200)
        },
    )
    .await
    .expect("the refused port is free again");
    for id in &ids {
        server.wait_status(id, |s| s["status"] == "succeeded").await;
    }
    let got = receiver.received();
    let first = got[0].at.duration_since(back);
    assert!(
        first <= cooldown_max + Duration::from_secs(1),
        "first request {first:?} after the receiver came back (cool-down at most {cooldown_max:?})"
    );
    // Half-open: nothing else while the probe's answer was pending.
    let after_probe = got[1].at.duration_since(got[0].at);
    assert!(
        after_probe >= Duration::from_millis(300),
        "a second request {after_probe:?} after the probe, before its answer"
    );
    // The others follow: a webhook deferred behind the circuit comes back
    // with the probe time; one whose own sent attempt (a probe) failed
    // waits for its schedule step, at most the longest.
    let last = got.iter().map(|r| r.at).max().unwrap().duration_since(back);
    assert!(
        last <= cooldown_max + longest_step + Duration::from_secs(1),
        "deliveries resumed only {last:?} after the receiver came back"
    );
    // Each webhook once: deferrals were not sent, and nothing twice.
    let seen: HashSet<&str> = got.iter().map(Received::webhook_id).collect();
    assert_eq!(
        got.len(),
        N,
        "{:?}",
        got.iter().map(|r| r.webhook_id()).collect::<Vec<_>>()
    );
    assert_eq!(seen.len(), N);
    let h = subscription(&server, &sub).await["health"].clone();
    assert_eq!(h["circuit"], "closed", "{h}");
    assert_eq!(h["consecutive_failures"], 0, "{h}");
    assert_eq!(
        metric(&server, r#"webhookd_circuits{state="open"}"#).await,
        0.0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_after_one_request_until_enabled_again() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    // 410 to the first request, 200 to every later one.
    let receiver = Receiver::scripted(|n, _| Reply::status(if n == 0 { 410 } else { 200 })).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let given_up = "webhookd_webhooks_given_up_total";
    assert_eq!(metric(&server, given_up).await, 0.0);

    let (code, answer) = server.ingest(&sub, r#"{"n": 1}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let first = webhook_id(&answer);
    let disabled = eventually("the subscription to be disabled", DEADLINE, || async {
        let s = subscription(&server, &sub).await;
        (s["state"] == "disabled").then_some(s)
    })
    .await;
    assert_eq!(receiver.count(), 1, "exactly one request before disabling");
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("410"), "{disabled}");
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    // Its webhook ends failed: the retry finds the subscription disabled.
    let status = server
        .wait_status(&first, |s| s["status"] == "failed")
        .await;
    assert_eq!(status["attempts"][0]["status_code"], 410, "{status}");
    assert_eq!(
        metric(&server, "webhookd_subscriptions_disabled").await,
        1.0
    );

    // Ingest still answers 202, with the webhook failed and why.
    let mut refused = Vec::new();
    for i in 0..3 {
        let (code, answer) = server
            .ingest(&sub, &format!(r#"{{"while_disabled": {i}}}"#), &[])
            .await;
        assert_eq!(code, 202, "{answer}");
        assert_eq!(answer["status"], "failed", "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains("disabled"),
            "{answer}"
        );
        refused.push(webhook_id(&answer));
    }
    for id in &refused {
        let s = server.wait_status(id, |_| true).await;
        assert_eq!(s["status"], "failed", "{s}");
    }
    // The worker took each queued message and dropped it (given up: the
    // first webhook and these three); none reached the receiver. The
    // window after that is a bounded extra observation.
    eventually("4 webhooks given up", DEADLINE, || async {
        (metric(&server, given_up).await >= 4.0).then_some(())
    })
    .await;
    assert_count_stays(&receiver, 1, Duration::from_millis(300)).await;
    assert_eq!(metric(&server, given_up).await, 4.0);

    // Enabled again: the next webhook is delivered.
    let (code, enabled) = server
        .call(
            "PATCH",
            &format!("/subscriptions/{sub}"),
            Some(json!({"state": "active"})),
        )
        .await;
    assert_eq!(code, 200, "{enabled}");
    assert_eq!(enabled["state"], "active");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["health"]["circuit"], "closed");
    let (code, answer) = server.ingest(&sub, r#"{"n": 2}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["status"], "pending", "{answer}");
    let next = webhook_id(&answer);
    server
        .wait_status(&next, |s| s["status"] == "succeeded")
        .await;
    let got = receiver.received();
    let ids: Vec<&str> = got.iter().map(Received::webhook_id).collect();
    assert_eq!(ids, [first.as_str(), next.as_str()]);
    assert_eq!(
        metric(&server, "webhookd_subscriptions_disabled").await,
        0.0
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_is_honoured_and_throttles() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    // The first step (100 ms) is what a retry would wait without the
    // Retry-After; the schedule's longest step (1 s) caps what it may ask.
    config.retry_schedule = "100ms,1s".parse().unwrap();
    config.subscription_concurrency = 4;
    let server = TestServer::start(config).await;
    let receiver = Receiver::scripted(|n, _| {
        if n == 0 {
            Reply {
                headers: vec![("retry-after", "1".to_string())],
                ..Reply::status(429)
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let (code, answer) = server.ingest(&sub, r#"{"n": 1}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    // Throttled: the 429 halved the attempts it may have in flight (4 → 2).
    receiver.wait_for(1).await;
    let health = eventually("the throttle to show", DEADLINE, || async {
        let h = subscription(&server, &sub).await["health"].clone();
        (h["max_in_flight"] == 2).then_some(h)
    })
    .await;
    assert_eq!(health["circuit"], "closed", "{health}");
    assert_eq!(
        metric(&server, "webhookd_subscriptions_throttled").await,
        1.0
    );

    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "the retry came {gap:?} after the 429, before its Retry-After: 1"
    );
    assert!(gap < Duration::from_secs(3), "the retry came {gap:?} after");
    let codes: Vec<&Value> = status["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(429), &json!(200)], "{status}");
    assert_eq!(status["attempts"][0]["outcome"], "failed_attempt");
    // One success gives one slot back (2 → 3): still below the cap.
    let h = subscription(&server, &sub).await["health"].clone();
    assert_eq!(h["max_in_flight"], 3, "{h}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_gaps_are_spread_within_the_jitter() {
    const N: usize = 10;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_jitter = 0.2;
    config.retry_schedule = "200ms,200ms,200ms".parse().unwrap();
    // Forty failures in a row would open the circuit; retries are the
    // subject.
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    let receiver = Receiver::scripted(|_, _| Reply::status(500)).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let mut ids = Vec::new();
    for i in 0..N {
        let (code, answer) = server.ingest(&sub, &format!(r#"{{"i": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }
    for id in &ids {
        server.wait_status(id, |s| s["status"] == "failed").await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), N * 4);
    let mut gaps = Vec::new();
    for id in &ids {
        let at: Vec<Instant> = got
            .iter()
            .filter(|r| r.webhook_id() == id)
            .map(|r| r.at)
            .collect();
        assert_eq!(at.len(), 4, "{id}");
        gaps.extend(at.windows(2).map(|w| w[1].duration_since(w[0])));
    }
    // The NAK delay starts after the answer: a gap is never shorter than
    // the jittered delay (≥ 160 ms); the upper bound allows for scheduling.
    let low = Duration::from_millis(160);
    let high = Duration::from_millis(240) + Duration::from_millis(500);
    for g in &gaps {
        assert!(*g >= low, "gap {g:?} below 0.8 × 200 ms: {gaps:?}");
        assert!(*g <= high, "gap {g:?} far above 1.2 × 200 ms: {gaps:?}");
    }
    // Spread both ways: without jitter no gap would be under the step, and
    // 30 draws all on one side are very unlikely (< 1e-5).
    let short = gaps
        .iter()
        .filter(|g| **g < Duration::from_millis(195))
        .count();
    let long = gaps
        .iter()
        .filter(|g| **g > Duration::from_millis(215))
        .count();
    assert!(short >= 1 && long >= 1, "gaps not spread: {gaps:?}");
    let distinct: HashSet<u128> = gaps.iter().map(Duration::as_millis).collect();
    assert!(distinct.len() >= 2, "{gaps:?}");
    server.stop().await.unwrap();
}

/// `method path` against a webhookd child process.
async fn call(
    http: &reqwest::Client,
    proc: &Webhookd,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(method, proc.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_beside_hanging_and_refusing_receivers_loses_nothing() {
    // A message in flight at the kill comes back after the consumer's ack
    // wait (30 s at least): that is most of this test's time.
    const RECOVERY: Duration = Duration::from_secs(90);
    const HEALTHY: usize = 30;
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &dir.path().join("data"))
        .unwrap()
        .nats_url(nats.url())
        .args(&[
            "--retry-schedule",
            "200ms,400ms,800ms",
            "--retry-jitter",
            "0",
            "--delivery-concurrency",
            "8",
            "--delivery-timeout",
            "1s",
            "--connect-timeout",
            "1s",
            "--circuit-failures",
            "3",
            "--circuit-cooldown",
            "200ms",
            "--circuit-cooldown-max",
            "1s",
            "--log",
            "warn",
        ]);
    proc.start().await.expect("webhookd ready");

    // Healthy answers 200 after 100 ms: deliveries are under way at the kill.
    let healthy = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(100),
        ..Reply::status(200)
    })
    .await;
    let stuck = hanging().await;
    let subs = proc
        .subscribe_all(&[healthy.url(), stuck.url(), refused_url()])
        .await
        .unwrap();
    let (healthy_sub, stuck_sub, refused_sub) = (&subs[0], &subs[1], &subs[2]);

    let ingest = |sub: String, i: usize| {
        let (http, url) = (http.clone(), proc.url(&format!("/ingest/{sub}")));
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"i": {i}}}"#))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            webhook_id(&resp.json::<Value>().await.unwrap())
        }
    };
    let mut bad = Vec::new();
    for i in 0..4 {
        bad.push(ingest(stuck_sub.clone(), i).await);
    }
    for i in 0..6 {
        bad.push(ingest(refused_sub.clone(), i).await);
    }
    let mut good = Vec::new();
    for i in 0..HEALTHY {
        good.push(ingest(healthy_sub.clone(), i).await);
    }

    // Mid-flight: the refusing receiver's circuit open, the hanging one
    // holding attempts, healthy deliveries under way.
    eventually(
        "the refusing receiver's circuit to open",
        DEADLINE,
        || async {
            let (_, s) = call(
                &http,
                &proc,
                "GET",
                &format!("/subscriptions/{refused_sub}"),
                None,
            )
            .await;
            (s["health"]["circuit"] == "open").then_some(())
        },
    )
    .await;
    stuck.wait_for(1).await;
    healthy.wait_for(3).await;
    let before_kill = healthy.first_ok().len();
    assert!(
        before_kill < HEALTHY,
        "all healthy webhooks delivered before the kill"
    );
    proc.kill9().expect("kill -9 webhookd");
    proc.start().await.expect("webhookd ready again");

    // Every accepted healthy webhook is delivered (at least once)...
    eventually("every healthy webhook answered 2xx", RECOVERY, || async {
        let ok = healthy.first_ok();
        good.iter().all(|id| ok.contains_key(id)).then_some(())
    })
    .await;
    for id in &good {
        eventually(&format!("{id} succeeded"), RECOVERY, || async {
            let (code, s) = call(&http, &proc, "GET", &format!("/status/{id}"), None).await;
            (code == 200 && s["status"] == "succeeded").then_some(())
        })
        .await;
    }
    // ...and every webhook of the bad receivers is accounted for: it ends
    // failed, with its attempts logged; none vanishes.
    for id in &bad {
        let s = eventually(&format!("{id} failed"), RECOVERY, || async {
            let (code, s) = call(&http, &proc, "GET", &format!("/status/{id}"), None).await;
            assert_eq!(code, 200, "{id} unknown after the restart: {s}");
            (s["status"] == "failed").then_some(s)
        })
        .await;
        let attempts = s["attempts"].as_array().unwrap();
        assert!(!attempts.is_empty(), "{s}");
        assert_eq!(attempts.last().unwrap()["outcome"], "failure", "{s}");
    }
    // Nothing foreign reached the receivers.
    let all: HashSet<&str> = good.iter().chain(&bad).map(String::as_str).collect();
    for r in healthy.received().iter().chain(stuck.received().iter()) {
        assert!(all.contains(r.webhook_id()), "{}", r.webhook_id());
    }
    eprintln!(
        "kill -9: {before_kill} of {HEALTHY} healthy delivered at the kill; all settled after {:?}",
        started.elapsed()
    );
    proc.term(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_accepted_just_before_a_kill9_are_known_right_after_the_restart() {
    // The writer holds ingest's pending rows back for a moment (a fast first
    // attempt writes the whole row instead); the attempts to this receiver
    // hang, so at the kill the rows exist only in memory. The restart
    // writes them from the stream before it answers.
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &dir.path().join("data"))
        .unwrap()
        .nats_url(nats.url())
        .args(&["--delivery-timeout", "60s"]);
    proc.start().await.expect("webhookd ready");
    let stuck = hanging().await;
    let sub = proc.subscribe(&stuck.url()).await.unwrap();
    let ids = proc.ingest_numbered(&sub, 20).await.unwrap();
    proc.kill9().expect("kill -9 webhookd");
    proc.start().await.expect("webhookd ready again");
    for id in &ids {
        let (code, s) = call(&http, &proc, "GET", &format!("/status/{id}"), None).await;
        assert_eq!(code, 200, "{id} unknown right after the restart: {s}");
        assert_eq!(s["status"], "pending", "{s}");
    }
}
