//! Subscriptions: where a webhook goes, how it is signed, which events pass.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{from_millis, to_millis, Store, StoreError};
use crate::ids::SubscriptionId;
use crate::signing::Secret;

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (UUIDv7, so creation order is id order).
    pub id: SubscriptionId,
    /// Absolute http(s) URL deliveries are POSTed to.
    pub target_url: String,
    /// Signing secret for inbound checks and outbound signatures.
    pub secret: Option<Secret>,
    /// Event types delivered; `None` means all.
    pub events: Option<Vec<String>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Whether a webhook of this event type is delivered.
    pub fn accepts(&self, event_type: Option<&str>) -> bool {
        match (&self.events, event_type) {
            (None, _) => true,
            (Some(events), Some(t)) => events.iter().any(|e| e == t),
            (Some(_), None) => false,
        }
    }
}

/// A validated new subscription.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// See [`Subscription::target_url`].
    pub target_url: String,
    /// See [`Subscription::secret`].
    pub secret: Option<Secret>,
    /// See [`Subscription::events`].
    pub events: Option<Vec<String>>,
}

/// A validated partial update: `None` leaves a field alone, `Some(None)`
/// clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPatch {
    /// New target URL.
    pub target_url: Option<String>,
    /// New or cleared secret.
    pub secret: Option<Option<Secret>>,
    /// New or cleared event filter.
    pub events: Option<Option<Vec<String>>>,
}

const COLUMNS: &str = "id, target_url, secret, events, created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Subscription> {
    let id: String = row.get(0)?;
    let events: Option<String> = row.get(3)?;
    Ok(Subscription {
        id: SubscriptionId::parse(&id).unwrap_or_default(),
        target_url: row.get(1)?,
        secret: row.get::<_, Option<String>>(2)?.map(Secret::new),
        events: events.and_then(|e| serde_json::from_str(&e).ok()),
        created_at: from_millis(row.get(4)?),
        updated_at: from_millis(row.get(5)?),
    })
}

fn events_json(events: &Option<Vec<String>>) -> Option<String> {
    events
        .as_ref()
        .map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".to_string()))
}

fn get(conn: &Connection, id: SubscriptionId) -> Result<Option<Subscription>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE id = ?1"
    ))?;
    Ok(stmt.query_row([id.to_string()], from_row).optional()?)
}

impl Store {
    /// Stores a new subscription and returns it.
    pub async fn create_subscription(
        &self,
        new: NewSubscription,
        now: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let now = from_millis(to_millis(now));
        self.call(move |conn| {
            let sub = Subscription {
                id: SubscriptionId::new(),
                target_url: new.target_url,
                secret: new.secret,
                events: new.events,
                created_at: now,
                updated_at: now,
            };
            conn.execute(
                &format!("INSERT INTO subscriptions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    sub.id.to_string(),
                    sub.target_url,
                    sub.secret.as_ref().map(Secret::expose),
                    events_json(&sub.events),
                    to_millis(now),
                    to_millis(now)
                ],
            )?;
            Ok(sub)
        })
        .await
    }

    /// One subscription, or `None` when there is none with that id.
    pub async fn subscription(
        &self,
        id: SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        self.call(move |conn| get(conn, id)).await
    }

    /// A page of subscriptions in creation order, after `cursor` if given.
    /// Returns one more than `limit` when there is more, so the caller can
    /// tell whether a next page exists.
    pub async fn list_subscriptions(
        &self,
        cursor: Option<SubscriptionId>,
        limit: usize,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM subscriptions WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let after = cursor.map(|c| c.to_string()).unwrap_or_default();
            let rows = stmt.query_map(params![after, limit as i64 + 1], from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Applies a patch; `None` when the subscription does not exist.
    pub async fn update_subscription(
        &self,
        id: SubscriptionId,
        patch: SubscriptionPatch,
        now: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError> {
        // Stored in milliseconds: answer what a later read will show.
        let now = from_millis(to_millis(now));
        self.call(move |conn| {
            // IMMEDIATE: take the write lock first (waiting on busy_timeout).
            // A deferred transaction that reads and then writes fails with
            // SQLITE_BUSY at once when the attempt writer holds the lock.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(mut sub) = get(&tx, id)? else {
                return Ok(None);
            };
            if let Some(url) = patch.target_url {
                sub.target_url = url;
            }
            if let Some(secret) = patch.secret {
                sub.secret = secret;
            }
            if let Some(events) = patch.events {
                sub.events = events;
            }
            sub.updated_at = now;
            tx.execute(
                "UPDATE subscriptions SET target_url = ?2, secret = ?3, events = ?4, updated_at = ?5
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    sub.target_url,
                    sub.secret.as_ref().map(Secret::expose),
                    events_json(&sub.events),
                    to_millis(now)
                ],
            )?;
            tx.commit()?;
            Ok(Some(sub))
        })
        .await
    }

    /// Deletes a subscription; `false` when there was none. Its webhooks and
    /// attempt logs stay until the retention purge.
    pub async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let n = conn.execute("DELETE FROM subscriptions WHERE id = ?1", [id.to_string()])?;
            Ok(n > 0)
        })
        .await
    }
}
