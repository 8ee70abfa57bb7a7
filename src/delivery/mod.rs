//! Delivery workers: pull webhooks from the `delivery` consumer, schedule
//! them fairly across subscriptions, POST them to their subscription's
//! target, log the attempt, then ack, NAK with the schedule's delay, or
//! terminate.
//!
//! One pull stream feeds [`scheduler::Scheduler`], which gives each message
//! a worker slot when its subscription may start an attempt (its fair share,
//! its cap, its circuit and throttle from [`crate::health`]), parks it
//! otherwise, and hands freed slots to parked messages in turn. A message is
//! taken from the stream only while a slot is free and the parking has
//! room. The attempt row is durable in SQLite before the message is acked,
//! so a crash can duplicate a delivery, never lose its log.

mod attempt;
pub mod client;
mod restore;
pub mod retry;
pub mod scheduler;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::SubscriptionCache;
use crate::config::RetrySchedule;
use crate::health::{Health, Transition};
use crate::ids::{SubscriptionId, WebhookId};
use crate::metrics::Metrics;
use crate::queue::{Queue, Source};
use crate::store::records::AttemptCounts;
use crate::store::writer::Writer;
use crate::store::Store;
use attempt::{ack, hand_back, subscription_of, Mode};
use scheduler::{Dispatch, Finished, Placement, Scheduler};

/// Delay of a message handed back at shutdown: longer than the open pull
/// can last, so the message does not come back into the pull being drained.
const HAND_BACK_DELAY: Duration = Duration::from_secs(2);

/// How often parked messages are checked for an in-progress ack.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// Payload bytes the parking holds at most.
const PARK_BYTES: usize = 16 << 20;

/// Webhooks with an attempt in flight right now: the status API reports
/// them as `delivering`.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<WebhookId>>>);

impl InFlight {
    /// Whether an attempt of this webhook is in flight.
    pub fn contains(&self, id: WebhookId) -> bool {
        self.0.lock().map(|s| s.contains(&id)).unwrap_or(false)
    }

    /// The webhooks in flight now.
    pub fn snapshot(&self) -> Vec<WebhookId> {
        self.0
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
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

/// The parts the workers share with the rest of webhookd.
pub struct Parts {
    /// Where messages come from.
    pub queue: Queue,
    /// Subscription lookups.
    pub cache: SubscriptionCache,
    /// Attempt log.
    pub writer: Writer,
    /// Outbound HTTP.
    pub sender: client::Sender,
    /// SQLite: attempt counts after a restart, disabling subscriptions.
    pub store: Store,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Webhooks being delivered now.
    pub in_flight: InFlight,
    /// Endpoint health, shared with the API.
    pub health: Health,
}

/// How the workers deliver.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Retry delays.
    pub schedule: RetrySchedule,
    /// Random spread of retry delays (0.2: ±20%).
    pub jitter: f64,
    /// Attempts in flight at most, all subscriptions together.
    pub slots: usize,
    /// The consumer's ack wait: parked messages are told "in progress"
    /// three times per ack wait.
    pub ack_wait: Duration,
    /// Never park: NAK every waiting message with a short delay (measured
    /// against parking, see `--scheduler-wait`).
    pub nak_only: bool,
    /// Redeliveries taken from their consumer per second at most.
    pub redelivery_rate: u32,
}

/// Everything a worker needs; shared by all of them.
pub struct Deliverer {
    queue: Queue,
    cache: SubscriptionCache,
    writer: Writer,
    sender: client::Sender,
    store: Store,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    settings: Settings,
    /// Attempts logged so far of the webhooks waiting for a retry.
    logged: LoggedAttempts,
    /// Who runs next.
    scheduler: Scheduler<jetstream::Message>,
    /// Every attempt task, for the shutdown wait.
    tracker: TaskTracker,
    /// Fired at the shutdown deadline: attempts still running give up.
    hard_stop: CancellationToken,
}

/// Attempts logged (and sent) per webhook while it waits for a retry: the
/// source of the attempt number and of the schedule's step. JetStream's
/// delivery count is not used for them: it also counts hand-backs and
/// redeliveries that reached no receiver, and it was seen to restart at 1
/// for a message NAKed with a delay.
#[derive(Default)]
struct LoggedAttempts(Mutex<HashMap<WebhookId, AttemptCounts>>);

impl LoggedAttempts {
    fn get(&self, id: WebhookId) -> Option<AttemptCounts> {
        self.0.lock().ok().and_then(|m| m.get(&id).copied())
    }

