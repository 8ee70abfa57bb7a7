//! One attempt of one message: read its subscription, send it (or, with
//! the circuit open, log that it was not sent), decide, log the attempt
//! row, then ack, NAK with the delay, or terminate.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::scheduler::Finished;
use super::{client, retry, Deliverer, HAND_BACK_DELAY};
use crate::health::Verdict;
use crate::ids::{SubscriptionId, WebhookId};
use crate::queue;
use crate::store::records::{AttemptCounts, Outcome, NOT_SENT_PREFIX};
use crate::store::subscriptions::{State, Subscription};
use crate::store::writer::{AttemptWrite, WebhookMeta, Write};

/// Delay before a message is offered again when its subscription could not
/// be read (SQLite trouble).
const STORE_TROUBLE_DELAY: Duration = Duration::from_secs(1);

/// First and longest pause between tries to log an attempt SQLite refused.
/// The longest stays well below the ack wait (30 s at least): each try also
/// tells JetStream the message is still in progress.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(2);

/// What the scheduler decided for this message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// Send it (`probe`: as the one probe of a half-open circuit).
    Send {
        /// Whether it is the probe.
        probe: bool,
    },
    /// Log it as not sent and retry it when the circuit lets a probe go.
    Defer {
        /// The next probe time.
        until: DateTime<Utc>,
    },
}

impl Deliverer {
    /// One attempt of one message, in its `delivery` span.
    pub(super) async fn handle(&self, msg: jetstream::Message, mode: Mode) -> Finished {
        let parsed = match Parsed::from_message(&msg) {
            Ok(p) => p,
            Err(reason) => {
                tracing::error!(subject = %msg.subject, reason, "unreadable queue message; terminating it");
                ack(&msg, AckKind::Term).await;
                return Finished::NotSent;
            }
        };
        let counts = self.attempt_counts(&parsed).await;
        if counts.settled {
            // Its ack was lost (webhookd stalled past the ack wait, say):
            // the attempt row that ended it is committed, so it is done.
            tracing::info!(webhook_id = %parsed.meta.id, "already settled; acking the message handed out again");
            ack(&msg, AckKind::Ack).await;
            return Finished::NotSent;
        }
        // At debug: a span costs an allocation and its formatting on every
        // attempt, and the info lines of an attempt name the webhook
        // themselves (the per-attempt line also its subscription and
        // attempt number), so that `info` costs next to nothing more than
        // `warn` (README, Logs).
        let span = tracing::debug_span!(
            "delivery",
            webhook_id = %parsed.meta.id,
            subscription_id = %parsed.meta.subscription_id,
            attempt = counts.logged + 1,
        );
        self.attempt(msg, parsed, counts, mode)
            .instrument(span)
            .await
    }

