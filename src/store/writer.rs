//! The batched writer: one thread owns one connection and commits many rows
//! per transaction (group commit), then tells each caller its row is durable.
//!
//! Ingest and delivery send their writes here instead of taking a pooled
//! connection each: SQLite has one write lock, and one transaction per row
//! would cap throughput at a few thousand rows a second.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot};

use super::records::{Outcome, WebhookStatus};
use super::{open_connection, to_millis, StoreError};
use crate::ids::{SubscriptionId, WebhookId};

/// Rows committed in one transaction at most.
const MAX_BATCH: usize = 1024;
/// Writes waiting in the queue at most; senders wait beyond that.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// What is known of a webhook from its queue message, enough to create its
/// row if the attempt's write arrives before ingest's.
#[derive(Debug, Clone)]
pub struct WebhookMeta {
    /// The webhook.
    pub id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// `X-Event-Type` at ingest.
    pub event_type: Option<String>,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Its JetStream stream sequence, when queued.
    pub stream_seq: Option<u64>,
}

/// One attempt to log, with the webhook summary it leaves behind.
#[derive(Debug, Clone)]
pub struct AttemptWrite {
    /// The webhook attempted.
    pub webhook: WebhookMeta,
    /// The URL used.
    pub target_url: String,
    /// When the attempt started.
    pub timestamp: DateTime<Utc>,
    /// 1-based attempt number.
    pub attempt_number: u32,
    /// What came of it.
    pub outcome: Outcome,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// The error, if any.
    pub error: Option<String>,
    /// Duration of the attempt.
    pub duration_ms: u64,
    /// The first KiB of the answer.
    pub response_body: Option<String>,
    /// When the next retry is due, for `FailedAttempt`.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Which delivery of the webhook it belongs to: 0 for the original, n
    /// for the n-th redelivery.
    pub redelivery: u32,
}

/// A write the writer understands.
#[derive(Debug, Clone)]
pub enum Write {
    /// Ingest: the webhook's first row (pending or filtered). Never
    /// overwrites a row an attempt already wrote.
    Webhook {
        /// The webhook.
        meta: WebhookMeta,
        /// `Pending` or `Filtered`.
        status: WebhookStatus,
    },
    /// A delivery attempt and the webhook's new summary (shared: a worker
    /// keeps it to retry the write while SQLite refuses it).
    Attempt(Arc<AttemptWrite>),
    /// A redelivery queued: the webhook turns `pending` under its number,
    /// unless an attempt of that redelivery (or a later one) is already
    /// logged.
    Redelivered {
        /// The webhook.
        id: WebhookId,
        /// The redelivery's number.
        number: u32,
        /// When it was queued.
        at: DateTime<Utc>,
    },
    /// A webhook dropped without an attempt (its subscription is gone).
    Dropped {
        /// The webhook.
        meta: WebhookMeta,
        /// Why, for the status API.
        reason: String,
    },
}

/// A write (None: a flush barrier) and whom to tell of its commit (None:
/// nobody waits).
type Request = (
    Option<Write>,
    Option<oneshot::Sender<Result<(), StoreError>>>,
);

/// Sending side of the writer; clones share the one thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
}

/// Figures the metrics endpoint and the readiness probe read.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Size of the last committed batch.
    pub last_batch: AtomicUsize,
    /// When (ms since the epoch) a batch last failed to commit (disk full,
    /// I/O error); 0 when none has.
    pub failed_at_ms: AtomicI64,
    /// When a batch last committed.
    pub committed_at_ms: AtomicI64,
    /// Pending rows never written because the webhook's first attempt
    /// (which writes the whole row) came while they were held.
    pub coalesced: AtomicU64,
}

/// How long a failed commit keeps the writer reported as failing when no
/// later commit succeeded: held attempts retry their rows every 2 s at most,
/// so a lasting failure keeps it fresh, and an idle writer is not reported
/// failing forever on an old error.
const FAILING_FOR_MS: i64 = 10_000;

impl Writer {
    /// Opens a dedicated connection and starts the writer thread. The thread
    /// ends once every `Writer` clone is dropped and the queue is drained.
    pub fn start(path: &Path) -> Result<(Writer, JoinHandle<()>), StoreError> {
        let conn = open_connection(path)?;
        // Only a clock for the hold's deadlines: the writer runs no tasks.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(StoreError::WriterThread)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("webhookd-writer".into())
            .spawn(move || run(conn, rx, &timer, &thread_stats))
            .map_err(StoreError::WriterThread)?;
        Ok((Writer { tx, stats }, handle))
    }

