//! Crashes and restarts: nats-server killed with SIGKILL, webhookd stopped
//! and started again on the same data, NATS unreachable at ingest. Every
//! accepted webhook must still be delivered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE};

/// Long enough for a redelivery after JetStream's ack wait (30 s at least,
/// the consumer's `ack_wait`), which is what a NAK lost in a crash costs.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

/// Webhook ids the receiver answered with a 2xx, shared with its script.
type Answered = Arc<Mutex<HashSet<String>>>;

/// Waits until every id in `ids` was answered 2xx by the receiver and its
/// status is `succeeded`.
async fn wait_all_delivered(server: &TestServer, answered: &Answered, ids: &[String]) {
    eventually(
        "every accepted webhook answered 2xx",
        RECOVERY_DEADLINE,
        || async {
            let done = answered.lock().unwrap();
            ids.iter().all(|id| done.contains(id)).then_some(())
        },
    )
    .await;
    for id in ids {
        eventually(&format!("{id} succeeded"), RECOVERY_DEADLINE, || async {
            let (code, status) = server.call("GET", &format!("/status/{id}"), None).await;
            (code == 200 && status["status"] == "succeeded").then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kill9_while_queued_and_retrying_loses_nothing() {
    let started = Instant::now();
    let mut nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "1s".parse().unwrap();
    // Every webhook's first attempt fails on purpose: with the breaker on,
    // those failures in a row would open the circuit and defer webhooks to
    // the end of this one-second schedule. Crash recovery is the subject.
    config.circuit_failures = 0;
    // Few workers and a slow first answer: when NATS dies, some webhooks are
    // retrying (NAKed with a delay), some in flight, some not yet taken.
    config.delivery_concurrency = 2;
    let server = TestServer::start(config).await;

    // Each webhook's first attempt fails (keyed by webhook-id); later ones
    // succeed.
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let answered: Answered = Arc::default();
    let (script_seen, script_answered) = (seen.clone(), answered.clone());
    let receiver = Receiver::scripted(move |_, req| {
        let id = req.header("webhook-id").unwrap_or_default().to_string();
        let n = {
            let mut seen = script_seen.lock().unwrap();
            let n = seen.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        if n == 1 {
            Reply {
                delay: Duration::from_millis(50),
                ..Reply::status(500)
            }
        } else {
            script_answered.lock().unwrap().insert(id);
            Reply::status(200)
        }
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let mut ids = Vec::new();
    for i in 0..20 {
        let (code, answer) = server.ingest(&sub, &format!(r#"{{"i": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }
    receiver.wait_for(6).await;
    nats.kill9().expect("kill nats-server");
    let at_kill = seen.lock().unwrap().len();
    assert!(
        at_kill < ids.len(),
        "all {at_kill} webhooks were attempted before the kill: nothing was queued"
    );
    nats.restart().await.expect("restart nats-server");

    // Messages NAKed (or in flight) just before the kill lose their delay
    // and come back after the consumer's ack_wait (30 s at least): early,
    // never lost. That is why this test takes about 30 s.
    wait_all_delivered(&server, &answered, &ids).await;
    // No webhook id the receiver saw is foreign to this test.
    let all: HashSet<&String> = ids.iter().collect();
    assert!(seen.lock().unwrap().keys().all(|k| all.contains(k)));
    eprintln!(
        "nats kill -9: {at_kill} of 20 attempted at the kill; all delivered after {:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhookd_restart_on_the_same_data_loses_nothing() {
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    // Two steps: the scheduler may give the first run's four requests to
    // two webhooks (a first attempt and a retry each); with one step those
    // would end `failure` before the restart.
    config.retry_schedule = "1s,1s".parse().unwrap();
    // Every webhook's first attempt fails on purpose: with the breaker on,
    // those failures in a row would open the circuit and defer webhooks to
    // the end of this one-second schedule. Crash recovery is the subject.
    config.circuit_failures = 0;
    config.delivery_concurrency = 2;
    let server = TestServer::start(config).await;

    // While `healthy` is false the receiver answers 500 (slowly); after the
    // restart it answers 200.
    let healthy = Arc::new(AtomicBool::new(false));
    let answered: Answered = Arc::default();
    let (script_healthy, script_answered) = (healthy.clone(), answered.clone());
    let receiver = Receiver::scripted(move |_, req| {
        if script_healthy.load(Ordering::SeqCst) {
            let id = req.header("webhook-id").unwrap_or_default().to_string();
            script_answered.lock().unwrap().insert(id);
            Reply::status(200)
        } else {
            Reply {
                delay: Duration::from_millis(100),
                ..Reply::status(500)
            }
        }
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let mut ids = Vec::new();
    for i in 0..12 {
        let (code, answer) = server.ingest(&sub, &format!(r#"{{"i": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }
    receiver.wait_for(4).await;
    server.stop().await.unwrap();
    let before_restart = receiver.count();
    assert!(answered.lock().unwrap().is_empty());

    healthy.store(true, Ordering::SeqCst);
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "1s,1s".parse().unwrap();
    // Every webhook's first attempt fails on purpose: with the breaker on,
    // those failures in a row would open the circuit and defer webhooks to
    // the end of this one-second schedule. Crash recovery is the subject.
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    wait_all_delivered(&server, &answered, &ids).await;

    // The attempt log of both runs is in the same SQLite file. Delivery is
    // at least once, so a webhook may have more than one success; but each
    // ended in one, and attempt numbers (JetStream's delivery count) stay
    // small: one failure in the first run, at most one hand-back or lost
    // pull at the stop, then the successful attempt.
    let mut failed_first = 0;
    for id in &ids {
        let (_, status) = server.call("GET", &format!("/status/{id}"), None).await;
        assert_eq!(status["status"], "succeeded", "{status}");
        let attempts = status["attempts"].as_array().unwrap();
        assert!(
            attempts.iter().any(|a| a["outcome"] == "success"),
            "{status}"
        );
        for a in attempts {
            let n = a["attempt_number"].as_u64().unwrap();
            assert!((1..=3).contains(&n), "attempt number {n}: {status}");
        }
        if attempts.iter().any(|a| a["outcome"] == "failed_attempt") {
            failed_first += 1;
        }
    }
    assert!(failed_first >= 1, "no attempt of the first run was logged");
    eprintln!(
        "webhookd restart: {before_restart} requests before the stop; all delivered after {:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

/// `/readyz`'s status code.
async fn readyz(server: &TestServer) -> u16 {
    server.call("GET", "/readyz", None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_means_503_at_ingest_and_not_ready() {
    let mut nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    assert_eq!(readyz(&server).await, 200);

    nats.kill9().expect("kill nats-server");
    eventually("/readyz to answer 503", DEADLINE, || async {
        (readyz(&server).await == 503).then_some(())
    })
    .await;

    let resp = server
        .http
        .post(server.url(&format!("/ingest/{sub}")))
        .header("content-type", "application/json")
        .body(r#"{"while": "down"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let retry_after = resp.headers().get("retry-after").cloned();
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable", "{body}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);

    // Not asserted either way: the async-nats client buffers the publish
    // made while disconnected and sends it after the reconnect, so the
    // webhook answered 503 above is usually delivered too (see the report).
    nats.restart().await.expect("restart nats-server");
    eventually("/readyz to answer 200", DEADLINE, || async {
        (readyz(&server).await == 200).then_some(())
    })
    .await;
    let (code, answer) = server.ingest(&sub, r#"{"while": "up"}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);
    server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert!(receiver
        .received()
        .iter()
        .any(|r| r.header("webhook-id") == Some(webhook.as_str())));
    server.stop().await.unwrap();
}
