//! Redelivery and recovery: `POST /webhooks/{id}/redeliver` queues one
//! webhook again, `POST /subscriptions/{id}/recover` a subscription's
//! window of them.
//!
//! The payload is read from the stream by the webhook's stream sequence and
//! queued again as a new message (`queue::Queue::redeliver`): the receiver
//! sees the same `webhook-id`, attempt numbers continue, the retry schedule
//! starts afresh, and it goes through the fair scheduler like any webhook.
//! Each redelivery is numbered (`redeliveries + 1`) and its message id
//! carries the number, so two calls that race to queue the same webhook
//! store one message. The 202 comes once every message is durable in
//! JetStream and the rows say `pending`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::response::{check_keys, json, object, parse_json, read_body, Answer, ApiError};
use super::AppState;
use crate::config::format_duration;
use crate::ids::{SubscriptionId, WebhookId};
use crate::queue::{QueueError, Redelivery};
use crate::store::records::WebhookStatus;
use crate::store::redeliveries::{RecoverWindow, Redeliverable};
use crate::store::subscriptions::State;
use crate::store::writer::Write;

/// Payloads read and re-published at once by one recovery.
const RECOVER_CONCURRENCY: usize = 8;

/// Statuses a recovery may ask for: the settled ones.
const RECOVERABLE: [WebhookStatus; 3] = [
    WebhookStatus::Failed,
    WebhookStatus::Succeeded,
    WebhookStatus::Filtered,
];

/// `POST /webhooks/{webhook_id}/redeliver`: 202 `{"webhook_id", "status":
/// "pending", "redelivery"}`; 404 unknown (or its subscription deleted),
/// 409 not settled yet or its subscription disabled, 410 payload gone.
pub async fn one(state: &AppState, raw_id: &str) -> Result<Answer, ApiError> {
    let id = WebhookId::parse(raw_id).ok_or_else(|| ApiError::bad_id("webhook", raw_id))?;
    let mut found = state.store.redeliverable(id).await?;
    if found.is_none() {
        // Its pending row may still be queued in the writer.
        state.writer.flush().await?;
        found = state.store.redeliverable(id).await?;
    }
    let webhook = found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no webhook with id {id} (unknown, or purged after the retention period)"
        ))
    })?;
    check_subscription(state, webhook.subscription_id).await?;
    if !RECOVERABLE.contains(&webhook.status) || state.in_flight.contains(id) {
        return Err(ApiError::conflict(format!(
            "webhook {id} is still {}; it can be redelivered once it succeeded or failed",
            webhook.status.as_str()
        )));
    }
    let at = Utc::now();
    match queue_again(state, &webhook, at).await? {
        Some(number) => {
            let write = Write::Redelivered { id, number, at };
            state.writer.write(write).await?;
            tracing::info!(webhook_id = %id, redelivery = number, "webhook redelivered");
            Ok(json(
                StatusCode::ACCEPTED,
                &json!({"webhook_id": id, "status": "pending", "redelivery": number}),
            ))
        }
        None => Err(ApiError::gone(format!(
            "the payload of webhook {id} is no longer in the stream (kept for {}); it cannot be sent again",
            format_duration(state.retention)
        ))),
    }
}

