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
    /// Whether deliveries go out, and if not, why and since when.
    pub state: State,
}

/// Whether a subscription's webhooks are delivered. Users set it (PATCH),
/// and so do receivers (410 Gone) and sustained failure; it is stored with
/// the subscription, so every node and every restart sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum State {
    /// Deliveries go out.
    #[default]
    Active,
    /// Nothing is sent; webhooks that come due end `failed`.
    Disabled {
        /// Why (410 Gone, sustained failure, an operator).
        reason: String,
        /// Since when.
        at: DateTime<Utc>,
    },
}

impl State {
    /// `active` or `disabled`, as stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Active => "active",
            State::Disabled { .. } => "disabled",
        }
    }

    /// Whether nothing may be sent.
    pub fn is_disabled(&self) -> bool {
        matches!(self, State::Disabled { .. })
    }
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
    /// Enable, or disable with this reason.
    pub state: Option<State>,
}

const COLUMNS: &str =
    "id, target_url, secret, events, created_at, updated_at, state, disabled_reason, disabled_at";

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
        state: match row.get::<_, String>(6)?.as_str() {
            "disabled" => State::Disabled {
                reason: row.get::<_, Option<String>>(7)?.unwrap_or_default(),
                at: from_millis(row.get::<_, Option<i64>>(8)?.unwrap_or_default()),
            },
            _ => State::Active,
        },
    })
}

/// The `state`, `disabled_reason` and `disabled_at` columns of a state.
fn state_columns(state: &State) -> (&'static str, Option<&str>, Option<i64>) {
    match state {
        State::Active => ("active", None, None),
        State::Disabled { reason, at } => ("disabled", Some(reason), Some(to_millis(*at))),
    }
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
                state: State::Active,
            };
            conn.execute(
                "INSERT INTO subscriptions (id, target_url, secret, events, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
            if let Some(state) = patch.state {
                // Disabling a disabled subscription keeps its first reason.
                if !(state.is_disabled() && sub.state.is_disabled()) {
                    sub.state = state;
                }
            }
            sub.updated_at = now;
            let (state, reason, at) = state_columns(&sub.state);
            tx.execute(
                "UPDATE subscriptions SET target_url = ?2, secret = ?3, events = ?4, updated_at = ?5,
                     state = ?6, disabled_reason = ?7, disabled_at = ?8
                 WHERE id = ?1",
                params![
                    id.to_string(),
                    sub.target_url,
                    sub.secret.as_ref().map(Secret::expose),
                    events_json(&sub.events),
                    to_millis(now),
                    state,
                    reason,
                    at
                ],
            )?;
            tx.commit()?;
            Ok(Some(sub))
        })
        .await
    }

    /// Disables an active subscription (410 Gone, sustained failure);
    /// returns it when it was active, `None` when it was already disabled or
    /// is gone.
    pub async fn disable_subscription(
        &self,
        id: SubscriptionId,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError> {
        let now = from_millis(to_millis(now));
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE subscriptions SET state = 'disabled', disabled_reason = ?2,
                     disabled_at = ?3, updated_at = ?3
                 WHERE id = ?1 AND state = 'active'",
                params![id.to_string(), reason, to_millis(now)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            get(conn, id)
        })
        .await
    }

    /// Disabled subscriptions (for /metrics).
    pub async fn count_disabled(&self) -> Result<u64, StoreError> {
        self.call(|conn| {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM subscriptions WHERE state = 'disabled'",
                [],
                |r| r.get(0),
            )?;
            Ok(n.max(0) as u64)
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
