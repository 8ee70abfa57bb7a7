//! webhookd-tui's API client against a real webhookd (real nats-server,
//! SQLite file, receiver): what the TUI shows is what the server says.

use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::Receiver;
use webhookd_harness::server::{test_config, TestServer};
use webhookd_harness::sign::inbound_signature;
use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_tui::api::{
    ApiError, Circuit, Client, NewSubscription, Outcome, SubscriptionPatch, SubscriptionState,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_client_manages_subscriptions_and_reads_attempts() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let client = Client::new(&format!("http://{}", server.addr), None).unwrap();
    client.health().await.unwrap();

    // Create, list, edit.
    let created = client
        .create_subscription(&NewSubscription {
            target_url: receiver.url(),
            secret: Some("tui-secret-0123456789".into()),
            events: Some(vec!["order.created".into()]),
        })
        .await
        .unwrap();
    let listed = client.list_subscriptions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    assert_eq!(listed[0].secret.as_deref(), Some("****6789"));
    let patched = client
        .update_subscription(
            &created.id,
            &SubscriptionPatch {
                events: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.events, None);

    // Health and state as the server reports them, and the disable key's
    // request: disabled with the operator's reason, then enabled again.
    let health = listed[0]
        .health
        .as_ref()
        .expect("the server reports health");
    assert_eq!(health.circuit, Circuit::Closed);
    assert_eq!(listed[0].state, SubscriptionState::Active);
    let disabled = client
        .set_subscription_state(&created.id, SubscriptionState::Disabled)
        .await
        .unwrap();
    assert_eq!(disabled.state, SubscriptionState::Disabled);
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("disabled by an operator")
    );
    let enabled = client
        .set_subscription_state(&created.id, SubscriptionState::Active)
        .await
        .unwrap();
    assert_eq!(enabled.state, SubscriptionState::Active);
    assert_eq!(enabled.disabled_reason, None);

    // A validation error names its field, as the form shows it.
    let err = client
        .create_subscription(&NewSubscription {
            target_url: "ftp://example.com/".into(),
            secret: None,
            events: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert_eq!(err.field(), Some("target_url"));

    // Attempts: per subscription, per webhook, and the live tail.
    let body = r#"{"n":1}"#;
    let sig = inbound_signature("tui-secret-0123456789", body.as_bytes());
    let (status, answer) = server
        .ingest(&created.id, body, &[("x-signature", &sig)])
        .await;
    assert_eq!(status, 202, "{answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();
    receiver.wait_for(1).await;
    let attempts = eventually("an attempt row", DEADLINE, || async {
        let a = client.subscription_attempts(&created.id, 20).await.ok()?;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(attempts[0].webhook_id, webhook);
    assert_eq!(attempts[0].outcome, Outcome::Success);
    let status = client.webhook_status(&webhook).await.unwrap();
    assert_eq!(status.status, "succeeded");
    let tail = client.attempts_after(None, 100).await.unwrap();
    assert_eq!(tail.items.len(), 1);
    let after = client
        .attempts_after(Some(tail.items[0].id), 100)
        .await
        .unwrap();
    assert!(after.items.is_empty());
    assert!(client
        .metrics_text()
        .await
        .unwrap()
        .contains("webhookd_deliveries_total"));

    // Delete, then the server says 404.
    client.delete_subscription(&created.id).await.unwrap();
    match client.get_subscription(&created.id).await {
        Err(ApiError::Http { status: 404, .. }) => {}
        other => panic!("expected 404 after delete, got {other:?}"),
    }
    server.stop().await.unwrap();
}
