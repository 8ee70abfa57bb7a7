//! The servers the benchmark re-executes itself as (`bench baseline`,
//! `bench floor`, `bench e2e-floor`, `bench receiver`), each a separate
//! process so its CPU use, scheduling and memory are its own, as the real
//! parts would be.
//!
//! Each prints `LISTENING <addr>` as its first stdout line and then serves
//! until it is stopped, its parent dies (PDEATHSIG) or its maximum
//! lifetime passes.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use webhookd_harness::net::{accept_forever, ensure_loopback};
use webhookd_harness::receiver::{self, Options, Received, Receiver, Reply};

/// webhookd's answer to an accepted webhook, byte for byte in size.
const ACCEPTED: &[u8] =
    br#"{"webhook_id":"01a226b1-c2b5-7240-b8dc-104044c2f89a","status":"pending","duplicate":false}"#;

/// `bench baseline`: what this machine can do at all.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The process ends by itself after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub max_lifetime_s: u64,
}

/// `bench floor`: the bare baseline plus what webhookd promises before a
/// 202: the body stored in JetStream and the store acknowledged.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The nats-server to publish to (loopback).
    #[arg(long)]
    pub nats_url: String,
    /// The process ends by itself after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub max_lifetime_s: u64,
}

/// `bench e2e-floor`: the floor plus what webhookd promises after the 202:
/// each stored webhook POSTed to its target, acked in JetStream once
/// answered 2xx.
#[derive(Debug, clap::Args)]
pub struct E2eFloorArgs {
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The nats-server to publish to and consume from (loopback).
    #[arg(long)]
    pub nats_url: String,
    /// Where every webhook is POSTed (a loopback http URL).
    #[arg(long)]
    pub target: String,
    /// POSTs in flight at most (webhookd's --delivery-concurrency).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// The process ends by itself after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub max_lifetime_s: u64,
}

/// `bench receiver`: the webhooks' target.
#[derive(Debug, clap::Args)]
pub struct ReceiverArgs {
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// How to answer deliveries.
    #[arg(long, value_enum, default_value_t = Mode::Ok)]
    pub mode: Mode,
    /// Answer delay in `delay` mode, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub delay_ms: u64,
    /// The process ends by itself after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub max_lifetime_s: u64,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// 500 to the first delivery of each webhook-id, 200 afterwards.
    FailFirst,
    /// 200 after `--delay-ms`.
    Delay,
    /// 500 to every delivery until `GET /_bench/flip`, 200 afterwards.
    Flip,
}

impl Mode {
    pub fn as_arg(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::FailFirst => "fail-first",
            Mode::Delay => "delay",
            Mode::Flip => "flip",
        }
    }
}

fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime> {
    if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .context("starting the runtime")
}

/// Prints the address the parent waits for.
fn announce(addr: SocketAddr) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "LISTENING {addr}")?;
    out.flush()?;
    Ok(())
}

/// Serves until `max_lifetime` has passed.
async fn until_lifetime(serving: impl std::future::Future<Output = ()>, max_lifetime: Duration) {
    tokio::select! {
        () = serving => {}
        () = tokio::time::sleep(max_lifetime) => {
            eprintln!("bench server: maximum lifetime reached; exiting");
        }
    }
}

/// Binds, announces the address, and serves `handler` on every connection.
fn serve<F, Fut>(
    rt: tokio::runtime::Runtime,
    listen: SocketAddr,
    max_lifetime: Duration,
    handler: F,
) -> Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    ensure_loopback(listen)?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        announce(listener.local_addr()?)?;
        let accept = accept_forever(listener, "bench server", |stream| {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        });
        until_lifetime(accept, max_lifetime).await;
        Ok(())
    })
}

