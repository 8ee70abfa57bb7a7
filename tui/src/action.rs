//! The messages between the pure [`App`](crate::app::App) and the runtime:
//! [`Action`]s go in (input, time, API results), [`Effect`]s come out (the
//! HTTP calls to make, each answered by another action).

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::KeyEvent;

use crate::api::{
    ApiError, Attempt, AttemptsPage, NewSubscription, RecoverCounts, RecoverError, RecoverRequest,
    Redelivery, Subscription, SubscriptionPatch, SubscriptionState, WebhookPage, WebhookStatus,
};

/// Everything that can happen to the app: input, time, and API results.
#[derive(Debug, Clone)]
pub enum Action {
    /// First action after start: triggers the initial loads.
    Init,
    /// Once a second; carries the wall clock so that `App` never reads it.
    Tick {
        /// Current time.
        now: DateTime<Utc>,
    },
    /// A key press.
    Key(KeyEvent),
    /// Answer of `GET /healthz`.
    Health(Result<(), ApiError>),
    /// Answer of the (paginated) subscription list.
    SubscriptionsLoaded(Result<Vec<Subscription>, ApiError>),
    /// Answer of `GET /subscriptions/{id}`.
    SubscriptionLoaded {
        /// Requested id.
        id: String,
        /// Answer.
        result: Result<Subscription, ApiError>,
    },
    /// Answer of `GET /subscriptions/{id}/attempts`.
    SubscriptionAttemptsLoaded {
        /// Requested subscription id.
        id: String,
        /// Answer, most recent first.
        result: Result<Vec<Attempt>, ApiError>,
    },
    /// Answer of `POST /subscriptions`.
    SubscriptionCreated(Result<Subscription, ApiError>),
    /// Answer of `PATCH /subscriptions/{id}`.
    SubscriptionUpdated {
        /// Patched id.
        id: String,
        /// Answer.
        result: Result<Subscription, ApiError>,
    },
    /// Answer of `PATCH /subscriptions/{id}` with `{"state": ..}`.
    SubscriptionStateSet {
        /// Patched id.
        id: String,
        /// The state asked for.
        state: SubscriptionState,
        /// Answer.
        result: Result<Subscription, ApiError>,
    },
    /// Answer of `DELETE /subscriptions/{id}`.
    SubscriptionDeleted {
        /// Deleted id.
        id: String,
        /// Answer.
        result: Result<(), ApiError>,
    },
    /// Answer of `GET /status/{id}`.
    WebhookStatusLoaded {
        /// Requested webhook id.
        id: String,
        /// Answer.
        result: Result<WebhookStatus, ApiError>,
    },
    /// Answer of `GET /attempts?after=..`.
    AttemptsPolled {
        /// The cursor the poll was made with.
        after: Option<i64>,
        /// Answer.
        result: Result<AttemptsPage, ApiError>,
    },
    /// Answer of a page of `GET /webhooks?status=failed`.
    FailedLoaded {
        /// The number of the request (answers to older ones are dropped).
        seq: u64,
        /// A next page (appended) rather than the first one (replacing).
        more: bool,
        /// Answer.
        result: Result<WebhookPage, ApiError>,
    },
    /// Answer of `POST /webhooks/{id}/redeliver`.
    WebhookRedelivered {
        /// Webhook id.
        id: String,
        /// Answer.
        result: Result<Redelivery, ApiError>,
    },
    /// Answer of `POST /subscriptions/{id}/recover`.
    SubscriptionRecovered {
        /// The number of the request (answers to older ones only flash).
        seq: u64,
        /// Subscription id.
        id: String,
        /// Whether it was a dry run.
        dry_run: bool,
        /// Answer.
        result: Result<RecoverCounts, RecoverError>,
    },
    /// Answer of `GET /metrics`.
    MetricsScraped {
        /// When the scrape finished (the time base of rates).
        at: DateTime<Utc>,
        /// Prometheus text.
        result: Result<String, ApiError>,
    },
}

/// Work the runtime must do on the app's behalf; each ends in an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `GET /healthz` → [`Action::Health`].
    CheckHealth,
    /// `GET /metrics` → [`Action::MetricsScraped`].
    ScrapeMetrics,
    /// All pages of `GET /subscriptions` → [`Action::SubscriptionsLoaded`].
    LoadSubscriptions,
    /// `GET /subscriptions/{id}` → [`Action::SubscriptionLoaded`].
    LoadSubscription(String),
    /// `GET /subscriptions/{id}/attempts` → [`Action::SubscriptionAttemptsLoaded`].
    LoadSubscriptionAttempts {
        /// Subscription id.
        id: String,
        /// How many.
        limit: u32,
    },
    /// `POST /subscriptions` → [`Action::SubscriptionCreated`].
    CreateSubscription(NewSubscription),
    /// `PATCH /subscriptions/{id}` → [`Action::SubscriptionUpdated`].
    UpdateSubscription {
        /// Subscription id.
        id: String,
        /// Changed fields only.
        patch: SubscriptionPatch,
    },
    /// `PATCH /subscriptions/{id}` with `{"state": ..}` →
    /// [`Action::SubscriptionStateSet`].
    SetSubscriptionState {
        /// Subscription id.
        id: String,
        /// Disabled or active.
        state: SubscriptionState,
    },
    /// `DELETE /subscriptions/{id}` → [`Action::SubscriptionDeleted`].
    DeleteSubscription(String),
    /// `GET /status/{id}` → [`Action::WebhookStatusLoaded`].
    LoadWebhookStatus(String),
    /// `GET /attempts?after=..` → [`Action::AttemptsPolled`].
    PollAttempts {
        /// Cursor (largest id seen), `None` for "the latest".
        after: Option<i64>,
        /// Page size.
        limit: u32,
    },
    /// The first page of failed webhooks → [`Action::FailedLoaded`].
    LoadFailed {
        /// Request number.
        seq: u64,
        /// Only this subscription's.
        subscription_id: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// The page at a `rel="next"` link → [`Action::FailedLoaded`].
    LoadFailedMore {
        /// Request number.
        seq: u64,
        /// The link.
        next: String,
    },
    /// `POST /webhooks/{id}/redeliver` → [`Action::WebhookRedelivered`].
    Redeliver(String),
    /// `POST /subscriptions/{id}/recover` → [`Action::SubscriptionRecovered`].
    Recover {
        /// Request number.
        seq: u64,
        /// Subscription id.
        id: String,
        /// The window, statuses and whether to only count.
        request: RecoverRequest,
    },
}
