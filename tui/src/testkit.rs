//! Fixtures shared by the unit tests of the app and its screens.

use chrono::{DateTime, TimeZone, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::api::{
    Attempt, AttemptsPage, Health, Outcome, Subscription, SubscriptionState, WebhookPage,
    WebhookSummary,
};
use crate::app::{Action, App};

pub(crate) fn key(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub(crate) fn ch(c: char) -> Action {
    key(KeyCode::Char(c))
}

pub(crate) fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(ch(c));
    }
}

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 9, 41, 3).unwrap()
}

pub(crate) fn sub(n: u8, url: &str, events: Option<&[&str]>) -> Subscription {
    Subscription {
        id: format!("0193a4c{n}-0000-7000-8000-00000000000{n}"),
        target_url: url.into(),
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        secret: Some("****wxyz".into()),
        created_at: t0(),
        updated_at: t0(),
        state: SubscriptionState::Active,
        disabled_reason: None,
        disabled_at: None,
        health: Some(Health {
            max_in_flight: 64,
            ..Health::default()
        }),
    }
}

pub(crate) fn attempt(id: i64, sub_id: &str, outcome: Outcome) -> Attempt {
    Attempt {
        id,
        webhook_id: format!("wh{id:06}-0000-0000-0000-000000000000"),
        subscription_id: sub_id.into(),
        target_url: "https://a.example/hook".into(),
        timestamp: t0(),
        attempt_number: 1,
        outcome,
        status_code: Some(200),
        error: None,
        duration_ms: 12,
        response_body: None,
        redelivery: 0,
    }
}

/// Two loaded subscriptions, the subscription list in front.
pub(crate) fn loaded_app() -> App {
    let mut app = App::new("http://127.0.0.1:8000");
    app.update(Action::Init);
    app.update(Action::SubscriptionsLoaded(Ok(vec![
        sub(1, "https://a.example/hook", Some(&["order.created"])),
        sub(2, "https://b.example/hook", None),
    ])));
    app.update(ch('2'));
    app
}

pub(crate) fn page(ids: std::ops::RangeInclusive<i64>) -> AttemptsPage {
    let items: Vec<Attempt> = ids
        .map(|i| {
            let outcome = match i % 3 {
                0 => Outcome::Success,
                1 => Outcome::FailedAttempt,
                _ => Outcome::Failure,
            };
            attempt(i, "s", outcome)
        })
        .collect();
    let next_cursor = items.last().map(|a| a.id);
    AttemptsPage { items, next_cursor }
}

/// Failed webhook `n` of subscription `sub_id`.
pub(crate) fn failed_webhook(n: u32, sub_id: &str) -> WebhookSummary {
    WebhookSummary {
        id: format!("0193a5e{n}-0000-7000-8000-0000000000{n:02}"),
        subscription_id: sub_id.into(),
        event_type: Some("order.created".into()),
        received_at: t0(),
        status: "failed".into(),
        attempt_count: 4,
        last_attempt_at: Some(t0()),
        last_status_code: Some(500),
        last_error: Some("receiver answered 500".into()),
        next_retry_at: None,
    }
}

/// A page of failed webhooks `ns`, followed by `next` when given.
pub(crate) fn failed_page(ns: std::ops::RangeInclusive<u32>, next: Option<&str>) -> WebhookPage {
    WebhookPage {
        items: ns
            .map(|n| failed_webhook(n, &sub(1, "", None).id))
            .collect(),
        next: next.map(String::from),
    }
}
