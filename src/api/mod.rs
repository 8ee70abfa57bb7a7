//! The HTTP API on hyper 1, without a framework: a router over
//! `(method, path segments)`, one small handler module per resource, and
//! JSON errors for every non-2xx answer.
//!
//! Handlers parse, call one store / queue operation, and answer; SQL and
//! NATS stay in `store` and `queue`.

mod ingest;
mod ops;
pub mod response;
mod status;
mod subscriptions;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::SubscriptionCache;
use crate::delivery::InFlight;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::ssrf::TargetPolicy;
use crate::store::writer::Writer;
use crate::store::Store;
use response::{Answer, ApiError};

/// What handlers share.
pub struct AppState {
    /// SQLite.
    pub store: Store,
    /// Subscription lookups for ingest.
    pub cache: SubscriptionCache,
    /// JetStream.
    pub queue: Queue,
    /// Batched writes (webhook rows at ingest).
    pub writer: Writer,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Webhooks being delivered now (status `delivering`).
    pub in_flight: InFlight,
    /// SSRF policy for target URLs given to the API.
    pub policy: Arc<TargetPolicy>,
    /// Largest request body.
    pub max_body: usize,
    /// Bearer token of the management API, when configured.
    pub api_token: Option<String>,
    /// Fired when shutdown begins: ingest answers 503 from then on.
    pub draining: CancellationToken,
}

/// Entry point of every request: routes, authenticates, never fails.
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
        subscription_id = tracing::field::Empty,
        webhook_id = tracing::field::Empty,
    );
    let answer = route(&state, req)
        .instrument(span.clone())
        .await
        .unwrap_or_else(ApiError::into_response);
    span.record("status", answer.status().as_u16());
    Ok(answer)
}

/// Who may call a route.
#[derive(PartialEq, Eq)]
enum Access {
    /// Anyone: ingest (authenticated by signature) and probes.
    Public,
    /// Bearer token when one is configured.
    Management,
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Answer, ApiError> {
    let path = req.uri().path().to_string();
    // Paths answer with and without a trailing slash.
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(&path);
    let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();

    let access = match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["ingest", _] => Access::Public,
        _ => Access::Management,
    };
    if access == Access::Management {
        authorize(state, &req)?;
    }

    use Method as M;
    match (&method, segments.as_slice()) {
        (&M::GET, ["healthz"]) => Ok(ops::healthz()),
        (&M::GET, ["readyz"]) => ops::readyz(state).await,
        (&M::GET, ["metrics"]) => Ok(ops::metrics(state).await),
        (&M::GET, ["subscriptions"]) => subscriptions::list(state, &req).await,
        (&M::POST, ["subscriptions"]) => subscriptions::create(state, req).await,
        (&M::GET, ["subscriptions", id]) => subscriptions::get(state, id).await,
        (&M::PATCH, ["subscriptions", id]) => {
            let id = id.to_string();
            subscriptions::update(state, &id, req).await
        }
        (&M::DELETE, ["subscriptions", id]) => subscriptions::delete(state, id).await,
        (&M::GET, ["subscriptions", id, "attempts"]) => {
            status::subscription_attempts(state, id, &req).await
        }
        (&M::POST, ["ingest", id]) => {
            let id = id.to_string();
            ingest::ingest(state, &id, req).await
        }
        (&M::GET, ["status", id]) => status::webhook_status(state, id).await,
        (&M::GET, ["attempts"]) => status::attempts_tail(state, &req).await,
        (_, segs) => match allowed_methods(segs) {
            Some(allow) => {
                let mut e = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not allowed on {path}; allowed: {allow}"),
                );
                e.allow = Some(allow);
                Err(e)
            }
            None => Err(ApiError::not_found(format!("no route for {path}"))),
        },
    }
}

/// The methods a known path accepts, for 405 answers.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["healthz"] | ["readyz"] | ["metrics"] | ["attempts"] => "GET",
        ["subscriptions"] => "GET, POST",
        ["subscriptions", _] => "GET, PATCH, DELETE",
        ["subscriptions", _, "attempts"] | ["status", _] => "GET",
        ["ingest", _] => "POST",
        _ => return None,
    })
}

/// Checks `Authorization: Bearer <token>` in constant time, when a token is
/// configured.
fn authorize(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = &state.api_token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` with the configured API token",
        ))
    }
}
