//! `/subscriptions`: create, list, read, patch, delete.
//!
//! Secrets: the full secret is returned only by the `POST` that created it
//! (so a generated one can be copied); every other answer shows
//! `"secret": "****" + its last 4 characters`, or `null` when there is none.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::Value;

use super::response::{
    check_keys, empty, json, object, page, parse_json, read_body, Answer, ApiError, Query,
};
use super::AppState;
use crate::health::HealthView;
use crate::ids::SubscriptionId;
use crate::signing::Secret;
use crate::ssrf::TargetPolicy;
use crate::store::subscriptions::{NewSubscription, State, Subscription, SubscriptionPatch};

/// Longest target URL accepted.
const MAX_URL_LEN: usize = 2048;
/// Shortest secret accepted.
const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted.
const MAX_SECRET_LEN: usize = 512;
/// Most event types one subscription can filter on.
const MAX_EVENTS: usize = 256;
/// Longest event type.
const MAX_EVENT_LEN: usize = 256;

/// A subscription as the API shows it.
#[derive(Serialize)]
pub struct SubscriptionView {
    id: SubscriptionId,
    target_url: String,
    events: Option<Vec<String>>,
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    state: &'static str,
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    /// What this node has learned of the receiver.
    health: HealthView,
}

impl SubscriptionView {
    fn masked(state: &AppState, sub: &Subscription) -> Self {
        Self::with_secret(state, sub, sub.secret.as_ref().map(Secret::masked))
    }

    fn with_secret(state: &AppState, sub: &Subscription, secret: Option<String>) -> Self {
        let (disabled_reason, disabled_at) = match &sub.state {
            State::Active => (None, None),
            State::Disabled { reason, at } => (Some(reason.clone()), Some(*at)),
        };
        SubscriptionView {
            id: sub.id,
            target_url: hide_password(&sub.target_url),
            events: sub.events.clone(),
            secret,
            created_at: sub.created_at,
            updated_at: sub.updated_at,
            state: sub.state.as_str(),
            disabled_reason,
            disabled_at,
            health: state.health.view(sub.id),
        }
    }
}

/// The URL with a password in its userinfo replaced by `****`: like a
/// secret, it is used for deliveries but never shown.
fn hide_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.into()
        }
        _ => raw.to_string(),
    }
}

fn parse_id(raw: &str) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(raw).ok_or_else(|| ApiError::bad_id("subscription", raw))
}

/// `POST /subscriptions`
pub async fn create(state: &AppState, req: Request<Incoming>) -> Result<Answer, ApiError> {
    let body = read_body(req, state.max_body).await?;
    let fields = object(parse_json(&body)?)?;
    check_keys(
        &fields,
        &["target_url", "secret", "events", "generate_secret"],
    )?;
    let target_url = match fields.get("target_url") {
        Some(v) => target_url(v, &state.policy)?,
        None => {
            return Err(ApiError::validation(
                "target_url",
                "`target_url` is required",
            ))
        }
    };
    let generate = match fields.get("generate_secret") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::validation(
                "generate_secret",
                "`generate_secret` must be true or false",
            ))
        }
    };
    let mut secret = fields.get("secret").map(secret).transpose()?.flatten();
    if generate {
        if secret.is_some() {
            return Err(ApiError::validation(
                "generate_secret",
                "give either `secret` or `generate_secret`, not both",
            ));
        }
        secret = Some(Secret::generate());
    }
    let events = fields.get("events").map(events).transpose()?.flatten();
    let sub = state
        .store
        .create_subscription(
            NewSubscription {
                target_url,
                secret,
                events,
            },
            Utc::now(),
        )
        .await?;
    tracing::info!(subscription_id = %sub.id, "subscription created");
    // The one answer that shows the secret in full, so it can be copied.
    let full = sub.secret.as_ref().map(|s| s.expose().to_string());
    let view = SubscriptionView::with_secret(state, &sub, full);
    state.cache.put(sub);
    Ok(json(StatusCode::CREATED, &view))
}

/// `GET /subscriptions?limit=50&cursor=<id>`: a page in creation order; the
/// cursor of the next one is the last id shown, in the `Link` header.
pub async fn list(state: &AppState, req: &Request<Incoming>) -> Result<Answer, ApiError> {
    let query = Query::of(req);
    let limit = query.int("limit", 50, 1, 500)? as usize;
    let cursor = query.cursor(SubscriptionId::parse, "a subscription id")?;
    let mut subs = state.store.list_subscriptions(cursor, limit).await?;
    let next = if subs.len() > limit {
        subs.truncate(limit);
        subs.last()
            .map(|s| query.next_page("cursor", &s.id.to_string()))
    } else {
        None
    };
    let items: Vec<SubscriptionView> = subs
        .iter()
        .map(|sub| SubscriptionView::masked(state, sub))
        .collect();
    Ok(page(&items, next))
}

/// `GET /subscriptions/{id}`
pub async fn get(state: &AppState, raw_id: &str) -> Result<Answer, ApiError> {
    let id = parse_id(raw_id)?;
    match state.store.subscription(id).await? {
        Some(sub) => Ok(json(StatusCode::OK, &SubscriptionView::masked(state, &sub))),
        None => Err(not_found(id)),
    }
}

