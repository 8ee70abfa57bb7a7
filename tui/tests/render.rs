//! Snapshot tests of every screen, rendered at 100x30 on ratatui's
//! `TestBackend`. The state is built only through `App::update`, with fixed
//! timestamps, so the snapshots are deterministic.

use chrono::Duration;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use ratatui::Terminal;

use webhookd_tui::api::{
    ApiError, Attempt, AttemptsPage, Outcome, RecoverCounts, RecoverError, Redelivery,
    WebhookStatus,
};
use webhookd_tui::app::{Action, App};
use webhookd_tui::ui;

#[path = "render/fixtures.rs"]
mod fixtures;

use fixtures::*;

#[test]
fn subscriptions_loading() {
    let mut app = on_list(App::new("http://127.0.0.1:8000"));
    app.update(Action::Init);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscriptions_empty() {
    let mut app = on_list(connected());
    app.update(Action::SubscriptionsLoaded(Ok(vec![])));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscriptions_loaded() {
    let mut app = loaded();
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscriptions_mixed_health() {
    let mut app = mixed();
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscription_detail_disabled() {
    insta::assert_snapshot!(render(&mixed_detail(3)));
}

#[test]
fn subscription_detail_open_circuit() {
    insta::assert_snapshot!(render(&mixed_detail(1)));
}

#[test]
fn subscriptions_filtered() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "order");
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscriptions_unreachable() {
    // The token must never appear, and credentials in the URL are hidden.
    let mut app = on_list(App::new("http://admin:hunter2@127.0.0.1:8000/"));
    app.update(Action::Init);
    let refused = || ApiError::Unreachable("Connection refused (os error 111)".into());
    app.update(Action::Health(Err(refused())));
    app.update(Action::SubscriptionsLoaded(Err(refused())));
    app.update(Action::MetricsScraped {
        at: t0(),
        result: Err(refused()),
    });
    let screen = render(&app);
    assert!(!screen.contains("hunter2"));
    insta::assert_snapshot!(screen);
}

#[test]
fn subscriptions_server_error() {
    let mut app = on_list(connected());
    app.update(Action::SubscriptionsLoaded(Err(ApiError::Http {
        status: 401,
        code: "unauthorized".into(),
        message: "missing or invalid API token".into(),
        field: None,
    })));
    app.update(Action::MetricsScraped {
        at: t0(),
        result: Err(ApiError::Http {
            status: 404,
            code: "not_found".into(),
            message: "not found".into(),
            field: None,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn form_with_validation_error() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('n'));
    typed(&mut app, "ftp://example.com/hook");
    key(&mut app, KeyCode::Tab);
    typed(&mut app, "short");
    key(&mut app, KeyCode::Tab);
    typed(&mut app, "order.created, order.paid");
    key(&mut app, KeyCode::Enter);
    app.update(Action::SubscriptionCreated(Err(ApiError::Http {
        status: 422,
        code: "validation_failed".into(),
        message: "target_url must use http or https".into(),
        field: Some("target_url".into()),
    })));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn edit_form() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('e'));
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn delete_confirmation() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('d'));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn disable_confirmation() {
    let mut app = mixed();
    key(&mut app, KeyCode::Char('x'));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn enable_confirmation() {
    let mut app = mixed_detail(3);
    key(&mut app, KeyCode::Char('x'));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn subscription_detail() {
    let mut app = loaded();
    key(&mut app, KeyCode::Enter);
    app.update(Action::SubscriptionLoaded {
        id: SUB_A.into(),
        result: Ok(subscriptions().remove(0)),
    });
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn webhook_detail() {
    let mut app = loaded();
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    let mut attempts = recent_a();
    attempts.retain(|a| a.webhook_id == WEBHOOK);
    attempts.reverse();
    attempts.pop();
    app.update(Action::WebhookStatusLoaded {
        id: WEBHOOK.into(),
        result: Ok(WebhookStatus {
            webhook_id: WEBHOOK.into(),
            subscription_id: SUB_A.into(),
            event_type: Some("order.created".into()),
            received_at: t0() - Duration::seconds(1),
            status: "retrying".into(),
            attempt_count: 2,
            next_retry_at: Some(t0() + Duration::seconds(80)),
            last_error: Some("HTTP 503 Service Unavailable".into()),
            attempts,
            redeliveries: 0,
            redelivered_at: None,
        }),
    });
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn webhook_not_found() {
    let mut app = loaded();
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    app.update(Action::WebhookStatusLoaded {
        id: WEBHOOK.into(),
        result: Err(ApiError::Http {
            status: 404,
            code: "not_found".into(),
            message: "webhook not found".into(),
            field: None,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn live_tail() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('3'));
    app.update(Action::AttemptsPolled {
        after: None,
        result: Ok(live_page()),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn live_tail_paused_and_filtered() {
    let mut app = loaded();
    key(&mut app, KeyCode::Tab);
    app.update(Action::AttemptsPolled {
        after: None,
        result: Ok(live_page()),
    });
    key(&mut app, KeyCode::Char(' '));
    app.update(Action::AttemptsPolled {
        after: Some(130),
        result: Ok(AttemptsPage {
            items: vec![attempt(131, SUB_A, WEBHOOK, 1, Outcome::Success, 60)],
            next_cursor: Some(131),
        }),
    });
    key(&mut app, KeyCode::Char('f'));
    key(&mut app, KeyCode::Char('f'));
    key(&mut app, KeyCode::Up);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn live_tail_empty() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('3'));
    app.update(Action::AttemptsPolled {
        after: None,
        result: Ok(AttemptsPage {
            items: vec![],
            next_cursor: None,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn overview_empty() {
    let mut app = App::new("http://127.0.0.1:8000");
    app.update(Action::Init);
    app.update(Action::Tick { now: t0() });
    app.update(Action::Health(Ok(())));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn overview_with_data_and_problems() {
    let mut app = overview_with_data();
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn overview_all_well() {
    let mut app = connected();
    app.update(Action::SubscriptionsLoaded(Ok(subscriptions())));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn overview_unreachable() {
    let mut app = App::new("http://127.0.0.1:8000");
    app.update(Action::Init);
    let refused = || ApiError::Unreachable("Connection refused (os error 111)".into());
    app.update(Action::Health(Err(refused())));
    app.update(Action::SubscriptionsLoaded(Err(refused())));
    app.update(Action::MetricsScraped {
        at: t0(),
        result: Err(refused()),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn help_overlay() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!(render(&app));
}

#[test]
fn failed_webhooks() {
    let mut app = on_failed(loaded(), failed_list(), true);
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn failed_webhooks_empty() {
    insta::assert_snapshot!(render(&on_failed(loaded(), vec![], false)));
}

#[test]
fn failed_webhooks_of_one_subscription() {
    // `f` on a subscription of the list opens its failed webhooks.
    let mut app = loaded();
    key(&mut app, KeyCode::Char('f'));
    let mut items = failed_list();
    items.retain(|w| w.subscription_id == SUB_A);
    answer_failed(&mut app, items, false);
    insta::assert_snapshot!(render(&app));
}

/// The Failed screen with the second webhook asked about.
fn redeliver_asked() -> App {
    let mut app = on_failed(loaded(), failed_list(), false);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('r'));
    app
}

#[test]
fn redeliver_confirmation() {
    insta::assert_snapshot!(render(&redeliver_asked()));
}

#[test]
fn redeliver_queued() {
    let mut app = redeliver_asked();
    key(&mut app, KeyCode::Char('y'));
    app.update(Action::WebhookRedelivered {
        id: REDELIVERED.into(),
        result: Ok(Redelivery {
            webhook_id: REDELIVERED.into(),
            status: "pending".into(),
            redelivery: 1,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn redeliver_refused() {
    let mut app = redeliver_asked();
    key(&mut app, KeyCode::Char('y'));
    app.update(Action::WebhookRedelivered {
        id: REDELIVERED.into(),
        result: Err(ApiError::Http {
            status: 409,
            code: "conflict".into(),
            message: "the subscription is disabled; enable it first".into(),
            field: None,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

/// The recover dialog of the first subscription, `until` typed.
fn recover_window() -> App {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('R'));
    key(&mut app, KeyCode::Tab);
    typed(&mut app, "15m");
    app
}

fn dry_run_answered() -> App {
    let mut app = recover_window();
    key(&mut app, KeyCode::Enter);
    let seq = app.recover_dialog().unwrap().seq;
    app.update(Action::SubscriptionRecovered {
        seq,
        id: SUB_A.into(),
        dry_run: true,
        result: Ok(RecoverCounts {
            matched: 12,
            queued: 0,
            unavailable: 1,
        }),
    });
    app
}

#[test]
fn recover_dialog() {
    insta::assert_snapshot!(render(&recover_window()));
}

#[test]
fn recover_dry_run_count() {
    insta::assert_snapshot!(render(&dry_run_answered()));
}

#[test]
fn recover_done() {
    let mut app = dry_run_answered();
    key(&mut app, KeyCode::Char('y'));
    let seq = app.recover_dialog().unwrap().seq;
    app.update(Action::SubscriptionRecovered {
        seq,
        id: SUB_A.into(),
        dry_run: false,
        result: Ok(RecoverCounts {
            matched: 12,
            queued: 11,
            unavailable: 1,
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn recover_since_before_retention() {
    let mut app = loaded();
    key(&mut app, KeyCode::Char('R'));
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "3d");
    key(&mut app, KeyCode::Enter);
    let seq = app.recover_dialog().unwrap().seq;
    app.update(Action::SubscriptionRecovered {
        seq,
        id: SUB_A.into(),
        dry_run: true,
        result: Err(RecoverError {
            error: ApiError::Http {
                status: 422,
                code: "validation".into(),
                message: "since is before the stream's retention".into(),
                field: Some("since".into()),
            },
            oldest_available: Some(t0() - Duration::hours(48)),
        }),
    });
    insta::assert_snapshot!(render(&app));
}

#[test]
fn webhook_detail_with_redeliveries() {
    let mut app = on_failed(loaded(), failed_list(), false);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let at = |id: i64, n: u32, outcome, secs, redelivery| Attempt {
        redelivery,
        ..attempt(id, SUB_A, REDELIVERED, n, outcome, secs)
    };
    // Attempt numbers continue across redeliveries, as the server numbers
    // them.
    let attempts = vec![
        at(1, 1, Outcome::FailedAttempt, -420, 0),
        at(2, 2, Outcome::Failure, -400, 0),
        at(3, 3, Outcome::Failure, -300, 1),
        at(5, 4, Outcome::FailedAttempt, -10, 2),
    ];
    app.update(Action::WebhookStatusLoaded {
        id: REDELIVERED.into(),
        result: Ok(WebhookStatus {
            webhook_id: REDELIVERED.into(),
            subscription_id: SUB_A.into(),
            event_type: Some("order.paid".into()),
            received_at: t0() - Duration::minutes(7),
            status: "retrying".into(),
            attempt_count: 4,
            next_retry_at: Some(t0() + Duration::seconds(20)),
            last_error: Some("HTTP 503 Service Unavailable".into()),
            attempts,
            redeliveries: 2,
            redelivered_at: Some(t0() - Duration::seconds(12)),
        }),
    });
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    insta::assert_snapshot!(render(&app));
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut states = vec![
        App::new("http://127.0.0.1:8000"),
        loaded(),
        overview_with_data(),
    ];
    let mut app = mixed();
    key(&mut app, KeyCode::Char('x'));
    states.push(app);
    let mut app = loaded();
    key(&mut app, KeyCode::Char('n'));
    states.push(app.clone());
    let mut app = loaded();
    key(&mut app, KeyCode::Char('d'));
    states.push(app.clone());
    let mut app = loaded();
    key(&mut app, KeyCode::Char('?'));
    states.push(app.clone());
    let mut app = loaded();
    key(&mut app, KeyCode::Enter);
    states.push(app.clone());
    let mut app = loaded();
    key(&mut app, KeyCode::Char('3'));
    app.update(Action::AttemptsPolled {
        after: None,
        result: Ok(live_page()),
    });
    key(&mut app, KeyCode::Up);
    states.push(app);
    states.push(on_failed(loaded(), failed_list(), true));
    states.push(redeliver_asked());
    states.push(recover_window());
    states.push(dry_run_answered());
    for app in &states {
        for (w, h) in [(1, 1), (10, 4), (20, 6), (40, 12), (300, 80)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|frame| ui::render(app, frame)).unwrap();
        }
    }
}
