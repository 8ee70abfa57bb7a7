//! What redelivery and recovery read: the webhooks that may be queued
//! again, one or a subscription's window of them. The claim itself (the
//! row turning `pending` under its new redelivery number) is a
//! [`super::writer::Write::Redelivered`].

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, OptionalExtension, Row};

use super::records::{AttemptCounts, WebhookStatus, NOT_SENT_PREFIX};
use super::{to_millis, Store, StoreError};
use crate::ids::{SubscriptionId, WebhookId};

/// A webhook as redelivery sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redeliverable {
    /// Its id.
    pub id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Stored status.
    pub status: WebhookStatus,
    /// Stream sequence of its original message (where the payload is);
    /// `None` for a webhook that was never stored in the stream.
    pub stream_seq: Option<u64>,
    /// Attempts logged so far.
    pub attempts: u32,
    /// Redeliveries queued so far.
    pub redeliveries: u32,
}

/// A subscription's window of webhooks to recover.
#[derive(Debug, Clone)]
pub struct RecoverWindow {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Received at or after.
    pub since: DateTime<Utc>,
    /// Received before, when given.
    pub until: Option<DateTime<Utc>>,
    /// Stored statuses to match (settled ones only).
    pub statuses: Vec<WebhookStatus>,
}

const COLUMNS: &str = "id, subscription_id, status, stream_seq, attempts, redeliveries";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Redeliverable> {
    let id: String = row.get(0)?;
    let sub: String = row.get(1)?;
    let status: String = row.get(2)?;
    Ok(Redeliverable {
        id: WebhookId::parse(&id).unwrap_or_default(),
        subscription_id: SubscriptionId::parse(&sub).unwrap_or_default(),
        status: status.parse().unwrap_or(WebhookStatus::Pending),
        stream_seq: row.get::<_, Option<i64>>(3)?.map(|s| s.max(0) as u64),
        attempts: row.get(4)?,
        redeliveries: row.get(5)?,
    })
}

/// The `WHERE` clause and parameters of a window, oldest first by the
/// `webhooks_subscription_received` index.
fn window_clause(w: &RecoverWindow) -> (String, Vec<SqlValue>) {
    let mut sql = "subscription_id = ? AND received_at >= ?".to_string();
    let mut params = vec![
        SqlValue::Text(w.subscription_id.to_string()),
        SqlValue::Integer(to_millis(w.since)),
    ];
    if let Some(until) = w.until {
        sql.push_str(" AND received_at < ?");
        params.push(SqlValue::Integer(to_millis(until)));
    }
    let marks = vec!["?"; w.statuses.len()].join(", ");
    sql.push_str(&format!(" AND status IN ({marks})"));
    params.extend(
        w.statuses
            .iter()
            .map(|s| SqlValue::Text(s.as_str().to_string())),
    );
    (sql, params)
}

/// The statement listing a window (public for the query-plan test).
pub fn recover_statement(w: &RecoverWindow) -> (String, Vec<SqlValue>) {
    let (clause, params) = window_clause(w);
    (
        format!("SELECT {COLUMNS} FROM webhooks WHERE {clause} ORDER BY received_at, id"),
        params,
    )
}

impl Store {
    /// One webhook, or `None` when unknown (or purged).
    pub async fn redeliverable(&self, id: WebhookId) -> Result<Option<Redeliverable>, StoreError> {
        self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?1"))?;
            Ok(stmt.query_row([id.to_string()], from_row).optional()?)
        })
        .await
    }

    /// Every webhook of a window, oldest first.
    pub async fn recoverable(&self, w: RecoverWindow) -> Result<Vec<Redeliverable>, StoreError> {
        self.call(move |conn| {
            let (sql, params) = recover_statement(&w);
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// How many webhooks a window holds (a dry run).
    pub async fn count_recoverable(&self, w: RecoverWindow) -> Result<u64, StoreError> {
        self.call(move |conn| {
            let (clause, params) = window_clause(&w);
            let sql = format!("SELECT count(*) FROM webhooks WHERE {clause}");
            let n: i64 = conn.query_row(&sql, params_from_iter(params), |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// What has been logged of a webhook's attempts, for a message of its
    /// `redelivery` (0: the original) whose attempts continue after
    /// `attempt_base`: the last attempt number, the attempts of this
    /// delivery that were sent (its steps of the retry schedule), and
    /// whether there is nothing left to do: the delivery ended (its ack
    /// was lost), or a later redelivery superseded it.
    pub async fn logged_attempts(
        &self,
        id: WebhookId,
        redelivery: u32,
        attempt_base: u32,
    ) -> Result<AttemptCounts, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT attempts, last_outcome, status, redeliveries FROM webhooks WHERE id = ?1",
            )?;
            let row: Option<(u32, Option<String>, String, u32)> = stmt
                .query_row([id.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let (logged, last, status, current) =
                row.unwrap_or((0, None, "pending".to_string(), 0));
            let settled = if redelivery < current {
                true
            } else if redelivery > current {
                // Its claim is not committed yet: nothing of it is logged.
                false
            } else if redelivery == 0 {
                matches!(last.as_deref(), Some("success" | "failure"))
            } else {
                // The claim turned the row pending; only its own attempts
                // settle it again.
                matches!(status.as_str(), "succeeded" | "failed")
            };
            let mut stmt = conn.prepare_cached(
                "SELECT count(*) FROM delivery_attempts
                 WHERE webhook_id = ?1 AND attempt_number > ?2
                   AND NOT (status_code IS NULL AND error LIKE ?3)",
            )?;
            let sent: u32 = stmt.query_row(
                rusqlite::params![id.to_string(), attempt_base, format!("{NOT_SENT_PREFIX}%")],
                |r| r.get(0),
            )?;
            Ok(AttemptCounts {
                logged: logged.max(attempt_base),
                sent,
                settled,
            })
        })
        .await
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::store::from_millis;

    #[test]
    fn store_recover_window_reads_the_subscription_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhookd.db");
        drop(Store::open(&path, 1).expect("open and migrate"));
        let conn = rusqlite::Connection::open(&path).unwrap();
        let window = RecoverWindow {
            subscription_id: SubscriptionId::new(),
            since: from_millis(1_600_000_000_000),
            until: Some(from_millis(1_700_000_000_000)),
            statuses: vec![WebhookStatus::Failed, WebhookStatus::Filtered],
        };
        let (sql, values) = recover_statement(&window);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(params_from_iter(values), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX webhooks_subscription_received")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|p| p.contains("TEMP B-TREE")),
            "sorted by the index, not afterwards: {plan:?}"
        );
    }
}
