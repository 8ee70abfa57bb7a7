//! The JSON types of the webhookd HTTP API, as the TUI reads and sends them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiError;

/// A webhook subscription as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Server-assigned UUID.
    pub id: String,
    /// Where deliveries are POSTed.
    pub target_url: String,
    /// Event types delivered; `None` means every event.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Masked signing secret (`****wxyz`), or `None` when unsigned.
    #[serde(default)]
    pub secret: Option<String>,
    /// When the subscription was created.
    pub created_at: DateTime<Utc>,
    /// When the subscription was last changed.
    pub updated_at: DateTime<Utc>,
    /// Whether deliveries go out (`active`) or are refused (`disabled`).
    /// Servers before endpoint health send no state: active.
    #[serde(default)]
    pub state: SubscriptionState,
    /// Why it was disabled (by the server or an operator).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    #[serde(default)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// The endpoint's circuit and throttle as the serving node knows
    /// them; `None` from servers that do not report health.
    #[serde(default)]
    pub health: Option<Health>,
}

/// `state` of a subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Deliveries go out.
    #[default]
    Active,
    /// Nothing is sent; its webhooks fail as "subscription disabled".
    Disabled,
    /// A state this client does not know (newer server).
    #[serde(other)]
    Unknown,
}

impl SubscriptionState {
    /// The wire name, used on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Disabled => "disabled",
            SubscriptionState::Unknown => "unknown",
        }
    }
}

/// The circuit breaker of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Deliveries go out normally.
    #[default]
    Closed,
    /// Too many failures: nothing is sent until `circuit_open_until`.
    Open,
    /// One probe is let through to see whether the endpoint recovered.
    HalfOpen,
    /// A circuit state this client does not know (newer server).
    #[serde(other)]
    Unknown,
}

/// `health` of a subscription: its endpoint's breaker and throttle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// Closed, open or half open.
    pub circuit: Circuit,
    /// While open: when the next probe may go out.
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Last successful attempt (null after a server restart until the
    /// next attempt).
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Attempts in flight now.
    pub in_flight: u32,
    /// Attempts allowed in flight now: the cap when healthy, lower while
    /// throttled, 1 half open, 0 open.
    pub max_in_flight: u32,
}

/// Body of `POST /subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSubscription {
    /// Where deliveries go.
    pub target_url: String,
    /// Signing secret; omitted when `None` (unsigned deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event filter; serialised as `null` (all events) when `None`.
    pub events: Option<Vec<String>>,
}

/// Body of `PATCH /subscriptions/{id}`: only the fields that are `Some` are
/// sent, so the server leaves the others unchanged. The inner `Option` of
/// `secret` / `events` distinguishes "set to this" from "clear" (`null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionPatch {
    /// New target URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// New secret (`Some(None)` removes the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Option<String>>,
    /// New event filter (`Some(None)` means all events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Option<Vec<String>>>,
    /// Disable or enable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<SubscriptionState>,
}

impl SubscriptionPatch {
    /// True when the patch would change nothing, so no request is needed.
    pub fn is_empty(&self) -> bool {
        self.target_url.is_none()
            && self.secret.is_none()
            && self.events.is_none()
            && self.state.is_none()
    }
}

/// Result of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The target accepted the webhook.
    Success,
    /// The attempt failed and will be retried.
    FailedAttempt,
    /// The attempt failed and no retry follows.
    Failure,
    /// An outcome this client does not know (newer server).
    #[serde(other)]
    Unknown,
}

impl Outcome {
    /// The wire name, used on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FailedAttempt => "failed_attempt",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery attempt of a webhook to a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Increasing id; used as the cursor of the live tail.
    pub id: i64,
    /// The webhook that was delivered.
    pub webhook_id: String,
    /// The subscription it was delivered to.
    pub subscription_id: String,
    /// The URL it was POSTed to.
    #[serde(default)]
    pub target_url: String,
    /// When the attempt finished.
    pub timestamp: DateTime<Utc>,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt_number: u32,
    /// What happened.
    pub outcome: Outcome,
    /// HTTP status the target answered, if it answered.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Transport or HTTP error text, if the attempt failed.
    #[serde(default)]
    pub error: Option<String>,
    /// How long the attempt took.
    #[serde(default)]
    pub duration_ms: u64,
    /// The first KiB of the target's answer.
    #[serde(default)]
    pub response_body: Option<String>,
    /// 0 for the original delivery, n for the one after the n-th
    /// redelivery (servers before redelivery send none: 0).
    #[serde(default)]
    pub redelivery: u32,
}

/// `GET /status/{webhook_id}`: where one webhook stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStatus {
    /// The webhook.
    pub webhook_id: String,
    /// The subscription it is delivered to.
    pub subscription_id: String,
    /// Event type given at ingest, if any.
    #[serde(default)]
    pub event_type: Option<String>,
    /// When webhookd accepted it.
    pub received_at: DateTime<Utc>,
    /// `pending`, `delivering`, `retrying`, `succeeded`, `failed` or `filtered`.
    pub status: String,
    /// Attempts made so far.
    pub attempt_count: u32,
    /// When the next retry is due, if one is scheduled.
    #[serde(default)]
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Error of the last failed attempt.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How often it was redelivered (0: never; servers before
    /// redelivery send none).
    #[serde(default)]
    pub redeliveries: u32,
    /// When it was last redelivered.
    #[serde(default)]
    pub redelivered_at: Option<DateTime<Utc>>,
}

