//! Security defaults end to end: the management API's bearer token and the
//! refusal to listen on a non-loopback address without one, the SSRF guard
//! at the API and at delivery time, outgoing signatures checked by an
//! independent Standard Webhooks implementation (Python `standardwebhooks`),
//! and hostile clients (large bodies and heads, slow clients, connection
//! floods, odd ids, deeply nested JSON).
//!
//! Traffic goes to 127.0.0.1 only. Addresses in other ranges appear solely
//! as target URLs that the API refuses without connecting anywhere.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webhookd::api::{Access, ROUTES};
use webhookd::RunError;
use webhookd_harness::nats::NatsServer;
use webhookd_harness::raw_http::{answers, exchange, read_one_answer, read_until_closed, Raw};
use webhookd_harness::receiver::{assert_count_stays, Receiver};
use webhookd_harness::server::{test_config, TestServer};
use webhookd_harness::sign::inbound_signature;

/// The API token of the tests that set one (at least 16 characters).
const TOKEN: &str = "tok-0123456789abcdefghij";

/// What CI must have for the signature test.
const PIP_INSTALL: &str = "python3 -m pip install standardwebhooks";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `error.code` of an error answer ("" when absent).
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// One HTTP request with an optional `Authorization` value and JSON body.
async fn send(
    server: &TestServer,
    method: &reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let mut req = server.http.request(method.clone(), server.url(path));
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, value)
}

/// A call with the right bearer token.
async fn authed(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let (status, _, value) = send(
        server,
        &method,
        path,
        Some(&format!("Bearer {TOKEN}")),
        body.as_ref(),
    )
    .await;
    (status, value)
}