    /// Queues a write and waits until it is committed (or failed).
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.send_and_wait(Some(write)).await
    }

    /// Queues a write without waiting for its commit (only for room in the
    /// queue). For rows that something else repairs if they are lost: the
    /// pending row of a webhook already durable in JetStream, which its
    /// first attempt writes anyway. A failed commit is logged by the writer.
    /// A pending row is held back for [`HOLD_PENDING`] and not written at
    /// all when the webhook's first attempt comes meanwhile.
    pub async fn enqueue(&self, write: Write) -> Result<(), StoreError> {
        self.tx
            .send((Some(write), None))
            .await
            .map_err(|_| StoreError::WriterClosed)
    }

    /// Waits until every write queued before this call is committed (or
    /// failed): readers call it before concluding a row does not exist.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.send_and_wait(None).await
    }

    async fn send_and_wait(&self, write: Option<Write>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((write, Some(done)))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        wait.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Writes waiting to be committed.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Pending rows the writer never had to write (see [`HOLD_PENDING`]).
    pub fn coalesced(&self) -> u64 {
        self.stats.coalesced.load(Ordering::Relaxed)
    }

    /// Size of the last committed batch.
    pub fn last_batch_size(&self) -> usize {
        self.stats.last_batch.load(Ordering::Relaxed)
    }

    /// Whether SQLite is refusing writes: a commit failed within the last
    /// few seconds and none succeeded since.
    pub fn is_failing(&self) -> bool {
        let failed = self.stats.failed_at_ms.load(Ordering::Relaxed);
        let committed = self.stats.committed_at_ms.load(Ordering::Relaxed);
        failed > committed && Utc::now().timestamp_millis() - failed < FAILING_FOR_MS
    }
}

/// Under load (the last batch had at least this many rows), a smaller batch
/// waits [`GATHER_WAIT`] for more before it commits: a commit rewrites the
/// same few hot pages whatever its size, so fewer, larger commits cost far
/// less per row. An idle writer commits a lone row at once. 5 ms rather
/// than 2: webhookd CPU per delivered webhook 7% lower (median of four A/B
/// pairs, bench e2e), for about 10 ms more p99 at the receivers under full
/// load (the workers wait longer for their attempt rows).
const GATHER_BELOW: usize = 256;
/// See [`GATHER_BELOW`].
const GATHER_WAIT: Duration = Duration::from_millis(5);

/// How long an enqueued pending row (ingest's, nobody waits for it) is held
/// back before it is written: most webhooks are delivered within it, and
/// their first attempt writes the whole row, so the pending row is never
/// written at all. That saves one statement, one row rewrite and one queue
/// round trip per webhook (measured: 10% of webhookd's CPU per delivered
/// webhook). A flush writes every held row, so a reader that flushes sees
/// them.
pub const HOLD_PENDING: Duration = Duration::from_millis(250);
/// Pending rows held at most; beyond it the oldest is written at once.
const HOLD_MAX: usize = 8 * 1024;

/// Held rows' room kept once all are written; a burst's is given back.
const SHRINK_ABOVE: usize = 256;

/// Ingest's pending rows not written yet, oldest first.
#[derive(Default)]
struct Held {
    rows: HashMap<WebhookId, (WebhookMeta, WebhookStatus)>,
    /// Arrival order; an id no longer in `rows` is skipped.
    order: VecDeque<(Instant, WebhookId)>,
}

impl Held {
    fn hold(&mut self, meta: WebhookMeta, status: WebhookStatus, now: Instant) {
        self.order.push_back((now, meta.id));
        self.rows.insert(meta.id, (meta, status));
    }

    /// Takes the held row of `id`, if any.
    fn take(&mut self, id: WebhookId) -> Option<Write> {
        self.rows
            .remove(&id)
            .map(|(meta, status)| Write::Webhook { meta, status })
    }

    /// When the oldest held row falls due (dropping the order's entries
    /// of rows already taken, so they never wake the writer).
    fn next_due(&mut self) -> Option<Instant> {
        while let Some((at, id)) = self.order.front() {
            if self.rows.contains_key(id) {
                return Some(*at + HOLD_PENDING);
            }
            self.order.pop_front();
        }
        None
    }

    /// Gives back the room of a burst once nothing is held: an idle
    /// writer keeps no tables sized for the last peak.
    fn shrink_when_empty(&mut self) {
        if self.rows.is_empty() && self.rows.capacity() > SHRINK_ABOVE {
            self.rows = HashMap::new();
            self.order = VecDeque::new();
        }
    }