    fn set(&self, id: WebhookId, attempts: Option<AttemptCounts>) {
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

/// The pace of the redelivery pull at `rate` a second: a tick at most
/// every 10 ms (finer ticks are not kept by the timer), and how many
/// messages each tick lets through.
fn pace(rate: u32) -> (Duration, usize) {
    let rate = rate.max(1);
    if rate <= 100 {
        (Duration::from_secs(1) / rate, 1)
    } else {
        (Duration::from_millis(10), (rate as usize).div_ceil(100))
    }
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
    /// Workers over `parts`, delivering as `settings` say.
    pub fn new(parts: Parts, settings: Settings) -> Deliverer {
        let limits = scheduler::Limits {
            slots: settings.slots,
            park_total: settings.slots * 4,
            park_bytes: PARK_BYTES,
            nak_only: settings.nak_only,
        };
        Deliverer {
            scheduler: Scheduler::new(limits, parts.health),
            queue: parts.queue,
            cache: parts.cache,
            writer: parts.writer,
            sender: parts.sender,
            store: parts.store,
            metrics: parts.metrics,
            in_flight: parts.in_flight,
            settings,
            logged: LoggedAttempts::default(),
            tracker: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        }
    }

    /// Runs the workers until `shutdown` fires, then hands parked messages
    /// back, lets in-flight attempts finish within `grace`, NAKs the rest
    /// for immediate redelivery, and returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let ticker = tokio::spawn(self.clone().keep_parked_alive(shutdown.clone()));
        let redeliveries = tokio::spawn(
            self.clone()
                .pull_until_shutdown(Source::Redeliveries, shutdown.clone()),
        );
        self.clone()
            .pull_until_shutdown(Source::Live, shutdown.clone())
            .await;
        let _ = redeliveries.await;
        let _ = ticker.await;
        let parked = self.scheduler.drain_parked();
        if !parked.is_empty() {
            tracing::info!(
                handed_back = parked.len(),
                "shutdown: NAKed parked messages"
            );
        }
        for msg in &parked {
            hand_back(msg).await;
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "deliveries still in flight at the shutdown deadline; NAKing them"
            );
            self.hard_stop.cancel();
            self.tracker.wait().await;
        }
        self.queue.flush().await;
    }

    /// Pulls from `source`'s consumer until shutdown, reopening the pull
    /// when it ends; at shutdown hands back what was read ahead.
    async fn pull_until_shutdown(self: Arc<Self>, source: Source, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let Some(mut messages) = self.open_pull(source, &shutdown).await else {
                continue;
            };
            if let PullEnd::Shutdown = self.pull(source, &mut messages, &shutdown).await {
                self.hand_back_read_ahead(source, &mut messages).await;
                break;
            }
        }
    }

    /// Messages a pull of `source` reads ahead: redeliveries come at a
    /// paced rate, a few at a time.
    fn read_ahead(&self, source: Source) -> usize {
        match source {
            Source::Live => read_ahead(self.settings.slots),
            Source::Redeliveries => 8,
        }
    }

