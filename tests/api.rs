//! The HTTP API over real HTTP: webhookd in-process on port 0, a real
//! nats-server, a real SQLite file in a temp dir. Also the `webhookd` binary's
//! `--check-config` and `--help`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use webhookd::config::Config;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::raw_http;
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::sqlite::{self, hold_write_lock};
use webhookd_harness::wait::{eventually, DEADLINE};

/// A target URL nothing listens on; never contacted (nothing is ingested
/// for subscriptions pointing at it).
const NOWHERE: &str = "http://127.0.0.1:9/hook";

/// An id that no test ever creates (UUIDv7 ids carry a current timestamp).
const MISSING_ID: &str = "00000000-0000-7000-8000-000000000000";

/// A secret of an accepted length (25 characters, ends in `wxyz`).
const SECRET: &str = "s3cr3t-value-0123456-wxyz";

/// One webhookd with its own nats-server and data directory. Fields drop in
/// order: the server stops before its NATS and its files go away.
struct Env {
    server: TestServer,
    _dir: tempfile::TempDir,
    _nats: NatsServer,
}

async fn start_with(tweak: impl FnOnce(&mut Config)) -> Env {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    tweak(&mut config);
    let server = TestServer::start(config).await;
    Env {
        server,
        _dir: dir,
        _nats: nats,
    }
}

async fn start() -> Env {
    start_with(|_| {}).await
}

/// Asserts an error answer: status, `error.code`, a non-empty message, and
/// `error.field` (absent when `field` is `None`).
#[track_caller]
fn assert_error(what: &str, got: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{what}: status; body {body}");
    assert_eq!(body["error"]["code"], code, "{what}: code; body {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: message; body {body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{what}: field; body {body}"),
        None => assert!(
            body["error"].get("field").is_none(),
            "{what}: no field expected; body {body}"
        ),
    }
}

/// Rows in the `subscriptions` table of the server's SQLite file.
fn subscription_rows(data_dir: &Path) -> Vec<(String, String, Option<String>, Option<String>)> {
    let conn = sqlite::read_only(&data_dir.join("webhookd.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, target_url, secret, events FROM subscriptions ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn timestamp(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a timestamp: {v}: {e}"))
}

/// Sends `request` as is on a new connection and reads the answer until the
/// server closes it (send `Connection: close`). Returns status and JSON body.
async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, Value) {
    raw_http::exchange(addr, request, Duration::from_secs(20))
        .await
        .json()
}

