//! `GET /webhooks` against a real webhookd, nats-server and loopback
//! receivers: newest first, every filter, `status` repeated, paging through
//! `Link` to the end, the `since` / `until` bounds, and 400s for bad
//! parameters that change nothing. An unknown `subscription_id` is an
//! empty array (a filter matching nothing), not 404.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE};

/// An id that no test ever creates (UUIDv7 ids carry a current timestamp).
const MISSING_ID: &str = "00000000-0000-7000-8000-000000000000";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|w| w["id"].as_str().expect("an id").to_string())
        .collect()
}

fn received_at(w: &Value) -> chrono::DateTime<chrono::Utc> {
    w["received_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("no received_at in {w}"))
}

/// Every item of a list, following `Link: rel="next"` to the end, with the
/// number of pages.
async fn all_pages(server: &TestServer, first: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut next = Some(first.to_string());
    while let Some(path) = next {
        let (page, link) = server.page(&path).await;
        pages += 1;
        assert!(pages < 100, "paging does not end: {path}");
        items.extend(page);
        next = link;
    }
    (items, pages)
}

/// Newest first: `received_at` descending, then id descending.
#[track_caller]
fn assert_newest_first(items: &[Value]) {
    for pair in items.windows(2) {
        let a = (received_at(&pair[0]), pair[0]["id"].as_str().unwrap());
        let b = (received_at(&pair[1]), pair[1]["id"].as_str().unwrap());
        assert!(a > b, "not newest first: {} before {}", pair[0], pair[1]);
    }
}

async fn ingest(server: &TestServer, sub: &str, event: &str, n: usize) -> String {
    let body = json!({"n": n}).to_string();
    let (status, answer) = server.ingest(sub, &body, &[("x-event-type", event)]).await;
    assert_eq!(status, 202, "{answer}");
    webhook_id(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_list_newest_first_filters_and_pages() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let ok = Receiver::ok().await;
    let broken = Receiver::scripted(|_, _| Reply::status(500)).await;
    let good = server
        .subscribe(json!({"target_url": ok.url(), "events": ["order.created", "order.paid"]}))
        .await;
    let bad = server.subscribe(json!({"target_url": broken.url()})).await;

    // In ingest order: 4 created + 2 paid delivered, 1 filtered, 2 failed.
    let mut ingested = Vec::new();
    for n in 0..4 {
        ingested.push(ingest(&server, &good, "order.created", n).await);
    }
    for n in 4..6 {
        ingested.push(ingest(&server, &good, "order.paid", n).await);
    }
    let filtered = ingest(&server, &good, "user.deleted", 6).await;
    ingested.push(filtered.clone());
    let mut failed = Vec::new();
    for n in 7..9 {
        let id = ingest(&server, &bad, "order.created", n).await;
        failed.push(id.clone());
        ingested.push(id);
    }
    let mut last_attempts = std::collections::HashMap::new();
    for id in &ingested {
        let status = server
            .wait_status(id, |s| {
                ["succeeded", "failed", "filtered"].contains(&s["status"].as_str().unwrap_or(""))
            })
            .await;
        last_attempts.insert(id.clone(), status);
    }

    // Everything, newest first, in one page.
    let (all, next) = server.page("/webhooks").await;
    assert!(next.is_none(), "one page holds nine webhooks");
    assert_newest_first(&all);
    assert_eq!(
        ids(&all).into_iter().collect::<HashSet<_>>(),
        ingested.iter().cloned().collect::<HashSet<_>>()
    );
    // Ingest order is receive order: the list is that order reversed (ties
    // in the same millisecond go by id).
    let times: Vec<_> = ingested
        .iter()
        .map(|id| received_at(all.iter().find(|w| w["id"] == *id.as_str()).unwrap()))
        .collect();
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{times:?}");

    // Each item: the fields of its row and of its newest attempt.
    for w in &all {
        let id = w["id"].as_str().unwrap();
        let status = &last_attempts[id];
        assert_eq!(w["subscription_id"], status["subscription_id"], "{w}");
        assert_eq!(w["event_type"], status["event_type"], "{w}");
        assert_eq!(w["received_at"], status["received_at"], "{w}");
        assert_eq!(w["status"], status["status"], "{w}");
        assert_eq!(w["attempt_count"], status["attempt_count"], "{w}");
        assert_eq!(w["last_error"], status["last_error"], "{w}");
        assert_eq!(w["next_retry_at"], Value::Null, "{w}");
        let attempts = status["attempts"].as_array().unwrap();
        match attempts.last() {
            Some(last) => {
                assert_eq!(w["last_attempt_at"], last["timestamp"], "{w}");
                assert_eq!(w["last_status_code"], last["status_code"], "{w}");
            }
            None => {
                assert_eq!(w["last_attempt_at"], Value::Null, "{w}");
                assert_eq!(w["last_status_code"], Value::Null, "{w}");
            }
        }
    }
    for id in &failed {
        let w = all.iter().find(|w| w["id"] == *id.as_str()).unwrap();
        assert_eq!(w["status"], "failed");
        // The newest attempt: a 500 or, once the breaker opened, not sent.
        assert!(w["attempt_count"].as_u64().is_some_and(|n| n >= 1), "{w}");
        assert!(w["last_attempt_at"].is_string(), "{w}");
        assert!(w["last_error"].is_string(), "{w}");
    }

    // Each filter: the full list, narrowed, still newest first.
    let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        ids(&all.iter().filter(|w| pred(w)).cloned().collect::<Vec<_>>())
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("/webhooks?subscription_id={bad}"),
            expect(&|w| w["subscription_id"] == *bad.as_str()),
        ),
        (
            format!("/webhooks?subscription_id={good}"),
            expect(&|w| w["subscription_id"] == *good.as_str()),
        ),
        (
            "/webhooks?status=failed".into(),
            expect(&|w| w["status"] == "failed"),
        ),
        ("/webhooks?status=filtered".into(), vec![filtered.clone()]),
        (
            "/webhooks?status=failed&status=filtered".into(),
            expect(&|w| w["status"] == "failed" || w["status"] == "filtered"),
        ),
        ("/webhooks?status=retrying&status=pending".into(), vec![]),
        (
            "/webhooks?event_type=order.paid".into(),
            expect(&|w| w["event_type"] == "order.paid"),
        ),
        (
            format!("/webhooks?subscription_id={good}&status=succeeded&event_type=order.created"),
            expect(&|w| {
                w["subscription_id"] == *good.as_str()
                    && w["status"] == "succeeded"
                    && w["event_type"] == "order.created"
            }),
        ),
        (format!("/webhooks?subscription_id={MISSING_ID}"), vec![]),
    ];
    for (path, want) in &cases {
        let (got, next) = server.page(path).await;
        assert!(next.is_none(), "{path}");
        assert_eq!(&ids(&got), want, "{path}");
    }
    assert_eq!(cases[2].1, {
        let mut f = failed.clone();
        f.reverse();
        f
    });

    // since (inclusive) / until (exclusive) around a middle webhook.
    let pivot = received_at(&all[4]);
    let t = enc(all[4]["received_at"].as_str().unwrap());
    let (since, _) = server.page(&format!("/webhooks?since={t}")).await;
    assert_eq!(ids(&since), expect(&|w| received_at(w) >= pivot));
    assert!(ids(&since).contains(&all[4]["id"].as_str().unwrap().to_string()));
    let (until, _) = server.page(&format!("/webhooks?until={t}")).await;
    assert_eq!(ids(&until), expect(&|w| received_at(w) < pivot));
    let start = enc(all[7]["received_at"].as_str().unwrap());
    let (window, _) = server
        .page(&format!("/webhooks?since={start}&until={t}"))
        .await;
    assert_eq!(
        ids(&window),
        expect(&|w| received_at(w) >= received_at(&all[7]) && received_at(w) < pivot)
    );
    // Another offset spelling of the same instant.
    let offset = pivot.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let (same, _) = server
        .page(&format!(
            "/webhooks?since={}",
            enc(&offset.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
        ))
        .await;
    assert_eq!(ids(&same), ids(&since));

    // Paging: every page at most `limit`, the filters kept in `Link`,
    // together the whole list once, in order.
    for limit in [1, 2, 4, 9] {
        let (items, pages) = all_pages(&server, &format!("/webhooks?limit={limit}")).await;
        assert_eq!(ids(&items), ids(&all), "limit {limit}");
        assert_eq!(pages, all.len().div_ceil(limit).max(1), "limit {limit}");
    }
    let (first, next) = server
        .page(&format!(
            "/webhooks?subscription_id={good}&status=succeeded&limit=2"
        ))
        .await;
    assert_eq!(first.len(), 2);
    let next = next.expect("a next page");
    assert!(
        next.starts_with(&format!(
            "/webhooks?subscription_id={good}&status=succeeded&limit=2&cursor="
        )),
        "{next}"
    );
    let (items, _) = all_pages(
        &server,
        &format!("/webhooks?subscription_id={good}&status=succeeded&limit=2"),
    )
    .await;
    assert_eq!(
        ids(&items),
        expect(&|w| w["subscription_id"] == *good.as_str() && w["status"] == "succeeded")
    );

    // Bad parameters: 400 invalid_query naming the parameter; nothing
    // changes.
    let delivered = (ok.count(), broken.count());
    for (path, field) in [
        ("/webhooks?status=bogus", "status"),
        ("/webhooks?status=failed&status=FAILED", "status"),
        ("/webhooks?status=", "status"),
        ("/webhooks?since=yesterday", "since"),
        ("/webhooks?until=2024-13-01T00:00:00Z", "until"),
        ("/webhooks?since=2024-06-01", "since"),
        ("/webhooks?cursor=abc", "cursor"),
        ("/webhooks?cursor=1.not-a-uuid", "cursor"),
        (
            "/webhooks?cursor=-1.00000000-0000-7000-8000-000000000000",
            "cursor",
        ),
        ("/webhooks?subscription_id=nope", "subscription_id"),
        ("/webhooks?limit=0", "limit"),
        ("/webhooks?limit=501", "limit"),
    ] {
        let (status, body) = server.call("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (after, _) = server.page("/webhooks").await;
    assert_eq!(after, all, "a bad request changed nothing");
    assert_eq!((ok.count(), broken.count()), delivered);

    server.stop().await.unwrap();
}

/// `delivering` is not stored: it is a pending or retrying webhook whose
/// attempt is in flight, and the filter sees it as `GET /status` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_list_shows_and_filters_delivering() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let slow = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(1500),
        ..Reply::status(200)
    })
    .await;
    let sub = server.subscribe(json!({"target_url": slow.url()})).await;
    let id = ingest(&server, &sub, "order.created", 0).await;

    let path = "/webhooks?status=delivering";
    let shown = eventually("the webhook listed as delivering", DEADLINE, || async {
        let (items, _) = server.page(path).await;
        (ids(&items) == [id.clone()]).then_some(items)
    })
    .await;
    assert_eq!(shown[0]["status"], "delivering");
    // While in flight it is not `pending` (unless asked for both).
    let (pending, _) = server.page("/webhooks?status=pending").await;
    let (both, _) = server
        .page("/webhooks?status=pending&status=delivering")
        .await;
    let delivering_then = server.page(path).await.0;
    if ids(&delivering_then) == [id.clone()] {
        assert!(pending.is_empty(), "{pending:?}");
        assert_eq!(ids(&both), std::slice::from_ref(&id));
    }

    server
        .wait_status(&id, |s| s["status"] == "succeeded")
        .await;
    let (done, _) = server.page(path).await;
    assert!(done.is_empty(), "{done:?}");
    let (ok, _) = server.page("/webhooks?status=succeeded").await;
    assert_eq!(ids(&ok), std::slice::from_ref(&id));
    server.stop().await.unwrap();
}
