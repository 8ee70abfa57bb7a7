//! `POST /ingest/{subscription_id}`: accept a webhook, make it durable in
//! JetStream, answer 202.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode};
use serde::de::IgnoredAny;
use serde::Serialize;
use serde_json::json;

use super::response::{json, read_body, Answer, ApiError};
use super::AppState;
use crate::ids::{SubscriptionId, WebhookId};
use crate::queue::{Outgoing, QueueError};
use crate::signing::Secret;
use crate::store::records::{WebhookStatus, NOT_SENT_PREFIX};
use crate::store::subscriptions::{State, Subscription};
use crate::store::writer::{WebhookMeta, Write};

/// Longest `X-Event-Type` or `Idempotency-Key` accepted.
const MAX_HEADER_VALUE: usize = 256;

/// Deepest nesting of arrays and objects accepted in a body.
const MAX_NESTING: usize = 128;

/// How deep arrays and objects nest in `body` (brackets inside strings do
/// not count). Exact for valid JSON, which is all it is called on.
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Counts the answer in the metrics whatever it is.
pub async fn ingest(
    state: &AppState,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Answer, ApiError> {
    let result = accept(state, raw_id, req).await;
    let status = match &result {
        Ok(answer) => answer.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    state.metrics.record_ingest(status);
    result
}

/// Checks the webhook, makes it durable in JetStream, and answers 202
/// (or 202 `filtered` when its event type is not subscribed, 202 `failed`
/// when its subscription is disabled).
async fn accept(
    state: &AppState,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Answer, ApiError> {
    let (sub, head, body) = admit(state, raw_id, req).await?;
    let id = match &head.idempotency_key {
        Some(key) => WebhookId::from_idempotency_key(sub.id, key),
        None => WebhookId::new(),
    };
    tracing::Span::current().record("webhook_id", tracing::field::display(id));
    let meta = WebhookMeta {
        id,
        subscription_id: sub.id,
        event_type: head.event_type,
        received_at: Utc::now(),
        stream_seq: None,
    };
    if !sub.accepts(meta.event_type.as_deref()) {
        publish(state, meta, head.content_type, body, Kind::Held).await?;
        return Ok(json(
            StatusCode::ACCEPTED,
            &json!({"webhook_id": id, "status": "filtered"}),
        ));
    }
    let disabled = match &sub.state {
        State::Disabled { reason, .. } => {
            Some(format!("{NOT_SENT_PREFIX}subscription disabled ({reason})"))
        }
        State::Active => None,
    };
    let held = disabled
        .as_ref()
        .map(|reason| (meta.clone(), reason.clone()));
    let duplicate = publish(state, meta, head.content_type, body, Kind::Deliver).await?;
    if let (Some((meta, reason)), false) = (held, duplicate) {
        // Stored in the stream (a recovery can send it once the subscription
        // is enabled again), but not delivered: its row says why.
        state.writer.write(Write::Dropped { meta, reason }).await?;
    }
    let status = if disabled.is_some() {
        "failed"
    } else {
        "pending"
    };
    Ok(json(
        StatusCode::ACCEPTED,
        &Accepted {
            webhook_id: id,
            status,
            duplicate,
            reason: disabled,
        },
    ))
}

/// The checks before anything is stored: not draining, a known
/// subscription, valid headers, a JSON body within the limits, a valid
/// signature when the subscription has a secret.
async fn admit(
    state: &AppState,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<(Arc<Subscription>, IngestHeaders, Bytes), ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "webhookd is shutting down; send the webhook again shortly",
            5,
        ));
    }
    let subscription_id =
        SubscriptionId::parse(raw_id).ok_or_else(|| ApiError::bad_id("subscription", raw_id))?;
    tracing::Span::current().record("subscription_id", tracing::field::display(subscription_id));
    let head = IngestHeaders::read(req.headers())?;
    let body = read_body(req, state.max_body).await?;
    let sub =
        state.cache.get(subscription_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no subscription with id {subscription_id}"))
        })?;
    check_json(&body)?;
    if let Some(secret) = &sub.secret {
        check_signature(secret, head.signature.as_deref(), &body)?;
    }
    Ok((sub, head, body))
}

/// The ingest headers webhookd reads.
struct IngestHeaders {
    /// `X-Event-Type`, checked against the subscription's events.
    event_type: Option<String>,
    /// `Idempotency-Key`: the webhook id derives from it.
    idempotency_key: Option<String>,
    /// Passed on to the receiver.
    content_type: Option<String>,
    /// `X-Signature` or `X-Hub-Signature-256`.
    signature: Option<String>,
}

