//! `GET /webhooks`: webhooks newest first, filtered, one page at a time.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Row};

use super::records::WebhookStatus;
use super::writer::{insert_webhook, WebhookMeta};
use super::{from_millis, to_millis, Store, StoreError};
use crate::ids::{SubscriptionId, WebhookId};

/// Where a page of webhooks (newest first) ends: the last webhook's
/// `received_at` in milliseconds and its id. Written `<milliseconds>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookCursor {
    /// `received_at` of the last webhook shown, ms since the epoch.
    pub received_at_ms: i64,
    /// Its id.
    pub id: WebhookId,
}

impl WebhookCursor {
    /// The cursor after `webhook`.
    pub fn of(webhook: &WebhookSummary) -> Self {
        WebhookCursor {
            received_at_ms: to_millis(webhook.received_at),
            id: webhook.id,
        }
    }

    /// Parses `<milliseconds>.<webhook id>` (a non-negative integer and a
    /// hyphenated UUID).
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, id) = raw.split_once('.')?;
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(WebhookCursor {
            received_at_ms: ms.parse().ok()?,
            id: WebhookId::parse(id)?,
        })
    }
}

impl fmt::Display for WebhookCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.received_at_ms, self.id)
    }
}

/// Which rows of a stored status a [`WebhookFilter`] keeps, given the
/// webhooks in flight now (those show as `delivering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightRule {
    /// Every row of the status.
    Any,
    /// Only the rows in flight.
    Only,
    /// Only the rows not in flight.
    Except,
}

/// What `GET /webhooks` filters on; `None` / empty means no constraint.
#[derive(Debug, Clone, Default)]
pub struct WebhookFilter {
    /// Webhooks of this subscription.
    pub subscription_id: Option<SubscriptionId>,
    /// Stored statuses, each with the rows it keeps; empty: any status.
    pub statuses: Vec<(WebhookStatus, InFlightRule)>,
    /// `X-Event-Type` at ingest.
    pub event_type: Option<String>,
    /// Received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Received before this time.
    pub until: Option<DateTime<Utc>>,
}

