//! Outbound HTTP: one shared reqwest client (pooled connections, connect and
//! total timeouts, no redirects) that POSTs a webhook and reports what came
//! back, without ever failing the caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use super::retry;
use crate::signing::Secret;
use crate::ssrf::{self, GuardedResolver, TargetPolicy};

/// Bytes of the receiver's answer kept in the attempt log.
const RESPONSE_BODY_LIMIT: usize = 1024;

/// What could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// Sends deliveries; clones share one connection pool.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    policy: Arc<TargetPolicy>,
}

/// One delivery to send.
pub struct Request<'a> {
    /// Where to.
    pub url: &'a str,
    /// `webhook-id`.
    pub webhook_id: &'a str,
    /// `webhook-timestamp` (Unix seconds), also signed.
    pub timestamp: i64,
    /// The original body, byte for byte.
    pub body: Bytes,
    /// The original content type.
    pub content_type: Option<&'a str>,
    /// The original event type.
    pub event_type: Option<&'a str>,
    /// Signing secret, when the subscription has one.
    pub secret: Option<&'a Secret>,
}

/// What came of one attempt.
#[derive(Debug, Clone)]
pub struct Response {
    /// For the retry decision.
    pub result: retry::Result,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The first KiB of the answer.
    pub body: Option<String>,
    /// Wall time of the attempt.
    pub duration: Duration,
}

impl Sender {
    /// A client with the given timeouts whose DNS answers and IP-literal
    /// targets pass through `policy`.
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        max_idle_per_host: usize,
        policy: Arc<TargetPolicy>,
    ) -> Result<Sender, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("webhookd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            // webhookd retries by its own schedule and logs each attempt;
            // reqwest's own retry layer (on for HTTP/2 refusals since 0.13)
            // would resend a POST unseen, and clones every request and
            // charges a retry budget in case it does.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .build()?;
        Ok(Sender { http, policy })
    }

    /// POSTs one delivery. Every failure is described in the response.
    pub async fn send(&self, req: Request<'_>) -> Response {
        let started = Instant::now();
        let failed = |error: String, result: retry::Result| Response {
            result,
            status_code: None,
            error: Some(error),
            body: None,
            duration: started.elapsed(),
        };
        let url = match self.checked_url(req.url) {
            Ok(url) => url,
            Err(error) => return failed(error, retry::Result::Refused),
        };
        let headers = headers(&req);
        let sent = self
            .http
            .post(url)
            .headers(headers)
            .body(req.body)
            .send()
            .await;
        match sent {
            Ok(resp) => read_answer(resp, started).await,
            Err(e) => {
                let err: &(dyn std::error::Error + 'static) = &e;
                match ssrf::find_blocked(err) {
                    Some(blocked) => {
                        failed(format!("target refused: {blocked}"), retry::Result::Refused)
                    }
                    None => failed(describe(&e), retry::Result::Failed { retry_after: None }),
                }
            }
        }
    }

    /// The target as a URL the SSRF policy lets through (an IP literal is
    /// checked here; host names at connect time, by the resolver).
    fn checked_url(&self, raw: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| format!("invalid target URL: {e}"))?;
        self.policy
            .check_url(&url)
            .map_err(|blocked| format!("target refused: {blocked}"))?;
        Ok(url)
    }
}

/// The headers of a delivery: the original content and event type, and the
/// Standard Webhooks `webhook-id`, `webhook-timestamp` and, with a secret,
/// `webhook-signature`.
fn headers(req: &Request<'_>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(6);
    let ct = req.content_type.unwrap_or("application/json");
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/json")),
    );
    if let Ok(v) = HeaderValue::from_str(req.webhook_id) {
        headers.insert("webhook-id", v);
    }
    headers.insert("webhook-timestamp", HeaderValue::from(req.timestamp));
    if let Some(secret) = req.secret {
        let sig = secret.sign(req.webhook_id, req.timestamp, &req.body);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            headers.insert("webhook-signature", v);
        }
    }
    if let Some(Ok(v)) = req.event_type.map(HeaderValue::from_str) {
        headers.insert("x-event-type", v);
    }
    headers
}

/// What the receiver's answer means: 2xx delivered; a redirect (never
/// followed) or any other status failed, with its `Retry-After` on 429 and
/// 503. Keeps the first KiB of the body for the attempt log.
async fn read_answer(mut resp: reqwest::Response, started: Instant) -> Response {
    let status = resp.status();
    let code = status.as_u16();
    let retry_after = if code == 429 || code == 503 {
        resp.headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    } else {
        None
    };
    let (result, error) = if status.is_success() {
        (retry::Result::Delivered, None)
    } else if status.is_redirection() {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        (
            retry::Result::Failed { retry_after: None },
            Some(format!("redirect ({code}) to {to} not followed")),
        )
    } else {
        (
            retry::Result::Failed { retry_after },
            Some(format!("receiver answered {code}")),
        )
    };
    let body = read_body_start(&mut resp).await;
    Response {
        result,
        status_code: Some(code),
        error,
        body,
        duration: started.elapsed(),
    }
}

/// The first [`RESPONSE_BODY_LIMIT`] bytes of an answer, as text; stops
/// reading after that.
async fn read_body_start(resp: &mut reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while body.len() < RESPONSE_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(RESPONSE_BODY_LIMIT);
    (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned())
}

/// A short, readable description of a transport failure.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