/// `PATCH /subscriptions/{id}`: only the given fields change; `null` clears
/// `secret` or `events`; `"state": "disabled"` stops deliveries and
/// `"state": "active"` resumes them with the circuit closed.
pub async fn update(
    state: &Arc<AppState>,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Answer, ApiError> {
    let id = parse_id(raw_id)?;
    let body = read_body(req, state.max_body).await?;
    let fields = object(parse_json(&body)?)?;
    check_keys(&fields, &["target_url", "secret", "events", "state"])?;
    let now = Utc::now();
    let patch = SubscriptionPatch {
        target_url: fields
            .get("target_url")
            .map(|v| target_url(v, &state.policy))
            .transpose()?,
        secret: fields.get("secret").map(secret).transpose()?,
        events: fields.get("events").map(events).transpose()?,
        state: fields
            .get("state")
            .map(|v| subscription_state(v, now))
            .transpose()?,
    };
    let enabling = patch.state == Some(State::Active);
    let before = match patch.state {
        Some(_) => state.store.subscription(id).await?.map(|s| s.state),
        None => None,
    };
    let updated = state.store.update_subscription(id, patch, now).await?;
    // Invalidate before answering: the next attempt uses the new settings.
    state.cache.invalidate(id);
    let Some(sub) = updated else {
        return Err(not_found(id));
    };
    if enabling {
        state.health.reset(id);
    }
    log_state_change(id, before.as_ref(), &sub.state);
    tracing::info!(subscription_id = %id, "subscription updated");
    Ok(json(StatusCode::OK, &SubscriptionView::masked(state, &sub)))
}

/// `DELETE /subscriptions/{id}`: queued webhooks of the subscription are
/// dropped at their next attempt.
pub async fn delete(state: &AppState, raw_id: &str) -> Result<Answer, ApiError> {
    let id = parse_id(raw_id)?;
    let deleted = state.store.delete_subscription(id).await?;
    state.cache.invalidate(id);
    state.health.remove(id);
    if deleted {
        tracing::info!(subscription_id = %id, "subscription deleted");
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(not_found(id))
    }
}

/// One log line when a PATCH disabled or enabled the subscription.
fn log_state_change(id: SubscriptionId, before: Option<&State>, after: &State) {
    match (before, after) {
        (Some(State::Active), State::Disabled { reason, .. }) => {
            tracing::info!(subscription_id = %id, reason = %reason, "subscription disabled");
        }
        (Some(State::Disabled { .. }), State::Active) => {
            tracing::info!(
                subscription_id = %id,
                reason = "enabled by an operator",
                "subscription enabled; circuit closed"
            );
        }
        _ => {}
    }
}

/// `state`: `"active"` or `"disabled"` (by an operator, now).
fn subscription_state(value: &Value, now: DateTime<Utc>) -> Result<State, ApiError> {
    match value.as_str() {
        Some("active") => Ok(State::Active),
        Some("disabled") => Ok(State::Disabled {
            reason: "disabled by an operator".to_string(),
            at: now,
        }),
        _ => Err(ApiError::validation(
            "state",
            "`state` must be \"active\" or \"disabled\"",
        )),
    }
}

fn not_found(id: SubscriptionId) -> ApiError {
    ApiError::not_found(format!("no subscription with id {id}"))
}

/// `target_url`: an absolute http(s) URL with a host, at most 2048
/// characters, not an IP literal in a range the SSRF guard refuses;
/// returned normalised.
fn target_url(value: &Value, policy: &TargetPolicy) -> Result<String, ApiError> {
    let field = "target_url";
    let Value::String(raw) = value else {
        return Err(ApiError::validation(field, "`target_url` must be a string"));
    };
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::validation(
            field,
            format!("`target_url` is longer than {MAX_URL_LEN} characters"),
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| {
        ApiError::validation(field, format!("`target_url` is not an absolute URL: {e}"))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ApiError::validation(
            field,
            format!("`target_url` must use http or https, not {}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::validation(field, "`target_url` must have a host"));
    }
    if let Err(blocked) = policy.check_url(&url) {
        return Err(ApiError::validation(
            field,
            format!("`target_url` is refused by the SSRF guard: {blocked}"),
        ));
    }
    // Stored as parsed: what the API shows is where deliveries go (the raw
    // text may hold tabs, spaces or backslashes that URL parsing rewrites).
    if url.as_str().len() > MAX_URL_LEN {
        return Err(ApiError::validation(
            field,
            format!("`target_url` is longer than {MAX_URL_LEN} characters once normalised"),
        ));
    }
    Ok(url.into())
}

/// `secret`: `null` or a string of 16 to 512 characters.
fn secret(value: &Value) -> Result<Option<Secret>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&s.chars().count()) => {
            Ok(Some(Secret::new(s.as_str())))
        }
        Value::String(_) => Err(ApiError::validation(
            "secret",
            format!("`secret` must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters long"),
        )),
        _ => Err(ApiError::validation(
            "secret",
            "`secret` must be a string or null",
        )),
    }
}

/// `events`: `null` (all events) or a non-empty list of non-empty strings;
/// duplicates are removed, order kept.
fn events(value: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let field = "events";
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::validation(
                field,
                "`events` must be a list of event types, or null for all events",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::validation(
            field,
            "`events` must name at least one event type, or be null for all events",
        ));
    }
    if items.len() > MAX_EVENTS {
        return Err(ApiError::validation(
            field,
            format!("`events` can name at most {MAX_EVENTS} event types"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) if !s.trim().is_empty() && s.len() <= MAX_EVENT_LEN => {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            _ => {
                let message = format!("every event type must be 1 to {MAX_EVENT_LEN} bytes");
                return Err(ApiError::validation(field, message));
            }
        }
    }
    Ok(Some(out))
}