    /// The attempts logged (and sent) so far: from memory while the
    /// webhook waits for a retry in this process, from SQLite for a
    /// redelivery after a restart, none for a first delivery.
    async fn attempt_counts(&self, p: &Parsed) -> AttemptCounts {
        if let Some(counts) = self.logged.get(p.meta.id) {
            return counts;
        }
        if p.delivered <= 1 && p.redelivery == 0 {
            return AttemptCounts::default();
        }
        match self
            .store
            .logged_attempts(p.meta.id, p.redelivery, p.attempt_base)
            .await
        {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "reading the attempt count; using JetStream's");
                let n = p.delivered.saturating_sub(1);
                AttemptCounts {
                    logged: p.attempt_base + n,
                    sent: n,
                    settled: false,
                }
            }
        }
    }

    /// Sends the webhook (or logs it as not sent), logs the attempt, then
    /// acks, NAKs with the delay, or terminates the message.
    async fn attempt(
        &self,
        msg: jetstream::Message,
        p: Parsed,
        counts: AttemptCounts,
        mode: Mode,
    ) -> Finished {
        let Some(sub) = self.subscription(&msg, &p).await else {
            return Finished::NotSent;
        };
        let started_at = Utc::now();
        let attempt = counts.logged + 1;
        let sent = counts.sent + u32::from(matches!(mode, Mode::Send { .. }));
        let response = match mode {
            Mode::Defer { until } => {
                let end_of_life = p.life_start
                    + chrono::Duration::from_std(self.settings.schedule.span())
                        .unwrap_or(chrono::Duration::MAX);
                not_sent(started_at, until, end_of_life, &sub)
            }
            Mode::Send { probe } => {
                if probe {
                    tracing::info!(
                        webhook_id = %p.meta.id,
                        subscription_id = %p.meta.subscription_id,
                        "circuit half-open: sending this attempt as the probe"
                    );
                }
                self.in_flight.insert(p.meta.id);
                let sent = self.send(&msg, &p, &sub, started_at).await;
                if sent.is_none() {
                    self.in_flight.remove(p.meta.id);
                }
                match sent {
                    Some(response) => response,
                    None => return Finished::NotSent,
                }
            }
        };
        let finished = match (mode, response.result) {
            (Mode::Defer { .. }, _) => Finished::Deferred,
            (_, retry::Result::Refused) => Finished::NotSent,
            _ => Finished::Sent(Verdict::of_status(response.status_code), response.duration),
        };
        let jitter = retry::Jitter {
            fraction: self.settings.jitter,
            draw: fastrand::f64(),
        };
        let decision = retry::decide(sent, response.result, &self.settings.schedule, jitter);
        let duration = response.duration;
        let row = attempt_row(&p, &sub, started_at, attempt, decision, response);
        let logged = self
            .log_attempt(&msg, p.meta.id, Write::Attempt(row.clone()))
            .await;
        self.in_flight.remove(p.meta.id);
        if !logged {
            // Shutdown deadline with SQLite still failing: the message goes
            // back to JetStream unacked; this attempt's row is lost.
            ack(&msg, AckKind::Nak(None)).await;
            return finished;
        }
        let was_sent = !matches!(mode, Mode::Defer { .. });
        let counts = AttemptCounts {
            logged: attempt,
            sent,
            settled: false,
        };
        self.settle(&msg, &row, counts, decision, was_sent.then_some(duration))
            .await;
        finished
    }

    /// The webhook's subscription, when deliveries to it may go out. A
    /// deleted one drops the webhook, a disabled one ends it `failed` with
    /// the reason (its payload stays in the stream for a recovery); SQLite
    /// trouble NAKs it for a retry shortly. `None`: the message is dealt
    /// with.
    async fn subscription(
        &self,
        msg: &jetstream::Message,
        p: &Parsed,
    ) -> Option<Arc<Subscription>> {
        let reason = match self.cache.get(p.meta.subscription_id).await {
            Ok(Some(sub)) => match &sub.state {
                State::Active => return Some(sub),
                State::Disabled { reason, .. } => {
                    format!("{NOT_SENT_PREFIX}subscription disabled ({reason})")
                }
            },
            Ok(None) => "subscription deleted".to_string(),
            Err(e) => {
                tracing::warn!(webhook_id = %p.meta.id, error = %e, "reading the subscription; retrying shortly");
                ack(msg, AckKind::Nak(Some(STORE_TROUBLE_DELAY))).await;
                return None;
            }
        };
        tracing::info!(
            webhook_id = %p.meta.id,
            subscription_id = %p.meta.subscription_id,
            %reason,
            "webhook not delivered"
        );
        let dropped = Write::Dropped {
            meta: p.meta.clone(),
            reason,
        };
        if let Err(e) = self.writer.write(dropped).await {
            tracing::warn!(webhook_id = %p.meta.id, error = %e, "recording a webhook not delivered");
        }
        self.metrics.webhooks_given_up.inc();
        self.logged.set(p.meta.id, None);
        ack(msg, AckKind::Term).await;
        None
    }

    /// POSTs the webhook to the subscription's target. At the shutdown
    /// deadline the attempt is abandoned and the message NAKed (`None`).
    async fn send(
        &self,
        msg: &jetstream::Message,
        p: &Parsed,
        sub: &Subscription,
        started_at: DateTime<Utc>,
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
            _ = self.hard_stop.cancelled() => {
                tracing::info!(webhook_id = %p.meta.id, "shutdown deadline: attempt abandoned, message NAKed");
                ack(msg, AckKind::Nak(None)).await;
                None
            }
        }
    }

    /// After the attempt's row is durable: counts it (`sent`: how long the
    /// request took; `None` for an attempt not sent), logs it, remembers the
    /// attempts of a webhook waiting for a retry, and tells JetStream.
    async fn settle(
        &self,
        msg: &jetstream::Message,
        row: &AttemptWrite,
        counts: AttemptCounts,
        decision: retry::Decision,
        sent: Option<Duration>,
    ) {
        match sent {
            Some(took) => self
                .metrics
                .record_attempt(decision.outcome, took.as_secs_f64()),
            None => {
                self.metrics.attempts_not_sent.inc();
            }
        }
        tracing::info!(
            webhook_id = %row.webhook.id,
            subscription_id = %row.webhook.subscription_id,
            attempt = row.attempt_number,
            outcome = %decision.outcome,
            status = row.status_code,
            duration_ms = row.duration_ms,
            error = row.error.as_deref(),
            retry_in_ms = decision.retry_in.map(|d| d.as_millis() as u64),
            "delivery attempt"
        );
        let waiting = (decision.outcome == Outcome::FailedAttempt).then_some(counts);
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

    /// Commits an attempt's row, retrying for as long as SQLite refuses it
    /// (disk full, a lock held too long). The receiver already has this
    /// request: acking without the row would lose the log, and NAKing would
    /// deliver the webhook again (and again) while nothing can be logged.
    /// So the message is held, JetStream told it is still in progress, and
    /// this worker slot stays taken; with every slot taken, no new delivery
    /// starts until SQLite writes again. Gives up (false) only at the
    /// shutdown deadline.
    async fn log_attempt(&self, msg: &jetstream::Message, id: WebhookId, write: Write) -> bool {
        let mut delay = STORE_RETRY_MIN;
        let mut failures = 0u64;
        loop {
            match self.writer.write(write.clone()).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(webhook_id = %id, failures, "attempt logged once SQLite accepted it");
                    }
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(
                            webhook_id = %id,
                            error = %e,
                            "attempt not logged; holding the message and retrying the write"
                        );
                    } else if failures % 50 == 0 {
                        tracing::warn!(webhook_id = %id, error = %e, failures, "attempt still not logged; retrying");
                    }
                    // Keep JetStream from redelivering it meanwhile.
                    ack(msg, AckKind::Progress).await;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.hard_stop.cancelled() => {
                            tracing::error!(
                                webhook_id = %id,
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

/// The "response" of an attempt not sent because the circuit is open.
fn not_sent(
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    end_of_life: DateTime<Utc>,
    sub: &Subscription,
) -> client::Response {
    let wait = (until - now).to_std().unwrap_or_default();
    let left = (end_of_life - now).to_std().unwrap_or_default();
    client::Response {
        result: retry::Result::NotSent { wait, left },
        status_code: None,
        error: Some(format!(
            "{NOT_SENT_PREFIX}circuit open until {} (the receiver at {} kept failing)",
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            url_host(&sub.target_url)
        )),
        body: None,
        duration: Duration::ZERO,
    }
}

/// The host of a target URL, for messages (never the userinfo or path).
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
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
        redelivery: p.redelivery,
    })
}

