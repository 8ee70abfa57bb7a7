//! What the benchmark's and the chaos suite's load generators share: the
//! clock every send and arrival is stamped with, what a load is, and the
//! webhook bodies it posts.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Microseconds since the Unix epoch: comparable across processes, so a
/// receiver in another process can stamp arrivals against sends.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What to post.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Requests to send.
    pub n: usize,
    /// Connections (and requests in flight).
    pub concurrency: usize,
    /// Requests per second to aim at; None: as fast as answers come.
    pub rate: Option<f64>,
    /// No request is started after this much time.
    pub max_time: Duration,
    /// Distinguishes this load's bodies.
    pub tag: String,
    /// Approximate size of each JSON body.
    pub body_size: usize,
    /// `/ingest/<subscription>` paths; request `i` goes to `paths[i % len]`.
    pub paths: Arc<Vec<String>>,
}

impl Spec {
    /// Waits until request `seq` of a load started at `start` is due (at
    /// once without a rate, else at `start + seq / rate`). False, without
    /// waiting, when it would be due at or after `deadline`.
    pub async fn pace(&self, start: Instant, deadline: Instant, seq: usize) -> bool {
        if let Some(rate) = self.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if due >= deadline {
                return false;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        true
    }
}

/// The body of request `seq`: JSON of about `size` bytes with a unique id,
/// the request number and the send time (which a receiver reads back).
pub fn body(tag: &str, seq: usize, sent_us: u64, size: usize) -> Bytes {
    let mut s = format!(
        r#"{{"id":"{tag}-{seq:08}","seq":{seq},"sent_us":{sent_us},"type":"bench.event","data":{{"pad":""#
    );
    let pad = size.saturating_sub(s.len() + 3);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}}");
    Bytes::from(s)
}
