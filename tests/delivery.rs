//! Ingest → JetStream → delivery → attempt log, against a real nats-server,
//! a real SQLite file and real receivers on loopback.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use webhookd_harness::nats::NatsServer;
use webhookd_harness::net::refused_url;
use webhookd_harness::receiver::{assert_count_stays, Received, Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::sign::{hmac_sha256, inbound_signature};

/// `sha256=<hex>` of a body, as a sender puts it in `X-Signature`.
fn inbound_sig_str(secret: &str, body: &str) -> String {
    inbound_signature(secret, body.as_bytes())
}

fn gap(got: &[Received], i: usize) -> Duration {
    got[i].at.duration_since(got[i - 1].at)
}

fn outcomes(status: &Value) -> Vec<&str> {
    status["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect()
}

fn attempt_numbers(status: &Value) -> Vec<u64> {
    status["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt_number"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempt_success_is_logged_and_delivered_byte_for_byte() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let body = r#"{"order_id": 123, "amount": 99.99,   "note": "spaces kept"}"#;
    let (status, answer) = server
        .ingest(&sub, body, &[("x-event-type", "order.created")])
        .await;
    assert_eq!(status, 202, "{answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();

    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].body.as_ref(), body.as_bytes());
    assert_eq!(got[0].header("webhook-id"), Some(webhook.as_str()));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("x-event-type"), Some("order.created"));
    assert!(got[0]
        .header("user-agent")
        .unwrap()
        .starts_with("webhookd/"));
    assert!(got[0].header("webhook-signature").is_none());
    let ts: i64 = got[0].header("webhook-timestamp").unwrap().parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - ts).abs() <= 60,
        "webhook-timestamp {ts} is not near now ({now})"
    );

    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(status["attempt_count"], 1);
    assert_eq!(status["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(status["attempts"][0]["outcome"], "success");
    assert_eq!(status["attempts"][0]["status_code"], 200);
    assert_eq!(status["attempts"][0]["attempt_number"], 1);
    assert_eq!(status["attempts"][0]["target_url"], receiver.url());
    assert_eq!(status["subscription_id"], sub.as_str());
    assert_eq!(status["next_retry_at"], Value::Null);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_failures_then_success_follow_the_schedule() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), Some(nats.url()));
    let steps = config.retry_schedule.delays().to_vec();
    assert_eq!(steps, [50, 100, 150].map(Duration::from_millis));
    let server = TestServer::start(config).await;
    let receiver = Receiver::scripted(|n, _| Reply {
        body: "try later".into(),
        ..Reply::status(if n < 2 { 500 } else { 200 })
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let (code, answer) = server.ingest(&sub, r#"{"n": 1}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let got = receiver.wait_for(3).await;
    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(status["attempt_count"], 3);
    assert_eq!(attempt_numbers(&status), [1, 2, 3]);
    assert_eq!(
        outcomes(&status),
        ["failed_attempt", "failed_attempt", "success"]
    );
    let codes: Vec<&Value> = status["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    let first = &status["attempts"][0];
    assert!(first["error"].as_str().unwrap().contains("500"), "{first}");
    assert_eq!(first["response_body"], "try later");

    // Every arrival carries the same webhook id and body.
    for r in &got {
        assert_eq!(r.header("webhook-id"), Some(webhook.as_str()));
        assert_eq!(r.body.as_ref(), br#"{"n": 1}"#);
    }
    // Gaps follow the schedule: at least the step, at most step + 2 s of
    // slack (two shared cores).
    for (i, step) in steps.iter().take(2).enumerate() {
        let g = gap(&got, i + 1);
        assert!(
            g >= *step,
            "gap {} is {g:?}, shorter than the step {step:?}",
            i + 1
        );
        assert!(
            g < *step + Duration::from_secs(2),
            "gap {} is {g:?}, far beyond the step {step:?}",
            i + 1
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_receiver_gets_one_plus_schedule_attempts_then_nothing() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), Some(nats.url()));
    let schedule_len = config.retry_schedule.delays().len();
    let largest = config.retry_schedule.max_delay();
    let server = TestServer::start(config).await;
    let receiver = Receiver::scripted(|_, _| Reply::status(500)).await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let (code, answer) = server.ingest(&sub, r#"{"doomed": true}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let status = server
        .wait_status(&webhook, |s| s["status"] == "failed")
        .await;
    assert_eq!(schedule_len + 1, 4);
    assert_eq!(status["attempt_count"], 4);
    assert_eq!(attempt_numbers(&status), [1, 2, 3, 4]);
    assert_eq!(
        outcomes(&status),
        [
            "failed_attempt",
            "failed_attempt",
            "failed_attempt",
            "failure"
        ]
    );
    assert_eq!(status["next_retry_at"], Value::Null);
    assert!(
        status["last_error"].as_str().unwrap().contains("500"),
        "{status}"
    );
    assert_eq!(receiver.count(), 4);

    // The last attempt was logged as `failure` and the message terminated:
    // watch for 6x the largest step that no fifth request arrives.
    assert_count_stays(&receiver, 4, largest * 6).await;
    let again = server.wait_status(&webhook, |_| true).await;
    assert_eq!(again["attempt_count"], 4);
    assert_eq!(again["status"], "failed");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_timeout_is_a_failed_attempt() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.delivery_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    // The first request is answered only after 1 s, long past the timeout.
    let receiver = Receiver::scripted(|n, _| Reply {
        delay: if n == 0 {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        },
        ..Reply::status(200)
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let (code, answer) = server.ingest(&sub, "{}", &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(outcomes(&status), ["failed_attempt", "success"]);
    let first = &status["attempts"][0];
    assert_eq!(first["status_code"], Value::Null, "{first}");
    let error = first["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("timeout"), "error: {error:?}");
    let ms = first["duration_ms"].as_u64().unwrap();
    assert!((300..1000).contains(&ms), "timed-out attempt took {ms} ms");
    assert_eq!(status["attempts"][1]["attempt_number"], 2);
    assert_eq!(receiver.count(), 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_failed_attempt_each_time() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let target = refused_url();
    let sub = server.subscribe(json!({"target_url": target})).await;

    let (code, answer) = server.ingest(&sub, "[1, 2, 3]", &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let status = server
        .wait_status(&webhook, |s| s["status"] == "failed")
        .await;
    assert_eq!(
        outcomes(&status),
        [
            "failed_attempt",
            "failed_attempt",
            "failed_attempt",
            "failure"
        ]
    );
    for attempt in status["attempts"].as_array().unwrap() {
        assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
        assert_eq!(attempt["target_url"], target.as_str());
        let error = attempt["error"].as_str().unwrap_or_default();
        assert!(error.to_lowercase().contains("connect"), "error: {error:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_lengthens_the_delay_up_to_the_largest_step() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "50ms,100ms,2s".parse().unwrap();
    let server = TestServer::start(config).await;
    // 1: 503 asking for 1 s (longer than the 50 ms step: honoured);
    // 2: 429 asking for an hour (capped at the largest step, 2 s);
    // 3: 200.
    let receiver = Receiver::scripted(|n, _| match n {
        0 => Reply {
            headers: vec![("retry-after", "1".to_string())],
            ..Reply::status(503)
        },
        1 => Reply {
            headers: vec![("retry-after", "3600".to_string())],
            ..Reply::status(429)
        },
        _ => Reply::status(200),
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let (code, answer) = server.ingest(&sub, "{}", &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    let got = receiver.wait_for(3).await;
    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(
        outcomes(&status),
        ["failed_attempt", "failed_attempt", "success"]
    );

    let after_503 = gap(&got, 1);
    assert!(
        after_503 >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {after_503:?}"
    );
    assert!(
        after_503 < Duration::from_millis(2500),
        "gap after Retry-After: 1 is {after_503:?}"
    );
    let after_429 = gap(&got, 2);
    assert!(
        after_429 >= Duration::from_secs(2),
        "gap after 429 is {after_429:?}"
    );
    assert!(
        after_429 < Duration::from_secs(4),
        "Retry-After: 3600 not capped at the 2 s step: {after_429:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_event_types_are_filtered_never_delivered() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url(), "events": ["order.created"]}))
        .await;

    // Filtered ones first, so the delivered one proves the queue moved past them.
    let (code, deleted) = server
        .ingest(&sub, r#"{"id": 1}"#, &[("x-event-type", "order.deleted")])
        .await;
    assert_eq!(code, 202, "{deleted}");
    assert_eq!(deleted["status"], "filtered", "{deleted}");
    let (code, untyped) = server.ingest(&sub, r#"{"id": 2}"#, &[]).await;
    assert_eq!(code, 202, "{untyped}");
    assert_eq!(untyped["status"], "filtered", "{untyped}");
    let (code, created) = server
        .ingest(&sub, r#"{"id": 3}"#, &[("x-event-type", "order.created")])
        .await;
    assert_eq!(code, 202, "{created}");
    assert_eq!(created["status"], "pending", "{created}");

    let created = webhook_id(&created);
    server
        .wait_status(&created, |s| s["status"] == "succeeded")
        .await;
    for filtered in [webhook_id(&deleted), webhook_id(&untyped)] {
        let (code, status) = server
            .call("GET", &format!("/status/{filtered}"), None)
            .await;
        assert_eq!(code, 200, "{status}");
        assert_eq!(status["status"], "filtered", "{status}");
        assert_eq!(status["attempt_count"], 0, "{status}");
        assert_eq!(status["attempts"], json!([]), "{status}");
    }
    // Filtered webhooks are never queued: a bounded window (several times
    // the largest 150 ms step) shows only the subscribed one arrived.
    assert_count_stays(&receiver, 1, Duration::from_millis(600)).await;
    let got = receiver.received();
    assert_eq!(got[0].header("webhook-id"), Some(created.as_str()));
    assert_eq!(got[0].header("x-event-type"), Some("order.created"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_signature_is_required_and_checked() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let secret = "inbound-secret-0123456789";
    let sub = server
        .subscribe(json!({"target_url": receiver.url(), "secret": secret}))
        .await;
    let path = format!("/ingest/{sub}");
    let ct = ("content-type", "application/json");

    let body = r#"{"signed": "x-signature"}"#;
    let sig = inbound_sig_str(secret, body);
    let (code, a) = server
        .raw("POST", &path, &[ct, ("x-signature", &sig)], body)
        .await;
    assert_eq!(code, 202, "{a}");
    let first = webhook_id(&a);

    let body = r#"{"signed": "hub"}"#;
    let sig = inbound_sig_str(secret, body);
    let (code, b) = server
        .raw("POST", &path, &[ct, ("x-hub-signature-256", &sig)], body)
        .await;
    assert_eq!(code, 202, "{b}");
    let second = webhook_id(&b);

    // Signature of another body; signature with another key; garbage.
    let body = r#"{"signed": "wrongly"}"#;
    let other_body = inbound_sig_str(secret, "{}");
    let other_key = inbound_sig_str("another-secret-0123456789", body);
    for bad in [
        other_body.as_str(),
        other_key.as_str(),
        "sha256=zz",
        "nonsense",
    ] {
        let (code, e) = server
            .raw("POST", &path, &[ct, ("x-signature", bad)], body)
            .await;
        assert_eq!(code, 401, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_signature", "{e}");
    }
    let (code, e) = server.raw("POST", &path, &[ct], body).await;
    assert_eq!(code, 401, "{e}");
    assert_eq!(e["error"]["code"], "signature_required", "{e}");

    // Only the two accepted ones are delivered.
    server
        .wait_status(&first, |s| s["status"] == "succeeded")
        .await;
    server
        .wait_status(&second, |s| s["status"] == "succeeded")
        .await;
    assert_count_stays(&receiver, 2, Duration::from_millis(600)).await;
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    ids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected);
    server.stop().await.unwrap();
}

/// Checks a received `webhook-signature` against an independent
/// computation over `webhook-id`, `webhook-timestamp` and the body.
fn check_outbound_signature(r: &Received, key: &[u8]) {
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", &r.body]);
    let expected = format!("v1,{}", BASE64.encode(mac));
    assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_deliveries_carry_standard_webhooks_signatures() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;

    // A generated `whsec_` secret: the key is its base64-decoded tail.
    let (code, created) = server
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": receiver.url(), "generate_secret": true})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let whsec_sub = created["id"].as_str().unwrap().to_string();
    let whsec = created["secret"].as_str().unwrap().to_string();
    let key = BASE64
        .decode(whsec.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    assert!(key.len() >= 16, "generated key of {} bytes", key.len());

    // A plain secret: the key is its own bytes.
    let plain = "plain-secret-of-twenty";
    let plain_sub = server
        .subscribe(json!({"target_url": receiver.url(), "secret": plain}))
        .await;

    let body = r#"{"event": "signed delivery"}"#;
    let mut ids = Vec::new();
    for (sub, secret) in [(&whsec_sub, whsec.as_str()), (&plain_sub, plain)] {
        let sig = inbound_sig_str(secret, body);
        let (code, a) = server.ingest(sub, body, &[("x-signature", &sig)]).await;
        assert_eq!(code, 202, "{a}");
        ids.push(webhook_id(&a));
    }
    for id in &ids {
        server.wait_status(id, |s| s["status"] == "succeeded").await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let by_id = |id: &str| {
        got.iter()
            .find(|r| r.header("webhook-id") == Some(id))
            .unwrap()
    };

    let r = by_id(&ids[0]);
    assert_eq!(r.body.as_ref(), body.as_bytes());
    check_outbound_signature(r, &key);
    // The whsec_ string itself is not the key.
    let raw = hmac_sha256(whsec.as_bytes(), &[b"x"]);
    assert_ne!(raw, hmac_sha256(&key, &[b"x"]));

    let r = by_id(&ids[1]);
    assert_eq!(r.body.as_ref(), body.as_bytes());
    check_outbound_signature(r, plain.as_bytes());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subscription_stops_its_retries() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "300ms,300ms,300ms,300ms".parse().unwrap();
    let server = TestServer::start(config).await;
    // The first 500 is held for 500 ms: the DELETE below lands while attempt
    // 1 is still in flight, so it precedes attempt 2 whatever the load.
    let receiver = Receiver::scripted(|n, _| Reply {
        delay: if n == 0 {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        },
        ..Reply::status(500)
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let (code, answer) = server.ingest(&sub, "{}", &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    receiver.wait_for(1).await;
    let (code, body) = server
        .call("DELETE", &format!("/subscriptions/{sub}"), None)
        .await;
    assert_eq!(code, 204, "{body}");

    let status = server
        .wait_status(&webhook, |s| {
            s["status"] == "failed" && s["last_error"] == "subscription deleted"
        })
        .await;
    assert_eq!(status["next_retry_at"], Value::Null, "{status}");
    assert_eq!(outcomes(&status), ["failed_attempt"]);
    // The message was terminated at its second attempt; nothing reaches the
    // receiver for the rest of the schedule (4 x 300 ms).
    assert_count_stays(&receiver, 1, Duration::from_millis(1200)).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_target_url_receives_the_next_retry() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "300ms,300ms,300ms".parse().unwrap();
    let server = TestServer::start(config).await;
    // Held 500 ms, like above, so the PATCH precedes attempt 2.
    let old = Receiver::scripted(|n, _| Reply {
        delay: if n == 0 {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        },
        ..Reply::status(500)
    })
    .await;
    let new = Receiver::ok().await;
    let sub = server.subscribe(json!({"target_url": old.url()})).await;
    let (code, answer) = server.ingest(&sub, r#"{"moved": true}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);

    old.wait_for(1).await;
    let (code, patched) = server
        .call(
            "PATCH",
            &format!("/subscriptions/{sub}"),
            Some(json!({"target_url": new.url()})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["target_url"], new.url());

    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(outcomes(&status), ["failed_attempt", "success"]);
    assert_eq!(status["attempts"][0]["target_url"], old.url());
    assert_eq!(status["attempts"][1]["target_url"], new.url());
    assert_eq!(status["attempts"][1]["attempt_number"], 2);
    let got = new.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id"), Some(webhook.as_str()));
    assert_eq!(got[0].body.as_ref(), br#"{"moved": true}"#);
    assert_eq!(old.count(), 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_gives_one_webhook_and_one_delivery() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let key = ("idempotency-key", "order-42-created");

    let (code, first) = server.ingest(&sub, r#"{"order": 42}"#, &[key]).await;
    assert_eq!(code, 202, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    let webhook = webhook_id(&first);
    receiver.wait_for(1).await;
    server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;

    let (code, second) = server.ingest(&sub, r#"{"order": 42}"#, &[key]).await;
    assert_eq!(code, 202, "{second}");
    assert_eq!(second["webhook_id"], webhook.as_str(), "{second}");
    assert_eq!(second["duplicate"], true, "{second}");

    // A later webhook with another key is delivered: the queue has moved
    // past where a second copy would have been.
    let (code, other) = server
        .ingest(
            &sub,
            r#"{"order": 43}"#,
            &[("idempotency-key", "order-43-created")],
        )
        .await;
    assert_eq!(code, 202, "{other}");
    assert_eq!(other["duplicate"], false, "{other}");
    let other = webhook_id(&other);
    assert_ne!(other, webhook);
    server
        .wait_status(&other, |s| s["status"] == "succeeded")
        .await;
    // Plus a bounded window of several times the largest (150 ms) step.
    assert_count_stays(&receiver, 2, Duration::from_millis(600)).await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids, [webhook.clone(), other.clone()]);

    let status = server.wait_status(&webhook, |_| true).await;
    assert_eq!(status["attempt_count"], 1, "{status}");
    assert_eq!(status["status"], "succeeded", "{status}");
    server.stop().await.unwrap();
}
