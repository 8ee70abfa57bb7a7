//! HTTP client for the webhookd API and (from `api/types.rs`) the JSON
//! types it exchanges.
//!
//! The TUI is only a client of the public HTTP API, so everything it knows
//! about the server goes through [`Client`]. Errors are folded into
//! [`ApiError`], which keeps the three cases the UI treats differently apart:
//! the server cannot be reached, the server answered with an error, or the
//! answer could not be understood.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod paging;
mod types;
mod webhooks;

pub use types::{
    Attempt, AttemptsPage, Circuit, Health, NewSubscription, Outcome, RecoverCounts, RecoverError,
    RecoverRequest, RecoverStatus, Redelivery, Subscription, SubscriptionPatch, SubscriptionState,
    WebhookPage, WebhookStatus, WebhookSummary,
};

/// How long one request may take before the server is considered unreachable.
///
/// Short, because the UI polls every second and a hung request would only
/// delay the "unreachable" notice.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long establishing a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound on pages fetched by [`Client::list_subscriptions`], so that a
/// misbehaving server that keeps announcing next pages cannot loop us
/// forever.
const MAX_SUBSCRIPTION_PAGES: usize = 1_000;

/// Page size asked for when listing subscriptions.
const SUBSCRIPTION_PAGE_SIZE: u32 = 100;

/// Why an API call failed, split the way the UI needs to react.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached (connection refused, DNS, timeout,
    /// connection dropped mid-answer). The UI shows "unreachable" and retries.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server answered with a non-2xx status. `code`, `message` and
    /// `field` come from its JSON error body when it has one.
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Machine-readable error code, e.g. `not_found` or `validation_failed`.
        code: String,
        /// Human-readable explanation from the server.
        message: String,
        /// The request field a validation error is about, if any.
        field: Option<String>,
    },
    /// The server answered 2xx but the body was not what we expected.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The client could not be set up (bad base URL or token).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ApiError {
    /// True when the error means the server is not reachable at all, as
    /// opposed to the server refusing or failing one request.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Unreachable(_))
    }

    /// The HTTP status of a server error answer, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request field a validation error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Http { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// A short text for the screen: the server's own message for HTTP
    /// errors, the full description otherwise.
    pub fn short(&self) -> String {
        match self {
            ApiError::Http {
                status,
                code,
                message,
                ..
            } => format!("{message} ({code}, HTTP {status})"),
            other => other.to_string(),
        }
    }
}

/// Error body the server sends with every non-2xx answer.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// Inner part of [`ErrorEnvelope`].
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// Async client for the webhookd HTTP API.
///
/// Cheap to clone (the connection pool is shared), so the runtime hands a
/// clone to every background task.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl fmt::Debug for Client {
    // Written by hand so the bearer token can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Build a client for `base_url` (e.g. `http://127.0.0.1:8000`), sending
    /// `Authorization: Bearer <token>` on every request when a non-empty
    /// token is given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ApiError> {
        let base = Url::parse(base_url.trim())
            .map_err(|e| ApiError::Config(format!("bad URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ApiError::Config(format!(
                "URL must start with http:// or https://, got {base_url:?}"
            )));
        }
        if base.cannot_be_a_base() {
            return Err(ApiError::Config(format!("bad URL {base_url:?}")));
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.trim().is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| ApiError::Config("token contains invalid characters".into()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("webhookd-tui/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| ApiError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Client { http, base })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /healthz`: succeeds when the server is up.
    pub async fn health(&self) -> Result<(), ApiError> {
        self.send(Method::GET, &["healthz"], &[], None::<&()>)
            .await
            .map(|_| ())
    }

    /// All subscriptions: each page is a JSON array, and the next one is
    /// the `Link: <...>; rel="next"` of the answer, followed until an
    /// answer has none.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, ApiError> {
        let mut all = Vec::new();
        let mut url = self.url(
            &["subscriptions"],
            &[("limit", SUBSCRIPTION_PAGE_SIZE.to_string())],
        )?;
        for _ in 0..MAX_SUBSCRIPTION_PAGES {
            let (page, next) = self.get_page::<Subscription>(url).await?;
            all.extend(page);
            match next {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
        Ok(all)
    }

    /// `GET /subscriptions/{id}`.
    pub async fn get_subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        self.get_json(&["subscriptions", id], &[]).await
    }

    /// `POST /subscriptions`. The answer holds the full secret, once.
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
    ) -> Result<Subscription, ApiError> {
        let body = self
            .send(Method::POST, &["subscriptions"], &[], Some(new))
            .await?;
        decode(&body)
    }

    /// `PATCH /subscriptions/{id}` with only the fields set in `patch`.
    pub async fn update_subscription(
        &self,
        id: &str,
        patch: &SubscriptionPatch,
    ) -> Result<Subscription, ApiError> {
        let body = self
            .send(Method::PATCH, &["subscriptions", id], &[], Some(patch))
            .await?;
        decode(&body)
    }

    /// `PATCH /subscriptions/{id}` with `{"state": ...}`: disable or
    /// enable a subscription. The answer is the subscription as it is now.
    pub async fn set_subscription_state(
        &self,
        id: &str,
        state: SubscriptionState,
    ) -> Result<Subscription, ApiError> {
        let patch = SubscriptionPatch {
            state: Some(state),
            ..SubscriptionPatch::default()
        };
        self.update_subscription(id, &patch).await
    }

    /// `DELETE /subscriptions/{id}`.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), ApiError> {
        self.send(Method::DELETE, &["subscriptions", id], &[], None::<&()>)
            .await
            .map(|_| ())
    }

    /// `GET /subscriptions/{id}/attempts?limit=N`: most recent first.
    pub async fn subscription_attempts(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Attempt>, ApiError> {
        self.get_json(
            &["subscriptions", id, "attempts"],
            &[("limit", limit.to_string())],
        )
        .await
    }

    /// `GET /status/{webhook_id}`.
    pub async fn webhook_status(&self, id: &str) -> Result<WebhookStatus, ApiError> {
        self.get_json(&["status", id], &[]).await
    }

    /// `GET /attempts?after=<id>&limit=N`: attempts newer than `after`
    /// (or the latest `limit` when `after` is `None`), oldest first. The
    /// page's `next_cursor` is the `after` of the answer's `Link: <...>;
    /// rel="next"`, the next poll.
    pub async fn attempts_after(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<AttemptsPage, ApiError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let url = self.url(&["attempts"], &query)?;
        let (headers, body) = self.send_url(Method::GET, url.clone(), None::<&()>).await?;
        let items: Vec<Attempt> = decode(&body)?;
        let next_cursor = match self.next_link(&headers, &url)? {
            Some(next) => next
                .query_pairs()
                .filter(|(k, _)| k == "after")
                .last()
                .map(|(_, v)| {
                    v.parse::<i64>().map_err(|_| {
                        ApiError::Decode(format!("the next-page link has a bad `after`: {next}"))
                    })
                })
                .transpose()?,
            None => None,
        };
        Ok(AttemptsPage { items, next_cursor })
    }

    /// `GET /metrics` as Prometheus text. A server without metrics answers
    /// 404, which comes back as [`ApiError::Http`].
    pub async fn metrics_text(&self) -> Result<String, ApiError> {
        let body = self
            .send(Method::GET, &["metrics"], &[], None::<&()>)
            .await?;
        String::from_utf8(body).map_err(|e| ApiError::Decode(format!("metrics not UTF-8: {e}")))
    }

    /// Base URL with `segments` appended, each percent-encoded, so an id can
    /// never escape its path segment.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ApiError::Config("base URL cannot take a path".into()))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// GET and decode a JSON answer.
    async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        let body = self.send(Method::GET, segments, query, None::<&()>).await?;
        decode(&body)
    }

    /// Send one request; return the body of a 2xx answer or the matching
    /// [`ApiError`].
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Vec<u8>, ApiError> {
        let url = self.url(segments, query)?;
        self.send_url(method, url, body).await.map(|(_, body)| body)
    }

    /// Send one request to `url`; return the headers and body of a 2xx
    /// answer or the matching [`ApiError`].
    async fn send_url<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(HeaderMap, Vec<u8>), ApiError> {
        let (status, headers, bytes) = self.exchange(method, url, body).await?;
        if status.is_success() {
            Ok((headers, bytes))
        } else {
            Err(http_error(status, &bytes))
        }
    }

    /// Send one request to `url`; return whatever the server answered
    /// (an error only when there was no answer).
    async fn exchange<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport_error)?;
        Ok((status, headers, bytes.to_vec()))
    }
}

