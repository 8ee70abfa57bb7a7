//! Regressions found by the chaos suite (`just chaos`): each test pins one
//! bug that suite found, in a form that runs in the normal test suite.

use std::time::{Duration, Instant};

use serde_json::json;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::{assert_count_stays, Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::sqlite::hold_write_lock;

/// Chaos scenario "SQLite disk full": while SQLite refused writes, every
/// delivered attempt whose row could not be committed was NAKed and
/// delivered again a second later, over and over (about 8,000 duplicate
/// deliveries for 1,500 webhooks in 15 s), and none of those requests ever
/// got an attempt row. Now the worker holds the message (in progress) and
/// retries the row until SQLite takes it: one delivery, one row.
///
/// SQLite's refusal is made here by holding its write lock for longer than
/// the writer's busy timeout (5 s), which fails the writer's transaction
/// just as a full disk does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_row_refused_by_sqlite_is_retried_not_redelivered() {
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.delivery_timeout = Duration::from_secs(5);
    let server = TestServer::start(config).await;
    // Answers after 500 ms: the lock is taken while the attempt is in flight.
    let receiver = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(500),
        ..Reply::status(200)
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let (code, answer) = server.ingest(&sub, r#"{"disk": "full"}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let id = webhook_id(&answer);

    // Hold SQLite's write lock for 7 s: the attempt's row (ready at about
    // 0.5 s) fails after the 5 s busy timeout, then must wait for the lock.
    let holder = hold_write_lock(dir.path().join("webhookd.db"), Duration::from_secs(7));

    let status = server
        .wait_status(&id, |s| s["status"] == "succeeded")
        .await;
    holder.join().unwrap();
    // A redelivery would have come 1 s after the failed write, before the
    // lock was released; watch a moment more for a late one.
    assert_count_stays(&receiver, 1, Duration::from_millis(1500)).await;

    let requests = receiver.count();
    let (_, status_now) = server.call("GET", &format!("/status/{id}"), None).await;
    let attempts = status_now["attempts"].as_array().unwrap().clone();
    assert_eq!(
        requests, 1,
        "delivered {requests} times while SQLite refused the attempt row: {status_now}"
    );
    assert_eq!(
        attempts.len(),
        1,
        "one request, so exactly one attempt row: {status_now}"
    );
    assert_eq!(attempts[0]["attempt_number"], 1, "{status}");
    assert_eq!(attempts[0]["outcome"], "success", "{status}");
    eprintln!(
        "attempt row held through a 7 s SQLite lock; done after {:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}
