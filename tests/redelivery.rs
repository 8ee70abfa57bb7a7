//! Redelivery and recovery: a settled webhook is sent again with the same
//! `webhook-id`, its payload byte for byte from the stream and its attempt
//! numbers continuing; a subscription's window of webhooks is recovered
//! (a dry run first), overlapping recoveries send nothing twice, an aged-out
//! payload is 410, and a kill -9 right after a recovery's 202 loses
//! nothing. Real nats-server, real SQLite, real receivers on loopback.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use webhookd::config::Config;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::{assert_count_stays, Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_harness::webhookd::Webhookd;

/// A receiver answering 500 until `fixed` is set, then 200 (after `delay`).
async fn broken_until_fixed(delay: Duration) -> (Receiver, Arc<AtomicBool>) {
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let receiver = Receiver::scripted(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply {
                delay,
                ..Reply::status(200)
            }
        } else {
            Reply::status(500)
        }
    })
    .await;
    (receiver, fixed)
}

/// Webhooks fail within a few hundred ms, and the breaker stays out of the
/// way: these tests are about what happens after they failed.
fn config(dir: &std::path::Path) -> Config {
    let mut c = test_config(dir, None);
    c.retry_schedule = "20ms,40ms".parse().expect("a schedule");
    c.circuit_failures = 0;
    c
}

async fn post_all(server: &TestServer, sub: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (code, answer) = server.ingest(sub, &format!(r#"{{"n": {i}}}"#), &[]).await;
        assert_eq!(code, 202, "{answer}");
        ids.push(webhook_id(&answer));
    }
    ids
}

/// Waits until every one of `ids` has `status` in `GET /webhooks`.
async fn wait_all(server: &TestServer, sub: &str, status: &str, ids: &[String]) {
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    eventually(
        &format!("{} webhooks {status}", ids.len()),
        DEADLINE * 3,
        || async {
            let mut seen = 0;
            let mut next = Some(format!(
                "/webhooks?subscription_id={sub}&status={status}&limit=500"
            ));
            while let Some(path) = next {
                let (items, link) = server.page(&path).await;
                seen += items
                    .iter()
                    .filter(|w| wanted.contains(w["id"].as_str().unwrap_or("")))
                    .count();
                next = link;
            }
            (seen == wanted.len()).then_some(())
        },
    )
    .await;
}

/// 2xx answers per webhook id.
fn ok_counts(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.answer.ok()) {
        *counts.entry(r.webhook_id().to_string()).or_default() += 1;
    }
    counts
}

fn an_hour_ago() -> String {
    (Utc::now() - chrono::Duration::hours(1)).to_rfc3339()
}

