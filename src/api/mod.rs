//! The HTTP API on hyper 1, without a framework: a router over
//! `(method, path segments)`, one small handler module per resource, and
//! JSON errors for every non-2xx answer.
//!
//! Handlers parse, call one store / queue operation, and answer; SQL and
//! NATS stay in `store` and `queue`.

mod ingest;
pub mod ops;
mod redeliver;
pub mod response;
mod status;
mod subscriptions;
mod webhooks;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::SubscriptionCache;
use crate::delivery::InFlight;
use crate::health::Health;
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
    /// What this node has learned of each receiver (subscription answers).
    pub health: Health,
    /// SSRF policy for target URLs given to the API.
    pub policy: Arc<TargetPolicy>,
    /// Largest request body.
    pub max_body: usize,
    /// Bearer token of the management API, when configured.
    pub api_token: Option<String>,
    /// Fired when shutdown begins: ingest answers 503 from then on.
    pub draining: CancellationToken,
    /// How long payloads stay in the stream: the window a recovery may
    /// reach back.
    pub retention: std::time::Duration,
}

/// Entry point of every request: routes, authenticates, never fails.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    // At debug: at info, a request logs only what it changed (ingest logs
    // nothing; each delivery attempt has its own line).
    let span = tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
        subscription_id = tracing::field::Empty,
        webhook_id = tracing::field::Empty,
    );
    let answer = route_request(&state, req)
        .instrument(span.clone())
        .await
        .unwrap_or_else(ApiError::into_response);
    span.record("status", answer.status().as_u16());
    Ok(answer)
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: ingest (authenticated by signature) and probes.
    Public,
    /// Bearer token when one is configured.
    Management,
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    ListSubscriptions,
    CreateSubscription,
    GetSubscription,
    UpdateSubscription,
    DeleteSubscription,
    SubscriptionAttempts,
    Ingest,
    Status,
    Attempts,
    ListWebhooks,
    Redeliver,
    Recover,
}

/// One route: method, path template (`{name}` matches one segment), who may
/// call it, and its handler. This table is the router: the OpenAPI test
/// checks that the document describes every entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template, e.g. `/subscriptions/{id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: Handler,
}

const fn route(method: Method, path: &'static str, access: Access, handler: Handler) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route webhookd answers.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/healthz", Access::Public, Handler::Healthz),
    route(Method::GET, "/readyz", Access::Public, Handler::Readyz),
    route(
        Method::GET,
        "/metrics",
        Access::Management,
        Handler::Metrics,
    ),
    route(
        Method::GET,
        "/openapi.json",
        Access::Public,
        Handler::OpenApi,
    ),
    route(
        Method::GET,
        "/subscriptions",
        Access::Management,
        Handler::ListSubscriptions,
    ),
    route(
        Method::POST,
        "/subscriptions",
        Access::Management,
        Handler::CreateSubscription,
    ),
    route(
        Method::GET,
        "/subscriptions/{id}",
        Access::Management,
        Handler::GetSubscription,
    ),
    route(
        Method::PATCH,
        "/subscriptions/{id}",
        Access::Management,
        Handler::UpdateSubscription,
    ),
    route(
        Method::DELETE,
        "/subscriptions/{id}",
        Access::Management,
        Handler::DeleteSubscription,
    ),
    route(
        Method::GET,
        "/subscriptions/{id}/attempts",
        Access::Management,
        Handler::SubscriptionAttempts,
    ),
    route(
        Method::POST,
        "/ingest/{subscription_id}",
        Access::Public,
        Handler::Ingest,
    ),
    route(
        Method::GET,
        "/webhooks",
        Access::Management,
        Handler::ListWebhooks,
    ),
    route(
        Method::POST,
        "/webhooks/{webhook_id}/redeliver",
        Access::Management,
        Handler::Redeliver,
    ),
    route(
        Method::POST,
        "/subscriptions/{id}/recover",
        Access::Management,
        Handler::Recover,
    ),
    route(
        Method::GET,
        "/status/{webhook_id}",
        Access::Management,
        Handler::Status,
    ),
    route(
        Method::GET,
        "/attempts",
        Access::Management,
        Handler::Attempts,
    ),
];

/// Whether `segments` fit a template; returns the `{...}` segment, if any
/// (every template has at most one).
fn matches<'a>(template: &str, segments: &[&'a str]) -> Option<Option<&'a str>> {
    let mut parts = template.trim_start_matches('/').split('/');
    let mut param = None;
    for seg in segments {
        let part = parts.next()?;
        if part.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
            param = Some(*seg);
        } else if part != *seg {
            return None;
        }
    }
    parts.next().is_none().then_some(param)
}

async fn route_request(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Answer, ApiError> {
    let path = req.uri().path().to_string();
    // Paths answer with and without a trailing slash.
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(&path);
    let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();

    let mut allowed: Vec<&str> = Vec::new();
    let mut found = None;
    for r in ROUTES {
        if let Some(params) = matches(r.path, &segments) {
            if r.method == req.method() {
                found = Some((r, params));
                break;
            }
            allowed.push(r.method.as_str());
        }
    }
    let Some((r, params)) = found else {
        if allowed.is_empty() {
            return Err(ApiError::not_found(format!("no route for {path}")));
        }
        let allow = allowed.join(", ");
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {path}; allowed: {allow}",
                req.method()
            ),
        );
        e.allow = Some(allow);
        return Err(e);
    };
    if r.access == Access::Management {
        authorize(state, &req)?;
    }
    let param = params.unwrap_or_default().to_string();
    match r.handler {
        Handler::Healthz => Ok(ops::healthz()),
        Handler::Readyz => ops::readyz(state).await,
        Handler::Metrics => Ok(ops::metrics(state).await),
        Handler::OpenApi => Ok(ops::openapi()),
        Handler::ListSubscriptions => subscriptions::list(state, &req).await,
        Handler::CreateSubscription => subscriptions::create(state, req).await,
        Handler::GetSubscription => subscriptions::get(state, &param).await,
        Handler::UpdateSubscription => subscriptions::update(state, &param, req).await,
        Handler::DeleteSubscription => subscriptions::delete(state, &param).await,
        Handler::SubscriptionAttempts => status::subscription_attempts(state, &param, &req).await,
        Handler::Ingest => ingest::ingest(state, &param, req).await,
        Handler::Status => status::webhook_status(state, &param).await,
        Handler::Attempts => status::attempts_tail(state, &req).await,
        Handler::ListWebhooks => webhooks::list(state, &req).await,
        Handler::Redeliver => redeliver::one(state, &param).await,
        Handler::Recover => redeliver::recover(state, &param, req).await,
    }
}

/// Checks `Authorization: Bearer <token>` in constant time, when a token is
/// configured.
fn authorize(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = &state.api_token else {
        return Ok(());
    };
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
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