/// Sends an ack of any kind; a failure only means JetStream will redeliver.
pub(super) async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "acknowledging a message; it will be redelivered");
    }
}

/// Hands a message back to JetStream at shutdown, with a delay longer than
/// the open pull can last (so it does not come back into the pull being
/// drained).
pub(super) async fn hand_back(msg: &jetstream::Message) {
    ack(msg, AckKind::Nak(Some(HAND_BACK_DELAY))).await;
}

/// The subscription of a queue message, from its subject
/// (`webhooks.<subscription id>` or `redeliveries.<subscription id>`).
pub(super) fn subscription_of(msg: &jetstream::Message) -> Option<SubscriptionId> {
    let subject = msg.subject.as_str();
    subject
        .strip_prefix("webhooks.")
        .or_else(|| subject.strip_prefix("redeliveries."))
        .and_then(SubscriptionId::parse)
}

/// What a queue message says about its webhook.
pub(super) struct Parsed {
    pub(super) meta: WebhookMeta,
    content_type: Option<String>,
    /// JetStream's delivery count.
    delivered: u32,
    /// 0 for the original message, n for the n-th redelivery.
    redelivery: u32,
    /// Attempts logged before this redelivery (0 for the original).
    attempt_base: u32,
    /// Where its life under the retry schedule starts: when it was
    /// received, or redelivered.
    life_start: DateTime<Utc>,
}

impl Parsed {
    pub(super) fn from_message(msg: &jetstream::Message) -> Result<Parsed, &'static str> {
        let info = msg.info().map_err(|_| "no JetStream metadata")?;
        let delivered = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
        let stream_seq = info.stream_sequence;
        let subscription_id =
            subscription_of(msg).ok_or("subject is not webhooks.<subscription id>")?;
        let headers = msg.headers.as_ref().ok_or("no headers")?;
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        let time = |name: &str| {
            header(name)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let number = |name: &str| header(name).and_then(|n| n.parse::<u32>().ok());
        let id = header(queue::HEADER_WEBHOOK_ID)
            .or_else(|| header("Nats-Msg-Id"))
            .as_deref()
            .and_then(WebhookId::parse)
            .ok_or("no webhook id in Nats-Msg-Id")?;
        let received_at = time(queue::HEADER_RECEIVED_AT).unwrap_or_else(Utc::now);
        let redelivery = number(queue::HEADER_REDELIVERY).unwrap_or(0);
        Ok(Parsed {
            redelivery,
            attempt_base: number(queue::HEADER_ATTEMPT_BASE).unwrap_or(0),
            life_start: time(queue::HEADER_REDELIVERED_AT)
                .filter(|_| redelivery > 0)
                .unwrap_or(received_at),
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
