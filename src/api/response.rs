//! Answers and errors: every non-2xx answer is
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`, every
//! list is a JSON array with its next page in a `Link` header ([`page`]),
//! and body and query parsing map their failures to the right 4xx.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::fmt::Write as _;

use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LINK, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::store::StoreError;

/// The response type of every handler.
pub type Answer = Response<Full<Bytes>>;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, for validation errors.
    pub field: Option<String>,
    /// Seconds a client should wait before trying again (503).
    pub retry_after: Option<u32>,
    /// Methods the path accepts (405).
    pub allow: Option<String>,
    /// A value a client acts on, beside `error` at the top level (e.g.
    /// `oldest_available` of a recovery asked for before the retention).
    /// Boxed: it is rare, and every `Result<_, ApiError>` carries its size.
    pub detail: Option<Box<(&'static str, serde_json::Value)>>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            allow: None,
            detail: None,
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 for a malformed id in the path.
    pub fn bad_id(what: &str, raw: &str) -> Self {
        Self::bad_request(
            "invalid_id",
            format!(
                "`{}` is not a valid {what} id (expected a hyphenated UUID)",
                truncate(raw)
            ),
        )
    }

    /// 422 naming the field that failed validation.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        );
        e.field = Some(field.into());
        e
    }

    /// 400 for a bad query parameter, naming it.
    pub fn bad_query(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::bad_request("invalid_query", message);
        e.field = Some(field.to_string());
        e
    }

    /// 409: the resource is not in a state that allows this.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 410: the resource existed and is gone for good.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", message)
    }

    /// 503 with a Retry-After.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// The JSON answer.
    pub fn into_response(self) -> Answer {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
            #[serde(flatten)]
            detail: Option<serde_json::Map<String, serde_json::Value>>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        let mut resp = json(
            self.status,
            &Body {
                error: Inner {
                    code: self.code,
                    message: &self.message,
                    field: self.field.as_deref(),
                },
                detail: self.detail.map(|detail| {
                    let (name, value) = *detail;
                    let mut map = serde_json::Map::new();
                    map.insert(name.to_string(), value);
                    map
                }),
            },
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED && self.code == "unauthorized" {
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"webhookd\""),
            );
        }
        if let Some(Ok(allow)) = self.allow.as_deref().map(HeaderValue::from_str) {
            resp.headers_mut().insert(hyper::header::ALLOW, allow);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database error while answering a request");
        ApiError::unavailable(
            "storage_unavailable",
            "the database is unavailable; try again shortly",
            5,
        )
    }
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "serializing a response");
            let mut resp = Response::new(Full::new(Bytes::from_static(
                br#"{"error":{"code":"internal","message":"response could not be encoded"}}"#,
            )));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// The answer of every list endpoint: 200 with the JSON array of `items`
/// and, when more follow, `Link: <next>; rel="next"` (RFC 8288), where
/// `next` is the next page's path and query ([`Query::next_page`]).
pub fn page<T: Serialize>(items: &[T], next: Option<String>) -> Answer {
    let mut resp = json(StatusCode::OK, &items);
    if let Some(next) = next {
        match HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            Ok(link) => {
                resp.headers_mut().insert(LINK, link);
            }
            Err(e) => {
                tracing::error!(error = %e, next = %next, "encoding the Link header of a page");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the link to the next page could not be encoded",
                )
                .into_response();
            }
        }
    }
    resp
}

/// An empty answer (204).
pub fn empty(status: StatusCode) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Reads the whole body, refusing more than `limit` bytes with 413 (checked
/// on Content-Length first, then while reading, so chunked bodies are
/// bounded too).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "invalid_body",
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Parses a JSON body, answering 400 `invalid_json` when it is not JSON.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })
}

/// The body as a JSON object (422 otherwise).
pub fn object(
    value: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ApiError::validation(
            "body",
            "the body must be a JSON object",
        )),
    }
}

/// 422 naming the first field not in `known`.
pub fn check_keys(
    fields: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::validation(
            unknown.clone(),
            format!(
                "unknown field `{}`; expected {}",
                truncate(unknown),
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Query parameters of a request, decoded, and the path they came with.
pub struct Query {
    path: String,
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses the query string of a URI.
    pub fn of<B>(req: &Request<B>) -> Query {
        let pairs = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Query {
            path: req.uri().path().to_string(),
            pairs,
        }
    }

    /// The next page of this request, as a relative reference (path and
    /// query): the same path and parameters, in order (filters and
    /// `limit` stay), with every `cursor` parameter replaced by one
    /// `cursor=value` at the end. Names and values are percent-encoded.
    pub fn next_page(&self, cursor: &str, value: &str) -> String {
        let mut out = self.path.clone();
        let kept = self.pairs.iter().filter(|(k, _)| k != cursor);
        for (i, (k, v)) in kept
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([(cursor, value)])
            .enumerate()
        {
            out.push(if i == 0 { '?' } else { '&' });
            percent_encode(k, &mut out);
            out.push('=');
            percent_encode(v, &mut out);
        }
        out
    }

    /// The `cursor` of a list, parsed by `parse`; absent or empty: the
    /// first page. `form` names its shape in the 400 a bad one gets.
    pub fn cursor<C>(
        &self,
        parse: impl FnOnce(&str) -> Option<C>,
        form: &str,
    ) -> Result<Option<C>, ApiError> {
        match self.get("cursor").filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(raw) => parse(raw).map(Some).ok_or_else(|| {
                ApiError::bad_query(
                    "cursor",
                    format!(
                        "`cursor` must be the one in the `Link: rel=\"next\"` URL of a \
                         previous page ({form})"
                    ),
                )
            }),
        }
    }

    /// The last value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_query(
                    name,
                    format!("`{name}` must be an integer from {min} to {max}"),
                )),
            },
        }
    }
}

/// Appends `s` percent-encoded: every byte but RFC 3986's unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A user-supplied value cut short enough to quote in an error.
pub fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        let cut: String = s.chars().take(64).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(uri: &str) -> Query {
        Query::of(&Request::get(uri).body(()).unwrap())
    }

    #[test]
    fn next_page_keeps_the_parameters_and_replaces_the_cursor() {
        let q = query("/subscriptions?limit=2&cursor=a&cursor=b");
        assert_eq!(
            q.next_page("cursor", "c"),
            "/subscriptions?limit=2&cursor=c"
        );
        let q = query("/attempts");
        assert_eq!(q.next_page("after", "7"), "/attempts?after=7");
        // Repeated filters stay, in order; values are percent-encoded
        // (a `+` in the query was a space).
        let q = query("/webhooks/?status=failed&event_type=a+b%26c%2B&status=pending");
        assert_eq!(
            q.next_page("cursor", "1.2"),
            "/webhooks/?status=failed&event_type=a%20b%26c%2B&status=pending&cursor=1.2"
        );
    }

    #[test]
    fn a_page_is_an_array_with_a_link_when_more_follow() {
        let resp = page(&[1, 2], Some("/x?cursor=2".to_string()));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[LINK], "</x?cursor=2>; rel=\"next\"");
        let resp = page::<u8>(&[], None);
        assert!(resp.headers().get(LINK).is_none());
    }
}