/// One item of `GET /webhooks`: the webhook row with its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSummary {
    /// Its id.
    pub id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// `X-Event-Type` at ingest.
    pub event_type: Option<String>,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Stored status (never `Delivering`).
    pub status: WebhookStatus,
    /// Attempts logged: the last attempt number.
    pub attempts: u32,
    /// Start of the newest attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's status code in the newest attempt.
    pub last_status_code: Option<u16>,
    /// Error of the last attempt, or why it was dropped.
    pub last_error: Option<String>,
    /// When the next retry is due, while retrying.
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// The statements of [`Store::list_webhooks`], with their parameters: one
/// per status branch of the filter (one in all without a status filter).
/// Only the constraints given appear, so SQLite can pick the index that fits
/// (a `?1 IS NULL OR column = ?1` would hide it from the planner). Public
/// for the plan tests.
pub fn list_webhooks_statements(
    filter: &WebhookFilter,
    in_flight: &[WebhookId],
    before: Option<WebhookCursor>,
    limit: usize,
) -> Vec<(String, Vec<SqlValue>)> {
    let in_flight_json = serde_json::Value::Array(
        in_flight
            .iter()
            .map(|id| serde_json::Value::String(id.to_string()))
            .collect(),
    )
    .to_string();
    let mut branches: Vec<(Option<WebhookStatus>, Option<bool>)> = Vec::new();
    if filter.statuses.is_empty() {
        branches.push((None, None));
    }
    for (status, rule) in &filter.statuses {
        match (rule, in_flight.is_empty()) {
            (InFlightRule::Any, _) | (InFlightRule::Except, true) => {
                branches.push((Some(*status), None));
            }
            (InFlightRule::Only, false) => branches.push((Some(*status), Some(true))),
            // Nothing is in flight: no row can match.
            (InFlightRule::Only, true) => {}
            (InFlightRule::Except, false) => branches.push((Some(*status), Some(false))),
        }
    }
    branches
        .into_iter()
        .map(|(status, in_flight)| {
            let mut clauses: Vec<&str> = Vec::new();
            let mut values: Vec<SqlValue> = Vec::new();
            match status {
                // The partial indexes of these two (migration 3) serve a
                // query only when it names the same literal.
                Some(WebhookStatus::Failed) => clauses.push("status = 'failed'"),
                Some(WebhookStatus::Retrying) => clauses.push("status = 'retrying'"),
                Some(status) => {
                    clauses.push("status = ?");
                    values.push(SqlValue::Text(status.as_str().to_string()));
                }
                None => {}
            }
            if let Some(sub) = filter.subscription_id {
                clauses.push("subscription_id = ?");
                values.push(SqlValue::Text(sub.to_string()));
            }
            if let Some(event_type) = &filter.event_type {
                clauses.push("event_type = ?");
                values.push(SqlValue::Text(event_type.clone()));
            }
            if let Some(since) = filter.since {
                clauses.push("received_at >= ?");
                values.push(SqlValue::Integer(to_millis(since)));
            }
            if let Some(until) = filter.until {
                clauses.push("received_at < ?");
                values.push(SqlValue::Integer(to_millis(until)));
            }
            if let Some(c) = before {
                // `received_at <= ?` bounds the index range; the OR picks
                // the rows of the cursor's own millisecond with a smaller id.
                clauses.push("received_at <= ? AND (received_at < ? OR id < ?)");
                values.push(SqlValue::Integer(c.received_at_ms));
                values.push(SqlValue::Integer(c.received_at_ms));
                values.push(SqlValue::Text(c.id.to_string()));
            }
            match in_flight {
                Some(true) => clauses.push("id IN (SELECT value FROM json_each(?))"),
                Some(false) => clauses.push("id NOT IN (SELECT value FROM json_each(?))"),
                None => {}
            }
            if in_flight.is_some() {
                values.push(SqlValue::Text(in_flight_json.clone()));
            }
            let filter = if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            };
            values.push(SqlValue::Integer(limit as i64 + 1));
            // The webhook row carries its newest attempt's summary (the
            // writer keeps it, never letting an older attempt overwrite a
            // newer one): no join with delivery_attempts.
            let sql = format!(
                "SELECT id, subscription_id, event_type, received_at, status, attempts,
                        last_attempt_at, last_status_code, last_error, next_retry_at
                 FROM webhooks {filter}
                 ORDER BY received_at DESC, id DESC LIMIT ?"
            );
            (sql, values)
        })
        .collect()
}

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<WebhookSummary> {
    let id: String = row.get(0)?;
    let sub: String = row.get(1)?;
    let status: String = row.get(4)?;
    Ok(WebhookSummary {
        id: WebhookId::parse(&id).unwrap_or_default(),
        subscription_id: SubscriptionId::parse(&sub).unwrap_or_default(),
        event_type: row.get(2)?,
        received_at: from_millis(row.get(3)?),
        status: status.parse().unwrap_or(WebhookStatus::Pending),
        attempts: row.get(5)?,
        last_attempt_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
        last_status_code: row.get(7)?,
        last_error: row.get(8)?,
        next_retry_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
    })
}

