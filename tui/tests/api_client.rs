//! The API client against a tiny scripted HTTP server on 127.0.0.1: request
//! shapes (paths, query, auth header, bodies) and the mapping of answers to
//! `ApiError`. The real-server test lives in the root crate.

use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use webhookd_tui::api::{
    ApiError, Circuit, Client, NewSubscription, Outcome, RecoverCounts, RecoverRequest,
    RecoverStatus, SubscriptionPatch, SubscriptionState,
};

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

const SUB: &str = r#"{"id":"0193a4c2-0000-7000-8000-000000000001","target_url":"https://a.example/h","events":null,"secret":"****wxyz","created_at":"2026-11-29T09:41:03.123Z","updated_at":"2026-11-29T09:41:03.123Z"}"#;

const SUB2: &str = "0193a4c2-0000-7000-8000-000000000002";

/// The second subscription as the server answers a state change: disabled
/// with its health block, or active again with the circuit closed.
fn state_answer(body: &str) -> String {
    let (state, reason, circuit) = if body.contains("disabled") {
        (r#""disabled""#, r#""disabled by an operator""#, "open")
    } else {
        (r#""active""#, "null", "closed")
    };
    format!(
        r#"{{"id":"{SUB2}","target_url":"https://b.example/h","events":null,"secret":null,"created_at":"2026-11-29T09:41:03.123Z","updated_at":"2026-11-29T09:41:03.123Z","state":{state},"disabled_reason":{reason},"disabled_at":null,"health":{{"circuit":"{circuit}","circuit_open_until":null,"consecutive_failures":3,"last_success_at":null,"last_failure_at":null,"in_flight":0,"max_in_flight":0}}}}"#
    )
}

fn attempt_json(id: i64) -> String {
    format!(
        r#"{{"id":{id},"webhook_id":"w{id}","subscription_id":"s","target_url":"https://a.example/h","timestamp":"2026-11-29T09:41:03.123Z","attempt_number":1,"outcome":"success","status_code":200,"error":null,"duration_ms":12,"response_body":null}}"#
    )
}

/// The scripted answers: (status, body, `Link` header) for a method and
/// request target. Lists answer JSON arrays, with the next page in `Link`,
/// as webhookd does.
fn route(method: &str, target: &str, body: &str) -> (u16, String, Option<String>) {
    let (status, answer) = match (method, target) {
        ("GET", "/subscriptions?limit=100") => {
            return (
                200,
                format!("[{SUB}]"),
                Some(r#"</subscriptions?limit=100&cursor=c%2B1>; rel="next""#.into()),
            )
        }
        ("GET", "/subscriptions?limit=100&cursor=c%2B1") => {
            return (
                200,
                format!("[{SUB}]"),
                // Another relation, and a next link that is not followed:
                // a link back to the page just read.
                Some(r#"</subscriptions?limit=100>; rel="first", </subscriptions?limit=100&cursor=c%2B1>; rel="next""#.into()),
            );
        }
        ("GET", "/attempts?limit=200&after=5") => {
            return (
                200,
                format!("[{}]", attempt_json(6)),
                Some(r#"</attempts?limit=200&after=6>; rel="next""#.into()),
            )
        }
        ("GET", "/attempts?limit=200") => {
            return (
                200,
                "[]".into(),
                Some(r#"</attempts?limit=200&after=0>; rel="next""#.into()),
            )
        }
        ("GET", "/webhooks?status=failed&subscription_id=s1&limit=2") => {
            return (
                200,
                format!("[{},{}]", failed_json("w3"), failed_json("w2")),
                Some(
                    r#"</webhooks?status=failed&subscription_id=s1&limit=2&cursor=w2>; rel="next""#
                        .into(),
                ),
            )
        }
        ("GET", "/webhooks?status=failed&subscription_id=s1&limit=2&cursor=w2") => {
            return (200, format!("[{}]", failed_json("w1")), None)
        }
        (method, target) => route_plain(method, target, body),
    };
    (status, answer, None)
}

fn failed_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","subscription_id":"s1","event_type":null,"received_at":"2026-11-29T09:41:03.123Z","status":"failed","attempt_count":4,"last_attempt_at":"2026-11-29T09:41:20.000Z","last_status_code":500,"last_error":"receiver answered 500","next_retry_at":null,"something_new":1}}"#
    )
}

/// The answers of the redeliver and recover calls.
fn route_issue15(method: &str, target: &str, body: &str) -> Option<(u16, String)> {
    Some(match (method, target) {
        ("POST", "/webhooks/w1/redeliver") => (
            202,
            r#"{"webhook_id":"w1","status":"pending","redelivery":2}"#.into(),
        ),
        ("POST", "/webhooks/w2/redeliver") => (
            409,
            r#"{"error":{"code":"conflict","message":"the webhook is still retrying"}}"#.into(),
        ),
        ("POST", "/subscriptions/s1/recover") if body.contains("2026-11-20") => (
            422,
            r#"{"error":{"code":"validation","message":"since is before the retention","field":"since"},"oldest_available":"2026-11-26T09:41:03.123Z"}"#.into(),
        ),
        ("POST", "/subscriptions/s1/recover") if body.contains(r#""dry_run":true"#) => {
            (202, r#"{"matched":3,"queued":0,"unavailable":1}"#.into())
        }
        ("POST", "/subscriptions/s1/recover") => {
            (202, r#"{"matched":3,"queued":2,"unavailable":1}"#.into())
        }
        _ => return None,
    })
}

/// The answers without a `Link` header.
fn route_plain(method: &str, target: &str, body: &str) -> (u16, String) {
    if let Some(answer) = route_issue15(method, target, body) {
        return answer;
    }
    let sub_path = "/subscriptions/0193a4c2-0000-7000-8000-000000000001";
    match (method, target) {
        ("GET", "/healthz") => (200, r#"{"status":"ok"}"#.into()),
        ("GET", p) if p == sub_path => (200, SUB.into()),
        ("GET", "/subscriptions/missing") => (
            404,
            r#"{"error":{"code":"not_found","message":"no such subscription"}}"#.into(),
        ),
        ("POST", "/subscriptions") => (
            422,
            r#"{"error":{"code":"validation_failed","message":"secret too short","field":"secret"}}"#
                .into(),
        ),
        ("PATCH", p) if p == sub_path => (200, SUB.into()),
        ("PATCH", p) if p == format!("/subscriptions/{SUB2}") => (200, state_answer(body)),
        ("DELETE", p) if p == sub_path => (204, String::new()),
        ("GET", p) if p == format!("{sub_path}/attempts?limit=20") => {
            (200, format!("[{},{}]", attempt_json(2), attempt_json(1)))
        }
        ("GET", "/status/bad-json") => (200, "{not json".into()),
        ("GET", "/metrics") => (404, "not found".into()),
        _ => (500, "unexpected request".into()),
    }
}

/// Serve `route` on a loopback port until the test ends; log every request.
async fn fake_server() -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or("").split_whitespace();
                let method = first.next().unwrap_or("").to_string();
                let target = first.next().unwrap_or("").to_string();
                let mut length = 0;
                let mut authorization = None;
                for line in lines {
                    if let Some((k, v)) = line.split_once(':') {
                        let k = k.trim().to_ascii_lowercase();
                        if k == "content-length" {
                            length = v.trim().parse().unwrap_or(0);
                        } else if k == "authorization" {
                            authorization = Some(v.trim().to_string());
                        }
                    }
                }
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let (status, answer, link) = route(&method, &target, &body);
                seen.lock().unwrap().push(Seen {
                    method,
                    target,
                    authorization,
                    body,
                });
                let link = link.map(|l| format!("link: {l}\r\n")).unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{link}connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), log)
}

#[tokio::test]
async fn client_requests_and_answers() {
    let (url, log) = fake_server().await;
    let client = Client::new(&url, Some("tok-123".into())).unwrap();
    let sub_id = "0193a4c2-0000-7000-8000-000000000001";

    client.health().await.unwrap();

    let subs = client.list_subscriptions().await.unwrap();
    assert_eq!(subs.len(), 2, "both pages are followed");
    assert_eq!(subs[0].events, None);

    let sub = client.get_subscription(sub_id).await.unwrap();
    assert_eq!(sub.secret.as_deref(), Some("****wxyz"));

    let err = client.get_subscription("missing").await.unwrap_err();
    assert_eq!(
        err,
        ApiError::Http {
            status: 404,
            code: "not_found".into(),
            message: "no such subscription".into(),
            field: None,
        }
    );

    let err = client
        .create_subscription(&NewSubscription {
            target_url: "https://a.example/h".into(),
            secret: Some("short".into()),
            events: Some(vec!["order.created".into()]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("secret"));
    assert_eq!(err.status(), Some(422));

    client
        .update_subscription(
            sub_id,
            &SubscriptionPatch {
                events: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let disabled = client
        .set_subscription_state(SUB2, SubscriptionState::Disabled)
        .await
        .unwrap();
    assert_eq!(disabled.state, SubscriptionState::Disabled);
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("disabled by an operator")
    );
    assert_eq!(disabled.health.map(|h| h.circuit), Some(Circuit::Open));
    let enabled = client
        .set_subscription_state(SUB2, SubscriptionState::Active)
        .await
        .unwrap();
    assert_eq!(enabled.state, SubscriptionState::Active);
    assert_eq!(enabled.health.map(|h| h.circuit), Some(Circuit::Closed));

    client.delete_subscription(sub_id).await.unwrap();

    let attempts = client.subscription_attempts(sub_id, 20).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(attempts[0].outcome, Outcome::Success);

    let page = client.attempts_after(Some(5), 200).await.unwrap();
    assert_eq!(page.next_cursor, Some(6));
    assert_eq!(page.items.len(), 1);
    let page = client.attempts_after(None, 200).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, Some(0));

    assert!(matches!(
        client.webhook_status("bad-json").await,
        Err(ApiError::Decode(_))
    ));
    assert_eq!(client.metrics_text().await.unwrap_err().status(), Some(404));

    let seen = log.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer tok-123")),
        "{seen:?}"
    );
    let post = seen.iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&post.body).unwrap(),
        serde_json::json!({"target_url": "https://a.example/h", "secret": "short", "events": ["order.created"]})
    );
    let patches: Vec<(&str, &str)> = seen
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| (s.target.as_str(), s.body.as_str()))
        .collect();
    let sub2_path = format!("/subscriptions/{SUB2}");
    assert_eq!(
        patches,
        [
            (
                format!("/subscriptions/{sub_id}").as_str(),
                r#"{"events":null}"#
            ),
            (sub2_path.as_str(), r#"{"state":"disabled"}"#),
            (sub2_path.as_str(), r#"{"state":"active"}"#),
        ]
    );
    assert!(seen.iter().all(|s| s.target != "unexpected"));
    let lists: Vec<&str> = seen
        .iter()
        .filter(|s| s.target.starts_with("/subscriptions?"))
        .map(|s| s.target.as_str())
        .collect();
    assert_eq!(
        lists,
        [
            "/subscriptions?limit=100",
            "/subscriptions?limit=100&cursor=c%2B1"
        ],
        "the Link is followed as given, and a link back is not"
    );
}

#[tokio::test]
async fn failed_webhooks_redeliver_and_recover() {
    let (url, log) = fake_server().await;
    let client = Client::new(&url, None).unwrap();

    // The failed list, its next page through the Link header.
    let page = client
        .list_webhooks(&["failed"], Some("s1"), 2)
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["w3", "w2"]);
    assert_eq!(page.items[0].last_status_code, Some(500));
    let next = page.next.expect("a next page");
    assert_eq!(
        next,
        format!("{url}/webhooks?status=failed&subscription_id=s1&limit=2&cursor=w2")
    );
    let page = client.webhooks_at(&next).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next, None);
    // A link handed back must stay on this server.
    assert!(matches!(
        client.webhooks_at("http://192.0.2.1/webhooks").await,
        Err(ApiError::Decode(_))
    ));

    let r = client.redeliver("w1").await.unwrap();
    assert_eq!((r.redelivery, r.status.as_str()), (2, "pending"));
    let err = client.redeliver("w2").await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(err.short().contains("the webhook is still retrying"));

    let since = "2026-11-29T08:41:03.123Z".parse().unwrap();
    let dry = RecoverRequest {
        since,
        until: None,
        status: vec![RecoverStatus::Failed],
        dry_run: true,
    };
    assert_eq!(
        client.recover("s1", &dry).await.unwrap(),
        RecoverCounts {
            matched: 3,
            queued: 0,
            unavailable: 1
        }
    );
    let real = RecoverRequest {
        dry_run: false,
        ..dry.clone()
    };
    assert_eq!(client.recover("s1", &real).await.unwrap().queued, 2);
    let too_old = RecoverRequest {
        since: "2026-11-20T00:00:00Z".parse().unwrap(),
        ..dry
    };
    let err = client.recover("s1", &too_old).await.unwrap_err();
    assert_eq!(err.error.status(), Some(422));
    assert_eq!(err.error.field(), Some("since"));
    assert_eq!(
        err.oldest_available,
        Some("2026-11-26T09:41:03.123Z".parse().unwrap())
    );

    let seen = log.lock().unwrap().clone();
    let recovers: Vec<serde_json::Value> = seen
        .iter()
        .filter(|s| s.target == "/subscriptions/s1/recover")
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(
        recovers[0],
        serde_json::json!({"since": "2026-11-29T08:41:03.123Z", "status": ["failed"], "dry_run": true})
    );
    assert_eq!(recovers[1]["dry_run"], false);
    let redeliver = seen
        .iter()
        .find(|s| s.target == "/webhooks/w1/redeliver")
        .unwrap();
    assert_eq!(
        (redeliver.method.as_str(), redeliver.body.as_str()),
        ("POST", "")
    );
}

#[tokio::test]
async fn no_token_means_no_header() {
    let (url, log) = fake_server().await;
    let client = Client::new(&url, None).unwrap();
    client.health().await.unwrap();
    assert_eq!(log.lock().unwrap()[0].authorization, None);
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let port = {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let err = client.health().await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let err = client.list_subscriptions().await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
}
