//! Delivery status: `/status/{webhook_id}`, `/subscriptions/{id}/attempts`
//! and the live tail `/attempts`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::response::{json, page, Answer, ApiError, Query};
use super::AppState;
use crate::ids::{SubscriptionId, WebhookId};
use crate::store::records::{AttemptCursor, WebhookStatus};

/// `GET /status/{webhook_id}`: summary and every attempt, oldest first.
pub async fn webhook_status(state: &AppState, raw_id: &str) -> Result<Answer, ApiError> {
    let id = WebhookId::parse(raw_id).ok_or_else(|| ApiError::bad_id("webhook", raw_id))?;
    let mut found = state.store.webhook(id).await?;
    if found.is_none() {
        // Ingest does not wait for the pending row's commit: it may still be
        // queued in the writer.
        state.writer.flush().await?;
        found = state.store.webhook(id).await?;
    }
    let Some(record) = found else {
        return Err(ApiError::not_found(format!(
            "no webhook with id {id} (unknown, or purged after the retention period)"
        )));
    };
    let attempts = state.store.webhook_attempts(id).await?;
    let status = match record.status {
        WebhookStatus::Pending | WebhookStatus::Retrying if state.in_flight.contains(id) => {
            WebhookStatus::Delivering
        }
        other => other,
    };
    let next_retry_at = (status == WebhookStatus::Retrying)
        .then_some(record.next_retry_at)
        .flatten();
    Ok(json(
        StatusCode::OK,
        &json!({
            "webhook_id": record.id,
            "subscription_id": record.subscription_id,
            "event_type": record.event_type,
            "received_at": record.received_at,
            "status": status,
            "attempt_count": attempts.len().max(record.attempts as usize),
            "next_retry_at": next_retry_at,
            "last_error": record.last_error,
            "redeliveries": record.redeliveries,
            "redelivered_at": record.redelivered_at,
            "attempts": attempts,
        }),
    ))
}

/// `GET /subscriptions/{id}/attempts?limit=20&cursor=<ms>.<id>`: most
/// recent first (by start time, then id); the next page, when there is one,
/// in the `Link` header with the cursor of the page's last attempt.
pub async fn subscription_attempts(
    state: &AppState,
    raw_id: &str,
    req: &Request<Incoming>,
) -> Result<Answer, ApiError> {
    let id =
        SubscriptionId::parse(raw_id).ok_or_else(|| ApiError::bad_id("subscription", raw_id))?;
    let query = Query::of(req);
    let limit = query.int("limit", 20, 1, 1000)? as usize;
    let before = query.cursor(AttemptCursor::parse, "`<milliseconds>.<attempt id>`")?;
    if state.store.subscription(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no subscription with id {id}")));
    }
    let mut attempts = state.store.subscription_attempts(id, before, limit).await?;
    let next = if attempts.len() > limit {
        attempts.truncate(limit);
        attempts
            .last()
            .map(|a| query.next_page("cursor", &AttemptCursor::of(a).to_string()))
    } else {
        None
    };
    Ok(page(&attempts, next))
}

/// `GET /attempts?after=<id>&limit=N`: attempts across all subscriptions,
/// oldest first, with an id above `after`; without `after`, the most recent
/// N. A tail that clients poll: the `Link` header always names the next
/// poll, `after` the last id shown (or the given `after`, or 0, when
/// nothing is).
pub async fn attempts_tail(state: &AppState, req: &Request<Incoming>) -> Result<Answer, ApiError> {
    let query = Query::of(req);
    let limit = query.int("limit", 100, 1, 1000)? as usize;
    let after = match query.get("after") {
        None | Some("") => None,
        Some(_) => Some(query.int("after", 0, 0, i64::MAX)?),
    };
    let items = state.store.attempts_after(after, limit).await?;
    let cursor = items.last().map(|a| a.id).or(after).unwrap_or(0);
    Ok(page(
        &items,
        Some(query.next_page("after", &cursor.to_string())),
    ))
}