/// Decode a JSON body into `T`.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode(e.to_string()))
}

/// Turn a non-2xx answer into [`ApiError::Http`], using the server's error
/// envelope when the body has one.
pub fn http_error(status: StatusCode, body: &[u8]) -> ApiError {
    let fallback_message = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.chars().take(200).collect()
        }
    };
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => ApiError::Http {
            status: status.as_u16(),
            code: env.error.code.unwrap_or_else(|| "error".into()),
            message: env.error.message.unwrap_or_else(fallback_message),
            field: env.error.field,
        },
        Err(_) => ApiError::Http {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: fallback_message(),
            field: None,
        },
    }
}

/// Map a reqwest transport failure. Everything that is not a decode
/// problem means "we did not get an answer", i.e. unreachable.
fn transport_error(err: reqwest::Error) -> ApiError {
    if err.is_decode() {
        return ApiError::Decode(err.to_string());
    }
    if err.is_timeout() {
        return ApiError::Unreachable("timed out".into());
    }
    // The innermost cause ("Connection refused (os error 111)") says the
    // most; reqwest's own text only repeats the URL.
    let mut cause: &dyn std::error::Error = &err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    ApiError::Unreachable(cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope_is_parsed() {
        let body = br#"{"error":{"code":"validation_failed","message":"must be https","field":"target_url"}}"#;
        let err = http_error(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            err,
            ApiError::Http {
                status: 422,
                code: "validation_failed".into(),
                message: "must be https".into(),
                field: Some("target_url".into()),
            }
        );
        assert_eq!(err.field(), Some("target_url"));
    }

    #[test]
    fn non_json_error_body_still_gives_http_error() {
        let err = http_error(StatusCode::NOT_FOUND, b"");
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.field(), None);
        assert!(err.to_string().contains("Not Found"));
    }

    #[test]
    fn urls_encode_ids_and_keep_base_path() {
        let c = Client::new("http://127.0.0.1:9/prefix/", Some("t".into())).unwrap();
        let u = c
            .url(&["subscriptions", "a/b?c"], &[("limit", "5".into())])
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/prefix/subscriptions/a%2Fb%3Fc?limit=5"
        );
        let c = Client::new("http://127.0.0.1:9", None).unwrap();
        assert_eq!(
            c.url(&["healthz"], &[]).unwrap().as_str(),
            "http://127.0.0.1:9/healthz"
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        assert!(matches!(
            Client::new("ftp://x", None),
            Err(ApiError::Config(_))
        ));
        assert!(matches!(
            Client::new("not a url", None),
            Err(ApiError::Config(_))
        ));
        assert!(matches!(
            Client::new("http://x", Some("bad\ntoken".into())),
            Err(ApiError::Config(_))
        ));
        // The token never shows up in Debug output.
        let c = Client::new("http://x", Some("s3cr3t-token".into())).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