    /// Moves the rows due at `now` (all of them with `all`) into `out`.
    fn take_due(&mut self, now: Instant, all: bool, out: &mut Vec<Write>) {
        while let Some(&(at, id)) = self.order.front() {
            let due = all || at + HOLD_PENDING <= now || self.order.len() > HOLD_MAX;
            if !due {
                break;
            }
            self.order.pop_front();
            out.extend(self.take(id));
        }
        if self.rows.is_empty() {
            self.order.clear();
        }
    }
}

fn drain_into(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(req) => batch.push(req),
            Err(_) => break,
        }
    }
}

/// What waiting for the next request brought.
enum Next {
    Request(Request),
    /// The oldest held row fell due.
    Due,
    /// Every sender is gone.
    Closed,
}

/// The next request, or `Due` once `due` passes while none comes.
fn next_request(
    rx: &mut mpsc::Receiver<Request>,
    due: Option<Instant>,
    timer: &tokio::runtime::Runtime,
) -> Next {
    let Some(due) = due else {
        return rx.blocking_recv().map_or(Next::Closed, Next::Request);
    };
    timer.block_on(async {
        match tokio::time::timeout_at(due.into(), rx.recv()).await {
            Ok(Some(req)) => Next::Request(req),
            Ok(None) => Next::Closed,
            Err(_) => Next::Due,
        }
    })
}

/// Pending rows that can be held: enqueued ones, whom nobody waits for.
/// Every other write goes into the batch; one that touches a held
/// webhook's row takes that row with it, written before it or (for a
/// write that writes the whole row itself) not at all.
fn sort_request(req: Request, held: &mut Held, batch: &mut Vec<Request>, stats: &WriterStats) {
    match req {
        (Some(Write::Webhook { meta, status }), None) => held.hold(meta, status, Instant::now()),
        (Some(Write::Attempt(ref a)), _) => {
            if held.take(a.webhook.id).is_some() {
                stats.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            batch.push(req);
        }
        (Some(Write::Dropped { ref meta, .. }), _) => {
            held.take(meta.id);
            batch.push(req);
        }
        (Some(Write::Redelivered { id, .. }), _) => {
            if let Some(row) = held.take(id) {
                batch.push((Some(row), None));
            }
            batch.push(req);
        }
        // Awaited: written now (a held row of it would do nothing more).
        (Some(Write::Webhook { .. }), Some(_)) => batch.push(req),
        (None, _) => batch.push(req),
    }
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Request>,
    timer: &tokio::runtime::Runtime,
    stats: &WriterStats,
) {
    let mut incoming: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut due_rows: Vec<Write> = Vec::new();
    let mut held = Held::default();
    let mut last_len = 0;
    let mut open = true;
    while open || !held.rows.is_empty() {
        held.shrink_when_empty();
        let next = if open {
            next_request(&mut rx, held.next_due(), timer)
        } else {
            Next::Closed
        };
        match next {
            Next::Request(first) => {
                incoming.push(first);
                drain_into(&mut rx, &mut incoming);
                if last_len >= 8 && incoming.len() < GATHER_BELOW {
                    std::thread::sleep(GATHER_WAIT);
                    drain_into(&mut rx, &mut incoming);
                }
            }
            Next::Due => {}
            Next::Closed => open = false,
        }
        let flush = !open || incoming.iter().any(|(w, _)| w.is_none());
        for req in incoming.drain(..) {
            sort_request(req, &mut held, &mut batch, stats);
        }
        held.take_due(Instant::now(), flush, &mut due_rows);
        if batch.is_empty() && due_rows.is_empty() {
            continue;
        }
        last_len = batch.len() + due_rows.len();
        let result = commit(&mut conn, &due_rows, &batch).map_err(Arc::new);
        stats.last_batch.store(last_len, Ordering::Relaxed);
        let now = Utc::now().timestamp_millis();
        match &result {
            Ok(()) => stats.committed_at_ms.store(now, Ordering::Relaxed),
            Err(_) => stats.failed_at_ms.store(now, Ordering::Relaxed),
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, rows = last_len, "attempt writer: batch not committed");
        }
        due_rows.clear();
        for (_, done) in batch.drain(..) {
            let Some(done) = done else { continue };
            let reply = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::NotCommitted(e.clone())),
            };
            // The caller may have given up (shutdown); nothing to tell then.
            let _ = done.send(reply);
        }
    }
    tracing::debug!("attempt writer stopped");
}

