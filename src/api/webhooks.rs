//! `GET /webhooks`: webhooks across subscriptions, newest first, filtered
//! and paged like every list (a JSON array, the next page in `Link`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::Request;
use serde::Serialize;

use super::response::{page, truncate, Answer, ApiError, Query};
use super::AppState;
use crate::ids::{SubscriptionId, WebhookId};
use crate::store::records::WebhookStatus;
use crate::store::webhooks::{InFlightRule, WebhookCursor, WebhookFilter, WebhookSummary};

/// One item of the list (`WebhookSummary` in the OpenAPI document).
#[derive(Debug, Serialize)]
struct Item<'a> {
    id: WebhookId,
    subscription_id: SubscriptionId,
    event_type: Option<&'a str>,
    received_at: DateTime<Utc>,
    status: WebhookStatus,
    attempt_count: u32,
    last_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<u16>,
    last_error: Option<&'a str>,
    next_retry_at: Option<DateTime<Utc>>,
}

/// Every status a client may ask for, in the order of the error message.
const STATUSES: [WebhookStatus; 6] = [
    WebhookStatus::Pending,
    WebhookStatus::Delivering,
    WebhookStatus::Retrying,
    WebhookStatus::Succeeded,
    WebhookStatus::Failed,
    WebhookStatus::Filtered,
];

/// The store filter of the requested statuses. `delivering` is not stored:
/// it is a `pending` or `retrying` row in flight now, so each of those two
/// keeps all its rows, only those in flight, or only those not in flight.
fn status_branches(wanted: &[WebhookStatus]) -> Vec<(WebhookStatus, InFlightRule)> {
    let delivering = wanted.contains(&WebhookStatus::Delivering);
    let mut branches = Vec::new();
    for status in STATUSES {
        let asked = wanted.contains(&status);
        let rule = match status {
            WebhookStatus::Delivering => None,
            WebhookStatus::Pending | WebhookStatus::Retrying => match (asked, delivering) {
                (true, true) => Some(InFlightRule::Any),
                (true, false) => Some(InFlightRule::Except),
                (false, true) => Some(InFlightRule::Only),
                (false, false) => None,
            },
            _ => asked.then_some(InFlightRule::Any),
        };
        if let Some(rule) = rule {
            branches.push((status, rule));
        }
    }
    branches
}

fn time(query: &Query, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| {
                ApiError::bad_query(
                    name,
                    format!(
                        "`{name}` must be an RFC 3339 time such as 2024-06-01T12:00:00Z; `{}`: {e}",
                        truncate(raw)
                    ),
                )
            }),
    }
}

/// `GET /webhooks?subscription_id=&status=&event_type=&since=&until=&limit=50&cursor=`:
/// newest first (`received_at`, then id). `status` repeats (any of them);
/// `since` is inclusive, `until` exclusive. An unknown (or deleted)
/// `subscription_id` is a filter that matches nothing: an empty array, as
/// the webhooks of a deleted subscription stay listed until purged.
pub async fn list(state: &AppState, req: &Request<Incoming>) -> Result<Answer, ApiError> {
    let query = Query::of(req);
    let limit = query.int("limit", 50, 1, 500)? as usize;
    let subscription_id = match query.get("subscription_id") {
        None => None,
        Some(raw) => Some(SubscriptionId::parse(raw).ok_or_else(|| {
            ApiError::bad_query(
                "subscription_id",
                format!(
                    "`subscription_id` must be a hyphenated UUID, not `{}`",
                    truncate(raw)
                ),
            )
        })?),
    };
    let mut wanted = Vec::new();
    for raw in query.all("status") {
        let status = STATUSES
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                ApiError::bad_query(
                    "status",
                    format!(
                        "`status` must be one of pending, delivering, retrying, succeeded, \
                         failed, filtered (repeat it for several), not `{}`",
                        truncate(raw)
                    ),
                )
            })?;
        wanted.push(status);
    }
    let since = time(&query, "since")?;
    let until = time(&query, "until")?;
    let before = query.cursor(WebhookCursor::parse, "`<milliseconds>.<webhook id>`")?;
    let filter = WebhookFilter {
        subscription_id,
        statuses: status_branches(&wanted),
        event_type: query.get("event_type").map(str::to_string),
        since,
        until,
    };
    // Ingest does not wait for the pending row's commit: flush, so a
    // webhook accepted before this request is listed.
    state.writer.flush().await?;
    let in_flight = state.in_flight.snapshot();
    let flying: HashSet<WebhookId> = in_flight.iter().copied().collect();
    let mut rows = state
        .store
        .list_webhooks(filter, in_flight, before, limit)
        .await?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|w| query.next_page("cursor", &WebhookCursor::of(w).to_string()))
    } else {
        None
    };
    let items: Vec<Item<'_>> = rows.iter().map(|w| item(w, &flying)).collect();
    Ok(page(&items, next))
}

/// A row as listed: `delivering` while in flight, as `GET /status` shows it.
fn item<'a>(w: &'a WebhookSummary, in_flight: &HashSet<WebhookId>) -> Item<'a> {
    let status = match w.status {
        WebhookStatus::Pending | WebhookStatus::Retrying if in_flight.contains(&w.id) => {
            WebhookStatus::Delivering
        }
        other => other,
    };
    Item {
        id: w.id,
        subscription_id: w.subscription_id,
        event_type: w.event_type.as_deref(),
        received_at: w.received_at,
        status,
        attempt_count: w.attempts,
        last_attempt_at: w.last_attempt_at,
        last_status_code: w.last_status_code,
        last_error: w.last_error.as_deref(),
        next_retry_at: (status == WebhookStatus::Retrying)
            .then_some(w.next_retry_at)
            .flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivering_splits_pending_and_retrying_by_the_in_flight_set() {
        use InFlightRule::*;
        use WebhookStatus::*;
        assert_eq!(status_branches(&[]), []);
        assert_eq!(status_branches(&[Failed]), [(Failed, Any)]);
        assert_eq!(
            status_branches(&[Delivering]),
            [(Pending, Only), (Retrying, Only)]
        );
        assert_eq!(
            status_branches(&[Retrying, Failed]),
            [(Retrying, Except), (Failed, Any)]
        );
        assert_eq!(
            status_branches(&[Pending, Delivering, Pending]),
            [(Pending, Any), (Retrying, Only)]
        );
    }
}
