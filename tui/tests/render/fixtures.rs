//! Fixtures of the snapshot tests in `render.rs`: subscriptions in every
//! state of health, attempts, metrics, and apps built from them through
//! `App::update` only.

use chrono::{DateTime, Duration, TimeZone, Utc};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use webhookd_tui::api::{
    Attempt, AttemptsPage, Circuit, Health, Outcome, Subscription, SubscriptionState, WebhookPage,
    WebhookSummary,
};
use webhookd_tui::app::{Action, App};
use webhookd_tui::ui;

pub const SUB_A: &str = "0193a4c2-7b1e-7c3a-9f00-5d1b2e3f4a01";
pub const SUB_B: &str = "0193a4c5-1c2d-7e3f-8a00-6e2c3f4a5b02";
pub const SUB_C: &str = "0193a4d0-9e8f-7a6b-8c00-7f3d4a5b6c03";
pub const SUB_D: &str = "0193a4d7-3a4b-7c5d-8e00-8a4e5b6c7d05";
pub const SUB_E: &str = "0193a4d9-5c6d-7e8f-9a00-9b5f6c7d8e06";
pub const WEBHOOK: &str = "0193a5e1-2f3a-7b4c-9d00-8a4e5b6c7d04";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 9, 41, 3).unwrap() + Duration::milliseconds(123)
}

pub fn render(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    terminal.draw(|frame| ui::render(app, frame)).unwrap();
    terminal.backend().to_string()
}

