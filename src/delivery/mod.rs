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
pub mod signing;

use std::collections::HashSet;
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

/// Delay before a message is offered again when its attempt could not be
/// logged or its subscription could not be read (SQLite trouble).
const STORE_TROUBLE_DELAY: Duration = Duration::from_secs(1);

/// First and longest pause between tries to log an attempt SQLite refused.
/// The longest stays well below the ack wait (30 s at least): each try also
/// tells JetStream the message is still in progress.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long one pull request stays open waiting for messages.
const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// Most messages asked for in one pull request.
const MAX_PULL: usize = 256;

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
}

impl Deliverer {
    /// Runs the workers until `shutdown` fires, then lets in-flight attempts
    /// finish within `grace`, hands back what was pulled but not started,
    /// and returns.
    ///
    /// Messages are pulled in batches no larger than the number of free
    /// worker slots, each pull request expiring after [`PULL_EXPIRY`]: every
    /// message pulled starts at once, none waits in a client-side buffer
    /// (where it would count against ack_wait), and at shutdown only the one
    /// open pull has to be drained.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut consumer = None;
        while !shutdown.is_cancelled() {
            let current = match consumer.take() {
                Some(c) => c,
                None => match self.queue.consumer().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery consumer unavailable; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = shutdown.cancelled() => break,
                        }
                    }
                },
            };
            // Wait for a free slot, then ask for as many messages as are free.
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let want = (1 + permits.available_permits()).min(MAX_PULL);
            let mut batch = match current
                .batch()
                .max_messages(want)
                .expires(PULL_EXPIRY)
                .messages()
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling from the delivery consumer; retrying");
                    drop(first);
                    // Recreate the consumer handle: NATS may have restarted.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            consumer = Some(current);
            let mut first = Some(first);
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    _ = shutdown.cancelled() => {
                        // The pull is still open on the server: take what it
                        // still delivers (until it expires) and hand it back.
                        let mut handed_back = 0;
                        while let Some(Ok(msg)) = batch.next().await {
                            ack(&msg, AckKind::Nak(Some(HAND_BACK_DELAY))).await;
                            handed_back += 1;
                        }
                        if handed_back > 0 {
                            tracing::info!(handed_back, "shutdown: handed back messages not yet started");
                        }
                        break;
                    }
                };
                match next {
                    Some(Ok(msg)) => {
                        // A slot is free: `want` was at most the free slots.
                        let permit = match first.take() {
                            Some(p) => p,
                            None => match permits.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                        };
                        let this = self.clone();
                        let hard_stop = hard_stop.clone();
                        tracker.spawn(async move {
                            this.handle(msg, hard_stop).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "delivery pull ended with an error");
                        if !self.queue.is_connected() {
                            consumer = None;
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                _ = shutdown.cancelled() => {}
                            }
                        }
                        break;
                    }
                    None => break,
                }
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
        let span = tracing::info_span!(
            "delivery",
            webhook_id = %parsed.meta.id,
            subscription_id = %parsed.meta.subscription_id,
            attempt = parsed.attempt,
        );
        self.attempt(msg, parsed, hard_stop).instrument(span).await;
    }

    async fn attempt(&self, msg: jetstream::Message, p: Parsed, hard_stop: CancellationToken) {
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
            secret: sub.secret.as_deref(),
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

        let decision = retry::decide(p.attempt, response.result, &self.schedule);
        let next_retry_at = decision
            .retry_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        let duration_ms = response.duration.as_millis() as u64;
        let write = Write::Attempt(Box::new(AttemptWrite {
            webhook: p.meta.clone(),
            target_url: sub.target_url.clone(),
            timestamp: started_at,
            attempt_number: p.attempt,
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
    attempt: u32,
}

impl Parsed {
    fn from_message(msg: &jetstream::Message) -> Result<Parsed, &'static str> {
        let info = msg.info().map_err(|_| "no JetStream metadata")?;
        let attempt = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
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
            attempt,
        })
    }
}
