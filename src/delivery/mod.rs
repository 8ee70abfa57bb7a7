//! Delivery workers: pull webhooks from the `delivery` consumer, POST them to
//! their subscription's target, log the attempt, then ack, NAK with the
//! schedule's delay, or terminate.
//!
//! Concurrency is bounded by a semaphore: a message is taken from the
//! consumer only when a worker slot is free. The attempt row is durable in
//! SQLite before the message is acked, so a crash can duplicate a delivery,
//! never lose its log.

pub mod client;
pub mod retry;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cache::SubscriptionCache;
use crate::config::RetrySchedule;
use crate::ids::{SubscriptionId, WebhookId};
use crate::metrics::Metrics;
use crate::queue::{self, Queue};
use crate::store::records::Outcome;
use crate::store::subscriptions::Subscription;
use crate::store::writer::{AttemptWrite, WebhookMeta, Write, Writer};
use crate::store::Store;

/// Delay before a message is offered again when its attempt could not be
/// logged or its subscription could not be read (SQLite trouble).
const STORE_TROUBLE_DELAY: Duration = Duration::from_secs(1);

/// First and longest pause between tries to log an attempt SQLite refused.
/// The longest stays well below the ack wait (30 s at least): each try also
/// tells JetStream the message is still in progress.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Delay of a message handed back at shutdown: longer than the open pull
/// can last, so the message does not come back into the pull being drained.
const HAND_BACK_DELAY: Duration = Duration::from_secs(2);

/// Webhooks with an attempt in flight right now: the status API reports
/// them as `delivering`.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<WebhookId>>>);

impl InFlight {
    /// Whether an attempt of this webhook is in flight.
    pub fn contains(&self, id: WebhookId) -> bool {
        self.0.lock().map(|s| s.contains(&id)).unwrap_or(false)
    }

    fn insert(&self, id: WebhookId) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(id);
        }
    }

    fn remove(&self, id: WebhookId) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&id);
        }
    }
}

/// Everything a worker needs; shared by all of them.
pub struct Deliverer {
    /// Where messages come from.
    pub queue: Queue,
    /// Subscription lookups.
    pub cache: SubscriptionCache,
    /// Attempt log.
    pub writer: Writer,
    /// Outbound HTTP.
    pub sender: client::Sender,
    /// Retry delays.
    pub schedule: RetrySchedule,
    /// Attempts in flight at most.
    pub concurrency: usize,
    /// Webhooks being delivered now.
    pub in_flight: InFlight,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// SQLite, for the attempt count of a webhook redelivered after a restart.
    pub store: Store,
    /// Attempts logged so far of the webhooks waiting for a retry.
    pub logged: LoggedAttempts,
}

/// Attempts logged per webhook while it waits for a retry: the source of the
/// attempt number. JetStream's delivery count is not used for it: it also
/// counts hand-backs and redeliveries that reached no receiver, and it was
/// seen to restart at 1 for a message NAKed with a delay.
#[derive(Default)]
pub struct LoggedAttempts(Mutex<HashMap<WebhookId, u32>>);

impl LoggedAttempts {
    fn get(&self, id: WebhookId) -> Option<u32> {
        self.0.lock().ok().and_then(|m| m.get(&id).copied())
    }

    fn set(&self, id: WebhookId, attempts: Option<u32>) {
        if let Ok(mut m) = self.0.lock() {
            match attempts {
                Some(n) => m.insert(id, n),
                None => m.remove(&id),
            };
        }
    }
}

/// Read-ahead of the pull: messages fetched but not started yet, a quarter
/// of the workers (at most 64). They get no in-progress acks, so while every
/// worker is held (SQLite refusing rows) they outlive the ack wait and come
/// back as duplicates; a quarter keeps the workers as busy as a full batch
/// would and bounds those duplicates.
fn read_ahead(concurrency: usize) -> usize {
    (concurrency / 4).clamp(1, 64)
}

/// How one pull stream ended.
enum PullEnd {
    /// The stream ended or failed: open a new one.
    Reopen,
    /// Shutdown began: hand back what was read ahead and stop.
    Shutdown,
}

/// The pull stream of the delivery consumer.
type Messages = jetstream::consumer::pull::Stream;