impl WebhookStatus {
    /// True once the webhook can no longer change, so polling may stop.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "filtered")
    }
}

/// `GET /attempts?after=..`: a page of the global attempt log (the JSON
/// array of the answer, and the cursor of its `Link` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptsPage {
    /// Attempts with `id > after`, oldest first.
    pub items: Vec<Attempt>,
    /// The `after` of the next poll, from the answer's `Link: <...>;
    /// rel="next"`: the largest id returned, or `after` echoed when nothing
    /// is new; `None` when the answer has no link.
    pub next_cursor: Option<i64>,
}

/// One item of `GET /webhooks`: a webhook and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSummary {
    /// The webhook.
    pub id: String,
    /// The subscription it is delivered to.
    pub subscription_id: String,
    /// Event type given at ingest, if any.
    #[serde(default)]
    pub event_type: Option<String>,
    /// When webhookd accepted it.
    pub received_at: DateTime<Utc>,
    /// `pending`, `delivering`, `retrying`, `succeeded`, `failed` or `filtered`.
    pub status: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempt_count: u32,
    /// When the last attempt finished.
    #[serde(default)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, if the target answered.
    #[serde(default)]
    pub last_status_code: Option<u16>,
    /// Error of the last failed attempt.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the next retry is due, if one is scheduled.
    #[serde(default)]
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// A page of `GET /webhooks`: the JSON array of the answer and the
/// `rel="next"` target of its `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookPage {
    /// Webhooks, newest first.
    pub items: Vec<WebhookSummary>,
    /// The absolute URL of the next page, `None` on the last one. Opaque:
    /// pass it back to [`crate::api::Client::webhooks_at`].
    pub next: Option<String>,
}

/// Answer of `POST /webhooks/{id}/redeliver` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redelivery {
    /// The webhook.
    pub webhook_id: String,
    /// Its status now (`pending`).
    #[serde(default)]
    pub status: String,
    /// Which redelivery this is: 1 for the first.
    pub redelivery: u32,
}

/// A webhook status `POST /subscriptions/{id}/recover` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverStatus {
    /// Delivery gave up.
    Failed,
    /// Delivered.
    Succeeded,
    /// Not sent: the subscription does not take its event type.
    Filtered,
}

impl RecoverStatus {
    /// Every status, in the order the dialog lists them.
    pub const ALL: [RecoverStatus; 3] = [
        RecoverStatus::Failed,
        RecoverStatus::Succeeded,
        RecoverStatus::Filtered,
    ];

    /// The wire name, used on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoverStatus::Failed => "failed",
            RecoverStatus::Succeeded => "succeeded",
            RecoverStatus::Filtered => "filtered",
        }
    }

    /// The status named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<RecoverStatus> {
        RecoverStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// Body of `POST /subscriptions/{id}/recover`: redeliver the webhooks of
/// a time window (`dry_run`: only count them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoverRequest {
    /// Webhooks received at or after this time.
    pub since: DateTime<Utc>,
    /// ... and before this one, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Their statuses (the server's default is failed only).
    pub status: Vec<RecoverStatus>,
    /// Count, do not redeliver.
    pub dry_run: bool,
}

/// Answer of `POST /subscriptions/{id}/recover` (202).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverCounts {
    /// Webhooks in the window with one of the statuses.
    pub matched: u64,
    /// Queued for redelivery (0 on a dry run).
    pub queued: u64,
    /// Matched, but their payload is no longer in the stream.
    pub unavailable: u64,
}

/// Why a recover call failed: the error, and for a `since` before the
/// retention the oldest time still available (the answer's top-level
/// `oldest_available`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct RecoverError {
    /// The error as every call reports it.
    pub error: ApiError,
    /// The oldest `since` the server can still recover from, if it said.
    pub oldest_available: Option<DateTime<Utc>>,
}