/// A `Transfer-Encoding: chunked` POST (no Content-Length) of `chunks`.
fn chunked_post(path: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

// ---------------------------------------------------------------------------
// Subscription CRUD
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_crud_lifecycle() {
    let env = start().await;
    let s = &env.server;

    // Create.
    let (status, created) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "events": ["order.created"], "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7, "ids are time-ordered UUIDv7");
    assert_eq!(created["target_url"], NOWHERE);
    assert_eq!(created["events"], json!(["order.created"]));
    assert_eq!(created["secret"], SECRET);
    assert_eq!(created["created_at"], created["updated_at"]);
    let created_at = timestamp(&created["created_at"]);

    // It is in the SQLite file.
    let rows = subscription_rows(&s.data_dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, id);
    assert_eq!(rows[0].1, NOWHERE);
    assert_eq!(rows[0].2.as_deref(), Some(SECRET));

    // Read one.
    let (status, one) = s.call("GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["target_url"], NOWHERE);
    assert_eq!(one["events"], json!(["order.created"]));
    assert_eq!(one["secret"], "****wxyz");
    assert_eq!(one["created_at"], created["created_at"]);

    // List: a JSON array, no next page.
    let (list, next) = s.page("/subscriptions").await;
    assert_eq!(list, std::slice::from_ref(&one));
    assert_eq!(next, None);

    // Patch one field.
    let new_url = "http://127.0.0.1:9/other";
    let (status, patched) = s
        .call(
            "PATCH",
            &format!("/subscriptions/{id}"),
            Some(json!({"target_url": new_url})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["target_url"], new_url);
    assert_eq!(patched["events"], json!(["order.created"]));
    assert_eq!(patched["secret"], "****wxyz");
    assert_eq!(patched["created_at"], created["created_at"]);
    assert!(timestamp(&patched["updated_at"]) >= created_at);
    let (_, reread) = s.call("GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(reread, patched);
    assert_eq!(subscription_rows(&s.data_dir)[0].1, new_url);

    // Delete.
    let resp = s
        .http
        .delete(s.url(&format!("/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
    assert!(
        subscription_rows(&s.data_dir).is_empty(),
        "row deleted from SQLite"
    );

    let path = format!("/subscriptions/{id}");
    assert_error(
        "GET after DELETE",
        &s.call("GET", &path, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        "DELETE again",
        &s.call("DELETE", &path, None).await,
        404,
        "not_found",
        None,
    );
    assert_error(
        "PATCH after DELETE",
        &s.call("PATCH", &path, Some(json!({"target_url": NOWHERE})))
            .await,
        404,
        "not_found",
        None,
    );
    let (status, list) = s.call("GET", "/subscriptions", None).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_follow_the_link_header_in_creation_order() {
    let env = start().await;
    let s = &env.server;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            s.subscribe(json!({"target_url": format!("{NOWHERE}/{i}")}))
                .await,
        );
    }

    // Three pages, each announcing the next in `Link` until the last.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/subscriptions?limit=2".to_string();
    loop {
        let (items, next) = s.page(&path).await;
        sizes.push(items.len());
        for item in &items {
            seen.push(item["id"].as_str().unwrap().to_string());
            let i = seen.len() - 1;
            assert_eq!(
                item["target_url"],
                format!("{NOWHERE}/{i}"),
                "creation order"
            );
        }
        let Some(next) = next else { break };
        let last = seen.last().unwrap();
        assert_eq!(
            next,
            format!("/subscriptions?limit=2&cursor={last}"),
            "same path and limit, the page's last id as cursor"
        );
        path = next;
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, created);

    // Exactly `limit` left: no next page.
    let (items, next) = s.page("/subscriptions?limit=5").await;
    assert_eq!((items.len(), next), (5, None));
    // The default limit covers all of them.
    let (items, next) = s.page("/subscriptions").await;
    assert_eq!((items.len(), next), (5, None));
    // A cursor at the last id: an empty last page.
    let (items, next) = s
        .page(&format!("/subscriptions?cursor={}", created[4]))
        .await;
    assert_eq!((items.len(), next), (0, None));
    // The trailing-slash path pages too, and keeps its own spelling.
    let (items, next) = s.page("/subscriptions/?limit=4").await;
    assert_eq!(items.len(), 4);
    assert_eq!(
        next.as_deref(),
        Some(format!("/subscriptions/?limit=4&cursor={}", created[3]).as_str())
    );
}

/// The id of a made-up webhook `n` (attempt rows written by the tests).
fn fake_webhook(n: u64) -> String {
    format!("00000000-0000-7000-8000-{n:012x}")
}

/// Attempt rows written straight into the server's SQLite file: `(webhook
/// n, timestamp ms)` for `sub` ([`fake_webhook`]), ids in insertion order.
fn insert_attempts(data_dir: &Path, sub: &str, rows: &[(u64, i64)]) {
    let conn = rusqlite::Connection::open(data_dir.join("webhookd.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    for (webhook, ts) in rows {
        conn.execute(
            "INSERT INTO delivery_attempts (webhook_id, subscription_id, target_url, timestamp,
                 attempt_number, outcome, status_code, error, duration_ms, response_body)
             VALUES (?1, ?2, 'http://127.0.0.1:9/hook', ?3, 1, 'success', 200, NULL, 1, NULL)",
            rusqlite::params![fake_webhook(*webhook), sub, ts],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_of_a_subscription_page_newest_first_via_link() {
    let env = start().await;
    let s = &env.server;
    let receiver = Receiver::ok().await;
    let sub = s.subscribe(json!({"target_url": receiver.url()})).await;
    let other = s.subscribe(json!({"target_url": NOWHERE})).await;

    // One real delivery (newest), then rows with chosen times: three share
    // one millisecond, so the cursor must order by id within it.
    let (status, answer) = s.ingest(&sub, "{}", &[]).await;
    assert_eq!(status, 202, "{answer}");
    let real = webhook_id(&answer);
    let path = format!("/subscriptions/{sub}/attempts");
    eventually("the delivery's attempt row", DEADLINE, || async {
        let (items, _) = s.page(&path).await;
        (items.len() == 1).then_some(())
    })
    .await;
    let t = 1_700_000_000_000_i64;
    insert_attempts(
        &s.data_dir,
        &sub,
        &[(1, t), (2, t + 5), (3, t + 5), (4, t + 5), (5, t + 9)],
    );
    insert_attempts(&s.data_dir, &other, &[(6, t + 7)]);
    let mut expected = vec![real];
    expected.extend([5, 4, 3, 2, 1].map(fake_webhook));

    let (all, next) = s
        .page(&format!("/subscriptions/{sub}/attempts?limit=1000"))
        .await;
    assert_eq!(next, None);
    let ids: Vec<&str> = all
        .iter()
        .map(|a| a["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected, "newest first, ties by id");

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = format!("/subscriptions/{sub}/attempts?limit=2");
    loop {
        let (items, next) = s.page(&path).await;
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|a| a["webhook_id"].as_str().unwrap().to_string()),
        );
        let Some(next) = next else { break };
        assert!(
            next.starts_with(&format!("/subscriptions/{sub}/attempts?limit=2&cursor=")),
            "{next}"
        );
        path = next;
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [2, 2, 2]);
    assert_eq!(seen, expected);

    // The default limit (20) holds them all: no link.
    let (items, next) = s.page(&format!("/subscriptions/{sub}/attempts")).await;
    assert_eq!((items.len(), next), (6, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempts_tail_always_links_the_next_poll() {
    let env = start().await;
    let s = &env.server;
    let sub = s.subscribe(json!({"target_url": NOWHERE})).await;

    // Nothing yet: an empty array whose next poll starts at the beginning.
    let (items, next) = s.page("/attempts?limit=2").await;
    assert!(items.is_empty());
    assert_eq!(next.as_deref(), Some("/attempts?limit=2&after=0"));

    let t = 1_700_000_000_000_i64;
    insert_attempts(&s.data_dir, &sub, &[(1, t), (2, t + 1), (3, t + 2)]);
    // Without `after`: the most recent `limit`, oldest first.
    let (items, next) = s.page("/attempts?limit=2").await;
    let ids: Vec<i64> = items.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let last = ids[1];
    assert_eq!(next, Some(format!("/attempts?limit=2&after={last}")));
    // Following the link: nothing new, and the link stays at the given cursor.
    let (items, next) = s.page(&format!("/attempts?limit=2&after={last}")).await;
    assert!(items.is_empty());
    assert_eq!(next, Some(format!("/attempts?limit=2&after={last}")));
    // From the beginning: two pages, then the tail waits after the last id.
    let (items, next) = s.page("/attempts?after=0&limit=2").await;
    assert_eq!(items.len(), 2);
    let first_page_last = items[1]["id"].as_i64().unwrap();
    assert_eq!(
        next,
        Some(format!("/attempts?limit=2&after={first_page_last}"))
    );
    let (items, next) = s.page(&next.unwrap()).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["webhook_id"], fake_webhook(3));
    assert_eq!(next, Some(format!("/attempts?limit=2&after={last}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cursor_is_a_json_400_and_changes_nothing() {
    let env = start().await;
    let s = &env.server;
    let sub = s.subscribe(json!({"target_url": NOWHERE})).await;
    insert_attempts(&s.data_dir, &sub, &[(1, 1_700_000_000_000)]);
    let before = subscription_rows(&s.data_dir);
    let (before_attempts, _) = s.page("/attempts?after=0").await;

    let attempts = format!("/subscriptions/{sub}/attempts");
    for (path, field) in [
        ("/subscriptions?cursor=abc".to_string(), "cursor"),
        ("/subscriptions?limit=2&cursor=123".to_string(), "cursor"),
        (format!("{attempts}?cursor=abc"), "cursor"),
        (format!("{attempts}?cursor=1.x"), "cursor"),
        (format!("{attempts}?cursor=-1.2"), "cursor"),
        (format!("{attempts}?cursor=1"), "cursor"),
        (
            format!("{attempts}?cursor={}", "9".repeat(30) + ".1"),
            "cursor",
        ),
        ("/attempts?after=x".to_string(), "after"),
        ("/attempts?after=-1".to_string(), "after"),
    ] {
        let got = s.call("GET", &path, None).await;
        assert_error(&path, &got, 400, "invalid_query", Some(field));
    }
    assert_eq!(subscription_rows(&s.data_dir), before);
    let (after_attempts, _) = s.page("/attempts?after=0").await;
    assert_eq!(after_attempts, before_attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_only_given_fields_and_null_clears() {
    let env = start().await;
    let s = &env.server;
    let (_, created) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "events": ["a", "b"], "secret": SECRET})),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/subscriptions/{id}");

    // An empty patch changes nothing but updated_at.
    let (status, same) = s.call("PATCH", &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["target_url"], NOWHERE);
    assert_eq!(same["events"], json!(["a", "b"]));
    assert_eq!(same["secret"], "****wxyz");

    // Events only.
    let (status, p) = s
        .call("PATCH", &path, Some(json!({"events": ["c", "c", "d"]})))
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        p["events"],
        json!(["c", "d"]),
        "duplicates removed on PATCH too"
    );
    assert_eq!(p["target_url"], NOWHERE);
    assert_eq!(p["secret"], "****wxyz");

    // A new secret: masked in the answer, stored in full.
    let new_secret = "another-secret-value-9876";
    let (status, p) = s
        .call("PATCH", &path, Some(json!({"secret": new_secret})))
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["secret"], "****9876");
    assert_eq!(p["events"], json!(["c", "d"]));
    assert_eq!(
        subscription_rows(&s.data_dir)[0].2.as_deref(),
        Some(new_secret)
    );

    // null clears the secret, and only it.
    let (status, p) = s.call("PATCH", &path, Some(json!({"secret": null}))).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["secret"], Value::Null);
    assert_eq!(p["events"], json!(["c", "d"]));
    assert_eq!(p["target_url"], NOWHERE);
    assert_eq!(subscription_rows(&s.data_dir)[0].2, None);

    // null clears the event filter (all events), and only it.
    let (status, p) = s.call("PATCH", &path, Some(json!({"events": null}))).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["events"], Value::Null);
    assert_eq!(p["secret"], Value::Null);
    assert_eq!(p["target_url"], NOWHERE);
    assert_eq!(subscription_rows(&s.data_dir)[0].3, None);

    // A refused patch changes nothing, even its valid fields.
    let before = s.call("GET", &path, None).await.1;
    let refused = s
        .call(
            "PATCH",
            &path,
            Some(json!({"events": ["x"], "target_url": "ftp://127.0.0.1/x"})),
        )
        .await;
    assert_error(
        "invalid PATCH",
        &refused,
        422,
        "validation_failed",
        Some("target_url"),
    );
    assert_eq!(s.call("GET", &path, None).await.1, before);

    assert_eq!(p["created_at"], created["created_at"]);
    assert!(timestamp(&p["updated_at"]) >= timestamp(&created["updated_at"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_a_trailing_slash_work() {
    let env = start().await;
    let s = &env.server;
    let (status, created) = s
        .call(
            "POST",
            "/subscriptions/",
            Some(json!({"target_url": NOWHERE})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();

    let (status, list) = s.call("GET", "/subscriptions/", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["id"], id);

    let path = format!("/subscriptions/{id}/");
    let (status, one) = s.call("GET", &path, None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id);

    let (status, p) = s.call("PATCH", &path, Some(json!({"events": ["e"]}))).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["events"], json!(["e"]));

    let (status, attempts) = s
        .call("GET", &format!("/subscriptions/{id}/attempts/"), None)
        .await;
    assert_eq!(status, 200, "{attempts}");
    assert_eq!(attempts, json!([]));

    assert_eq!(s.call("DELETE", &path, None).await.0, 204);
    assert_error(
        "GET deleted/",
        &s.call("GET", &path, None).await,
        404,
        "not_found",
        None,
    );

    assert_eq!(s.call("GET", "/healthz/", None).await.0, 200);
    assert_eq!(s.call("GET", "/readyz/", None).await.0, 200);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let env = start().await;
    let s = &env.server;
    for path in [
        "/",
        "/nope",
        "/subscription",
        "/subscriptions/a/b",
        "/ingest",
        "/status",
    ] {
        assert_error(
            path,
            &s.call("GET", path, None).await,
            404,
            "not_found",
            None,
        );
    }

    let id = s.subscribe(json!({"target_url": NOWHERE})).await;
    let cases = [
        ("DELETE", "/subscriptions".to_string(), "GET, POST"),
        ("PUT", "/subscriptions/".to_string(), "GET, POST"),
        ("PUT", format!("/subscriptions/{id}"), "GET, PATCH, DELETE"),
        ("POST", format!("/subscriptions/{id}"), "GET, PATCH, DELETE"),
        ("POST", format!("/subscriptions/{id}/attempts"), "GET"),
        ("GET", format!("/ingest/{id}"), "POST"),
        ("POST", "/healthz".to_string(), "GET"),
        ("DELETE", "/readyz".to_string(), "GET"),
        ("POST", format!("/status/{MISSING_ID}"), "GET"),
    ];
    for (method, path, allow) in cases {
        let what = format!("{method} {path}");
        let resp = s
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                s.url(&path),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let allow_header = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_error(&what, &(status, body), 405, "method_not_allowed", None);
        assert_eq!(allow_header.as_deref(), Some(allow), "{what}: Allow header");
    }
    // The 405s touched nothing.
    assert_eq!(
        s.call("GET", &format!("/subscriptions/{id}"), None).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_non_objects_422() {
    let env = start().await;
    let s = &env.server;
    let id = s.subscribe(json!({"target_url": NOWHERE})).await;
    let one = format!("/subscriptions/{id}");
    let json_ct = [("content-type", "application/json")];

    for (method, path) in [("POST", "/subscriptions"), ("PATCH", one.as_str())] {
        for body in [
            r#"{"target_url": "#,
            "",
            "{'a': 1}",
            "not json",
            r#"{"a":1} trailing"#,
        ] {
            let got = s.raw(method, path, &json_ct, body.to_string()).await;
            assert_error(
                &format!("{method} {body:?}"),
                &got,
                400,
                "invalid_json",
                None,
            );
        }
        let invalid_utf8 = b"{\"target_url\": \"\xff\xfe\"}".to_vec();
        let got = s.raw(method, path, &json_ct, invalid_utf8).await;
        assert_error(
            &format!("{method} invalid UTF-8"),
            &got,
            400,
            "invalid_json",
            None,
        );

        for body in [
            json!([1, 2]),
            json!("a string"),
            json!(42),
            json!(null),
            json!(true),
        ] {
            let got = s.call(method, path, Some(body.clone())).await;
            assert_error(
                &format!("{method} {body}"),
                &got,
                422,
                "validation_failed",
                Some("body"),
            );
        }
    }
    // Nothing was created or changed.
    let rows = subscription_rows(&s.data_dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, NOWHERE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_failures_name_the_field() {
    let env = start().await;
    let s = &env.server;
    let long_url = format!("http://127.0.0.1/{}", "a".repeat(2048));
    let ok = |extra: Value| {
        let mut body = json!({"target_url": NOWHERE});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("target_url missing", json!({}), "target_url"),
        (
            "target_url missing, others given",
            json!({"events": ["a"]}),
            "target_url",
        ),
        (
            "target_url a number",
            json!({"target_url": 42}),
            "target_url",
        ),
        ("target_url null", json!({"target_url": null}), "target_url"),
        (
            "target_url a list",
            json!({"target_url": [NOWHERE]}),
            "target_url",
        ),
        ("relative URL", json!({"target_url": "/hook"}), "target_url"),
        (
            "no scheme",
            json!({"target_url": "127.0.0.1/hook"}),
            "target_url",
        ),
        (
            "ftp scheme",
            json!({"target_url": "ftp://127.0.0.1/hook"}),
            "target_url",
        ),
        (
            "file scheme",
            json!({"target_url": "file:///etc/passwd"}),
            "target_url",
        ),
        ("no host", json!({"target_url": "http://"}), "target_url"),
        (
            "no host, port only",
            json!({"target_url": "http://:80/hook"}),
            "target_url",
        ),
        (
            "longer than 2048",
            json!({"target_url": long_url}),
            "target_url",
        ),
        ("events empty list", ok(json!({"events": []})), "events"),
        (
            "events empty string item",
            ok(json!({"events": [""]})),
            "events",
        ),
        (
            "events blank item",
            ok(json!({"events": ["a", "  "]})),
            "events",
        ),
        (
            "events non-string item",
            ok(json!({"events": ["a", 1]})),
            "events",
        ),
        (
            "events an object item",
            ok(json!({"events": [{"a": 1}]})),
            "events",
        ),
        (
            "events a string",
            ok(json!({"events": "order.created"})),
            "events",
        ),
        ("events empty string", ok(json!({"events": ""})), "events"),
        (
            "secret too short",
            ok(json!({"secret": "fifteen-chars.."})),
            "secret",
        ),
        (
            "secret a number",
            ok(json!({"secret": 1234567890123456789u64})),
            "secret",
        ),
        (
            "generate_secret not bool",
            ok(json!({"generate_secret": "yes"})),
            "generate_secret",
        ),
        (
            "secret and generate_secret",
            ok(json!({"secret": SECRET, "generate_secret": true})),
            "generate_secret",
        ),
        ("unknown field", ok(json!({"colour": "red"})), "colour"),
        (
            "unknown field, camelCase",
            ok(json!({"targetUrl": NOWHERE})),
            "targetUrl",
        ),
    ];
    for (what, body, field) in &cases {
        let got = s.call("POST", "/subscriptions", Some(body.clone())).await;
        assert_error(what, &got, 422, "validation_failed", Some(field));
    }
    assert!(
        subscription_rows(&s.data_dir).is_empty(),
        "no failed POST created a row"
    );

    // A URL of exactly 2048 characters and a 16-character secret pass.
    let edge_url = format!(
        "http://127.0.0.1/{}",
        "a".repeat(2048 - "http://127.0.0.1/".len())
    );
    assert_eq!(edge_url.len(), 2048);
    let (status, body) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": edge_url, "secret": "sixteen-chars..."})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // PATCH validates the same fields, and refuses keys only POST takes.
    let path = format!("/subscriptions/{}", body["id"].as_str().unwrap());
    let patch_cases: Vec<(&str, Value, &str)> = vec![
        ("target_url null", json!({"target_url": null}), "target_url"),
        ("relative URL", json!({"target_url": "hook"}), "target_url"),
        (
            "ftp scheme",
            json!({"target_url": "ftp://127.0.0.1/"}),
            "target_url",
        ),
        ("events empty list", json!({"events": []}), "events"),
        ("events non-string", json!({"events": [true]}), "events"),
        ("secret too short", json!({"secret": "short"}), "secret"),
        (
            "generate_secret",
            json!({"generate_secret": true}),
            "generate_secret",
        ),
        ("id", json!({"id": MISSING_ID}), "id"),
        ("unknown field", json!({"colour": "red"}), "colour"),
    ];
    for (what, body, field) in &patch_cases {
        let got = s.call("PATCH", &path, Some(body.clone())).await;
        assert_error(
            &format!("PATCH {what}"),
            &got,
            422,
            "validation_failed",
            Some(field),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_are_400_and_unknown_ids_404() {
    let env = start().await;
    let s = &env.server;
    let patch = Some(json!({"target_url": NOWHERE}));
    let simple_form = MISSING_ID.replace('-', "");
    for bad in [
        "not-a-uuid",
        "123",
        simple_form.as_str(),
        "00000000-0000-7000-8000-00000000000g",
    ] {
        let path = format!("/subscriptions/{bad}");
        for (method, body) in [("GET", None), ("PATCH", patch.clone()), ("DELETE", None)] {
            let got = s.call(method, &path, body).await;
            assert_error(&format!("{method} {path}"), &got, 400, "invalid_id", None);
        }
        for path in [
            format!("/subscriptions/{bad}/attempts"),
            format!("/status/{bad}"),
        ] {
            assert_error(
                &path,
                &s.call("GET", &path, None).await,
                400,
                "invalid_id",
                None,
            );
        }
        let got = s.ingest(bad, "{}", &[]).await;
        assert_error(&format!("ingest {bad}"), &got, 400, "invalid_id", None);
    }

    let path = format!("/subscriptions/{MISSING_ID}");
    for (method, body) in [("GET", None), ("PATCH", patch.clone()), ("DELETE", None)] {
        let got = s.call(method, &path, body).await;
        assert_error(&format!("{method} {path}"), &got, 404, "not_found", None);
    }
    for path in [
        format!("/subscriptions/{MISSING_ID}/attempts"),
        format!("/status/{MISSING_ID}"),
    ] {
        assert_error(
            &path,
            &s.call("GET", &path, None).await,
            404,
            "not_found",
            None,
        );
    }
    let got = s.ingest(MISSING_ID, "{}", &[]).await;
    assert_error(
        "ingest to an unknown subscription",
        &got,
        404,
        "not_found",
        None,
    );
    // The PATCH of an unknown id did not create it.
    assert!(subscription_rows(&s.data_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_query_parameters_are_400() {
    let env = start().await;
    let s = &env.server;
    let id = s.subscribe(json!({"target_url": NOWHERE})).await;
    for limit in ["0", "501", "-1", "abc", "1.5", ""] {
        let path = format!("/subscriptions?limit={limit}");
        let got = s.call("GET", &path, None).await;
        assert_error(&path, &got, 400, "invalid_query", Some("limit"));
    }
    for cursor in ["abc", "123"] {
        let path = format!("/subscriptions?cursor={cursor}");
        let got = s.call("GET", &path, None).await;
        assert_error(&path, &got, 400, "invalid_query", Some("cursor"));
    }
    for limit in ["0", "1001", "x"] {
        let path = format!("/subscriptions/{id}/attempts?limit={limit}");
        let got = s.call("GET", &path, None).await;
        assert_error(&path, &got, 400, "invalid_query", Some("limit"));
    }
    for path in [
        "/attempts?limit=0",
        "/attempts?after=-1",
        "/attempts?after=x",
    ] {
        let got = s.call("GET", path, None).await;
        assert_eq!(got.0, 400, "{path}: {}", got.1);
        assert_eq!(got.1["error"]["code"], "invalid_query", "{path}");
    }
    // The bounds themselves are accepted.
    for path in ["/subscriptions?limit=1", "/subscriptions?limit=500"] {
        assert_eq!(s.call("GET", path, None).await.0, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413_also_when_chunked() {
    let env = start_with(|c| c.max_body = 1024).await;
    let s = &env.server;
    let id = s.subscribe(json!({"target_url": NOWHERE})).await;
    // Valid JSON that would be a 422 (URL too long) if the size were not checked.
    let big = serde_json::to_vec(
        &json!({"target_url": format!("http://127.0.0.1/{}", "a".repeat(3000))}),
    )
    .unwrap();
    let json_ct = [("content-type", "application/json")];
    let one = format!("/subscriptions/{id}");
    let ingest = format!("/ingest/{id}");

    // With a Content-Length.
    for (method, path) in [
        ("POST", "/subscriptions"),
        ("PATCH", one.as_str()),
        ("POST", ingest.as_str()),
    ] {
        let got = s.raw(method, path, &json_ct, big.clone()).await;
        assert_error(
            &format!("{method} {path}"),
            &got,
            413,
            "payload_too_large",
            None,
        );
    }
    // One byte over, one byte under.
    let exact = |n: usize| {
        let prefix = r#"{"target_url": "http://127.0.0.1/"#;
        let pad = n - prefix.len() - 2;
        format!("{prefix}{}\"}}", "a".repeat(pad))
    };
    assert_eq!(exact(1025).len(), 1025);
    let got = s.raw("POST", "/subscriptions", &json_ct, exact(1025)).await;
    assert_error("1025 bytes", &got, 413, "payload_too_large", None);
    let got = s.raw("POST", "/subscriptions", &json_ct, exact(1024)).await;
    assert_eq!(got.0, 201, "1024 bytes is within the limit: {}", got.1);

    // Chunked, no Content-Length: bounded while reading.
    let pieces: Vec<&[u8]> = big.chunks(400).collect();
    for path in ["/subscriptions", ingest.as_str()] {
        let got = raw_http(s.addr, &chunked_post(path, &pieces)).await;
        assert_error(
            &format!("chunked POST {path}"),
            &got,
            413,
            "payload_too_large",
            None,
        );
    }
    // A chunked body under the limit is read whole.
    let small = serde_json::to_vec(&json!({"target_url": NOWHERE, "events": ["chunked"]})).unwrap();
    let pieces: Vec<&[u8]> = small.chunks(7).collect();
    let (status, created) = raw_http(s.addr, &chunked_post("/subscriptions", &pieces)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["events"], json!(["chunked"]));

    // Three subscriptions exist: the first, the 1024-byte one and the chunked
    // one; none of the refused bodies created a row or changed the first.
    let rows = subscription_rows(&s.data_dir);
    assert_eq!(rows.len(), 3, "first, 1024-byte, chunked");
    assert_eq!(rows[0].1, NOWHERE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_events_are_removed_in_order() {
    let env = start().await;
    let s = &env.server;
    let (status, created) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "events": ["a", "a", "b"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["events"], json!(["a", "b"]));
    let (_, one) = s
        .call(
            "GET",
            &format!("/subscriptions/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(one["events"], json!(["a", "b"]));
    assert_eq!(
        subscription_rows(&s.data_dir)[0].3.as_deref(),
        Some(r#"["a","b"]"#)
    );

    let (_, created) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "events": ["z", "y", "z", "x", "y"]})),
        )
        .await;
    assert_eq!(
        created["events"],
        json!(["z", "y", "x"]),
        "first occurrence kept, order kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_except_in_the_creating_answer() {
    let env = start().await;
    let s = &env.server;
    let (status, given) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201, "{given}");
    assert_eq!(
        given["secret"], SECRET,
        "the POST answer has the secret in full"
    );

    let (status, generated) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "generate_secret": true})),
        )
        .await;
    assert_eq!(status, 201, "{generated}");
    let gen_secret = generated["secret"].as_str().unwrap().to_string();
    assert!(gen_secret.starts_with("whsec_"), "{gen_secret}");
    assert!(gen_secret.len() >= "whsec_".len() + 16, "{gen_secret}");

    let (_, other) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "generate_secret": true})),
        )
        .await;
    assert_ne!(
        other["secret"], generated["secret"],
        "generated secrets differ"
    );

    let (_, none) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "generate_secret": false})),
        )
        .await;
    assert_eq!(none["secret"], Value::Null);

    let tail = |secret: &str| format!("****{}", &secret[secret.len() - 4..]);
    let expected = [
        (given["id"].clone(), json!(tail(SECRET))),
        (generated["id"].clone(), json!(tail(&gen_secret))),
        (none["id"].clone(), Value::Null),
    ];
    for (id, masked) in &expected {
        let (status, one) = s
            .call(
                "GET",
                &format!("/subscriptions/{}", id.as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(one["secret"], *masked, "GET one");
    }

    // Neither secret appears anywhere in a list or GET answer's raw text.
    let list_text = s
        .http
        .get(s.url("/subscriptions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: Value = serde_json::from_str(&list_text).unwrap();
    for (id, masked) in &expected {
        let item = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == *id)
            .unwrap();
        assert_eq!(item["secret"], *masked, "list");
    }
    for id in [&given["id"], &generated["id"]] {
        let text = s
            .http
            .get(s.url(&format!("/subscriptions/{}", id.as_str().unwrap())))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for secret in [SECRET, gen_secret.as_str()] {
            assert!(!text.contains(secret), "GET one leaks a secret: {text}");
            assert!(
                !list_text.contains(secret),
                "list leaks a secret: {list_text}"
            );
        }
    }

    // A PATCH answer is masked too.
    let path = format!("/subscriptions/{}", given["id"].as_str().unwrap());
    let (_, patched) = s.call("PATCH", &path, Some(json!({"events": ["e"]}))).await;
    assert_eq!(patched["secret"], tail(SECRET));
    // The stored secret is the full one.
    let rows = subscription_rows(&s.data_dir);
    let stored = rows
        .iter()
        .find(|r| r.0 == given["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(stored.2.as_deref(), Some(SECRET));
}

// ---------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_bodies_match_snapshots() {
    let env = start().await;
    let s = &env.server;

    let (status, created) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": NOWHERE, "events": ["order.created", "order.paid"], "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201);
    insta::assert_json_snapshot!("created_subscription", created, {
        ".id" => "[id]",
        ".created_at" => "[ts]",
        ".updated_at" => "[ts]",
    });

    s.subscribe(json!({"target_url": "http://127.0.0.1:9/second"}))
        .await;
    s.subscribe(json!({"target_url": "http://127.0.0.1:9/third", "generate_secret": true}))
        .await;
    let (list, next) = s.page("/subscriptions?limit=2").await;
    assert_eq!(
        next,
        Some(format!(
            "/subscriptions?limit=2&cursor={}",
            list[1]["id"].as_str().unwrap()
        ))
    );
    insta::assert_json_snapshot!("list_first_page", list, {
        "[].id" => "[id]",
        "[].created_at" => "[ts]",
        "[].updated_at" => "[ts]",
    });

    let (status, invalid) = s
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": "ftp://127.0.0.1/hook"})),
        )
        .await;
    assert_eq!(status, 422);
    insta::assert_json_snapshot!("error_422_validation", invalid);

    let (status, missing) = s
        .call("GET", &format!("/subscriptions/{MISSING_ID}"), None)
        .await;
    assert_eq!(status, 404);
    insta::assert_json_snapshot!("error_404_unknown_subscription", missing);

    let (status, not_allowed) = s.call("DELETE", "/subscriptions", None).await;
    assert_eq!(status, 405);
    insta::assert_json_snapshot!("error_405_method", not_allowed);
}

// ---------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_is_seen_by_the_next_read_and_the_next_ingest() {
    let env = start().await;
    let s = &env.server;
    let first = Receiver::ok().await;
    let second = Receiver::ok().await;
    let id = s.subscribe(json!({"target_url": first.url()})).await;
    let path = format!("/subscriptions/{id}");

    // Warm the cache through the ingest path.
    let (status, answer) = s.ingest(&id, r#"{"n": 1}"#, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let got = first.wait_for(1).await;
    assert_eq!(got[0].body.as_ref(), br#"{"n": 1}"#);

    // New target: the next read and the next delivery use it.
    let (status, patched) = s
        .call("PATCH", &path, Some(json!({"target_url": second.url()})))
        .await;
    assert_eq!(status, 200, "{patched}");
    let (_, read) = s.call("GET", &path, None).await;
    assert_eq!(read["target_url"], second.url());

    let (status, answer) = s.ingest(&id, r#"{"n": 2}"#, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();
    let got = second.wait_for(1).await;
    assert_eq!(got[0].body.as_ref(), br#"{"n": 2}"#);
    assert_eq!(got[0].header("webhook-id"), Some(webhook.as_str()));
    let done = s
        .wait_status(&webhook, |st| st["status"] == "succeeded")
        .await;
    assert_eq!(done["attempts"][0]["target_url"], second.url());
    assert_eq!(first.count(), 1, "nothing more went to the old target");

    // New secret: the next ingest needs a signature at once.
    let (status, _) = s
        .call("PATCH", &path, Some(json!({"secret": SECRET})))
        .await;
    assert_eq!(status, 200);
    let got = s.ingest(&id, r#"{"n": 3}"#, &[]).await;
    assert_error(
        "unsigned ingest after adding a secret",
        &got,
        401,
        "signature_required",
        None,
    );

    // Secret cleared: unsigned is accepted again.
    let (status, _) = s.call("PATCH", &path, Some(json!({"secret": null}))).await;
    assert_eq!(status, 200);
    let (status, answer) = s.ingest(&id, r#"{"n": 4}"#, &[]).await;
    assert_eq!(status, 202, "{answer}");
    eventually("the 4th webhook at the new target", DEADLINE, || async {
        second
            .received()
            .iter()
            .any(|r| r.body.as_ref() == br#"{"n": 4}"#)
            .then_some(())
    })
    .await;
    assert!(
        second
            .received()
            .iter()
            .all(|r| r.body.as_ref() != br#"{"n": 3}"#),
        "the refused webhook was not delivered"
    );

    // New event filter: the next ingest of another type is filtered.
    let (status, _) = s
        .call("PATCH", &path, Some(json!({"events": ["wanted"]})))
        .await;
    assert_eq!(status, 200);
    let (status, answer) = s
        .ingest(&id, r#"{"n": 5}"#, &[("x-event-type", "unwanted")])
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "filtered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_makes_the_next_read_and_ingest_404() {
    let env = start().await;
    let s = &env.server;
    let receiver = Receiver::ok().await;
    let id = s.subscribe(json!({"target_url": receiver.url()})).await;
    let path = format!("/subscriptions/{id}");

    // Cached by the create and used by ingest.
    let (status, answer) = s.ingest(&id, "{}", &[]).await;
    assert_eq!(status, 202, "{answer}");
    receiver.wait_for(1).await;
    assert_eq!(s.call("GET", &path, None).await.0, 200);

    assert_eq!(s.call("DELETE", &path, None).await.0, 204);
    assert_error(
        "GET after DELETE",
        &s.call("GET", &path, None).await,
        404,
        "not_found",
        None,
    );
    let got = s.ingest(&id, "{}", &[]).await;
    assert_error("ingest after DELETE", &got, 404, "not_found", None);
    let got = s.ingest(&id, "{}", &[]).await;
    assert_error("ingest after DELETE, again", &got, 404, "not_found", None);
    assert_eq!(receiver.count(), 1);
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_200() {
    let env = start().await;
    let s = &env.server;
    let (status, health) = s.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(health, json!({"status": "ok"}));
    let (status, ready) = s.call("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"], json!({"sqlite": "ok", "nats": "ok"}));
}

// ---------------------------------------------------------------------------
// Configuration: the binary
// ---------------------------------------------------------------------------

/// The built `webhookd` with a clean environment (PATH only), run in a temp
/// dir, with `env` set.
fn webhookd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhookd"));
    cmd.args(args).env_clear().current_dir(dir.path());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run webhookd");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "webhookd {args:?} wrote files"
    );
    out
}

fn output_lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn check_config_prints_the_defaults() {
    let out = webhookd(&["--check-config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let lines = output_lines(&out.stdout);
    for expected in [
        "listen = 127.0.0.1:8000",
        "data_dir = ./data",
        "database = ./data/webhookd.db",
        "retry_schedule = 10s,30s,1m,5m,15m",
        "delivery_timeout = 10s",
        "retention = 72h",
        "purge_interval = 10m",
        "max_body = 1048576",
        "nats_url = (embedded nats-server)",
        "nats_memory_limit = 67108864",
        "api_token = (unset)",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "no `{expected}` in {lines:#?}"
        );
    }
    for line in &lines {
        assert!(
            line.split_once(" = ").is_some(),
            "not a `name = value` line: {line:?}"
        );
    }
}

#[test]
fn check_config_reads_the_environment() {
    let out = webhookd(
        &["--check-config"],
        &[
            ("WEBHOOKD_LISTEN", "127.0.0.1:9999"),
            ("WEBHOOKD_DATA_DIR", "/var/lib/webhookd"),
            ("WEBHOOKD_RETRY_SCHEDULE", "500ms,2s"),
            ("WEBHOOKD_API_TOKEN", "a-token-of-sixteen-or-more"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = output_lines(&out.stdout);
    for expected in [
        "listen = 127.0.0.1:9999",
        "data_dir = /var/lib/webhookd",
        "database = /var/lib/webhookd/webhookd.db",
        "retry_schedule = 500ms,2s",
        "api_token = (set, hidden)",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "no `{expected}` in {lines:#?}"
        );
    }
    assert!(!lines.iter().any(|l| l == "listen = 127.0.0.1:8000"));
    assert!(
        !stdout.contains("a-token-of-sixteen-or-more"),
        "token printed: {stdout}"
    );

    // A flag wins over the variable.
    let out = webhookd(
        &["--check-config", "--listen", "127.0.0.1:7777"],
        &[("WEBHOOKD_LISTEN", "127.0.0.1:9999")],
    );
    assert!(out.status.success());
    assert!(output_lines(&out.stdout)
        .iter()
        .any(|l| l == "listen = 127.0.0.1:7777"));
}

#[test]
fn check_config_refuses_a_bad_value_naming_the_option() {
    let out = webhookd(&["--check-config"], &[("WEBHOOKD_RETRY_SCHEDULE", "5x")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted 5x: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("retry-schedule") || stderr.contains("RETRY_SCHEDULE"),
        "{stderr}"
    );
    assert!(stderr.contains("5x"), "{stderr}");
    assert!(out.stdout.is_empty(), "printed a configuration anyway");

    // A value clap accepts but `validate` refuses also names its option.
    let out = webhookd(
        &["--check-config"],
        &[("WEBHOOKD_DELIVERY_CONCURRENCY", "0")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--delivery-concurrency"), "{stderr}");

    let out = webhookd(
        &["--check-config"],
        &[("WEBHOOKD_LISTEN", "not-an-address")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_lists_every_option_with_its_default() {
    let out = webhookd(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "--listen",
        "[default: 127.0.0.1:8000]",
        "WEBHOOKD_LISTEN",
        "--data-dir",
        "WEBHOOKD_DATA_DIR",
        "[default: ./data]",
        "--retry-schedule",
        "WEBHOOKD_RETRY_SCHEDULE",
        "[default: 10s,30s,1m,5m,15m]",
        "NATS_URL",
        "WEBHOOKD_MAX_BODY",
        "[default: 1MiB]",
        "WEBHOOKD_API_TOKEN",
        "--check-config",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks `{expected}`:\n{help}"
        );
    }
    // Every setting --check-config shows (bar the derived ack_wait) is a flag.
    let config = webhookd(&["--check-config"], &[]);
    for line in output_lines(&config.stdout) {
        let name = line.split(" = ").next().unwrap();
        if name == "ack_wait" {
            continue;
        }
        let flag = format!("--{}", name.replace('_', "-"));
        assert!(help.contains(&flag), "--help lacks `{flag}`");
    }
}

/// Ingest answers 202 without waiting for the webhook's pending row to be
/// committed (the webhook is durable in JetStream; the row is queued to the
/// batched writer). A status read right after the 202 must still find it:
/// `GET /status` flushes the writer before it answers 404. Here the writer
/// is held up by another connection holding SQLite's write lock for 1 s
/// (less than the busy timeout), so the row cannot be committed yet when
/// the status is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_right_after_ingest_finds_the_webhook() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    // Holds each delivery for a while: the status stays pending or delivering.
    let receiver = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_secs(2),
        ..Reply::status(200)
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let holder = hold_write_lock(dir.path().join("webhookd.db"), Duration::from_secs(1));

    let (code, answer) = server.ingest(&sub, r#"{"n": 1}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let id = webhook_id(&answer);
    let (code, status) = server.call("GET", &format!("/status/{id}"), None).await;
    assert_eq!(code, 200, "status of {id} right after its 202: {status}");
    assert!(
        status["status"] == "pending" || status["status"] == "delivering",
        "{status}"
    );
    assert_eq!(status["webhook_id"], id.as_str(), "{status}");
    holder.join().unwrap();
    server.stop().await.unwrap();
}
