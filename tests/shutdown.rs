//! Graceful shutdown under load, with the real `webhookd` binary and its
//! embedded nats-server: SIGTERM in the middle of a delivery burst loses
//! nothing, logs every answered attempt, refuses new ingest, exits 0, stops
//! nats-server, and a restart on the same data delivers the rest.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webhookd_harness::process::all_processes;
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::sqlite;
use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_harness::webhookd::Webhookd;

/// Logged by webhookd once ingest answers 503 (after the shutdown token
/// fired).
const SHUTDOWN_STARTED: &str = "shutdown started";

/// Pids of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    all_processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .collect()
}

/// Arrivals per webhook id at the receiver.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut per_id = HashMap::new();
    for r in receiver.received() {
        let id = r
            .header("webhook-id")
            .expect("webhook-id header")
            .to_string();
        *per_id.entry(id).or_default() += 1;
    }
    per_id
}

/// Successful attempt rows per webhook id in the SQLite file.
fn success_rows(db: &Path) -> HashMap<String, usize> {
    let conn = sqlite::read_only(db).unwrap();
    sqlite::pairs(
        &conn,
        "SELECT webhook_id, count(*) FROM delivery_attempts
         WHERE outcome = 'success' GROUP BY webhook_id",
    )
    .unwrap()
    .into_iter()
    .map(|(id, n)| (id, n as usize))
    .collect()
}

/// Arrivals at the receiver that have no attempt row (the request was
/// answered 2xx but its log is missing).
fn missing_rows(arrived: &HashMap<String, usize>, rows: &HashMap<String, usize>) -> usize {
    arrived
        .iter()
        .map(|(id, n)| n.saturating_sub(rows.get(id).copied().unwrap_or(0)))
        .sum()
}

