//! Probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::response::{json, Answer, ApiError};
use super::AppState;
use crate::metrics::CircuitLabel;

/// Liveness: the process answers.
pub fn healthz() -> Answer {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: SQLite answers a query and the NATS client is connected.
pub async fn readyz(state: &AppState) -> Result<Answer, ApiError> {
    let sqlite = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) if state.writer.is_failing() => {
            Err("sqlite: writes are failing (disk full or I/O error)".to_string())
        }
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sqlite: {e}")),
        Err(_) => Err("sqlite: no answer within 2s".to_string()),
    };
    let nats = if state.queue.is_connected() {
        Ok(())
    } else {
        Err("nats: disconnected".to_string())
    };
    let problems: Vec<String> = [sqlite, nats].into_iter().filter_map(Result::err).collect();
    if problems.is_empty() {
        Ok(json(
            StatusCode::OK,
            &json!({"status": "ready", "checks": {"sqlite": "ok", "nats": "ok"}}),
        ))
    } else {
        Err(ApiError::unavailable("not_ready", problems.join("; "), 1))
    }
}

/// Prometheus (OpenMetrics) text of every metric.
pub async fn metrics(state: &AppState) -> Answer {
    let m = &state.metrics;
    m.writer_queue_depth.set(state.writer.queue_depth() as i64);
    m.writer_batch_size
        .set(state.writer.last_batch_size() as i64);
    if let Ok(Ok((pending, ack_pending))) =
        tokio::time::timeout(Duration::from_secs(1), state.queue.consumer_counts()).await
    {
        m.consumer_pending.set(pending as i64);
        m.consumer_ack_pending.set(ack_pending as i64);
    }
    let counts = state.health.counts();
    m.circuits
        .get_or_create(&CircuitLabel { state: "open" })
        .set(counts.open as i64);
    m.circuits
        .get_or_create(&CircuitLabel { state: "half_open" })
        .set(counts.half_open as i64);
    m.subscriptions_throttled.set(counts.throttled as i64);
    if let Ok(disabled) = state.store.count_disabled().await {
        m.subscriptions_disabled.set(disabled as i64);
    }
    let mut resp = Response::new(Full::new(Bytes::from(m.encode())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// The OpenAPI 3 document of the API (`src/api/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub fn openapi() -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