async fn recover(server: &TestServer, sub: &str, body: Value) -> (u16, Value) {
    server
        .call("POST", &format!("/subscriptions/{sub}/recover"), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_webhook_redelivered_keeps_its_id_payload_and_attempt_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let (receiver, fixed) = broken_until_fixed(Duration::ZERO).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let body = r#"{"order": 42,  "note": "spaces kept"}"#;
    let (code, answer) = server
        .ingest(&sub, body, &[("x-event-type", "order.paid")])
        .await;
    assert_eq!(code, 202, "{answer}");
    let id = webhook_id(&answer);
    let failed = server.wait_status(&id, |s| s["status"] == "failed").await;
    assert_eq!(failed["attempt_count"], 3, "{failed}");
    assert_eq!(failed["redeliveries"], 0, "{failed}");

    fixed.store(true, Ordering::SeqCst);
    let path = format!("/webhooks/{id}/redeliver");
    let (code, answer) = server.call("POST", &path, None).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["webhook_id"], id.as_str());
    assert_eq!(answer["redelivery"], 1);

    let done = server
        .wait_status(&id, |s| s["status"] == "succeeded")
        .await;
    let attempts = done["attempts"].as_array().unwrap();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["attempt_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4], "{done}");
    let redeliveries: Vec<u64> = attempts
        .iter()
        .map(|a| a["redelivery"].as_u64().unwrap())
        .collect();
    assert_eq!(redeliveries, [0, 0, 0, 1], "{done}");
    assert_eq!(done["redeliveries"], 1, "{done}");
    assert!(done["redelivered_at"].is_string(), "{done}");

    let got = receiver.received();
    assert_eq!(got.len(), 4, "three failures, then the redelivery");
    let last = got.last().unwrap();
    assert_eq!(last.webhook_id(), id, "the same webhook-id");
    assert_eq!(&last.body[..], body.as_bytes(), "the payload byte for byte");
    assert_eq!(last.header("x-event-type"), Some("order.paid"));
    assert_eq!(last.header("content-type"), Some("application/json"));

    // Settled again: a second redelivery is allowed and numbered 2; the
    // receiver is told it is the same webhook once more.
    let (code, answer) = server.call("POST", &path, None).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["redelivery"], 2);
    receiver.wait_for(5).await;
    let done = server
        .wait_status(&id, |s| {
            s["status"] == "succeeded" && s["attempt_count"] == 5
        })
        .await;
    assert_eq!(done["attempts"][4]["redelivery"], 2, "{done}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_refuses_what_it_cannot_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retry_schedule = "10s".parse().unwrap();
    let server = TestServer::start(c).await;
    let (receiver, _fixed) = broken_until_fixed(Duration::ZERO).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let id = post_all(&server, &sub, 1).await.remove(0);

    let (code, e) = server.call("POST", "/webhooks/nope/redeliver", None).await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (400, Some("invalid_id")),
        "{e}"
    );
    let unknown = uuid::Uuid::new_v4();
    let (code, e) = server
        .call("POST", &format!("/webhooks/{unknown}/redeliver"), None)
        .await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );

    // Retrying (its next attempt is 10 s away): not settled, 409.
    server.wait_status(&id, |s| s["status"] == "retrying").await;
    let path = format!("/webhooks/{id}/redeliver");
    let (code, e) = server.call("POST", &path, None).await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("retrying"),
        "{e}"
    );

    // Disabled: 409 naming the reason; nothing is sent.
    let (code, s) = server
        .call(
            "PATCH",
            &format!("/subscriptions/{sub}"),
            Some(json!({"state": "disabled"})),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    server.wait_status(&id, |s| s["status"] == "failed").await;
    let sent = receiver.count();
    let (code, e) = server.call("POST", &path, None).await;
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("disabled"),
        "{e}"
    );
    let (code, e) = recover(&server, &sub, json!({"since": an_hour_ago()})).await;
    assert_eq!(code, 409, "{e}");

    // Deleted: 404.
    let (code, _) = server
        .call("DELETE", &format!("/subscriptions/{sub}"), None)
        .await;
    assert_eq!(code, 204);
    let (code, e) = server.call("POST", &path, None).await;
    assert_eq!(code, 404, "{e}");
    assert_count_stays(&receiver, sent, Duration::from_millis(300)).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_changes_nothing_then_recover_sends_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let (receiver, fixed) = broken_until_fixed(Duration::ZERO).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let ids = post_all(&server, &sub, 20).await;
    wait_all(&server, &sub, "failed", &ids).await;
    let sent = receiver.count();
    assert_eq!(sent, 60, "three attempts each");

    // Bad input: 422 naming the field, nothing changes.
    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "2000-01-01T00:00:00Z"}), "since"),
        (
            json!({"since": an_hour_ago(), "status": ["pending"]}),
            "status",
        ),
        (json!({"since": an_hour_ago(), "max": 3}), "max"),
    ] {
        let (code, e) = recover(&server, &sub, body.clone()).await;
        assert_eq!(code, 422, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let (code, e) = recover(&server, &sub, json!({"since": "2000-01-01T00:00:00Z"})).await;
    assert_eq!(code, 422);
    let oldest = e["oldest_available"].as_str().expect("oldest_available");
    assert!(DateTime::parse_from_rfc3339(oldest).is_ok(), "{e}");

    fixed.store(true, Ordering::SeqCst);
    let dry = json!({"since": an_hour_ago(), "dry_run": true});
    let (code, answer) = recover(&server, &sub, dry).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(
        answer,
        json!({"matched": 20, "queued": 0, "unavailable": 0})
    );
    let (code, answer) = recover(
        &server,
        &sub,
        json!({"since": an_hour_ago(), "status": ["succeeded"], "dry_run": true}),
    )
    .await;
    assert_eq!(
        (code, answer["matched"].as_u64()),
        (202, Some(0)),
        "{answer}"
    );
    assert_count_stays(&receiver, sent, Duration::from_millis(300)).await;
    wait_all(&server, &sub, "failed", &ids).await;

    let (code, answer) = recover(&server, &sub, json!({"since": an_hour_ago()})).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(
        answer,
        json!({"matched": 20, "queued": 20, "unavailable": 0})
    );
    wait_all(&server, &sub, "succeeded", &ids).await;
    let ok = ok_counts(&receiver);
    for id in &ids {
        assert_eq!(ok.get(id), Some(&1), "{id} delivered once");
    }
    // Nothing failed is left to recover; a window that ends before them
    // matches nothing either.
    let (_, answer) = recover(&server, &sub, json!({"since": an_hour_ago()})).await;
    assert_eq!(answer["matched"], 0, "{answer}");
    let until = (Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    let body = json!({"since": an_hour_ago(), "until": until, "status": ["succeeded"]});
    let (_, answer) = recover(&server, &sub, body).await;
    assert_eq!(answer["matched"], 0, "{answer}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_1000_failed_beside_1000_live_delivers_all_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retry_schedule = "5ms".parse().unwrap();
    let server = TestServer::start(c).await;
    let (broken, fixed) = broken_until_fixed(Duration::ZERO).await;
    let live = Receiver::ok().await;
    let broken_sub = server.subscribe(json!({"target_url": broken.url()})).await;
    let live_sub = server.subscribe(json!({"target_url": live.url()})).await;
    let failed = post_all(&server, &broken_sub, 1000).await;
    wait_all(&server, &broken_sub, "failed", &failed).await;

    fixed.store(true, Ordering::SeqCst);
    let recovering = recover(&server, &broken_sub, json!({"since": an_hour_ago()}));
    let (recovered, live_ids) = tokio::join!(recovering, post_all(&server, &live_sub, 1000));
    assert_eq!(recovered.0, 202, "{}", recovered.1);
    assert_eq!(recovered.1["matched"], 1000);
    assert_eq!(recovered.1["queued"], 1000);
    wait_all(&server, &broken_sub, "succeeded", &failed).await;
    wait_all(&server, &live_sub, "succeeded", &live_ids).await;
    let ok = ok_counts(&broken);
    assert!(
        failed.iter().all(|id| ok.get(id) == Some(&1)),
        "each recovered webhook once"
    );
    assert_eq!(ok_counts(&live).len(), 1000);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_recovers_send_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    // Slow once fixed: the first recovery is still in flight when the
    // others come.
    let (receiver, fixed) = broken_until_fixed(Duration::from_millis(200)).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let ids = post_all(&server, &sub, 100).await;
    wait_all(&server, &sub, "failed", &ids).await;

    fixed.store(true, Ordering::SeqCst);
    let body = json!({"since": an_hour_ago()});
    let (a, b, c) = tokio::join!(
        recover(&server, &sub, body.clone()),
        recover(&server, &sub, body.clone()),
        recover(&server, &sub, body.clone()),
    );
    for (code, answer) in [&a, &b, &c] {
        assert_eq!(*code, 202, "{answer}");
    }
    let (_, d) = recover(&server, &sub, body.clone()).await;
    assert_eq!(d["queued"], 0, "all of them are pending: {d}");
    wait_all(&server, &sub, "succeeded", &ids).await;
    let ok = ok_counts(&receiver);
    for id in &ids {
        assert_eq!(ok.get(id), Some(&1), "{id}: {a:?} {b:?} {c:?}");
    }
    assert_count_stays(&receiver, receiver.count(), Duration::from_millis(300)).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_webhooks_are_stored_and_recovered_once_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url(), "events": ["a"]}))
        .await;
    let (code, answer) = server
        .ingest(&sub, r#"{"kind": "b"}"#, &[("x-event-type", "b")])
        .await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (202, Some("filtered")),
        "{answer}"
    );
    let id = webhook_id(&answer);
    assert_count_stays(&receiver, 0, Duration::from_millis(300)).await;

    let body = json!({"since": an_hour_ago(), "status": ["filtered"]});
    let (code, answer) = recover(&server, &sub, body).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["queued"], 1, "{answer}");
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].webhook_id(), id);
    assert_eq!(&got[0].body[..], br#"{"kind": "b"}"#);
    server
        .wait_status(&id, |s| s["status"] == "succeeded")
        .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_out_payload_is_410() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.nats_url = Some(nats.url());
    c.retention = Duration::from_secs(2);
    c.duplicate_window = Duration::from_secs(1);
    c.purge_interval = Duration::from_secs(3600);
    let server = TestServer::start(c).await;
    let (receiver, _fixed) = broken_until_fixed(Duration::ZERO).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let id = post_all(&server, &sub, 1).await.remove(0);
    server.wait_status(&id, |s| s["status"] == "failed").await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    eventually("the payload to age out of the stream", DEADLINE, || async {
        let mut stream = js.get_stream("WEBHOOKS").await.ok()?;
        let info = stream.info().await.ok()?;
        (info.state.messages == 0).then_some(())
    })
    .await;
    let (code, e) = server
        .call("POST", &format!("/webhooks/{id}/redeliver"), None)
        .await;
    assert_eq!(
        (code, e["error"]["code"].as_str()),
        (410, Some("gone")),
        "{e}"
    );
    let s = server.wait_status(&id, |_| true).await;
    assert_eq!(s["status"], "failed", "unchanged: {s}");
    assert_eq!(s["redeliveries"], 0, "unchanged: {s}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_right_after_a_recovers_202_still_delivers_every_match() {
    // A message in flight at the kill comes back after the consumer's ack
    // wait (30 s at least).
    const RECOVERY: Duration = Duration::from_secs(90);
    const N: usize = 200;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &dir.path().join("data"))
        .unwrap()
        .nats_url(nats.url())
        .args(&[
            "--retry-schedule",
            "20ms",
            "--retry-jitter",
            "0",
            "--circuit-failures",
            "0",
            "--delivery-concurrency",
            "8",
            "--log",
            "warn",
        ]);
    proc.start().await.expect("webhookd ready");
    let (receiver, fixed) = broken_until_fixed(Duration::from_millis(20)).await;
    let sub = proc.subscribe(&receiver.url()).await.unwrap();
    let ids = proc.ingest_numbered(&sub, N).await.unwrap();
    let base = proc.url("");
    let status = |id: String| {
        let (http, url) = (http.clone(), format!("{base}/status/{id}"));
        async move {
            let resp = http.get(url).send().await.ok()?;
            let s: Value = resp.json().await.ok()?;
            s["status"].as_str().map(str::to_string)
        }
    };
    for id in &ids {
        eventually(&format!("{id} failed"), DEADLINE, || async {
            (status(id.clone()).await.as_deref() == Some("failed")).then_some(())
        })
        .await;
    }

    fixed.store(true, Ordering::SeqCst);
    let resp = http
        .post(proc.url(&format!("/subscriptions/{sub}/recover")))
        .json(&json!({"since": an_hour_ago()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["queued"], N, "{answer}");
    proc.kill9().expect("kill -9 webhookd");
    let before = ok_counts(&receiver).len();
    assert!(
        before < N,
        "all {N} delivered before the kill: nothing tested"
    );
    proc.start().await.expect("webhookd ready again");

    eventually("every recovered webhook answered 2xx", RECOVERY, || async {
        let ok = ok_counts(&receiver);
        ids.iter().all(|id| ok.contains_key(id)).then_some(())
    })
    .await;
    for id in &ids {
        eventually(&format!("{id} succeeded"), RECOVERY, || async {
            (status(id.clone()).await.as_deref() == Some("succeeded")).then_some(())
        })
        .await;
    }
}
