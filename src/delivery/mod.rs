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

impl Deliverer {
    /// Runs the workers until `shutdown` fires, then lets in-flight attempts
    /// finish within `grace`, NAKs the rest for immediate redelivery, and
    /// returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        'outer: while !shutdown.is_cancelled() {
            let consumer = match self.queue.consumer().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "delivery consumer unavailable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            // Read-ahead: messages pulled but not started yet. They get no
            // in-progress acks, so when every worker is held (SQLite
            // refusing rows) they outlive the ack wait and come back as
            // duplicates. A quarter of the workers keeps them busy as well
            // as a full batch of 256 did (bench e2e: same rate) and cuts
            // those duplicates (chaos disk-full, 40 s: 263 -> 77).
            let batch = (self.concurrency / 4).clamp(1, 64);
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling from the delivery consumer; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            let shutting_down = loop {
                // Take a message only when a worker slot is free.
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break true,
                    },
                    _ = shutdown.cancelled() => break true,
                };
                let next = tokio::select! {
                    next = messages.next() => next,
                    _ = shutdown.cancelled() => break true,
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
                                _ = shutdown.cancelled() => break true,
                            }
                        }
                    }
                    None => {
                        tracing::warn!("delivery consumer stream ended; recreating it");
                        break false;
                    }
                }
            };
            if shutting_down {
                // Messages already pulled but not started: hand them back
                // for redelivery instead of waiting for ack_wait. At most one
                // batch, and with a short delay: this pull is still open, so
                // a NAK without delay comes straight back into it, and the
                // loop would hand the same messages back thousands of times,
                // inflating their JetStream delivery count.
                let mut handed_back = 0;
                while handed_back < batch {
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
                break 'outer;
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

    async fn attempt(
        &self,
        msg: jetstream::Message,
        p: Parsed,
        attempt: u32,
        hard_stop: CancellationToken,
    ) {
        let sub = match self.cache.get(p.meta.subscription_id).await {
            Ok(Some(sub)) => sub,
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
                ack(&msg, AckKind::Term).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the subscription; retrying shortly");
                ack(&msg, AckKind::Nak(Some(STORE_TROUBLE_DELAY))).await;
                return;
            }
        };

        self.in_flight.insert(p.meta.id);
        let started_at = Utc::now();
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
        let response = tokio::select! {
            r = send => r,
            _ = hard_stop.cancelled() => {
                self.in_flight.remove(p.meta.id);
                tracing::info!("shutdown deadline: attempt abandoned, message NAKed");
                ack(&msg, AckKind::Nak(None)).await;
                return;
            }
        };

        let decision = retry::decide(attempt, response.result, &self.schedule);
        let next_retry_at = decision
            .retry_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        let duration_ms = response.duration.as_millis() as u64;
        let write = Write::Attempt(Arc::new(AttemptWrite {
            webhook: p.meta.clone(),
            target_url: sub.target_url.clone(),
            timestamp: started_at,
            attempt_number: attempt,
            outcome: decision.outcome,
            status_code: response.status_code,
            error: response.error.clone(),
            duration_ms,
            response_body: response.body,
            next_retry_at,
        }));
        let logged = self.log_attempt(&msg, write, &hard_stop).await;
        self.in_flight.remove(p.meta.id);
        if !logged {
            // Shutdown deadline with SQLite still failing: the message goes
            // back to JetStream unacked; this attempt's row is lost.
            ack(&msg, AckKind::Nak(None)).await;
            return;
        }
        self.metrics
            .record_attempt(decision.outcome, response.duration.as_secs_f64());
        tracing::info!(
            outcome = %decision.outcome,
            status = response.status_code,
            duration_ms,
            error = response.error.as_deref(),
            retry_in_ms = decision.retry_in.map(|d| d.as_millis() as u64),
            "delivery attempt"
        );
        let waiting = (decision.outcome == Outcome::FailedAttempt).then_some(attempt);
        self.logged.set(p.meta.id, waiting);
        match decision.outcome {
            Outcome::Success => ack(&msg, AckKind::Ack).await,
            Outcome::FailedAttempt => {
                self.metrics.retries_scheduled.inc();
                ack(&msg, AckKind::Nak(decision.retry_in)).await
            }
            Outcome::Failure => {
                self.metrics.webhooks_given_up.inc();
                ack(&msg, AckKind::Term).await
            }
        }
    }
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