impl Store {
    /// Pending rows for these webhooks, in one transaction; a row already
    /// there is kept. How many were written.
    pub async fn restore_pending(&self, webhooks: Vec<WebhookMeta>) -> Result<u64, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut written = 0;
            for meta in &webhooks {
                written += u64::from(insert_webhook(&tx, meta, WebhookStatus::Pending)?);
            }
            tx.commit()?;
            Ok(written)
        })
        .await
    }

    /// When the newest webhook with a row was received (`None`: no row):
    /// where a restart starts looking for rows the last process did not
    /// write.
    pub async fn latest_received_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.call(|conn| {
            let ms: Option<i64> =
                conn.query_row("SELECT MAX(received_at) FROM webhooks", [], |r| r.get(0))?;
            Ok(ms.map(from_millis))
        })
        .await
    }

    /// Webhooks matching `filter`, newest first (`received_at`, then id),
    /// those after `before` when given. `in_flight` lists the webhooks in
    /// flight now, for the [`InFlightRule`]s of the filter. Returns one
    /// more than `limit` when there is more, so the caller can tell whether
    /// a next page exists.
    ///
    /// One query per status, merged here. `subscription_id` uses
    /// `webhooks_subscription_received`; `failed` and `retrying` their
    /// partial indexes (each reads its range in order and stops at the
    /// limit); the rest `webhooks_received_at`, newest first, skipping rows
    /// of other statuses (the common ones, where a page fills quickly).
    pub async fn list_webhooks(
        &self,
        filter: WebhookFilter,
        in_flight: Vec<WebhookId>,
        before: Option<WebhookCursor>,
        limit: usize,
    ) -> Result<Vec<WebhookSummary>, StoreError> {
        let statements = list_webhooks_statements(&filter, &in_flight, before, limit);
        self.call(move |conn| {
            let mut out = Vec::new();
            for (sql, values) in statements {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(values), summary_from_row)?;
                for row in rows {
                    out.push(row?);
                }
            }
            // Each branch came newest first; merge them.
            out.sort_by_key(|w| std::cmp::Reverse((w.received_at, w.id)));
            out.truncate(limit + 1);
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// EXPLAIN QUERY PLAN of every statement of a filter: the details.
    fn plans(conn: &rusqlite::Connection, filter: &WebhookFilter) -> Vec<Vec<String>> {
        let in_flight = [WebhookId::new()];
        let cursor = WebhookCursor {
            received_at_ms: 1_700_000_000_000,
            id: WebhookId::new(),
        };
        list_webhooks_statements(filter, &in_flight, Some(cursor), 50)
            .into_iter()
            .map(|(sql, values)| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(3))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn store_list_webhooks_filters_read_an_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhookd.db");
        drop(Store::open(&path, 1).expect("open and migrate"));
        let conn = rusqlite::Connection::open(&path).unwrap();
        let t = from_millis(1_600_000_000_000);
        let sub = Some(SubscriptionId::new());
        let failed = vec![(WebhookStatus::Failed, InFlightRule::Any)];
        let retrying = vec![(WebhookStatus::Retrying, InFlightRule::Except)];
        let succeeded = vec![(WebhookStatus::Succeeded, InFlightRule::Any)];
        let cases = [
            (
                "none",
                WebhookFilter::default(),
                "webhooks_received_at",
                false,
            ),
            (
                "since/until",
                WebhookFilter {
                    since: Some(t),
                    until: Some(t),
                    ..Default::default()
                },
                "webhooks_received_at",
                false,
            ),
            (
                "event_type",
                WebhookFilter {
                    event_type: Some("order.paid".into()),
                    ..Default::default()
                },
                "webhooks_received_at",
                false,
            ),
            (
                "subscription",
                WebhookFilter {
                    subscription_id: sub,
                    since: Some(t),
                    ..Default::default()
                },
                "webhooks_subscription_received",
                true,
            ),
            (
                "failed",
                WebhookFilter {
                    statuses: failed.clone(),
                    until: Some(t),
                    event_type: Some("order.paid".into()),
                    ..Default::default()
                },
                "webhooks_failed_received",
                true,
            ),
            (
                "retrying, not in flight",
                WebhookFilter {
                    statuses: retrying,
                    ..Default::default()
                },
                "webhooks_retrying_received",
                true,
            ),
            (
                "succeeded",
                WebhookFilter {
                    statuses: succeeded,
                    ..Default::default()
                },
                "webhooks_received_at",
                false,
            ),
            (
                "subscription and status",
                WebhookFilter {
                    subscription_id: sub,
                    statuses: failed,
                    ..Default::default()
                },
                "webhooks_",
                true,
            ),
        ];
        for (what, filter, index, no_sort) in cases {
            let plans = plans(&conn, &filter);
            assert!(!plans.is_empty(), "{what}: no statement");
            for plan in plans {
                assert!(
                    plan.iter()
                        .any(|d| d.starts_with("SEARCH webhooks USING INDEX")
                            || d.starts_with("SCAN webhooks USING INDEX"))
                        && plan.iter().any(|d| d.contains(&format!("INDEX {index}"))),
                    "{what}: not read through {index}: {plan:#?}"
                );
                for d in &plan {
                    assert!(
                        !d.starts_with("SCAN webhooks") || d.contains("INDEX"),
                        "{what}: full scan of webhooks: {plan:#?}"
                    );
                    if no_sort {
                        assert!(
                            !d.contains("TEMP B-TREE"),
                            "{what}: sorts instead of reading the index in order: {plan:#?}"
                        );
                    }
                }
                if no_sort {
                    // An indexed filter searches a range, never a scan.
                    assert!(
                        plan.iter().any(|d| d.starts_with("SEARCH webhooks USING")),
                        "{what}: {plan:#?}"
                    );
                }
            }
        }
    }
}
