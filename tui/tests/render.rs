//! Snapshot tests of every screen, rendered at 100x30 on ratatui's
//! `TestBackend`. The state is built only through `App::update`, with fixed
//! timestamps, so the snapshots are deterministic.

use chrono::Duration;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use ratatui::Terminal;

use webhookd_tui::api::{ApiError, AttemptsPage, Outcome, WebhookStatus};
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
    for app in &states {
        for (w, h) in [(1, 1), (10, 4), (20, 6), (40, 12), (300, 80)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|frame| ui::render(app, frame)).unwrap();
        }
    }
}