impl Deliverer {
    /// Runs the workers until `shutdown` fires, then lets in-flight attempts
    /// finish within `grace`, NAKs the rest for immediate redelivery, and
    /// returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        while !shutdown.is_cancelled() {
            let Some(mut messages) = self.open_pull(&shutdown).await else {
                continue;
            };
            let end = self
                .dispatch(&mut messages, &permits, &tracker, &hard_stop, &shutdown)
                .await;
            if let PullEnd::Shutdown = end {
                self.hand_back(&mut messages).await;
                break;
            }
        }
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                "deliveries still in flight at the shutdown deadline; NAKing them"
            );
            hard_stop.cancel();
            tracker.wait().await;
        }
        self.queue.flush().await;
    }

    /// Opens a pull stream on the delivery consumer (creating the consumer
    /// if it is gone). On failure, waits a second (or for shutdown) and
    /// returns `None` so the caller tries again.
    async fn open_pull(&self, shutdown: &CancellationToken) -> Option<Messages> {
        let opened = match self.queue.consumer().await {
            Ok(consumer) => consumer
                .stream()
                .max_messages_per_batch(read_ahead(self.concurrency))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match opened {
            Ok(messages) => Some(messages),
            Err(error) => {
                tracing::warn!(%error, "delivery consumer unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => {}
                }
                None
            }
        }
    }

    /// Hands each message to a worker task once a worker slot is free (a
    /// message is taken from the stream only then), until the stream ends
    /// or shutdown begins.
    async fn dispatch(
        self: &Arc<Self>,
        messages: &mut Messages,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        hard_stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> PullEnd {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return PullEnd::Shutdown,
                },
                _ = shutdown.cancelled() => return PullEnd::Shutdown,
            };
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.cancelled() => return PullEnd::Shutdown,
            };
            match next {
                Some(Ok(msg)) => {
                    let this = self.clone();
                    let hard_stop = hard_stop.clone();
                    tracker.spawn(async move {
                        this.handle(msg, hard_stop).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    // Missed heartbeats and the like: the stream recovers
                    // by itself after a reconnect.
                    tracing::debug!(error = %e, "delivery consumer stream");
                    if !self.queue.is_connected() {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = shutdown.cancelled() => return PullEnd::Shutdown,
                        }
                    }
                }
                None => {
                    tracing::warn!("delivery consumer stream ended; recreating it");
                    return PullEnd::Reopen;
                }
            }
        }
    }

    /// Hands messages pulled but not started back to JetStream at shutdown
    /// instead of letting them wait out the ack wait. At most one read-ahead,
    /// and with a short delay: the pull is still open, so a NAK without
    /// delay would come straight back into it and be handed back again and
    /// again, inflating the message's delivery count.
    async fn hand_back(&self, messages: &mut Messages) {
        let mut handed_back = 0;
        while handed_back < read_ahead(self.concurrency) {
            match tokio::time::timeout(Duration::from_millis(20), messages.next()).await {
                Ok(Some(Ok(msg))) => {
                    ack(&msg, AckKind::Nak(Some(HAND_BACK_DELAY))).await;
                    handed_back += 1;
                }
                _ => break,
            }
        }
        if handed_back > 0 {
            tracing::info!(handed_back, "shutdown: NAKed messages not yet started");
        }
    }

    /// One attempt of one message.
    async fn handle(&self, msg: jetstream::Message, hard_stop: CancellationToken) {
        let parsed = match Parsed::from_message(&msg) {
            Ok(p) => p,
            Err(reason) => {
                tracing::error!(subject = %msg.subject, reason, "unreadable queue message; terminating it");
                ack(&msg, AckKind::Term).await;
                return;
            }
        };
        let attempt = self.attempt_number(&parsed).await;
        let span = tracing::info_span!(
            "delivery",
            webhook_id = %parsed.meta.id,
            subscription_id = %parsed.meta.subscription_id,
            attempt,
        );
        self.attempt(msg, parsed, attempt, hard_stop)
            .instrument(span)
            .await;
    }

    /// 1 + the attempts logged so far: from memory while the webhook waits
    /// for a retry in this process, from SQLite for a redelivery after a
    /// restart, and 1 for a first delivery.
    async fn attempt_number(&self, p: &Parsed) -> u32 {
        if let Some(n) = self.logged.get(p.meta.id) {
            return n + 1;
        }
        if p.delivered <= 1 {
            return 1;
        }
        match self.store.logged_attempts(p.meta.id).await {
            Ok(n) => n + 1,
            Err(e) => {
                tracing::warn!(error = %e, "reading the attempt count; using JetStream's");
                p.delivered
            }
        }
    }

    /// Sends the webhook, logs the attempt, then acks, NAKs with the
    /// schedule's delay, or terminates the message.
    async fn attempt(
        &self,
        msg: jetstream::Message,
        p: Parsed,
        attempt: u32,
        hard_stop: CancellationToken,
    ) {
        let Some(sub) = self.subscription(&msg, &p).await else {
            return;
        };
        self.in_flight.insert(p.meta.id);
        let started_at = Utc::now();
        let Some(response) = self.send(&msg, &p, &sub, started_at, &hard_stop).await else {
            self.in_flight.remove(p.meta.id);
            return;
        };
        let decision = retry::decide(attempt, response.result, &self.schedule);
        let duration = response.duration;
        let row = attempt_row(&p, &sub, started_at, attempt, decision, response);
        let logged = self
            .log_attempt(&msg, Write::Attempt(row.clone()), &hard_stop)
            .await;
        self.in_flight.remove(p.meta.id);
        if !logged {
            // Shutdown deadline with SQLite still failing: the message goes
            // back to JetStream unacked; this attempt's row is lost.
            ack(&msg, AckKind::Nak(None)).await;
            return;
        }
        self.settle(&msg, &row, decision, duration).await;
    }

    /// The webhook's subscription. A deleted one drops the webhook (logged,
    /// terminated); SQLite trouble NAKs it for a retry shortly. `None` in
    /// both cases: the message is dealt with.
    async fn subscription(
        &self,
        msg: &jetstream::Message,
        p: &Parsed,
    ) -> Option<Arc<Subscription>> {
        match self.cache.get(p.meta.subscription_id).await {
            Ok(Some(sub)) => Some(sub),
            Ok(None) => {
                tracing::info!("subscription deleted; dropping the webhook");
                let dropped = Write::Dropped {
                    meta: p.meta.clone(),
                    reason: "subscription deleted".to_string(),
                };
                if let Err(e) = self.writer.write(dropped).await {
                    tracing::warn!(error = %e, "recording a dropped webhook");
                }
                self.metrics.webhooks_given_up.inc();
                self.logged.set(p.meta.id, None);
                ack(msg, AckKind::Term).await;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the subscription; retrying shortly");
                ack(msg, AckKind::Nak(Some(STORE_TROUBLE_DELAY))).await;
                None
            }
        }
    }

    /// POSTs the webhook to the subscription's target. At the shutdown
    /// deadline the attempt is abandoned and the message NAKed (`None`).
    async fn send(
        &self,
        msg: &jetstream::Message,
        p: &Parsed,
        sub: &Subscription,
        started_at: DateTime<Utc>,
        hard_stop: &CancellationToken,
    ) -> Option<client::Response> {
        let id = p.meta.id.to_string();
        let send = self.sender.send(client::Request {
            url: &sub.target_url,
            webhook_id: &id,
            timestamp: started_at.timestamp(),
            body: msg.payload.clone(),
            content_type: p.content_type.as_deref(),
            event_type: p.meta.event_type.as_deref(),
            secret: sub.secret.as_ref(),
        });
        tokio::select! {
            r = send => Some(r),
            _ = hard_stop.cancelled() => {
                tracing::info!("shutdown deadline: attempt abandoned, message NAKed");
                ack(msg, AckKind::Nak(None)).await;
                None
            }
        }
    }

    /// After the attempt's row is durable: counts it, logs it, remembers the
    /// attempts of a webhook waiting for a retry, and tells JetStream.
    async fn settle(
        &self,
        msg: &jetstream::Message,
        row: &AttemptWrite,
        decision: retry::Decision,
        duration: Duration,
    ) {
        self.metrics
            .record_attempt(decision.outcome, duration.as_secs_f64());
        tracing::info!(
            outcome = %decision.outcome,
            status = row.status_code,
            duration_ms = row.duration_ms,
            error = row.error.as_deref(),
            retry_in_ms = decision.retry_in.map(|d| d.as_millis() as u64),
            "delivery attempt"
        );
        let waiting = (decision.outcome == Outcome::FailedAttempt).then_some(row.attempt_number);
        self.logged.set(row.webhook.id, waiting);
        match decision.outcome {
            Outcome::Success => ack(msg, AckKind::Ack).await,
            Outcome::FailedAttempt => {
                self.metrics.retries_scheduled.inc();
                ack(msg, AckKind::Nak(decision.retry_in)).await
            }
            Outcome::Failure => {
                self.metrics.webhooks_given_up.inc();
                ack(msg, AckKind::Term).await
            }
        }
    }
}