    /// Opens a pull stream on `source`'s consumer (creating the consumer
    /// if it is gone). On failure, waits a second (or for shutdown) and
    /// returns `None` so the caller tries again.
    async fn open_pull(&self, source: Source, shutdown: &CancellationToken) -> Option<Messages> {
        let opened = match self.queue.consumer(source).await {
            Ok(consumer) => consumer
                .stream()
                .max_messages_per_batch(self.read_ahead(source))
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
                tracing::warn!(%error, ?source, "delivery consumer unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => {}
                }
                None
            }
        }
    }

    /// Takes messages from the stream while a slot is free and the parking
    /// has room (redeliveries: also at most `redelivery_rate` a second),
    /// and hands each to the scheduler, until the stream ends or shutdown
    /// begins.
    async fn pull(
        self: &Arc<Self>,
        source: Source,
        messages: &mut Messages,
        shutdown: &CancellationToken,
    ) -> PullEnd {
        // Redeliveries: `burst` messages per tick of `pace`, `left` of
        // this tick's still to take.
        let (mut pace, parking) = match source {
            Source::Live => (None, usize::MAX),
            Source::Redeliveries => {
                let (every, burst) = pace(self.settings.redelivery_rate);
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                (
                    Some((tick, burst, 0usize)),
                    self.scheduler.redelivery_parking(),
                )
            }
        };
        loop {
            if let Some((tick, burst, left)) = pace.as_mut() {
                if *left == 0 {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = shutdown.cancelled() => return PullEnd::Shutdown,
                    }
                    *left = *burst;
                }
                *left -= 1;
            }
            tokio::select! {
                _ = self.scheduler.ready_below(parking) => {}
                _ = shutdown.cancelled() => return PullEnd::Shutdown,
            }
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.cancelled() => return PullEnd::Shutdown,
            };
            match next {
                Some(Ok(msg)) => self.place(msg).await,
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

    /// Offers a message to the scheduler: it runs now, is parked, or
    /// overflows (NAKed to come back when its lane has room).
    async fn place(self: &Arc<Self>, msg: jetstream::Message) {
        let Some(sub) = subscription_of(&msg) else {
            tracing::error!(subject = %msg.subject, "queue message on an unknown subject; terminating it");
            ack(&msg, AckKind::Term).await;
            return;
        };
        let size = msg.payload.len();
        let (placement, transitions) = self.scheduler.offer(sub, msg, size, Utc::now());
        self.log_transitions(sub, &transitions).await;
        match placement {
            Placement::Now(dispatch) => self.spawn(dispatch),
            Placement::Parked => {}
            Placement::Overflow { job, delay } => {
                tracing::debug!(subscription_id = %sub, delay_ms = delay.as_millis() as u64, "lane full; message NAKed until it has room");
                ack(&job, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// Runs a dispatch in its own task; when it ends, its slot goes to the
    /// next parked message.
    fn spawn(self: &Arc<Self>, dispatch: Dispatch<jetstream::Message>) {
        let this = self.clone();
        self.tracker.spawn(async move {
            let (sub, finished) = match dispatch {
                Dispatch::Run { sub, job, probe } => {
                    (sub, this.handle(job, Mode::Send { probe }).await)
                }
                Dispatch::Defer { sub, job, until } => {
                    this.handle(job, Mode::Defer { until }).await;
                    (sub, Finished::Deferred)
                }
            };
            let next = this.scheduler.finish(sub, finished, Utc::now());
            this.log_transitions(sub, &next.transitions).await;
            for dispatch in next.dispatches {
                this.spawn(dispatch);
            }
        });
    }

    /// One log line per circuit change; a subscription the endpoint asks
    /// to disable (410 Gone, sustained failure) is disabled in SQLite.
    async fn log_transitions(&self, sub: SubscriptionId, transitions: &[Transition]) {
        for t in transitions {
            match t {
                Transition::Opened { failures, until } => tracing::warn!(
                    subscription_id = %sub,
                    failures,
                    until = %until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "circuit opened: nothing is sent to this receiver until the probe"
                ),
                Transition::HalfOpened => tracing::info!(
                    subscription_id = %sub,
                    "circuit half-open: the next attempt is a probe"
                ),
                Transition::Closed => tracing::info!(
                    subscription_id = %sub,
                    "circuit closed: the probe was answered; deliveries resume"
                ),
                Transition::Disable { reason } => self.disable(sub, reason).await,
            }
        }
    }

    /// Disables a subscription for a reason the receiver gave.
    async fn disable(&self, sub: SubscriptionId, reason: &str) {
        match self
            .store
            .disable_subscription(sub, reason.to_string(), Utc::now())
            .await
        {
            Ok(Some(_)) => {
                self.cache.invalidate(sub);
                tracing::warn!(subscription_id = %sub, %reason, "subscription disabled");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(subscription_id = %sub, error = %e, %reason, "disabling the subscription")
            }
        }
    }

    /// Tells JetStream, three times per ack wait, that each parked message
    /// is still in progress, so it is not handed out again meanwhile.
    async fn keep_parked_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.settings.ack_wait / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROGRESS_TICK) => {}
                _ = shutdown.cancelled() => return,
            }
            for msg in self.scheduler.progress_due(every) {
                ack(&msg, AckKind::Progress).await;
            }
        }
    }

    /// Hands messages pulled but not offered yet back to JetStream at
    /// shutdown instead of letting them wait out the ack wait. At most one
    /// read-ahead, and with a short delay: the pull is still open, so a NAK
    /// without delay would come straight back into it and be handed back
    /// again and again, inflating the message's delivery count.
    async fn hand_back_read_ahead(&self, source: Source, messages: &mut Messages) {
        let mut handed_back = 0;
        while handed_back < self.read_ahead(source) {
            match tokio::time::timeout(Duration::from_millis(20), messages.next()).await {
                Ok(Some(Ok(msg))) => {
                    hand_back(&msg).await;
                    handed_back += 1;
                }
                _ => break,
            }
        }
        if handed_back > 0 {
            tracing::info!(handed_back, "shutdown: NAKed messages not yet started");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redelivery_pace_lets_the_rate_through_in_10_ms_ticks() {
        assert_eq!(pace(1), (Duration::from_secs(1), 1));
        assert_eq!(pace(50), (Duration::from_millis(20), 1));
        assert_eq!(pace(100), (Duration::from_millis(10), 1));
        assert_eq!(pace(1000), (Duration::from_millis(10), 10));
        assert_eq!(pace(1050), (Duration::from_millis(10), 11));
        assert_eq!(pace(0), (Duration::from_secs(1), 1));
    }
}
