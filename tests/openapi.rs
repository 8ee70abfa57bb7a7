//! The OpenAPI document served at /openapi.json against the router
//! (`webhookd::api::ROUTES`) and against the running server: every route is
//! documented and every documented operation is a route, every operation
//! lists its errors, and schemathesis (PyPI) fuzzes a real webhookd on
//! 127.0.0.1 checking that answers are never 5xx and match the document.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhookd::api::ops::OPENAPI;
use webhookd::api::{Access, ROUTES};
use webhookd_harness::nats::NatsServer;
use webhookd_harness::receiver::Receiver;
use webhookd_harness::server::{test_config, TestServer};
use webhookd_harness::sign::inbound_signature;

/// What CI must have for the fuzzing tests.
const PIP_INSTALL: &str = "python3 -m pip install schemathesis";

/// Operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Seed of the fuzzing runs (reproducible in CI); `WEBHOOKD_FUZZ_SEED`
/// overrides it to explore further.
const DEFAULT_SEED: &str = "20240601";

/// Upper bound of one schemathesis run; a run that takes longer fails.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("src/api/openapi.json is not JSON")
}

/// Every documented operation: (path, method, operation, path item).
fn operations(doc: &Value) -> Vec<(String, String, Value, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for (key, op) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&key.as_str()) {
                ops.push((path.clone(), key.clone(), op.clone(), item.clone()));
            }
        }
    }
    ops
}

/// `{name}` segments of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

/// Names of the parameters declared `in` a location for an operation (path
/// item level and operation level).
fn declared_params(item: &Value, op: &Value, location: &str) -> BTreeSet<String> {
    [&item["parameters"], &op["parameters"]]
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter(|p| p["in"] == location)
        .map(|p| p["name"].as_str().expect("parameter name").to_string())
        .collect()
}

/// Collects every `$ref` string in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_is_openapi_3() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let resp = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let served: Value = resp.json().await.expect("/openapi.json is JSON");
    assert_eq!(
        served,
        document(),
        "served document differs from src/api/openapi.json"
    );

    let version = served["openapi"].as_str().expect("`openapi` field");
    assert!(version.starts_with("3."), "not OpenAPI 3: {version}");
    assert!(served["info"]["title"].is_string() && served["info"]["version"].is_string());
    assert!(!served["paths"].as_object().unwrap().is_empty());
    let mut all = Vec::new();
    refs(&served, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(served.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    server.stop().await.unwrap();
}

#[test]
fn routes_and_documented_operations_match() {
    let doc = document();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.path.to_string(), r.method.as_str().to_lowercase()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "ROUTES has duplicates");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(path, method, _, _)| (path, method))
        .collect();

    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from src/api/openapi.json: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&routes).collect();
    assert!(
        phantom.is_empty(),
        "documented operations that are not routes: {phantom:?}"
    );

    // Path parameters agree with the templates.
    for (path, method, op, item) in operations(&doc) {
        assert_eq!(
            declared_params(&item, &op, "path"),
            template_params(&path),
            "{method} {path}: declared path parameters differ from the template"
        );
    }
    // operationIds are unique (schemathesis and clients key on them).
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| {
            METHODS
                .iter()
                .filter_map(|m| item[*m]["operationId"].as_str())
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate operationId: {ids:?}");
    assert_eq!(ids.len(), ROUTES.len(), "an operation has no operationId");
}