impl IngestHeaders {
    /// Reads them; a value that is not short visible ASCII is a 400.
    fn read(headers: &hyper::HeaderMap) -> Result<IngestHeaders, ApiError> {
        let header = |name: &str| -> Result<Option<String>, ApiError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => match v.to_str() {
                    Ok(s) if s.len() <= MAX_HEADER_VALUE => Ok(Some(s.trim().to_string())),
                    _ => Err(ApiError::bad_request(
                        "invalid_header",
                        format!(
                            "`{name}` must be visible ASCII of at most {MAX_HEADER_VALUE} bytes"
                        ),
                    )),
                },
            }
        };
        Ok(IngestHeaders {
            event_type: header("x-event-type")?.filter(|t| !t.is_empty()),
            idempotency_key: header("idempotency-key")?.filter(|k| !k.is_empty()),
            content_type: header(CONTENT_TYPE.as_str())?,
            signature: headers
                .get("x-signature")
                .or_else(|| headers.get("x-hub-signature-256"))
                .map(|v| v.to_str().unwrap_or_default().to_string()),
        })
    }
}

/// Valid JSON only (serde_json refuses invalid UTF-8 and NaN). Skipping
/// into IgnoredAny has no recursion limit, so depth is checked apart:
/// receivers' parsers need not survive what webhookd passes on.
fn check_json(body: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<IgnoredAny>(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    if nesting_depth(body) > MAX_NESTING {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("the body nests arrays and objects deeper than {MAX_NESTING} levels"),
        ));
    }
    Ok(())
}

/// A subscription with a secret takes only webhooks signed with it: 401
/// when the signature is missing or wrong.
fn check_signature(secret: &Secret, signature: Option<&str>, body: &[u8]) -> Result<(), ApiError> {
    match signature {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_required",
            "this subscription has a secret: send X-Signature or X-Hub-Signature-256 \
             as sha256=<hex HMAC-SHA256 of the body>",
        )),
        Some(sig) if !secret.verify_inbound(sig, body) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the signature does not match the body and the subscription's secret",
        )),
        Some(_) => Ok(()),
    }
}

/// Where a webhook goes in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// To the delivery consumer.
    Deliver,
    /// Stored for a recovery, not delivered: its event type is filtered.
    Held,
}

/// Publishes the webhook and waits for JetStream's ack (503 when NATS is
/// away, slow or full); writes its first row unless it is a duplicate: a
/// pending row queued without waiting, or a filtered row committed before
/// the answer (no attempt ever repairs that one). Returns whether it was a
/// duplicate.
async fn publish(
    state: &AppState,
    mut meta: WebhookMeta,
    content_type: Option<String>,
    body: bytes::Bytes,
    kind: Kind,
) -> Result<bool, ApiError> {
    let id = meta.id;
    let outgoing = Outgoing {
        id,
        subscription_id: meta.subscription_id,
        event_type: meta.event_type.clone(),
        content_type,
        received_at: meta.received_at,
        body,
    };
    let published = match kind {
        Kind::Deliver => state.queue.publish(outgoing).await,
        Kind::Held => state.queue.hold(outgoing).await,
    };
    let published = published.map_err(|e| {
        tracing::warn!(error = %e, webhook_id = %id, "webhook not queued");
        let message = match e {
            QueueError::PublishTimeout(_) => {
                "the queue did not store the webhook in time; it was not accepted".to_string()
            }
            other => {
                format!("the queue is unavailable; the webhook was not accepted ({other})")
            }
        };
        ApiError::unavailable("queue_unavailable", message, 5)
    })?;
    meta.stream_seq = Some(published.sequence);
    match (kind, published.duplicate) {
        (_, true) => {}
        (Kind::Deliver, false) => {
            state.metrics.webhooks_accepted.inc();
            record_pending(state, meta).await;
        }
        (Kind::Held, false) => {
            let status = WebhookStatus::Filtered;
            state.writer.write(Write::Webhook { meta, status }).await?;
            state.metrics.webhooks_filtered.inc();
        }
    }
    tracing::debug!(webhook_id = %id, duplicate = published.duplicate, "webhook accepted");
    Ok(published.duplicate)
}

/// The 202 body of a queued webhook.
#[derive(Serialize)]
struct Accepted {
    webhook_id: WebhookId,
    status: &'static str,
    duplicate: bool,
    /// Why it will not be delivered (a disabled subscription).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Queues the webhook's first row without waiting for its commit. The
/// webhook is already durable in JetStream when this runs, and its first
/// attempt writes the row too: a row lost to a failed commit or a crash is
/// repaired then, so ingest does not wait on SQLite. (`GET /status` flushes
/// the writer before it answers 404.)
async fn record_pending(state: &AppState, meta: WebhookMeta) {
    let id = meta.id;
    let status = WebhookStatus::Pending;
    if let Err(e) = state.writer.enqueue(Write::Webhook { meta, status }).await {
        tracing::error!(error = %e, webhook_id = %id, "webhook row not queued at ingest");
    }
}

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(br#"["[[[{{", "\"[["]"#), 1);
        assert_eq!(
            nesting_depth(format!("{}{}", "[".repeat(200), "]".repeat(200)).as_bytes()),
            200
        );
    }
}