/// The attempt's row and the webhook summary it leaves behind.
fn attempt_row(
    p: &Parsed,
    sub: &Subscription,
    started_at: DateTime<Utc>,
    attempt: u32,
    decision: retry::Decision,
    response: client::Response,
) -> Arc<AttemptWrite> {
    let next_retry_at = decision
        .retry_in
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| Utc::now() + d);
    Arc::new(AttemptWrite {
        webhook: p.meta.clone(),
        target_url: sub.target_url.clone(),
        timestamp: started_at,
        attempt_number: attempt,
        outcome: decision.outcome,
        status_code: response.status_code,
        error: response.error,
        duration_ms: response.duration.as_millis() as u64,
        response_body: response.body,
        next_retry_at,
    })
}

impl Deliverer {
    /// Commits an attempt's row, retrying for as long as SQLite refuses it
    /// (disk full, a lock held too long). The receiver already has this
    /// request: acking without the row would lose the log, and NAKing would
    /// deliver the webhook again (and again) while nothing can be logged.
    /// So the message is held, JetStream told it is still in progress, and
    /// this worker slot stays taken; with every slot taken, no new delivery
    /// starts until SQLite writes again. Gives up (false) only at the
    /// shutdown deadline.
    async fn log_attempt(
        &self,
        msg: &jetstream::Message,
        write: Write,
        hard_stop: &CancellationToken,
    ) -> bool {
        let mut delay = STORE_RETRY_MIN;
        let mut failures = 0u64;
        loop {
            match self.writer.write(write.clone()).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, "attempt logged once SQLite accepted it");
                    }
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(
                            error = %e,
                            "attempt not logged; holding the message and retrying the write"
                        );
                    } else if failures % 50 == 0 {
                        tracing::warn!(error = %e, failures, "attempt still not logged; retrying");
                    }
                    // Keep JetStream from redelivering it meanwhile.
                    ack(msg, AckKind::Progress).await;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = hard_stop.cancelled() => {
                            tracing::error!(
                                error = %e,
                                "shutdown deadline: attempt row never logged; the message will be redelivered"
                            );
                            return false;
                        }
                    }
                    delay = (delay * 2).min(STORE_RETRY_MAX);
                }
            }
        }
    }
}