#[test]
fn every_operation_documents_its_errors() {
    let doc = document();
    for (path, method, op, item) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        let responses = op["responses"].as_object().expect("responses");
        let has = |code: &str| responses.contains_key(code);
        assert!(
            responses.keys().any(|k| k.starts_with('4')),
            "{what} lists no 4xx response"
        );
        let route = ROUTES
            .iter()
            .find(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(&method))
            .unwrap_or_else(|| panic!("{what} is not a route"));
        match route.access {
            Access::Management => {
                assert!(has("401"), "{what} needs the token but lists no 401");
                assert_ne!(op["security"], json!([]), "{what} is documented as public");
            }
            Access::Public => {
                assert_eq!(
                    op["security"],
                    json!([]),
                    "{what} is public: `security: []`"
                );
            }
        }
        if !template_params(&path).is_empty() {
            assert!(has("400"), "{what}: malformed ids answer 400");
            assert!(has("404"), "{what}: unknown ids answer 404");
        }
        if !declared_params(&item, &op, "query").is_empty() {
            assert!(has("400"), "{what}: bad query parameters answer 400");
        }
        if op.get("requestBody").is_some() {
            assert!(has("400"), "{what}: a body that is not JSON answers 400");
            assert!(has("413"), "{what}: a body over the limit answers 413");
        }
        // Error answers are Error objects (431 comes from hyper, bodiless).
        for (code, resp) in responses {
            if code.starts_with('2') || code == "431" {
                continue;
            }
            let schema = &resp["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/Error",
                "{what} {code} is not documented as an Error object"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Fuzzing with schemathesis
// ---------------------------------------------------------------------------

/// How to run schemathesis (`schemathesis`, `st`, or the module through
/// python3 when the scripts directory is not on PATH) and its version;
/// fails the test with the install command when none runs.
async fn schemathesis() -> (Vec<String>, String) {
    let candidates: [&[&str]; 3] = [
        &["schemathesis"],
        &["st"],
        &["python3", "-m", "schemathesis.cli"],
    ];
    for argv in candidates {
        if let Ok(out) = tokio::process::Command::new(argv[0])
            .args(&argv[1..])
            .arg("--version")
            .output()
            .await
        {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && version.contains(", version ") {
                return (argv.iter().map(|a| a.to_string()).collect(), version);
            }
        }
    }
    panic!(
        "schemathesis is not installed (neither `schemathesis`, `st` nor \
         `python3 -m schemathesis.cli` runs); install it with `{PIP_INSTALL}`"
    );
}

/// Runs `schemathesis run` against `server` with `config` (TOML), the
/// extra `filters` and the test `phases`; fails the test unless it exits 0
/// within `RUN_LIMIT`.
async fn fuzz(server: &TestServer, config: &str, filters: &[&str], phases: &str) {
    let (argv, version) = schemathesis().await;
    assert!(
        version.contains("version 4."),
        "tests/openapi.rs drives the schemathesis 4 CLI; found {version:?} ({PIP_INSTALL})"
    );
    let seed = std::env::var("WEBHOOKD_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    // Requests go to the test server on 127.0.0.1 only: the document's
    // `servers` entry (127.0.0.1:8000) is overridden by --url.
    let base = format!("http://{}", server.addr);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(work.path())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base])
        .args(filters)
        .args(["--max-examples", "25", "--seed", &seed])
        .args(["--phases", phases])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .args(["--generation-database", "none", "--request-timeout", "10"])
        .args(["--max-redirects", "0", "--no-color"])
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_LIMIT:?} (killed)"))
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{version} {filters:?} seed {seed}: exit {:?} in {:.1?}\n{stdout}",
        out.status.code(),
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "schemathesis found contradictions between webhookd and src/api/openapi.json \
         (seed {seed}; rerun with WEBHOOKD_FUZZ_SEED={seed}):\n{stdout}\n{stderr}"
    );
    // It did test something.
    assert!(
        stdout.contains("passed") && !stdout.contains("0 generated"),
        "schemathesis ran no test case:\n{stdout}"
    );
}

/// The management operations and probes. Ingest is excluded here: it is
/// the only operation that makes webhookd send anything, and subscriptions
/// created by the fuzzer may name any host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_management_operations_match_the_document() {
    schemathesis().await;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({
            "target_url": receiver.url(),
            "events": ["order.created", "order.paid"],
            "secret": "a-secret-of-enough-length",
        }))
        .await;
    // Some real attempts to list: one webhook, delivered before fuzzing.
    let (status, answer) = server
        .ingest(
            &sub,
            r#"{"n": 1}"#,
            &[
                ("x-event-type", "order.created"),
                (
                    "x-signature",
                    &inbound_signature("a-secret-of-enough-length", br#"{"n": 1}"#),
                ),
            ],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let webhook = answer["webhook_id"].as_str().unwrap().to_string();
    server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;

    // The real ids for the operations that take them (DELETE keeps random
    // ids, so the subscription outlives most of the run).
    let mut config = String::new();
    for op in [
        "getSubscription",
        "updateSubscription",
        "subscriptionAttempts",
    ] {
        config.push_str(&format!(
            "[[operations]]\ninclude-operation-id = \"{op}\"\nparameters = {{ \"path.id\" = \"{sub}\" }}\n\n"
        ));
    }
    config.push_str(&format!(
        "[[operations]]\ninclude-operation-id = \"webhookStatus\"\nparameters = {{ \"path.webhook_id\" = \"{webhook}\" }}\n"
    ));
    // Stateful: the document's links chain a created subscription into
    // get, patch, attempts and delete.
    fuzz(
        &server,
        &config,
        &["--exclude-operation-id", "ingest"],
        "examples,coverage,fuzzing,stateful",
    )
    .await;

    assert_eq!(
        receiver.count(),
        1,
        "only the webhook ingested above was delivered"
    );
    still_up(&server).await;
    server.stop().await.unwrap();
}

/// Ingest, on a webhookd whose only subscription points at a receiver on
/// 127.0.0.1; the fuzzer cannot create or change subscriptions here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_ingest_matches_the_document() {
    schemathesis().await;
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), Some(nats.url()))).await;
    let receiver = Receiver::ok().await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;
    let config = format!("[parameters]\n\"path.subscription_id\" = \"{sub}\"\n");
    // No stateful phase: no link leads to ingest.
    fuzz(
        &server,
        &config,
        &["--include-operation-id", "ingest"],
        "examples,coverage,fuzzing",
    )
    .await;

    // The fuzzer's webhooks reached real data and were delivered.
    receiver.wait_for(1).await;
    let (status, subs) = server.call("GET", "/subscriptions", None).await;
    assert_eq!(status, 200);
    assert_eq!(subs.as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs[0]["target_url"], receiver.url().as_str());
    still_up(&server).await;
    server.stop().await.unwrap();
}

async fn still_up(server: &TestServer) {
    let (status, body) = server.call("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
}