/// Runs the bare baseline: read the body, answer 202 with a body the size of
/// webhookd's. Multi-threaded like webhookd's runtime.
pub fn baseline(args: BaselineArgs) -> Result<()> {
    serve(
        runtime(true)?,
        args.listen,
        Duration::from_secs(args.max_lifetime_s),
        |req: Request<Incoming>| async move {
            let _ = req.into_body().collect().await;
            answer(StatusCode::ACCEPTED, ACCEPTED)
        },
    )
}

fn answer(status: StatusCode, body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Runs the JetStream floor: read the body, publish it to a file-storage
/// stream configured like webhookd's (subject per subscription, a
/// `Nats-Msg-Id` for deduplication, discard new at a size cap), await the
/// stream's ack, answer 202. No validation, no lookup, no SQLite: what any
/// server that answers only once a webhook is durable in JetStream costs on
/// this machine, so webhookd's ingest can be stated as a share of it.
pub fn floor(args: FloorArgs) -> Result<()> {
    let rt = runtime(true)?;
    let js = rt.block_on(floor_stream(&args.nats_url))?;
    serve(
        rt,
        args.listen,
        Duration::from_secs(args.max_lifetime_s),
        move |req| store(js.clone(), req),
    )
}

/// Runs the end-to-end floor: the floor's ingest (see [`floor`]) and, in
/// the same process, a durable pull consumer (explicit ack, like
/// webhookd's) that POSTs each stored body to `--target` over a pooled
/// reqwest client, `--concurrency` at a time, with its `Nats-Msg-Id` as
/// `webhook-id`, and acks it on a 2xx (NAK otherwise). No validation, no
/// SQLite, no signing, no retry schedule: the least work any server that
/// stores before its 202 and delivers at least once does per webhook.
pub fn e2e_floor(args: E2eFloorArgs) -> Result<()> {
    let target = loopback_url(&args.target)?;
    let rt = runtime(true)?;
    let js = rt.block_on(floor_stream(&args.nats_url))?;
    let consumer = rt.block_on(floor_consumer(&js))?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.concurrency)
        // Like webhookd's: no retry layer (it clones every request).
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .build()
        .context("building the HTTP client")?;
    let concurrency = args.concurrency.max(1);
    rt.spawn(async move {
        if let Err(e) = deliver_all(consumer, http, target, concurrency).await {
            eprintln!("bench e2e-floor: delivery stopped: {e:#}");
        }
    });
    serve(
        rt,
        args.listen,
        Duration::from_secs(args.max_lifetime_s),
        move |req| store(js.clone(), req),
    )
}

/// The floor's handler: the body published with a fresh `Nats-Msg-Id`,
/// the stream's ack awaited, then 202 (503 if it was not stored).
async fn store(
    js: async_nats::jetstream::Context,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST, br#"{"error":"body"}"#);
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    let stored = async {
        js.publish_with_headers(FLOOR_SUBJECT, headers, body)
            .await?
            .await
            .map_err(anyhow::Error::from)
    };
    match stored.await {
        Ok(_) => answer(StatusCode::ACCEPTED, ACCEPTED),
        Err(_) => answer(StatusCode::SERVICE_UNAVAILABLE, br#"{"error":"queue"}"#),
    }
}

/// `url` parsed; it must be http to a loopback IP address.
fn loopback_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--target {url}"))?;
    let ip: std::net::IpAddr = parsed
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse().ok())
        .with_context(|| format!("--target {url}: not an IP address"))?;
    let port = parsed
        .port_or_known_default()
        .with_context(|| format!("--target {url}: no port"))?;
    ensure_loopback(SocketAddr::new(ip, port))?;
    anyhow::ensure!(parsed.scheme() == "http", "--target {url}: not http");
    Ok(parsed)
}

