//! webhookd against the example 3-node NATS cluster of `nats/cluster/`
//! (stream replicas 3): one node is killed during deliveries, and every
//! accepted webhook is still delivered.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use webhookd_harness::nats;
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::server::{test_config, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE};

/// The three nodes, started from the repository's configuration files with
/// their relative store directories inside a temp dir.
struct Cluster {
    nodes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/cluster");
        let nodes = (1..=3)
            .map(|i| {
                let child = Command::new(nats::find_binary(None))
                    .arg("-c")
                    .arg(conf_dir.join(format!("n{i}.conf")))
                    // store_dir in the files is relative: keep it in the temp dir.
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start nats-server from nats/cluster");
                Some(child)
            })
            .collect();
        Cluster { nodes, _dir: dir }
    }

    fn url() -> String {
        (14222..=14224)
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_is_delivered_when_a_cluster_node_dies() {
    let mut cluster = Cluster::start();
    for port in 14222..=14224 {
        eventually(&format!("node on port {port}"), DEADLINE, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(Cluster::url()));
    config.stream_replicas = 3;
    config.delivery_concurrency = 4;
    let server = TestServer::start(config).await;
    // Slow enough that the kill lands in the middle of the deliveries.
    let receiver = Receiver::scripted(|_, _| Reply {
        delay: Duration::from_millis(40),
        ..Reply::status(200)
    })
    .await;
    let sub = server
        .subscribe(json!({"target_url": receiver.url()}))
        .await;

    let mut accepted = HashSet::new();
    for i in 0..150 {
        let (status, answer) = server.ingest(&sub, &format!(r#"{{"n":{i}}}"#), &[]).await;
        assert_eq!(status, 202, "{answer}");
        accepted.insert(answer["webhook_id"].as_str().unwrap().to_string());
    }
    receiver.wait_for(20).await;
    assert!(
        receiver.count() < accepted.len(),
        "the kill must land during deliveries"
    );
    // Kill the node webhookd is connected to (monitoring port /connz).
    let mut connected = None;
    for i in 0..3 {
        let url = format!("http://127.0.0.1:{}/connz", 18222 + i);
        let connz: serde_json::Value = server
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if connz["num_connections"].as_u64().unwrap_or(0) > 0 {
            connected = Some(i);
        }
    }
    let victim = connected.expect("webhookd is connected to one node");
    cluster.kill9(victim as usize);

    // Lost acks come back after ack_wait (30 s): allow for it.
    let delivered = eventually(
        "every accepted webhook at the receiver",
        Duration::from_secs(120),
        || async {
            let seen: HashSet<String> = receiver
                .received()
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            accepted.is_subset(&seen).then_some(seen)
        },
    )
    .await;
    assert_eq!(delivered.len(), accepted.len());
    server.stop().await.unwrap();
}