/// One transaction: the held rows due (older than anything in `batch`),
/// then the batch in arrival order.
fn commit(conn: &mut Connection, due: &[Write], batch: &[Request]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for write in due {
        apply(&tx, write)?;
    }
    for (write, _) in batch {
        if let Some(write) = write {
            apply(&tx, write)?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn apply(conn: &Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Webhook { meta, status } => insert_webhook(conn, meta, *status).map(drop),
        Write::Attempt(a) => insert_attempt(conn, a),
        Write::Dropped { meta, reason } => mark_dropped(conn, meta, reason),
        Write::Redelivered { id, number, at } => mark_redelivered(conn, *id, *number, *at),
    }
}

/// The webhook's first row; a row an attempt already wrote is kept.
/// Whether it was written.
pub(super) fn insert_webhook(
    conn: &Connection,
    meta: &WebhookMeta,
    status: WebhookStatus,
) -> Result<bool, StoreError> {
    let written = conn.prepare_cached(
        "INSERT INTO webhooks (id, subscription_id, event_type, received_at, stream_seq, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
    )?
    .execute(params![
        meta.id.to_string(),
        meta.subscription_id.to_string(),
        meta.event_type,
        to_millis(meta.received_at),
        meta.stream_seq.map(|s| s as i64),
        status.as_str(),
    ])?;
    Ok(written > 0)
}

/// The attempt's row, and the webhook summary it leaves behind (an older
/// attempt arriving late never overwrites a newer summary).
fn insert_attempt(conn: &Connection, a: &AttemptWrite) -> Result<(), StoreError> {
    let m = &a.webhook;
    conn.prepare_cached(
        "INSERT INTO webhooks (id, subscription_id, event_type, received_at, stream_seq,
             status, attempts, last_attempt_at, last_outcome, last_status_code, last_error,
             next_retry_at, redeliveries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(id) DO UPDATE SET
             status = excluded.status, attempts = excluded.attempts,
             last_attempt_at = excluded.last_attempt_at,
             last_outcome = excluded.last_outcome,
             last_status_code = excluded.last_status_code,
             last_error = excluded.last_error, next_retry_at = excluded.next_retry_at,
             stream_seq = COALESCE(webhooks.stream_seq, excluded.stream_seq),
             redeliveries = MAX(webhooks.redeliveries, excluded.redeliveries)
         WHERE excluded.attempts >= webhooks.attempts",
    )?
    .execute(params![
        m.id.to_string(),
        m.subscription_id.to_string(),
        m.event_type,
        to_millis(m.received_at),
        m.stream_seq.map(|s| s as i64),
        a.outcome.status().as_str(),
        a.attempt_number,
        to_millis(a.timestamp),
        a.outcome.as_str(),
        a.status_code,
        a.error,
        a.next_retry_at.map(to_millis),
        a.redelivery,
    ])?;
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (webhook_id, subscription_id, target_url, timestamp,
             attempt_number, outcome, status_code, error, duration_ms, response_body,
             redelivery)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        m.id.to_string(),
        m.subscription_id.to_string(),
        a.target_url,
        to_millis(a.timestamp),
        a.attempt_number,
        a.outcome.as_str(),
        a.status_code,
        a.error,
        a.duration_ms as i64,
        a.response_body,
        a.redelivery,
    ])?;
    Ok(())
}

/// A redelivery's claim on its webhook's row.
fn mark_redelivered(
    conn: &Connection,
    id: WebhookId,
    number: u32,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE webhooks SET redeliveries = ?2, redelivered_at = ?3, status = 'pending',
             next_retry_at = NULL
         WHERE id = ?1 AND redeliveries < ?2",
    )?
    .execute(params![id.to_string(), number, to_millis(at)])?;
    Ok(())
}

/// A webhook given up without an attempt (its subscription is gone).
fn mark_dropped(conn: &Connection, meta: &WebhookMeta, reason: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhooks (id, subscription_id, event_type, received_at, stream_seq,
             status, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, 'failed', ?6)
         ON CONFLICT(id) DO UPDATE SET status = 'failed', last_error = excluded.last_error,
             next_retry_at = NULL",
    )?
    .execute(params![
        meta.id.to_string(),
        meta.subscription_id.to_string(),
        meta.event_type,
        to_millis(meta.received_at),
        meta.stream_seq.map(|s| s as i64),
        reason,
    ])?;
    Ok(())
}