/// `GET /healthz` on a fresh connection answers 200: the server still
/// serves. (Not through the pooled client: a kept-alive connection the
/// server is closing for its header-read timeout would fail the request
/// for a reason this check is not about.)
async fn still_serves(server: &TestServer, after: &str) {
    assert!(
        answers(server.addr, "/healthz", 200).await,
        "server unreachable after {after}"
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

// ---------------------------------------------------------------------------
// 1. Management API authentication
// ---------------------------------------------------------------------------

/// A route template with its `{...}` segments replaced from `values`.
fn fill(template: &str, values: &HashMap<&str, String>) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                values
                    .get(seg)
                    .unwrap_or_else(|| {
                        panic!(
                            "route {template} has a parameter {seg} this test has no value for: \
                             teach `management_routes_need_the_token` about it"
                        )
                    })
                    .clone()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A body that makes `method template` succeed, for routes that take one.
fn body_for(method: &reqwest::Method, template: &str, target: &str) -> Option<Value> {
    match (method.as_str(), template) {
        ("POST", "/subscriptions") => Some(json!({"target_url": target})),
        ("PATCH", "/subscriptions/{id}") => Some(json!({"events": ["order.created"]})),
        ("POST", "/ingest/{subscription_id}") => Some(json!({"hello": "world"})),
        ("POST", "/webhooks/{webhook_id}/redeliver") => None,
        ("POST", "/subscriptions/{id}/recover") => Some(json!({
            "since": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339()
        })),
        ("GET" | "DELETE" | "HEAD", _) => None,
        (m, t) => panic!("route {m} {t} takes a body this test does not know: add it to body_for"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_routes_need_the_token() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.api_token = Some(TOKEN.to_string());
    let server = TestServer::start(config).await;
    let receiver = Receiver::ok().await;

    let (status, sub) = authed(
        &server,
        "POST",
        "/subscriptions",
        Some(json!({"target_url": receiver.url()})),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let sub = sub["id"].as_str().unwrap().to_string();
    let (status, doomed) = authed(
        &server,
        "POST",
        "/subscriptions",
        Some(json!({"target_url": receiver.url()})),
    )
    .await;
    assert_eq!(status, 201, "{doomed}");
    let doomed = doomed["id"].as_str().unwrap().to_string();
    // Ingest is public: no token.
    let (status, answer) = server.ingest(&sub, r#"{"n": 1}"#, &[]).await;
    assert_eq!(status, 202, "ingest without a token: {answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();

    let mut values = HashMap::new();
    values.insert("{id}", sub.clone());
    values.insert("{subscription_id}", sub.clone());
    values.insert("{webhook_id}", webhook.clone());
    let path_of = |method: &reqwest::Method, template: &str| {
        let mut v = values.clone();
        if *method == reqwest::Method::DELETE {
            v.insert("{id}", doomed.clone());
        }
        fill(template, &v)
    };

    let mut wrong_token = TOKEN.as_bytes().to_vec();
    let last = wrong_token.len() - 1;
    wrong_token[last] ^= 1;
    let wrong_token = String::from_utf8(wrong_token).unwrap();
    let basic = BASE64.encode(format!("user:{TOKEN}"));
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        (
            "a wrong token of the same length",
            Some(format!("Bearer {wrong_token}")),
        ),
        (
            "a token one character short",
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        (
            "a token one character long",
            Some(format!("Bearer {TOKEN}x")),
        ),
        ("an empty bearer token", Some("Bearer ".to_string())),
        (
            "the token without the Bearer scheme",
            Some(TOKEN.to_string()),
        ),
        (
            "the token as Basic credentials",
            Some(format!("Basic {basic}")),
        ),
    ];

    let management: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Management)
        .collect();
    assert!(management.len() >= 9, "ROUTES lost its management routes");
    for route in &management {
        let method = reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let path = path_of(&method, route.path);
        let body = body_for(&method, route.path, &receiver.url());
        for (what, auth) in &refused {
            let (status, content_type, answer) =
                send(&server, &method, &path, auth.as_deref(), body.as_ref()).await;
            assert_eq!(status, 401, "{method} {path} with {what}: {answer}");
            assert_eq!(
                code(&answer),
                "unauthorized",
                "{method} {path} with {what}: {answer}"
            );
            assert_eq!(
                content_type.as_deref(),
                Some("application/json"),
                "{method} {path}"
            );
            assert!(
                !answer.to_string().contains(TOKEN),
                "the 401 answer echoes the token: {answer}"
            );
        }
    }
    // Authentication comes before anything else: a malformed id is not even
    // looked at without the token.
    let (status, _, answer) = send(
        &server,
        &reqwest::Method::GET,
        "/subscriptions/not-an-id",
        None,
        None,
    )
    .await;
    assert_eq!((status, code(&answer)), (401, "unauthorized"), "{answer}");

    // Nothing a refused request asked for happened.
    let (status, list) = authed(&server, "GET", "/subscriptions", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "a refused POST created something, or a refused DELETE deleted: {list}"
    );
    assert!(ids.contains(&doomed.as_str()));
    let (_, got) = authed(&server, "GET", &format!("/subscriptions/{sub}"), None).await;
    assert_eq!(
        got["events"],
        Value::Null,
        "a refused PATCH changed the subscription: {got}"
    );

    // With the token every management route answers normally.
    for route in &management {
        let method = reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let path = path_of(&method, route.path);
        let body = body_for(&method, route.path, &receiver.url());
        let (status, _, answer) = send(
            &server,
            &method,
            &path,
            Some(&format!("Bearer {TOKEN}")),
            body.as_ref(),
        )
        .await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} with the token answered {status}: {answer}"
        );
    }

    // Public routes need no token, and a wrong one does not get in their way.
    let public: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .collect();
    for template in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/ingest/{subscription_id}",
    ] {
        assert!(
            public.iter().any(|r| r.path == template),
            "{template} is no longer a public route"
        );
    }
    for route in &public {
        let method = reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let path = path_of(&method, route.path);
        let body = body_for(&method, route.path, &receiver.url());
        for auth in [None, Some(format!("Bearer {wrong_token}"))] {
            let (status, _, answer) =
                send(&server, &method, &path, auth.as_deref(), body.as_ref()).await;
            assert!(
                (200..300).contains(&status),
                "public {method} {path} (authorization {auth:?}) answered {status}: {answer}"
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_listener_without_token_is_refused_before_nats() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    // Embedded NATS with a binary that does not exist: if `run` got as far as
    // NATS it would fail with a queue error, not a configuration error.
    config.nats_server_bin = dir.path().join("no-such-nats-server");
    config.api_token = None;
    config.insecure_no_auth = false;
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        webhookd::run(config, listener, std::future::pending::<()>()),
    )
    .await
    .expect("run neither started nor refused within 10s");
    match result {
        Err(RunError::Config(e)) => {
            assert_eq!(e.field, "--api-token", "{e}");
            let text = e.to_string();
            assert!(text.contains("--api-token"), "{text}");
            assert!(
                text.contains("0.0.0.0"),
                "the message names the address: {text}"
            );
            assert!(
                text.contains("--insecure-no-auth"),
                "the message names the way out: {text}"
            );
        }
        other => panic!("expected a configuration error naming --api-token, got {other:?}"),
    }
    assert!(
        !dir.path().join("webhookd.db").exists(),
        "the database was opened before the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_listener_starts_with_a_token_or_insecure_no_auth() {
    let nats = NatsServer::start().await;
    let http = client();

    // --insecure-no-auth: starts, and the management API is open.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.api_token = None;
    config.insecure_no_auth = true;
    let running = TestServer::start_on(config, TcpListener::bind("0.0.0.0:0").await.unwrap()).await;
    let resp = http
        .get(running.url("/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "insecure-no-auth: the API is open");
    running.stop().await.expect("stops cleanly");

    // A token: starts, and the management API needs it.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.api_token = Some(TOKEN.to_string());
    let running = TestServer::start_on(config, TcpListener::bind("0.0.0.0:0").await.unwrap()).await;
    let resp = http
        .get(running.url("/subscriptions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(running.url("/subscriptions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.stop().await.expect("stops cleanly");
}

// ---------------------------------------------------------------------------
// 2. SSRF end to end
// ---------------------------------------------------------------------------

/// Target URLs the API must refuse without an allow-list. They are only
/// parsed and classified: nothing is ever sent to them.
const BLOCKED_TARGETS: &[&str] = &[
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://169.254.169.254/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://localhost/",
    // Other spellings of the same places.
    "http://127.1:8080/hook",
    "http://0x7f.0.0.1/",
    "https://LOCALHOST./",
    "http://api.localhost/",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://0.0.0.0/",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_target_urls_are_refused_by_the_api() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.allow_targets = None;
    let server = TestServer::start(config).await;

    // A subscription to patch: `.invalid` never resolves (RFC 2606), and
    // nothing is ingested for it, so no delivery is ever attempted.
    let valid = "https://receiver.invalid/hook";
    let sub = server.subscribe(json!({"target_url": valid})).await;

    for target in BLOCKED_TARGETS {
        let (status, body) = server
            .call(
                "POST",
                "/subscriptions",
                Some(json!({"target_url": target})),
            )
            .await;
        assert_eq!(status, 422, "create with {target}: {body}");
        assert_eq!(code(&body), "validation_failed", "{target}: {body}");
        assert_eq!(body["error"]["field"], "target_url", "{target}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("SSRF"),
            "{target}: the message says why: {body}"
        );

        let (status, body) = server
            .call(
                "PATCH",
                &format!("/subscriptions/{sub}"),
                Some(json!({"target_url": target})),
            )
            .await;
        assert_eq!(status, 422, "patch to {target}: {body}");
        assert_eq!(body["error"]["field"], "target_url", "{target}: {body}");
    }
    let (_, list) = server.call("GET", "/subscriptions", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        list[0]["target_url"], valid,
        "a refused PATCH changed the URL"
    );

    // What the API shows is where deliveries go: the URL as parsed, not as
    // typed. (A backslash separates path segments in http URLs, so the
    // second host is receiver.invalid, not 127.0.0.1.)
    for (typed, shown) in [
        (
            "HTTPS://Receiver.INVALID\\x\\y",
            "https://receiver.invalid/x/y",
        ),
        (
            "http://receiver.invalid\\@127.0.0.1/",
            "http://receiver.invalid/@127.0.0.1/",
        ),
        (
            " https://receiver.invalid/a b\t",
            "https://receiver.invalid/a%20b",
        ),
    ] {
        let (status, body) = server
            .call(
                "PATCH",
                &format!("/subscriptions/{sub}"),
                Some(json!({"target_url": typed})),
            )
            .await;
        assert_eq!(status, 200, "{typed:?}: {body}");
        assert_eq!(body["target_url"], shown, "{typed:?}");
        let (_, got) = server
            .call("GET", &format!("/subscriptions/{sub}"), None)
            .await;
        assert_eq!(got["target_url"], shown, "{typed:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_to_a_blocked_target_fails_once_without_retry() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::ok().await;

    // Created while loopback is allowed...
    let config = test_config(dir.path(), Some(nats.url()));
    assert!(config
        .allow_targets
        .as_deref()
        .unwrap()
        .contains("127.0.0.0/8"));
    let server = TestServer::start(config).await;
    let by_ip = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let by_name = server
        .subscribe(json!({"target_url": format!("http://localhost:{}/hook", receiver.addr.port())}))
        .await;
    server.stop().await.unwrap();

    // ...delivered by a webhookd on the same data that no longer allows it.
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.allow_targets = None;
    let schedule = config.retry_schedule.clone();
    assert!(!schedule.delays().is_empty(), "a retry would be possible");
    let server = TestServer::start(config).await;
    for sub in [&by_ip, &by_name] {
        let (status, answer) = server.ingest(sub, r#"{"n": 1}"#, &[]).await;
        assert_eq!(status, 202, "{answer}");
        let webhook = answer["webhook_id"].as_str().unwrap().to_string();
        let got = server
            .wait_status(&webhook, |s| s["status"] == "failed")
            .await;
        assert_eq!(got["attempt_count"], 1, "{got}");
        let attempts = got["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{got}");
        assert_eq!(attempts[0]["outcome"], "failure", "{got}");
        assert_eq!(attempts[0]["status_code"], Value::Null, "{got}");
        let error = attempts[0]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("refused"),
            "error names the refusal: {error}"
        );
        assert!(error.contains("loopback"), "error names the range: {error}");
    }
    // Bounded observation window: three times the longest retry step plus
    // slack; a retry, had one been scheduled, would have run within it.
    let window = schedule.max_delay() * 3 + Duration::from_millis(200);
    assert_count_stays(&receiver, 0, window).await;
    for sub in [&by_ip, &by_name] {
        let (status, attempts) = server
            .call("GET", &format!("/subscriptions/{sub}/attempts"), None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(attempts.as_array().unwrap().len(), 1, "retried: {attempts}");
    }
    assert_eq!(receiver.count(), 0);
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// 3. Outgoing signatures against an independent verifier
// ---------------------------------------------------------------------------

/// Fails the test, with the install command, when python3 or the
/// `standardwebhooks` package is missing.
async fn require_python_verifier() {
    let out = tokio::process::Command::new("python3")
        .args(["-c", "import standardwebhooks.webhooks"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("python3 is needed to verify signatures ({e}); install python3, then `{PIP_INSTALL}`")
        });
    assert!(
        out.status.success(),
        "the Python package standardwebhooks is missing; install it with `{PIP_INSTALL}`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs tests/verify_standardwebhooks.py on one delivery; true when it
/// verifies, false when it refuses (exit 1). Any other exit fails the test.
async fn python_verifies(
    dir: &Path,
    name: &str,
    secret: &str,
    raw_secret: bool,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> bool {
    let case = json!({
        "secret": secret,
        "raw_secret": raw_secret,
        "headers": headers,
        "body_b64": BASE64.encode(body),
    });
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&case).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_standardwebhooks.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .await
        .expect("run python3");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "{} exited {other:?} on {name}: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_signatures_verify_with_the_standardwebhooks_package() {
    require_python_verifier().await;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cases = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;

    let (status, created) = server
        .call(
            "POST",
            "/subscriptions",
            Some(json!({"target_url": receiver.url(), "generate_secret": true})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let generated_sub = created["id"].as_str().unwrap().to_string();
    let generated = created["secret"].as_str().unwrap().to_string();
    assert!(generated.starts_with("whsec_"), "{generated}");
    // Only the creating answer shows the secret.
    let (_, shown) = server
        .call("GET", &format!("/subscriptions/{generated_sub}"), None)
        .await;
    assert_ne!(shown["secret"], generated.as_str(), "{shown}");

    // A secret without the whsec_ prefix: its own bytes are the key.
    let plain = "plain secret, not base64!";
    let plain_sub = server
        .subscribe(json!({"target_url": receiver.url(), "secret": plain}))
        .await;

    let bodies: [&str; 3] = [
        r#"{"type":"order.created","id":1}"#,
        "{ \"name\" : \"Zoë Ångström — 日本語 🚀\",   \"note\": \"  two  spaces  \",\n  \"tab\": \"\\t\" }",
        "  [1, 2,   3]  \n",
    ];
    let mut sent = Vec::new();
    for (sub, secret) in [(&generated_sub, generated.as_str()), (&plain_sub, plain)] {
        for body in bodies {
            let sig = inbound_signature(secret, body.as_bytes());
            let (status, answer) = server
                .ingest(
                    sub,
                    body,
                    &[("x-signature", &sig), ("x-event-type", "order.created")],
                )
                .await;
            assert_eq!(status, 202, "{answer}");
            sent.push((
                answer["webhook_id"].as_str().unwrap().to_string(),
                secret,
                secret == plain,
                body,
            ));
        }
    }
    let got = receiver.wait_for(sent.len()).await;
    for (i, (webhook, secret, raw, body)) in sent.iter().enumerate() {
        let delivery = got
            .iter()
            .find(|r| r.header("webhook-id") == Some(webhook.as_str()))
            .unwrap_or_else(|| panic!("webhook {webhook} not delivered"));
        assert_eq!(
            delivery.body.as_ref(),
            body.as_bytes(),
            "body changed on the way"
        );
        let sig = delivery.header("webhook-signature").expect("signed");
        let b64 = sig
            .strip_prefix("v1,")
            .unwrap_or_else(|| panic!("not v1: {sig}"));
        assert_eq!(BASE64.decode(b64).expect("base64").len(), 32, "{sig}");

        let name = format!("delivery-{i}");
        assert!(
            python_verifies(cases.path(), &name, secret, *raw, &delivery.headers, &delivery.body).await,
            "standardwebhooks refused delivery {i} (body {body:?}); case file kept in the failure output above"
        );

        // The verifier really checks: a changed body, timestamp or secret fails.
        let mut tampered = delivery.body.to_vec();
        tampered.push(b' ');
        assert!(
            !python_verifies(
                cases.path(),
                &format!("{name}-body"),
                secret,
                *raw,
                &delivery.headers,
                &tampered
            )
            .await,
            "a tampered body verified"
        );
        let mut headers = delivery.headers.clone();
        let ts: i64 = headers["webhook-timestamp"].parse().unwrap();
        headers.insert("webhook-timestamp".into(), (ts - 1).to_string());
        assert!(
            !python_verifies(
                cases.path(),
                &format!("{name}-ts"),
                secret,
                *raw,
                &headers,
                &delivery.body
            )
            .await,
            "a changed timestamp verified"
        );
        let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(
            !python_verifies(
                cases.path(),
                &format!("{name}-secret"),
                other,
                false,
                &delivery.headers,
                &delivery.body
            )
            .await,
            "another secret verified"
        );
    }
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// 4. Input limits and hostile clients
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_bodies_over_the_limit_get_413_early() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.max_body = 1024;
    let server = TestServer::start(config).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    // Exactly at the limit: accepted.
    let fill = 1024 - r#"{"p":""}"#.len();
    let at_limit = format!(r#"{{"p":"{}"}}"#, "a".repeat(fill));
    assert_eq!(at_limit.len(), 1024);
    let (status, answer) = server.ingest(&sub, &at_limit, &[]).await;
    assert_eq!(status, 202, "{answer}");
    // One byte over, with Content-Length.
    let over = format!(r#"{{"p":"{}"}}"#, "a".repeat(fill + 1));
    let (status, answer) = server.ingest(&sub, &over, &[]).await;
    assert_eq!(
        (status, code(&answer)),
        (413, "payload_too_large"),
        "{answer}"
    );

    // A huge Content-Length and no body at all: refused from the header,
    // without waiting for 10 GiB.
    let head = format!(
        "POST /ingest/{sub} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: 10737418240\r\n\r\n"
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), read_one_answer(&mut stream))
            .await
            .expect("no answer to a huge Content-Length without a body");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));

    // Chunked, past the limit, and then the client stalls without sending
    // the last chunk: answered 413 as soon as the limit is crossed.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut req = format!(
        "POST /ingest/{sub} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        req.extend_from_slice(b"100\r\n");
        req.extend_from_slice(&[b' '; 256]);
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req).await.unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), read_one_answer(&mut stream))
            .await
            .expect("no answer to a chunked body past the limit");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");

    // Only the accepted webhook reached the receiver.
    receiver.wait_for(1).await;
    still_serves(&server, "oversized bodies").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_and_the_server_keeps_serving() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;

    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    for (what, request) in [("200 headers", many), ("a 100 KiB header", huge)] {
        match exchange(server.addr, request.as_bytes(), Duration::from_secs(10)).await {
            Raw::Answer(status, text) => assert!(
                (400..500).contains(&status),
                "{what}: answered {status}, expected a 4xx: {}",
                text.lines().next().unwrap_or_default()
            ),
            Raw::Closed => {} // refused by closing the connection
        }
        still_serves(&server, what).await;
    }
    // Within the limits: served.
    let mut fine = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for i in 0..20 {
        fine.push_str(&format!("X-Header-{i}: v\r\n"));
    }
    fine.push_str("\r\n");
    match exchange(server.addr, fine.as_bytes(), Duration::from_secs(10)).await {
        Raw::Answer(200, _) => {}
        other => panic!("20 headers were not served: {other:?}"),
    }
    server.stop().await.unwrap();
}

/// Elapsed time until the server closes `stream` (EOF or reset), reading at
/// most `deadline`; an answer it sends first (e.g. 408) is read past.
async fn time_until_closed(stream: &mut TcpStream, since: Instant, deadline: Duration) -> Duration {
    let _ = read_until_closed(stream, deadline).await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_after_the_header_read_timeout() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    let timeout = Duration::from_millis(500);
    config.header_read_timeout = timeout;
    let server = TestServer::start(config).await;
    let addr = server.addr;
    // The cut must come from the configured timeout, long before the 10 s
    // default; 5 s leaves room for a loaded machine.
    let upper = Duration::from_secs(5);
    let lower = timeout - Duration::from_millis(50);

    // A partial request head, then silence.
    let partial = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /ingest/00000000-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: t\r\nContent-Le",
        )
        .await
        .unwrap();
        time_until_closed(&mut s, started, Duration::from_secs(10)).await
    });
    // A connection that never sends a byte.
    let silent = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        time_until_closed(&mut s, started, Duration::from_secs(10)).await
    });
    // A trickle: one byte of a never-ending head every 100 ms (the pacing is
    // the attack, not a wait for a condition).
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.split();
        let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut sent = 0usize;
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {} // an answer (e.g. 408) before the close
                },
                _ = tick.tick() => {
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    if wr.write_all(&[byte]).await.is_err() {
                        return started.elapsed();
                    }
                    sent += 1;
                    assert!(started.elapsed() < Duration::from_secs(10), "trickle never cut off");
                }
            }
        }
    });

    // Meanwhile, everyone else is served.
    still_serves(&server, "slow clients connecting").await;
    for (what, task) in [
        ("partial head", partial),
        ("silent", silent),
        ("trickle", trickle),
    ] {
        let took = task.await.unwrap();
        assert!(
            took >= lower && took < upper,
            "{what}: cut off after {took:?}, expected about {timeout:?}"
        );
    }
    still_serves(&server, "slow clients cut off").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.max_connections = 2;
    // Idle keep-alive connections are cut at the header read timeout: keep
    // it far above this test's duration.
    config.header_read_timeout = Duration::from_secs(60);
    let running =
        TestServer::start_on(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let answer_within = Duration::from_secs(10);

    // Two keep-alive connections, each served once and then held idle.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(running.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let (status, _) = tokio::time::timeout(answer_within, read_one_answer(&mut s))
            .await
            .unwrap_or_else(|_| panic!("connection {i} not served"));
        assert_eq!(status, 200);
        held.push(s);
    }

    // A third: TCP connects (listen backlog) but nothing answers while both
    // slots are held. Bounded observation window of 300 ms.
    let mut third = TcpStream::connect(running.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await {
        Err(_) => {}
        Ok(r) => panic!("a third connection was served while two were held: {r:?}"),
    }

    // One held connection closes: the third is answered.
    drop(held.remove(0));
    let (status, _) = tokio::time::timeout(answer_within, read_one_answer(&mut third))
        .await
        .expect("the third connection was not served after a slot freed");
    assert_eq!(status, 200);
    // The connection still held keeps working.
    held[0].write_all(request).await.unwrap();
    let (status, _) = tokio::time::timeout(answer_within, read_one_answer(&mut held[0]))
        .await
        .expect("the held connection stopped answering");
    assert_eq!(status, 200);
    drop(held);
    drop(third);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ids_are_parsed_strictly() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let simple = sub.replace('-', "");
    assert_eq!(simple.len(), 32);

    let refused: Vec<(&str, String)> = vec![
        ("simple form", simple.clone()),
        ("braces", format!("{{{sub}}}")),
        ("urn:uuid:", format!("urn:uuid:{sub}")),
        (
            "hyphens misplaced",
            format!(
                "{}-{}-{}-{}-{}",
                &simple[..7],
                &simple[7..12],
                &simple[12..17],
                &simple[17..22],
                &simple[22..]
            ),
        ),
        ("a character too many", format!("{sub}0")),
        ("a character short", sub[..35].to_string()),
        ("not hex", format!("g{}", &sub[1..])),
        ("leading space", format!("%20{sub}")),
        ("not an id", "not-a-uuid".to_string()),
    ];
    for (what, id) in &refused {
        let calls: [(&str, String, Option<Value>); 6] = [
            ("GET", format!("/subscriptions/{id}"), None),
            (
                "PATCH",
                format!("/subscriptions/{id}"),
                Some(json!({"events": null})),
            ),
            ("DELETE", format!("/subscriptions/{id}"), None),
            ("GET", format!("/subscriptions/{id}/attempts"), None),
            ("GET", format!("/status/{id}"), None),
            ("POST", format!("/ingest/{id}"), Some(json!({"n": 1}))),
        ];
        for (method, path, body) in calls {
            let (status, answer) = server.call(method, &path, body).await;
            assert_eq!(
                (status, code(&answer)),
                (400, "invalid_id"),
                "{what}: {method} {path}: {answer}"
            );
        }
    }
    // The subscription survived every odd spelling of DELETE.
    let (status, got) = server
        .call("GET", &format!("/subscriptions/{sub}"), None)
        .await;
    assert_eq!(status, 200, "{got}");
    // Hex digits are case-insensitive (RFC 9562): the uppercase spelling is
    // the same id, answered in the canonical lowercase form.
    let (status, got) = server
        .call(
            "GET",
            &format!("/subscriptions/{}", sub.to_uppercase()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], sub.as_str());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_without_harm() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let deep_valid = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let bodies: [(&str, String); 3] = [
        ("100,000 [", "[".repeat(100_000)),
        ("100,000 {\"a\":", "{\"a\":".repeat(100_000)),
        ("200 levels, valid", deep_valid),
    ];
    let json_ct = [("content-type", "application/json")];
    for (what, body) in &bodies {
        let paths = [
            ("POST", format!("/ingest/{sub}")),
            ("POST", "/subscriptions".to_string()),
            ("PATCH", format!("/subscriptions/{sub}")),
        ];
        for (method, path) in paths {
            let (status, answer) = server.raw(method, &path, &json_ct, body.clone()).await;
            assert_eq!(
                (status, code(&answer)),
                (400, "invalid_json"),
                "{what}: {method} {path}: {answer}"
            );
            still_serves(&server, what).await;
        }
    }
    // Reasonable nesting is fine, and the server still delivers.
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let (status, answer) = server.ingest(&sub, &nested, &[]).await;
    assert_eq!(status, 202, "{answer}");
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].body.as_ref(), nested.as_bytes());
    assert_eq!(receiver.count(), 1, "a refused body was delivered");
    server.stop().await.unwrap();
}
