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
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .build()?;
        Ok(Sender { http, policy })
    }

    /// The SSRF policy deliveries go through (the API checks new URLs with it).
    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
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
        let url = match reqwest::Url::parse(req.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("invalid target URL: {e}"), retry::Result::Refused),
        };
        if let Err(blocked) = self.policy.check_url(&url) {
            return failed(format!("target refused: {blocked}"), retry::Result::Refused);
        }
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

        let result = self
            .http
            .post(url)
            .headers(headers)
            .body(req.body)
            .send()
            .await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let err: &(dyn std::error::Error + 'static) = &e;
                if let Some(blocked) = ssrf::find_blocked(err) {
                    return failed(format!("target refused: {blocked}"), retry::Result::Refused);
                }
                return failed(describe(&e), retry::Result::Failed { retry_after: None });
            }
        };
        let status = resp.status();
        let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
        } else {
            None
        };
        // Keep the first KiB of the answer; stop reading after that.
        let mut body = Vec::new();
        while body.len() < RESPONSE_BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(RESPONSE_BODY_LIMIT);
        let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
        let code = status.as_u16();
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
        Response {
            result,
            status_code: Some(code),
            error,
            body,
            duration: started.elapsed(),
        }
    }
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