/// The e2e floor's durable pull consumer of every subscription's subject,
/// like webhookd's: explicit ack, every message from the start, no limit
/// on redeliveries, more unacknowledged messages allowed than are in
/// flight.
async fn floor_consumer(
    js: &async_nats::jetstream::Context,
) -> Result<async_nats::jetstream::consumer::PullConsumer> {
    use async_nats::jetstream::consumer;
    let stream = js
        .get_stream(FLOOR_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("getting the stream: {e}"))?;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("deliveries".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 4096,
            deliver_policy: consumer::DeliverPolicy::All,
            filter_subject: "webhooks.>".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the consumer: {e}"))
}

/// Pulls messages for as long as the process lives and delivers each in
/// its own task, at most `concurrency` at a time (a permit is taken before
/// the next message is pulled).
async fn deliver_all(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    http: reqwest::Client,
    target: reqwest::Url,
    concurrency: usize,
) -> Result<()> {
    use futures_util::StreamExt;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("pulling messages: {e}"))?;
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    loop {
        let permit = permits.clone().acquire_owned().await?;
        match messages.next().await {
            Some(Ok(msg)) => {
                let (http, target) = (http.clone(), target.clone());
                tokio::spawn(async move {
                    deliver_one(&http, target, msg).await;
                    drop(permit);
                });
            }
            Some(Err(e)) => {
                eprintln!("bench e2e-floor: pulling messages: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => anyhow::bail!("the message stream ended"),
        }
    }
}

/// One POST of the message's body; acked on a 2xx, NAKed otherwise.
async fn deliver_one(
    http: &reqwest::Client,
    target: reqwest::Url,
    msg: async_nats::jetstream::Message,
) {
    use async_nats::jetstream::AckKind;
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    let sent = http
        .post(target)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .body(msg.payload.clone())
        .send()
        .await;
    let delivered = match sent {
        // The body is read to the end so that the connection goes back to
        // the pool.
        Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
        Err(_) => false,
    };
    let acked = if delivered {
        msg.ack().await
    } else {
        msg.ack_with(AckKind::Nak(None)).await
    };
    if let Err(e) = acked {
        eprintln!("bench e2e-floor: acking: {e}");
    }
}

/// The floor's subject: one, like the ingest scenario's one subscription.
const FLOOR_SUBJECT: &str = "webhooks.01a226b1-c139-7356-95c3-dfee749c1717";
/// The floor's stream, named like webhookd's.
const FLOOR_STREAM: &str = "WEBHOOKS";

/// Connects (the server may still be starting) and creates the stream.
async fn floor_stream(url: &str) -> Result<async_nats::jetstream::Context> {
    use async_nats::jetstream::stream;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let client = loop {
        match async_nats::connect(url).await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("bench floor: connecting to {url}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {url}")),
        }
    };
    let js = async_nats::jetstream::new(client);
    js.create_stream(stream::Config {
        name: FLOOR_STREAM.into(),
        subjects: vec!["webhooks.>".into()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_age: Duration::from_secs(72 * 3600),
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
    Ok(js)
}

/// One delivery seen by the receiver.
struct Arrival {
    seq: i64,
    sent_us: u64,
    arrival_us: u64,
    status: u16,
    webhook_id: String,
}

#[derive(Default)]
struct Recorded {
    arrivals: Vec<Arrival>,
    /// Request numbers answered 200.
    delivered: HashSet<i64>,
}

#[derive(serde::Deserialize)]
struct Probe {
    seq: Option<i64>,
    sent_us: Option<u64>,
}

/// Runs the receiver (the harness's, keeping counts only): records every
/// delivery's `webhook-id`, the `seq` and `sent_us` of its body and its
/// arrival time, and answers per `--mode`. Single-threaded: it needs little
/// CPU and leaves the rest to webhookd.
///
/// Control paths: `GET /_bench/count` (JSON counts), `GET /_bench/records`
/// (one line per arrival: seq sent_us arrival_us status webhook_id),
/// `GET /_bench/reset` (forgets every arrival, for a second load numbered
/// from 0 again), `GET /_bench/flip` (`flip` mode: 200 from now on).
pub fn receiver(args: ReceiverArgs) -> Result<()> {
    let state: Arc<Mutex<Recorded>> = Arc::default();
    let flipped = AtomicBool::new(false);
    let mode = args.mode;
    let delay = Duration::from_millis(args.delay_ms);
    let ok = |status: u16| Reply {
        body: "ok".into(),
        ..Reply::status(status)
    };
    let fail_first = receiver::fail_first(ok(500), ok(200));
    let script = move |n: usize, r: &Received| {
        if r.path == "/_bench/flip" {
            flipped.store(true, Ordering::SeqCst);
            return ok(200);
        }
        if r.path.starts_with("/_bench/") {
            return control(&state, &r.path);
        }
        let probe = serde_json::from_slice::<Probe>(&r.body).ok();
        let reply = match mode {
            Mode::Ok => ok(200),
            Mode::Delay => Reply { delay, ..ok(200) },
            Mode::FailFirst => fail_first(n, r),
            Mode::Flip if flipped.load(Ordering::SeqCst) => ok(200),
            Mode::Flip => ok(500),
        };
        if let Ok(mut s) = state.lock() {
            let seq = probe.as_ref().and_then(|p| p.seq).unwrap_or(-1);
            if reply.status == 200 {
                s.delivered.insert(seq);
            }
            s.arrivals.push(Arrival {
                seq,
                sent_us: probe.as_ref().and_then(|p| p.sent_us).unwrap_or(0),
                arrival_us: r.at_us,
                status: reply.status,
                webhook_id: r.webhook_id().to_string(),
            });
        }
        reply
    };
    let options = Options {
        listen: args.listen,
        keep: false,
    };
    runtime(false)?.block_on(async move {
        let rx = Receiver::start(options, script).await?;
        announce(rx.addr)?;
        until_lifetime(
            std::future::pending(),
            Duration::from_secs(args.max_lifetime_s),
        )
        .await;
        Ok(())
    })
}

fn control(state: &Mutex<Recorded>, path: &str) -> Reply {
    let Ok(mut s) = state.lock() else {
        return Reply {
            body: "poisoned".into(),
            ..Reply::status(500)
        };
    };
    let body = match path {
        "/_bench/reset" => {
            *s = Recorded::default();
            "reset".to_string()
        }
        "/_bench/count" => {
            let last = s.arrivals.iter().map(|a| a.arrival_us).max().unwrap_or(0);
            serde_json::json!({
                "arrivals": s.arrivals.len(),
                "delivered": s.delivered.len(),
                "last_arrival_us": last,
            })
            .to_string()
        }
        "/_bench/records" => {
            let mut text = String::with_capacity(s.arrivals.len() * 72);
            for a in &s.arrivals {
                let _ = writeln!(
                    text,
                    "{} {} {} {} {}",
                    a.seq, a.sent_us, a.arrival_us, a.status, a.webhook_id
                );
            }
            text
        }
        _ => {
            return Reply {
                body: "unknown".into(),
                ..Reply::status(404)
            }
        }
    };
    Reply {
        body,
        ..Reply::status(200)
    }
}

/// One line of `/_bench/records`.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: i64,
    pub sent_us: u64,
    pub arrival_us: u64,
    pub status: u16,
    pub webhook_id: String,
}

pub fn parse_records(text: &str) -> Result<Vec<Record>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split(' ');
            let mut next = || f.next().context("short record line");
            Ok(Record {
                seq: next()?.parse()?,
                sent_us: next()?.parse()?,
                arrival_us: next()?.parse()?,
                status: next()?.parse()?,
                webhook_id: next()?.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()
        .context("parsing the receiver's records")
}

/// Groups records by request number.
pub fn by_seq(records: &[Record]) -> HashMap<i64, Vec<&Record>> {
    let mut map: HashMap<i64, Vec<&Record>> = HashMap::new();
    for r in records {
        map.entry(r.seq).or_default().push(r);
    }
    for list in map.values_mut() {
        list.sort_by_key(|r| r.arrival_us);
    }
    map
}