/// How one ingest went.
#[derive(Debug)]
enum Ingested {
    /// 202 with this webhook id.
    Accepted(String),
    /// Another HTTP answer: status and error code.
    Refused(u16, String),
    /// No answer: connection refused or closed.
    NoConnection(#[allow(dead_code)] String),
}

async fn ingest(http: &reqwest::Client, url: &str, seq: usize) -> Ingested {
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"seq": {seq}}}"#))
        .send()
        .await;
    match sent {
        Err(e) => Ingested::NoConnection(e.to_string()),
        Ok(resp) => {
            let code = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if code == 202 {
                Ingested::Accepted(body["webhook_id"].as_str().unwrap().to_string())
            } else {
                Ingested::Refused(code, body["error"]["code"].as_str().unwrap_or("").into())
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_loses_nothing_and_stops_nats() {
    const BURST: usize = 300;
    const LATE_POSTS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("webhookd-shutdown-data");
    let data_dir_str = data_dir.to_str().unwrap().to_string();
    let db = data_dir.join("webhookd.db");
    let args = [
        "--retry-schedule",
        "100ms,200ms,400ms",
        "--delivery-concurrency",
        "16",
        "--delivery-timeout",
        "5s",
        "--shutdown-timeout",
        "10s",
        "--log",
        "info",
    ];
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // Every request is answered 200 after 100 to 300 ms.
    let receiver = Receiver::scripted(|n, _| Reply {
        delay: Duration::from_millis(100 + (n as u64 * 53) % 201),
        ..Reply::status(200)
    })
    .await;

    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &data_dir)
        .unwrap()
        .args(&args);
    proc.start_healthy().await.expect("webhookd healthy");
    // The embedded nats-server runs with its store under the data dir: the
    // /proc check below can see it.
    let nats_procs = processes_mentioning(&data_dir_str);
    assert!(
        nats_procs.iter().any(|(_, c)| c.contains("-js")),
        "no embedded nats-server found in /proc: {nats_procs:?}"
    );

    let resp = http
        .post(proc.url("/subscriptions"))
        .json(&json!({"target_url": receiver.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let sub = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ingest_url = proc.url(&format!("/ingest/{sub}"));

    // The burst: 300 webhooks, 8 posts at a time, all accepted.
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut posters = Vec::new();
    for t in 0..8 {
        let (http, url, accepted) = (http.clone(), ingest_url.clone(), accepted.clone());
        posters.push(tokio::spawn(async move {
            for seq in (t..BURST).step_by(8) {
                match ingest(&http, &url, seq).await {
                    Ingested::Accepted(id) => {
                        accepted.lock().unwrap().insert(id);
                    }
                    other => panic!("burst ingest {seq}: {other:?}"),
                }
            }
        }));
    }
    for p in posters {
        tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("the burst took over 60 s")
            .unwrap();
    }
    assert_eq!(accepted.lock().unwrap().len(), BURST);

    // A request whose head is only half sent when shutdown starts; the rest
    // follows after. Its handler necessarily runs after shutdown started.
    let mut half = std::net::TcpStream::connect(proc.addr).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    half.write_all(format!("POST /ingest/{sub} HTTP/1.1\r\nhost: 127.0.0.1\r\n").as_bytes())
        .unwrap();

    // SIGTERM in the middle of the deliveries (16 at a time, ~200 ms each:
    // the burst takes seconds to deliver).
    receiver.wait_for(BURST / 4).await;
    let at_sigterm = receiver.count();
    assert!(
        at_sigterm < BURST,
        "the burst was delivered before SIGTERM ({at_sigterm})"
    );

    // Posts keep coming during the shutdown; each remembers whether
    // "shutdown started" was in the log before it was sent.
    let late = {
        let (http, url, seen) = (http.clone(), ingest_url.clone(), proc.lines());
        tokio::spawn(async move {
            let mut results = Vec::new();
            let started = Instant::now();
            for seq in BURST..BURST + LATE_POSTS {
                let after_shutdown = seen.contains(SHUTDOWN_STARTED);
                let outcome = ingest(&http, &url, seq).await;
                let done = after_shutdown && matches!(outcome, Ingested::NoConnection(_));
                results.push((seq, after_shutdown, outcome));
                if done || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            results
        })
    };
    let sigterm_at = Instant::now();
    proc.sigterm().expect("SIGTERM");

    // The half-sent request completes once shutdown has started.
    eventually("`shutdown started` in the log", DEADLINE, || {
        let seen = proc.lines().contains(SHUTDOWN_STARTED);
        async move { seen.then_some(()) }
    })
    .await;
    let body = "{}";
    let rest = format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let half_answer = tokio::task::spawn_blocking(move || {
        // The server may have closed the connection already: then writing
        // or reading fails, which is an acceptable refusal.
        let _ = half.write_all(rest.as_bytes());
        let mut answer = String::new();
        let _ = half.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    if half_answer.is_empty() {
        eprintln!("half-sent request: connection closed without an answer");
    } else {
        assert!(
            half_answer.starts_with("HTTP/1.1 503"),
            "request completed after shutdown started: {half_answer}"
        );
        assert!(half_answer.contains("shutting_down"), "{half_answer}");
        eprintln!("half-sent request: 503 shutting_down");
    }

    let (status, log) = proc.wait_exit(Duration::from_secs(40)).await.unwrap();
    let shutdown_took = sigterm_at.elapsed();
    assert!(status.success(), "webhookd exited with {status}:\n{log}");
    assert!(log.contains("embedded nats-server stopped"), "{log}");
    assert!(log.contains("webhookd stopped"), "{log}");
    assert!(
        !log.contains("still in flight at the shutdown deadline"),
        "deliveries were cut by the deadline:\n{log}"
    );
    // The nats-server child is gone too.
    let left = processes_mentioning(&data_dir_str);
    assert!(left.is_empty(), "processes left after exit: {left:?}");

    // Ingest during shutdown: before the shutdown was visible, 202 (kept)
    // or a refusal; after it, 503 shutting_down or no connection.
    let late = late.await.unwrap();
    let mut late_accepted = 0;
    let mut late_refused = 0;
    let mut late_no_connection = 0;
    for (seq, after_shutdown, outcome) in &late {
        match outcome {
            Ingested::Accepted(id) => {
                assert!(
                    !after_shutdown,
                    "ingest {seq}, sent after shutdown started, was accepted"
                );
                accepted.lock().unwrap().insert(id.clone());
                late_accepted += 1;
            }
            Ingested::Refused(code, error) => {
                assert_eq!(
                    (*code, error.as_str()),
                    (503, "shutting_down"),
                    "ingest {seq} during shutdown"
                );
                late_refused += 1;
            }
            Ingested::NoConnection(_) => late_no_connection += 1,
        }
    }
    assert!(
        late.iter()
            .any(|(_, after, o)| *after && !matches!(o, Ingested::Accepted(_))),
        "no ingest was tried after shutdown started: {late:?}"
    );

    // Every request the receiver answered during the first run has its
    // attempt row: with a 10 s deadline and 300 ms answers none was cut.
    let run1 = arrivals(&receiver);
    let run1_total: usize = run1.values().sum();
    let rows1 = success_rows(&db);
    let missing = missing_rows(&run1, &rows1);
    assert_eq!(
        missing, 0,
        "{missing} answered deliveries without an attempt row"
    );
    assert_eq!(
        rows1.values().sum::<usize>(),
        run1_total,
        "attempt rows without a delivery"
    );
    let accepted: HashSet<String> = accepted.lock().unwrap().clone();
    eprintln!(
        "SIGTERM after {at_sigterm} arrivals; exit 0 after {shutdown_took:?}; \
         {run1_total} arrivals in run 1; late posts: {late_accepted} accepted, \
         {late_refused} 503, {late_no_connection} without connection"
    );

    // Restart on the same data: every accepted webhook arrives.
    let restarted_at = Instant::now();
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), &data_dir)
        .unwrap()
        .args(&args);
    proc.start_healthy().await.expect("webhookd healthy");
    eventually(
        "every accepted webhook at the receiver",
        // Room for one JetStream ack_wait (30 s) in case a message handed to
        // the client at shutdown was not handed back.
        Duration::from_secs(90),
        || {
            let got = arrivals(&receiver);
            let done = accepted.iter().all(|id| got.contains_key(id));
            async move { done.then_some(()) }
        },
    )
    .await;
    let all_arrived_after = restarted_at.elapsed();
    // Webhooks whose first arrival after the restart took longer than 10 s:
    // not handed back at shutdown, they waited for JetStream's ack_wait.
    let mut first_after_restart: HashMap<String, Duration> = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.at > restarted_at) {
        let id = r.header("webhook-id").unwrap().to_string();
        let after = r.at.duration_since(restarted_at);
        let first = first_after_restart.entry(id).or_insert(after);
        *first = (*first).min(after);
    }
    let waited_ack_wait = first_after_restart
        .values()
        .filter(|d| **d > Duration::from_secs(10))
        .count();
    let total = arrivals(&receiver);
    let unknown: Vec<&String> = total.keys().filter(|id| !accepted.contains(*id)).collect();
    assert!(
        unknown.is_empty(),
        "delivered webhooks that were never accepted: {unknown:?}"
    );
    let duplicates: Vec<(&String, &usize)> = total.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "after restart: all {} accepted webhooks arrived within {all_arrived_after:?} \
         ({waited_ack_wait} only after 10 s); {} delivered more than once: {duplicates:?}",
        accepted.len(),
        duplicates.len()
    );
    for id in &accepted {
        eventually(&format!("{id} succeeded"), DEADLINE, || async {
            let st: Value = http
                .get(proc.url(&format!("/status/{id}")))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (st["status"] == "succeeded").then_some(())
        })
        .await;
    }

    // A second clean stop; every arrival over both runs is logged.
    proc.sigterm().expect("SIGTERM");
    let (status, log) = proc.wait_exit(Duration::from_secs(40)).await.unwrap();
    assert!(status.success(), "webhookd exited with {status}:\n{log}");
    let left = processes_mentioning(&data_dir_str);
    assert!(left.is_empty(), "processes left after exit: {left:?}");
    let total = arrivals(&receiver);
    let rows = success_rows(&db);
    assert_eq!(missing_rows(&total, &rows), 0);
    assert_eq!(rows.values().sum::<usize>(), total.values().sum::<usize>());
}
