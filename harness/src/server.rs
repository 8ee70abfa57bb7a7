//! webhookd in the test's own process (`webhookd::run` on a loopback
//! listener), with a config made for tests and a client for its API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use webhookd::config::Config;

use crate::raw_http;
use crate::wait::{eventually, DEADLINE};

/// A config for tests: temp data dir, the given NATS (None: embedded), a
/// millisecond retry schedule without jitter, a circuit breaker with
/// millisecond cool-downs, loopback targets allowed, short timeouts.
pub fn test_config(data_dir: &Path, nats_url: Option<String>) -> Config {
    let mut c = Config::defaults();
    c.data_dir = data_dir.to_path_buf();
    c.database = None;
    c.nats_url = nats_url;
    c.nats_server_bin = crate::nats::find_binary(None);
    c.retry_schedule = "50ms,100ms,150ms".parse().expect("a valid schedule");
    c.delivery_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.allow_targets = Some("127.0.0.0/8,::1/128".to_string());
    c.shutdown_timeout = Duration::from_secs(5);
    c.publish_timeout = Duration::from_secs(2);
    c.delivery_concurrency = 32;
    // Exact delays: tests measure gaps against the schedule (the jitter
    // has tests of its own).
    c.retry_jitter = 0.0;
    // The breaker at test speed: it still opens after five failures.
    c.circuit_cooldown = Duration::from_millis(200);
    c.circuit_cooldown_max = Duration::from_secs(1);
    c.log = "warn".into();
    c
}

/// The `webhook_id` of an ingest answer.
pub fn webhook_id(answer: &Value) -> String {
    answer["webhook_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook_id in {answer}"))
        .to_string()
}

/// The target of the `rel="next"` link in a `Link` header (RFC 8288), as
/// written (webhookd writes a path and query).
pub fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        let tail = &after[end + 1..];
        let params = &tail[..tail.find('<').unwrap_or(tail.len())];
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            let value = value.trim().trim_end_matches(',').trim().trim_matches('"');
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = tail;
    }
    None
}

/// webhookd running in this process; stopped (aborted) when dropped.
pub struct TestServer {
    /// Where its API listens.
    pub addr: SocketAddr,
    /// A client for it (no proxy).
    pub http: reqwest::Client,
    /// Its data directory.
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), webhookd::RunError>>>,
}

impl TestServer {
    /// Starts webhookd with `config` on a free loopback port and waits for
    /// /healthz.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::start_on(config, listener).await
    }

    /// Starts webhookd with `config` on `listener` (which may listen on
    /// more than loopback; it is reached on 127.0.0.1) and waits until
    /// /healthz answers 200. The probes close their connections, so they
    /// hold none of webhookd's connection slots.
    pub async fn start_on(config: Config, listener: TcpListener) -> TestServer {
        let port = listener.local_addr().expect("addr").port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir = config.data_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(webhookd::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let server = TestServer {
            addr,
            http,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        };
        eventually("webhookd to answer /healthz", DEADLINE, || async {
            raw_http::answers(addr, "/healthz", 200).await.then_some(())
        })
        .await;
        server
    }

    /// An absolute URL of this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; returns status and JSON body (Null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).expect("JSON"));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    /// `GET path` of a list endpoint, which must answer 200 with a JSON
    /// array: its items and the next page, the target of its
    /// `Link: <...>; rel="next"` (a path and query to pass here again), or
    /// `None` when the answer has no such link.
    pub async fn page(&self, path: &str) -> (Vec<Value>, Option<String>) {
        let resp = self.http.get(self.url(path)).send().await.expect("request");
        let status = resp.status().as_u16();
        let links: Vec<String> = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .map(|v| v.to_str().expect("a Link header in ASCII").to_string())
            .collect();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        let items = match serde_json::from_str(&text) {
            Ok(Value::Array(items)) => items,
            _ => panic!("GET {path} must answer a JSON array, got {text}"),
        };
        let next: Vec<String> = links.iter().filter_map(|l| next_link(l)).collect();
        assert!(
            next.len() <= 1,
            "GET {path}: more than one next link: {links:?}"
        );
        (items, next.into_iter().next())
    }

    /// Sends raw bytes with headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(method, self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// Creates a subscription; returns its id.
    pub async fn subscribe(&self, body: Value) -> String {
        let (status, sub) = self.call("POST", "/subscriptions", Some(body)).await;
        assert_eq!(status, 201, "{sub}");
        sub["id"].as_str().expect("an id").to_string()
    }

    /// Ingests a JSON body; returns (status, answer).
    pub async fn ingest(&self, sub: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.raw("POST", &format!("/ingest/{sub}"), &all, body.to_string())
            .await
    }

    /// `GET /status/{id}`'s answer once `done(answer)` holds.
    pub async fn wait_status(&self, webhook: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.call("GET", &format!("/status/{webhook}"), None).await;
            if status == 200 && done(&body) {
                return body;
            }
            let last = json!({"http": status, "body": body});
            if started.elapsed() > DEADLINE {
                panic!(
                    "timed out after {DEADLINE:?} waiting for status of {webhook}; last answer: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), webhookd::RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("webhookd did not stop within 30s")
                .expect("webhookd task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