impl From<ApiError> for RecoverError {
    fn from(error: ApiError) -> RecoverError {
        RecoverError {
            error,
            oldest_available: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_serialises_only_changed_fields() {
        let patch = SubscriptionPatch {
            target_url: None,
            secret: None,
            events: Some(None),
            state: None,
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"events": null})
        );
        let patch = SubscriptionPatch {
            target_url: Some("https://a.example/h".into()),
            secret: Some(Some("0123456789abcdef".into())),
            events: Some(Some(vec!["a".into()])),
            state: None,
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"target_url": "https://a.example/h", "secret": "0123456789abcdef", "events": ["a"]})
        );
        assert!(SubscriptionPatch::default().is_empty());
        assert_eq!(
            serde_json::to_value(SubscriptionPatch::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn new_subscription_sends_null_events_and_omits_missing_secret() {
        let new = NewSubscription {
            target_url: "https://a.example/h".into(),
            secret: None,
            events: None,
        };
        assert_eq!(
            serde_json::to_value(&new).unwrap(),
            serde_json::json!({"target_url": "https://a.example/h", "events": null})
        );
    }

    #[test]
    fn attempt_with_unknown_outcome_decodes() {
        let json = r#"{"id":1,"webhook_id":"w","subscription_id":"s","target_url":"u",
            "timestamp":"2026-11-29T09:41:03.123Z","attempt_number":1,"outcome":"weird",
            "status_code":null,"error":null,"duration_ms":3,"response_body":null}"#;
        let a: Attempt = serde_json::from_str(json).unwrap();
        assert_eq!(a.outcome, Outcome::Unknown);
    }

    #[test]
    fn subscription_without_state_or_health_decodes() {
        // What servers before endpoint health send.
        let json = r#"{"id":"s","target_url":"u","events":null,"secret":null,
            "created_at":"2026-11-29T09:41:03.123Z","updated_at":"2026-11-29T09:41:03.123Z"}"#;
        let s: Subscription = serde_json::from_str(json).unwrap();
        assert_eq!(s.state, SubscriptionState::Active);
        assert_eq!(s.health, None);
        assert_eq!(s.disabled_reason, None);
    }

    #[test]
    fn subscription_with_health_decodes() {
        let json = r#"{"id":"s","target_url":"u","events":null,"secret":null,
            "created_at":"2026-11-29T09:41:03.123Z","updated_at":"2026-11-29T09:41:03.123Z",
            "state":"disabled","disabled_reason":"the receiver answered 410 Gone",
            "disabled_at":"2026-12-02T10:09:19.962Z",
            "health":{"circuit":"half_open","circuit_open_until":null,"consecutive_failures":7,
              "last_success_at":null,"last_failure_at":"2026-12-02T10:09:19.962Z",
              "in_flight":1,"max_in_flight":1,"something_new":true}}"#;
        let s: Subscription = serde_json::from_str(json).unwrap();
        assert_eq!(s.state, SubscriptionState::Disabled);
        assert_eq!(
            s.disabled_reason.as_deref(),
            Some("the receiver answered 410 Gone")
        );
        let h = s.health.unwrap();
        assert_eq!(h.circuit, Circuit::HalfOpen);
        assert_eq!(h.consecutive_failures, 7);
        assert_eq!((h.in_flight, h.max_in_flight), (1, 1));
        assert!(h.last_failure_at.is_some() && h.last_success_at.is_none());
        // Unknown names from a newer server do not break decoding.
        let s: Subscription = serde_json::from_str(
            &json
                .replace("half_open", "tripped")
                .replace("\"disabled\"", "\"paused\""),
        )
        .unwrap();
        assert_eq!(s.state, SubscriptionState::Unknown);
        assert_eq!(s.health.unwrap().circuit, Circuit::Unknown);
    }

    #[test]
    fn state_patch_sends_only_the_state() {
        let patch = SubscriptionPatch {
            state: Some(SubscriptionState::Disabled),
            ..Default::default()
        };
        assert!(!patch.is_empty());
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"state": "disabled"})
        );
    }

    #[test]
    fn redelivery_fields_default_to_zero() {
        let json = r#"{"webhook_id":"w","subscription_id":"s","received_at":"2026-11-29T09:41:03.123Z",
            "status":"failed","attempt_count":1,"attempts":[{"id":1,"webhook_id":"w",
            "subscription_id":"s","timestamp":"2026-11-29T09:41:03.123Z","attempt_number":1,
            "outcome":"failure"}]}"#;
        let s: WebhookStatus = serde_json::from_str(json).unwrap();
        assert_eq!((s.redeliveries, s.redelivered_at), (0, None));
        assert_eq!(s.attempts[0].redelivery, 0);
        let json = json
            .replace(r#""attempt_count":1,"#, r#""attempt_count":1,"redeliveries":2,"redelivered_at":"2026-11-29T10:00:00.000Z","#)
            .replace(r#""outcome":"failure""#, r#""outcome":"failure","redelivery":2"#);
        let s: WebhookStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(s.redeliveries, 2);
        assert!(s.redelivered_at.is_some());
        assert_eq!(s.attempts[0].redelivery, 2);
    }

    #[test]
    fn recover_request_omits_a_missing_until() {
        let since = "2026-11-29T08:41:03.123Z".parse().unwrap();
        let req = RecoverRequest {
            since,
            until: None,
            status: vec![RecoverStatus::Failed, RecoverStatus::Filtered],
            dry_run: true,
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"since": "2026-11-29T08:41:03.123Z",
                "status": ["failed", "filtered"], "dry_run": true})
        );
        assert_eq!(
            RecoverStatus::parse(" Succeeded "),
            Some(RecoverStatus::Succeeded)
        );
        assert_eq!(RecoverStatus::parse("pending"), None);
    }
}