/// `POST /subscriptions/{id}/recover` with `{"since", "until", "status",
/// "dry_run"}`: 202 `{"matched", "queued", "unavailable"}`.
pub async fn recover(
    state: &AppState,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Answer, ApiError> {
    let id =
        SubscriptionId::parse(raw_id).ok_or_else(|| ApiError::bad_id("subscription", raw_id))?;
    let body = read_body(req, state.max_body).await?;
    let (window, dry_run) = parse_recover(id, parse_json(&body)?, state.retention)?;
    check_subscription(state, id).await?;
    if dry_run {
        let matched = state.store.count_recoverable(window).await?;
        return Ok(recovered(matched, 0, 0));
    }
    // Everything queued before this call must be visible to the query.
    state.writer.flush().await?;
    let rows = state.store.recoverable(window).await?;
    let matched = rows.len() as u64;
    let at = Utc::now();
    let mut results = stream::iter(rows)
        .map(|w| recover_one(state, w, at))
        .buffer_unordered(RECOVER_CONCURRENCY);
    let (mut queued, mut unavailable) = (0u64, 0u64);
    let mut failed = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(true) => queued += 1,
            Ok(false) => unavailable += 1,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    state.writer.flush().await?;
    tracing::info!(subscription_id = %id, matched, queued, unavailable, "recovery queued");
    if let Some(mut e) = failed {
        e.message = format!(
            "{}; {queued} of {matched} webhooks were queued again before this error, \
             call recover again for the rest (those queued are not matched twice)",
            e.message
        );
        return Err(e);
    }
    Ok(recovered(matched, queued, unavailable))
}

/// Queues one webhook of a recovery; whether its payload was there.
async fn recover_one(
    state: &AppState,
    webhook: Redeliverable,
    at: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let queued = queue_again(state, &webhook, at).await?;
    if let Some(number) = queued {
        claim(state, webhook.id, number, at).await?;
    }
    Ok(queued.is_some())
}

fn recovered(matched: u64, queued: u64, unavailable: u64) -> Answer {
    json(
        StatusCode::ACCEPTED,
        &json!({"matched": matched, "queued": queued, "unavailable": unavailable}),
    )
}

/// 404 for a deleted subscription, 409 for a disabled one.
async fn check_subscription(state: &AppState, id: SubscriptionId) -> Result<(), ApiError> {
    match state.store.subscription(id).await? {
        None => Err(ApiError::not_found(format!(
            "no subscription with id {id} (deleted?): nothing can be delivered to it"
        ))),
        Some(sub) => match sub.state {
            State::Active => Ok(()),
            State::Disabled { reason, .. } => Err(ApiError::conflict(format!(
                "subscription {id} is disabled ({reason}); enable it first with \
                 PATCH /subscriptions/{id} {{\"state\": \"active\"}}"
            ))),
        },
    }
}

/// Reads the webhook's payload from the stream and queues its next
/// redelivery; its number, or `None` when the payload is gone.
async fn queue_again(
    state: &AppState,
    webhook: &Redeliverable,
    at: DateTime<Utc>,
) -> Result<Option<u32>, ApiError> {
    let Some(sequence) = webhook.stream_seq else {
        return Ok(None);
    };
    let Some(stored) = state.queue.stored(sequence).await.map_err(unavailable)? else {
        return Ok(None);
    };
    let number = webhook.redeliveries + 1;
    let redelivery = Redelivery {
        id: webhook.id,
        subscription_id: webhook.subscription_id,
        number,
        attempt_base: webhook.attempts,
        at,
    };
    state
        .queue
        .redeliver(&stored, redelivery)
        .await
        .map_err(unavailable)?;
    Ok(Some(number))
}

/// Turns the row `pending` under its redelivery (committed with the
/// caller's final flush).
async fn claim(
    state: &AppState,
    id: WebhookId,
    number: u32,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let write = Write::Redelivered { id, number, at };
    state.writer.enqueue(write).await?;
    Ok(())
}

fn unavailable(e: QueueError) -> ApiError {
    tracing::warn!(error = %e, "redelivery not queued");
    ApiError::unavailable(
        "queue_unavailable",
        format!("the queue is unavailable; nothing more was queued ({e})"),
        5,
    )
}

/// The window and `dry_run` of a recover body.
fn parse_recover(
    subscription_id: SubscriptionId,
    body: Value,
    retention: Duration,
) -> Result<(RecoverWindow, bool), ApiError> {
    let fields = object(body)?;
    check_keys(&fields, &["since", "until", "status", "dry_run"])?;
    let since = match fields.get("since") {
        Some(v) => time(v, "since")?,
        None => {
            return Err(ApiError::validation(
                "since",
                "`since` is required: an RFC 3339 time such as 2024-06-01T12:00:00Z",
            ))
        }
    };
    let until = match fields.get("until") {
        None | Some(Value::Null) => None,
        Some(v) => Some(time(v, "until")?),
    };
    if until.is_some_and(|u| u <= since) {
        return Err(ApiError::validation(
            "until",
            "`until` must be after `since`",
        ));
    }
    let oldest =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX / 2);
    if since < oldest {
        let oldest = oldest.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut e = ApiError::validation(
            "since",
            format!(
                "`since` is before the retention ({}): the oldest time available is {oldest}",
                format_duration(retention),
            ),
        );
        e.detail = Some(Box::new(("oldest_available", json!(oldest))));
        return Err(e);
    }
    let statuses = match fields.get("status") {
        None | Some(Value::Null) => vec![WebhookStatus::Failed],
        Some(v) => statuses(v)?,
    };
    let dry_run = match fields.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::validation(
                "dry_run",
                "`dry_run` must be true or false",
            ))
        }
    };
    let window = RecoverWindow {
        subscription_id,
        since,
        until,
        statuses,
    };
    Ok((window, dry_run))
}

fn time(value: &Value, field: &str) -> Result<DateTime<Utc>, ApiError> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            ApiError::validation(
                field,
                format!("`{field}` must be an RFC 3339 time such as 2024-06-01T12:00:00Z"),
            )
        })
}

fn statuses(value: &Value) -> Result<Vec<WebhookStatus>, ApiError> {
    let bad = || {
        ApiError::validation(
            "status",
            "`status` must be a non-empty array of \"failed\", \"succeeded\", \"filtered\"",
        )
    };
    let items = value.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
    let mut out = Vec::new();
    for item in items {
        let status = item
            .as_str()
            .and_then(|s| s.parse::<WebhookStatus>().ok())
            .filter(|s| RECOVERABLE.contains(s))
            .ok_or_else(bad)?;
        if !out.contains(&status) {
            out.push(status);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<(RecoverWindow, bool), ApiError> {
        parse_recover(SubscriptionId::new(), body, Duration::from_secs(3600))
    }

    fn recent() -> String {
        (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339()
    }

    #[test]
    fn recover_body_defaults_to_failed_and_not_dry() {
        let (w, dry) = parse(json!({"since": recent()})).unwrap();
        assert_eq!(w.statuses, vec![WebhookStatus::Failed]);
        assert!(w.until.is_none());
        assert!(!dry);
    }

    #[test]
    fn recover_body_errors_name_the_field() {
        let cases = [
            (json!({}), "since"),
            (json!({"since": "yesterday"}), "since"),
            (
                json!({"since": recent(), "until": "2001-01-01T00:00:00Z"}),
                "until",
            ),
            (json!({"since": recent(), "status": []}), "status"),
            (json!({"since": recent(), "status": ["pending"]}), "status"),
            (json!({"since": recent(), "dry_run": "yes"}), "dry_run"),
            (json!({"since": recent(), "limit": 5}), "limit"),
            (json!({"since": "2000-01-01T00:00:00Z"}), "since"),
        ];
        for (body, field) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(e.field.as_deref(), Some(field), "{body}");
        }
        let old = parse(json!({"since": "2000-01-01T00:00:00Z"})).unwrap_err();
        assert_eq!(old.detail.map(|d| d.0), Some("oldest_available"));
    }
}
