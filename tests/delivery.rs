//! Ingest → JetStream → delivery → attempt log, against a real nats-server,
//! a real SQLite file and real receivers on loopback.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempt_success_is_logged_and_delivered_byte_for_byte() {
    let nats = TestNats::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server.subscribe(json!({"target_url": receiver.url()})).await;

    let body = r#"{"order_id": 123, "amount": 99.99,   "note": "spaces kept"}"#;
    let (status, answer) = server.ingest(&sub, body, &[("x-event-type", "order.created")]).await;
    assert_eq!(status, 202, "{answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();

    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].body.as_ref(), body.as_bytes());
    assert_eq!(got[0].header("webhook-id"), Some(webhook.as_str()));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(got[0].header("x-event-type"), Some("order.created"));
    assert!(got[0].header("user-agent").unwrap().starts_with("webhookd/"));
    assert!(got[0].header("webhook-signature").is_none());

    let status = server.wait_status(&webhook, |s| s["status"] == "succeeded").await;
    assert_eq!(status["attempt_count"], 1);
    assert_eq!(status["attempts"][0]["outcome"], "success");
    assert_eq!(status["attempts"][0]["status_code"], 200);
    assert_eq!(status["attempts"][0]["attempt_number"], 1);
    server.stop().await.unwrap();
}
