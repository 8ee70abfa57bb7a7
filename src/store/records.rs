//! Webhook and delivery-attempt records: what the status API reads.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{from_millis, to_millis, Store, StoreError};
use crate::ids::{SubscriptionId, WebhookId};

/// Where a webhook is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Accepted and queued; no attempt yet.
    Pending,
    /// An attempt is in flight right now.
    Delivering,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// A receiver answered 2xx.
    Succeeded,
    /// Given up: schedule exhausted, target refused, or subscription deleted.
    Failed,
    /// Its event type is not subscribed: never queued.
    Filtered,
}

impl WebhookStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Delivering => "delivering",
            WebhookStatus::Retrying => "retrying",
            WebhookStatus::Succeeded => "succeeded",
            WebhookStatus::Failed => "failed",
            WebhookStatus::Filtered => "filtered",
        }
    }
}

impl FromStr for WebhookStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => WebhookStatus::Pending,
            "delivering" => WebhookStatus::Delivering,
            "retrying" => WebhookStatus::Retrying,
            "succeeded" => WebhookStatus::Succeeded,
            "failed" => WebhookStatus::Failed,
            "filtered" => WebhookStatus::Filtered,
            other => return Err(format!("unknown webhook status {other}")),
        })
    }
}

/// The result of one attempt, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The receiver answered 2xx.
    Success,
    /// Failed; a retry is scheduled.
    FailedAttempt,
    /// Failed; no retry will follow.
    Failure,
}

impl Outcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FailedAttempt => "failed_attempt",
            Outcome::Failure => "failure",
        }
    }

    /// The webhook status this outcome leaves behind.
    pub fn status(self) -> WebhookStatus {
        match self {
            Outcome::Success => WebhookStatus::Succeeded,
            Outcome::FailedAttempt => WebhookStatus::Retrying,
            Outcome::Failure => WebhookStatus::Failed,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "success" => Outcome::Success,
            "failed_attempt" => Outcome::FailedAttempt,
            "failure" => Outcome::Failure,
            other => return Err(format!("unknown outcome {other}")),
        })
    }
}

/// How every attempt logged as not sent (the circuit was open) starts its
/// error.
pub const NOT_SENT_PREFIX: &str = "not sent: ";

/// What has been logged of a webhook's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCounts {
    /// Attempt rows: the last attempt number.
    pub logged: u32,
    /// Of them, the attempts that were sent (not deferred by an open
    /// circuit): the steps of the retry schedule used up.
    pub sent: u32,
    /// Whether its last attempt ended it (`success` or `failure`): a
    /// message JetStream hands out again after that (its ack was lost) has
    /// nothing left to do.
    pub settled: bool,
}

/// One logged delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Increasing row id: the cursor of `GET /attempts`.
    pub id: i64,
    /// The webhook attempted.
    pub webhook_id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// The URL this attempt went to (subscriptions can change it).
    pub target_url: String,
    /// When the attempt started (UTC).
    pub timestamp: DateTime<Utc>,
    /// 1 for the first attempt; 1 + the attempts logged before it.
    pub attempt_number: u32,
    /// What came of it.
    pub outcome: Outcome,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// Wall time of the attempt.
    pub duration_ms: u64,
    /// The first KiB of the receiver's answer.
    pub response_body: Option<String>,
    /// Which delivery it belongs to: 0 for the original, n for the n-th
    /// redelivery.
    pub redelivery: u32,
}

/// Where a page of a subscription's attempts (newest first) ends: the last
/// attempt's start time in milliseconds and its id. Written
/// `<milliseconds>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptCursor {
    /// `timestamp` of the last attempt shown, ms since the epoch.
    pub timestamp_ms: i64,
    /// Its id.
    pub id: i64,
}

impl AttemptCursor {
    /// The cursor after `attempt`.
    pub fn of(attempt: &Attempt) -> Self {
        AttemptCursor {
            timestamp_ms: to_millis(attempt.timestamp),
            id: attempt.id,
        }
    }

    /// Parses `<milliseconds>.<id>` (two non-negative integers).
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, id) = raw.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(id) {
            return None;
        }
        Some(AttemptCursor {
            timestamp_ms: ms.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

impl fmt::Display for AttemptCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.timestamp_ms, self.id)
    }
}

