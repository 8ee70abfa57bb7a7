//! Test harness: a real nats-server per test (free loopback port, temp
//! store), webhookd in-process on port 0 with a temp SQLite file, and
//! recording HTTP receivers on loopback. Waits are on conditions with a
//! deadline, never fixed sleeps.
#![allow(dead_code)]

pub mod process;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use webhookd::config::Config;

/// Default deadline of `eventually`.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Asserts that `receiver` keeps exactly `expected` requests for `window`,
/// polling every 20 ms. Only called once the status API shows the system is
/// past the point where a further delivery could be scheduled; the window is
/// a bounded extra observation (a few times the largest schedule step).
pub async fn assert_count_stays(receiver: &Receiver, expected: usize, window: Duration) {
    let started = Instant::now();
    while started.elapsed() < window {
        assert_eq!(
            receiver.count(),
            expected,
            "unexpected delivery {:?} after the system settled",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.count(), expected);
}

/// The `webhook_id` of an ingest answer.
pub fn webhook_id(answer: &Value) -> String {
    answer["webhook_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook_id in {answer}"))
        .to_string()
}

/// Holds SQLite's write lock on `db` from another connection for `hold`,
/// as a full disk or another process would refuse webhookd's writes (past
/// the 5 s busy timeout) or delay them (under it). Returns once the lock is
/// taken; join the handle to wait for its release.
pub fn hold_write_lock(db: PathBuf, hold: Duration) -> std::thread::JoinHandle<()> {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).expect("open the database");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        locked_tx.send(()).expect("tell the test");
        std::thread::sleep(hold);
        conn.execute_batch("ROLLBACK")
            .expect("release the write lock");
    });
    locked_rx.recv().expect("the lock holder started");
    holder
}

/// The nats-server binary: `NATS_SERVER_BIN`, else the repository's
/// `.tools/bin/nats-server` (installed by `just install-nats`), else PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A free loopback port: bind port 0, read it, close.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A URL on 127.0.0.1 where nothing listens.
pub fn refused_url() -> String {
    format!("http://127.0.0.1:{}/hook", free_port())
}

/// `sha256=<hex HMAC-SHA256(secret bytes, body)>`, as a sender signs an
/// ingest body; computed with the hmac crate, independently of webhookd's
/// signing module.
pub fn inbound_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A nats-server child with JetStream, on a free loopback port, with its
/// own store. Restarts reuse the port (the client only knows the first URL).
pub struct TestNats {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl TestNats {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> TestNats {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nats = TestNats {
            child: None,
            port: 0,
            dir,
        };
        nats.spawn(None);
        nats
    }

    fn spawn(&mut self, port: Option<u16>) {
        let run_dir = self.dir.path().join("run");
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run `just install-nats` or set NATS_SERVER_BIN",
                    nats_server_bin().display()
                )
            });
        let ports = run_dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(&ports)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| {
                    // 2.9 writes "nats", newer servers "client".
                    let urls = if v["nats"].is_array() {
                        &v["nats"]
                    } else {
                        &v["client"]
                    };
                    urls[0].as_str().map(str::to_string)
                })
                .and_then(|u| u.rsplit(':').next()?.parse::<u16>().ok())
            {
                self.port = p;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The ports file appears once the client listener is up; JetStream may
        // still be recovering its store: wait until a connection succeeds.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server not listening"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and store.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.port;
        self.spawn(Some(port));
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names to values.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What a receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'static str,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: "",
        }
    }
}

type Script = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// An HTTP server on 127.0.0.1 that records every request and answers as
/// its script says (`n` is the 0-based index of the request).
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn ok() -> Receiver {
        Receiver::scripted(|_, _| Reply::status(200)).await
    }

    /// A receiver answering `script(n, request)`.
    pub async fn scripted(
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task_log = log.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let log = task_log.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        let script = script.clone();
                        async move {
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let received = Received {
                                headers,
                                body,
                                at: Instant::now(),
                            };
                            let n = {
                                let mut log = log.lock().unwrap();
                                log.push(received.clone());
                                log.len() - 1
                            };
                            let reply = script(n, &received);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(reply.body.as_bytes())));
                            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            for (k, v) in reply.headers {
                                resp.headers_mut().insert(k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            log,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(
            &format!("{n} requests at the receiver"),
            DEADLINE,
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A config for tests: temp data dir, the given NATS, a millisecond retry
/// schedule, loopback targets allowed, short timeouts.
pub fn test_config(data_dir: &Path, nats_url: Option<String>) -> Config {
    let mut c = Config::defaults();
    c.data_dir = data_dir.to_path_buf();
    c.database = None;
    c.nats_url = nats_url;
    c.nats_server_bin = nats_server_bin();
    c.retry_schedule = "50ms,100ms,150ms".parse().unwrap();
    c.delivery_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c.allow_targets = Some("127.0.0.0/8,::1/128".to_string());
    c.shutdown_timeout = Duration::from_secs(5);
    c.publish_timeout = Duration::from_secs(2);
    c.delivery_concurrency = 32;
    c.log = "warn".into();
    c
}

/// webhookd running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), webhookd::RunError>>>,
}

impl TestServer {
    /// Starts webhookd with `config` on a free port and waits for /healthz.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
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
            server
                .http
                .get(server.url("/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
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
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
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

    /// Sends raw bytes with headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
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
        sub["id"].as_str().unwrap().to_string()
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
        let last = std::sync::Mutex::new(Value::Null);
        let started = Instant::now();
        loop {
            let (status, body) = self.call("GET", &format!("/status/{webhook}"), None).await;
            if status == 200 && done(&body) {
                return body;
            }
            *last.lock().unwrap() = json!({"http": status, "body": body});
            if started.elapsed() > DEADLINE {
                panic!(
                    "timed out after {DEADLINE:?} waiting for status of {webhook}; last answer: {}",
                    last.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), webhookd::RunError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), webhookd::RunError> {
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