/// Sends an ack of any kind; a failure only means JetStream will redeliver.
async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "acknowledging a message; it will be redelivered");
    }
}

/// What a queue message says about its webhook.
struct Parsed {
    meta: WebhookMeta,
    content_type: Option<String>,
    /// JetStream's delivery count.
    delivered: u32,
}

impl Parsed {
    fn from_message(msg: &jetstream::Message) -> Result<Parsed, &'static str> {
        let info = msg.info().map_err(|_| "no JetStream metadata")?;
        let delivered = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
        let stream_seq = info.stream_sequence;
        let subscription_id = msg
            .subject
            .as_str()
            .strip_prefix("webhooks.")
            .and_then(SubscriptionId::parse)
            .ok_or("subject is not webhooks.<subscription id>")?;
        let headers = msg.headers.as_ref().ok_or("no headers")?;
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let id = header("Nats-Msg-Id")
            .as_deref()
            .and_then(WebhookId::parse)
            .ok_or("no webhook id in Nats-Msg-Id")?;
        let received_at = header(queue::HEADER_RECEIVED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        Ok(Parsed {
            meta: WebhookMeta {
                id,
                subscription_id,
                event_type: header(queue::HEADER_EVENT_TYPE),
                received_at,
                stream_seq: Some(stream_seq),
            },
            content_type: header(queue::HEADER_CONTENT_TYPE),
            delivered,
        })
    }
}