pub fn key(app: &mut App, code: KeyCode) {
    app.update(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

pub fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

pub fn subscription(id: &str, url: &str, events: Option<&[&str]>, minutes: i64) -> Subscription {
    Subscription {
        id: id.into(),
        target_url: url.into(),
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        secret: Some("****wxyz".into()),
        created_at: t0() - Duration::days(3) + Duration::minutes(minutes),
        updated_at: t0() - Duration::days(1),
        state: SubscriptionState::Active,
        disabled_reason: None,
        disabled_at: None,
        health: Some(healthy()),
    }
}

/// The health of an endpoint that answers: closed, last success 12s ago.
pub fn healthy() -> Health {
    Health {
        circuit: Circuit::Closed,
        circuit_open_until: None,
        consecutive_failures: 0,
        last_success_at: Some(t0() - Duration::seconds(12)),
        last_failure_at: None,
        in_flight: 2,
        max_in_flight: 64,
    }
}

pub fn subscriptions() -> Vec<Subscription> {
    vec![
        subscription(
            SUB_A,
            "https://shop.example.com/hooks/orders",
            Some(&["order.created", "order.paid"]),
            0,
        ),
        subscription(SUB_B, "https://crm.example.org/webhook", None, 17),
        subscription(
            SUB_C,
            "http://10.0.0.7:9000/ingest",
            Some(&["invoice.sent"]),
            95,
        ),
    ]
}

/// The five states side by side: ok, open, half open, disabled,
/// throttled (64 is the cap the healthy one shows).
pub fn mixed_health() -> Vec<Subscription> {
    let mut subs = subscriptions();
    let open = subs[1].health.as_mut().unwrap();
    open.circuit = Circuit::Open;
    open.circuit_open_until = Some(t0() + Duration::seconds(25));
    open.consecutive_failures = 7;
    open.last_success_at = Some(t0() - Duration::hours(2));
    open.last_failure_at = Some(t0() - Duration::seconds(3));
    open.in_flight = 0;
    open.max_in_flight = 0;
    let probing = subs[2].health.as_mut().unwrap();
    probing.circuit = Circuit::HalfOpen;
    probing.consecutive_failures = 5;
    probing.last_success_at = None;
    probing.last_failure_at = Some(t0() - Duration::seconds(40));
    probing.in_flight = 1;
    probing.max_in_flight = 1;
    let mut disabled = subscription(
        SUB_D,
        "https://legacy.example.net/hook",
        Some(&["user.deleted"]),
        200,
    );
    disabled.state = SubscriptionState::Disabled;
    disabled.disabled_reason = Some("the receiver answered 410 Gone".into());
    disabled.disabled_at = Some(t0() - Duration::minutes(3));
    let h = disabled.health.as_mut().unwrap();
    h.consecutive_failures = 1;
    h.last_success_at = Some(t0() - Duration::days(1));
    h.last_failure_at = Some(t0() - Duration::minutes(3));
    h.in_flight = 0;
    let mut throttled = subscription(SUB_E, "https://slow.example.com/in", None, 260);
    let h = throttled.health.as_mut().unwrap();
    h.last_success_at = Some(t0() - Duration::seconds(1));
    h.last_failure_at = Some(t0() - Duration::seconds(20));
    h.in_flight = 16;
    h.max_in_flight = 16;
    subs.extend([disabled, throttled]);
    subs
}

/// A connected app whose list (in front) shows [`mixed_health`].
pub fn mixed() -> App {
    let mut app = on_list(connected());
    app.update(Action::SubscriptionsLoaded(Ok(mixed_health())));
    app
}

/// `mixed()` with the detail of the `n`th subscription open.
pub fn mixed_detail(n: usize) -> App {
    let mut app = mixed();
    for _ in 0..n {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    let id = mixed_health()[n].id.clone();
    app.update(Action::SubscriptionAttemptsLoaded {
        id: id.clone(),
        result: Ok(vec![attempt(20, &id, WEBHOOK, 4, Outcome::Failure, -3)]),
    });
    app
}

pub fn attempt(id: i64, sub: &str, webhook: &str, n: u32, outcome: Outcome, secs: i64) -> Attempt {
    let (status_code, error) = match outcome {
        Outcome::Success => (Some(200), None),
        Outcome::FailedAttempt => (Some(503), Some("HTTP 503 Service Unavailable".to_string())),
        _ => (None, Some("connection refused".to_string())),
    };
    Attempt {
        id,
        webhook_id: webhook.into(),
        subscription_id: sub.into(),
        target_url: "https://shop.example.com/hooks/orders".into(),
        timestamp: t0() + Duration::seconds(secs),
        attempt_number: n,
        outcome,
        status_code,
        error,
        duration_ms: 40 + id as u64,
        response_body: status_code.map(|_| "{\"ok\":true}".to_string()),
        redelivery: 0,
    }
}

pub fn webhook_id(n: i64) -> String {
    format!("0193a5{n:02}-0000-7000-8000-000000000000")
}

pub fn recent_a() -> Vec<Attempt> {
    // Most recent first, as the API returns them.
    vec![
        attempt(12, SUB_A, WEBHOOK, 3, Outcome::Success, 40),
        attempt(11, SUB_A, &webhook_id(11), 1, Outcome::Success, 30),
        attempt(10, SUB_A, WEBHOOK, 2, Outcome::FailedAttempt, 20),
        attempt(9, SUB_A, WEBHOOK, 1, Outcome::FailedAttempt, 0),
    ]
}

pub fn metrics(accepted: u32, delivered: u32) -> String {
    format!(
        "# TYPE webhookd_webhooks_accepted_total counter\n\
         webhookd_webhooks_accepted_total {accepted}\n\
         webhookd_deliveries_total{{outcome=\"success\"}} {delivered}\n\
         webhookd_deliveries_total{{outcome=\"failure\"}} 1\n"
    )
}

/// A connected app with no data yet.
pub fn connected() -> App {
    let mut app = App::new("http://127.0.0.1:8000");
    app.update(Action::Init);
    app.update(Action::Tick { now: t0() });
    app.update(Action::Health(Ok(())));
    app.update(Action::MetricsScraped {
        at: t0(),
        result: Ok(metrics(100, 200)),
    });
    app.update(Action::MetricsScraped {
        at: t0() + Duration::seconds(2),
        result: Ok(metrics(103, 208)),
    });
    app
}

/// `app` with the subscription list (key 2) in front; the app starts on
/// the overview.
pub fn on_list(mut app: App) -> App {
    key(&mut app, KeyCode::Char('2'));
    app
}

/// A connected app with three subscriptions and rates for two of them,
/// on the subscription list.
pub fn loaded() -> App {
    let mut app = on_list(connected());
    app.update(Action::SubscriptionsLoaded(Ok(subscriptions())));
    app.update(Action::SubscriptionAttemptsLoaded {
        id: SUB_A.into(),
        result: Ok(recent_a()),
    });
    app.update(Action::SubscriptionAttemptsLoaded {
        id: SUB_B.into(),
        result: Ok(vec![]),
    });
    app
}

pub fn live_page() -> AttemptsPage {
    let outcomes = [
        Outcome::Success,
        Outcome::Success,
        Outcome::FailedAttempt,
        Outcome::Success,
        Outcome::Failure,
    ];
    let items: Vec<Attempt> = (1..=30)
        .map(|i| {
            let sub = [SUB_A, SUB_B, SUB_C][(i % 3) as usize];
            attempt(
                100 + i,
                sub,
                &webhook_id(i),
                1 + (i % 2) as u32,
                outcomes[(i % 5) as usize],
                i,
            )
        })
        .collect();
    AttemptsPage {
        next_cursor: items.last().map(|a| a.id),
        items,
    }
}

/// Counters and gauges of a server with endpoint health.
pub fn health_metrics(accepted: u64, success: u64, failed: u64) -> String {
    format!(
        "webhookd_webhooks_accepted_total {accepted}\n\
         webhookd_deliveries_total{{outcome=\"success\"}} {success}\n\
         webhookd_deliveries_total{{outcome=\"failed_attempt\"}} {failed}\n\
         webhookd_circuits{{state=\"open\"}} 1\n\
         webhookd_circuits{{state=\"half_open\"}} 1\n\
         webhookd_subscriptions_disabled 1\n\
         webhookd_subscriptions_throttled 1\n\
         webhookd_consumer_pending 12\n\
         webhookd_consumer_ack_pending 5\n"
    )
}

/// The overview after 50 scrapes, 2 s apart: traffic rising and falling,
/// a burst of failures in the middle, and the mixed-health subscriptions.
pub fn overview_with_data() -> App {
    let mut app = App::new("http://127.0.0.1:8000");
    app.update(Action::Init);
    app.update(Action::Tick { now: t0() });
    app.update(Action::Health(Ok(())));
    app.update(Action::SubscriptionsLoaded(Ok(mixed_health())));
    let (mut accepted, mut success, mut failed) = (1000, 900, 10);
    for i in 0..50u64 {
        accepted += 2 * (3 + (i % 10).min(10 - i % 10));
        success += 2 * (2 + (i % 10).min(10 - i % 10));
        if (20..30).contains(&i) {
            failed += 2 * (i - 19);
        }
        app.update(Action::MetricsScraped {
            at: t0() - Duration::seconds(100) + Duration::seconds(2 * i as i64),
            result: Ok(health_metrics(accepted, success, failed)),
        });
    }
    app
}

/// Ids of the failed webhooks, newest first; [`REDELIVERED`] is the second.
pub const FAILED_IDS: [&str; 4] = [
    "0193a6f1-8c2d-7e3f-9a41-1b2c3d4e9f41",
    "0193a6e2-7b1c-7d2e-8f40-2c3d4e5f0a40",
    "0193a6c3-6a0b-7c1d-9e39-3d4e5f6a1b39",
    "0193a6a4-5f9a-7b0c-8d38-4e5f6a7b2c38",
];
/// The failed webhook the redelivery snapshots act on.
pub const REDELIVERED: &str = FAILED_IDS[1];

/// A failed webhook of `sub`, received `minutes` before t0.
pub fn failed(
    id: &str,
    sub: &str,
    event: Option<&str>,
    minutes: i64,
    code: Option<u16>,
    error: &str,
) -> WebhookSummary {
    WebhookSummary {
        id: id.into(),
        subscription_id: sub.into(),
        event_type: event.map(String::from),
        received_at: t0() - Duration::minutes(minutes),
        status: "failed".into(),
        attempt_count: 4,
        last_attempt_at: Some(t0() - Duration::minutes(minutes) + Duration::seconds(35)),
        last_status_code: code,
        last_error: Some(error.into()),
        next_retry_at: None,
    }
}

/// Failed webhooks across the three subscriptions, newest first.
pub fn failed_list() -> Vec<WebhookSummary> {
    vec![
        failed(
            FAILED_IDS[0],
            SUB_B,
            None,
            2,
            Some(503),
            "HTTP 503 Service Unavailable",
        ),
        failed(
            FAILED_IDS[1],
            SUB_A,
            Some("order.paid"),
            7,
            None,
            "connection refused (os error 111) while connecting to shop.example.com:443",
        ),
        failed(
            FAILED_IDS[2],
            SUB_C,
            Some("invoice.sent"),
            31,
            Some(500),
            "receiver answered 500",
        ),
        failed(
            FAILED_IDS[3],
            SUB_A,
            Some("order.created"),
            58,
            None,
            "timed out after 10s",
        ),
    ]
}

/// `app` on the Failed screen (key 4), its load answered with `items`,
/// and a next page when `more`.
pub fn on_failed(mut app: App, items: Vec<WebhookSummary>, more: bool) -> App {
    key(&mut app, KeyCode::Char('4'));
    answer_failed(&mut app, items, more);
    app
}

/// Answer the Failed screen's request in flight.
pub fn answer_failed(app: &mut App, items: Vec<WebhookSummary>, more: bool) {
    let seq = app.failed().seq;
    let next = more.then(|| "http://127.0.0.1:8000/webhooks?status=failed&cursor=x".to_string());
    app.update(Action::FailedLoaded {
        seq,
        more: false,
        result: Ok(WebhookPage { items, next }),
    });
}