/// A webhook's summary row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Its id.
    pub id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// `X-Event-Type` at ingest.
    pub event_type: Option<String>,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Stored status (never `Delivering`: that one lives in memory).
    pub status: WebhookStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next retry is due, while retrying.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Error of the last attempt, or why it was dropped.
    pub last_error: Option<String>,
    /// Redeliveries queued so far.
    pub redeliveries: u32,
    /// When the last one was queued.
    pub redelivered_at: Option<DateTime<Utc>>,
}

pub(crate) const ATTEMPT_COLUMNS: &str = "id, webhook_id, subscription_id, target_url, timestamp, \
     attempt_number, outcome, status_code, error, duration_ms, response_body, redelivery";

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let webhook: String = row.get(1)?;
    let subscription: String = row.get(2)?;
    let outcome: String = row.get(6)?;
    Ok(Attempt {
        id: row.get(0)?,
        webhook_id: WebhookId::parse(&webhook).unwrap_or_default(),
        subscription_id: SubscriptionId::parse(&subscription).unwrap_or_default(),
        target_url: row.get(3)?,
        timestamp: from_millis(row.get(4)?),
        attempt_number: row.get(5)?,
        outcome: outcome.parse().unwrap_or(Outcome::Failure),
        status_code: row.get(7)?,
        error: row.get(8)?,
        duration_ms: row.get::<_, i64>(9)?.max(0) as u64,
        response_body: row.get(10)?,
        redelivery: row.get(11)?,
    })
}

impl Store {
    /// A webhook's summary, or `None` when unknown (or purged).
    pub async fn webhook(&self, id: WebhookId) -> Result<Option<WebhookRecord>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, subscription_id, event_type, received_at, status, attempts,
                        next_retry_at, last_error, redeliveries, redelivered_at
                 FROM webhooks WHERE id = ?1",
            )?;
            let record = stmt
                .query_row([id.to_string()], |row| {
                    let id: String = row.get(0)?;
                    let sub: String = row.get(1)?;
                    let status: String = row.get(4)?;
                    Ok(WebhookRecord {
                        id: WebhookId::parse(&id).unwrap_or_default(),
                        subscription_id: SubscriptionId::parse(&sub).unwrap_or_default(),
                        event_type: row.get(2)?,
                        received_at: from_millis(row.get(3)?),
                        status: status.parse().unwrap_or(WebhookStatus::Pending),
                        attempts: row.get(5)?,
                        next_retry_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
                        last_error: row.get(7)?,
                        redeliveries: row.get(8)?,
                        redelivered_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
                    })
                })
                .optional()?;
            Ok(record)
        })
        .await
    }

    /// Every attempt of one webhook, oldest first.
    pub async fn webhook_attempts(&self, id: WebhookId) -> Result<Vec<Attempt>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE webhook_id = ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([id.to_string()], attempt_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The most recent attempts of one subscription, newest first (start
    /// time, then id), those after `before` when given. Returns one more
    /// than `limit` when there is more, so the caller can tell whether a
    /// next page exists.
    pub async fn subscription_attempts(
        &self,
        id: SubscriptionId,
        before: Option<AttemptCursor>,
        limit: usize,
    ) -> Result<Vec<Attempt>, StoreError> {
        let before = before.unwrap_or(AttemptCursor {
            timestamp_ms: i64::MAX,
            id: i64::MAX,
        });
        self.call(move |conn| {
            // `timestamp <= ?2` bounds the index range; the OR picks the
            // rows of the cursor's own millisecond with a smaller id.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts
                 WHERE subscription_id = ?1 AND timestamp <= ?2
                   AND (timestamp < ?2 OR id < ?3)
                 ORDER BY timestamp DESC, id DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![
                    id.to_string(),
                    before.timestamp_ms,
                    before.id,
                    limit as i64 + 1
                ],
                attempt_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Attempts across all subscriptions, oldest first: those after `after`,
    /// or, without a cursor, the most recent `limit`.
    pub async fn attempts_after(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.call(move |conn| {
            let mut rows = match after {
                Some(after) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE id > ?1
                         ORDER BY id LIMIT ?2"
                    ))?;
                    let rows = stmt.query_map(params![after, limit as i64], attempt_from_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts ORDER BY id DESC LIMIT ?1"
                    ))?;
                    let rows = stmt.query_map(params![limit as i64], attempt_from_row)?;
                    let mut rows = rows.collect::<Result<Vec<_>, _>>()?;
                    rows.reverse();
                    rows
                }
            };
            rows.truncate(limit);
            Ok(rows)
        })
        .await
    }
}
