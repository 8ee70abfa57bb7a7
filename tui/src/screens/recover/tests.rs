//! The recover dialog: defaults, local checks, dry run then the real call,
//! and the server's errors where they belong.

use chrono::Duration;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::api::RecoverStatus;
use crate::app::Action;
use crate::testkit::*;

/// The list with a clock, the dialog open on the first subscription.
fn dialog_app() -> App {
    let mut app = loaded_app();
    app.update(Action::Tick { now: t0() });
    app.update(ch('R'));
    app
}

fn dialog(app: &App) -> &RecoverDialog {
    app.recover_dialog().expect("the dialog is open")
}

fn sent(fx: &[Effect]) -> (u64, RecoverRequest) {
    match fx {
        [Effect::Recover { seq, id, request }] => {
            assert_eq!(id, &sub(1, "", None).id);
            (*seq, request.clone())
        }
        other => panic!("expected one recover call, got {other:?}"),
    }
}

fn ctrl(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

#[test]
fn dry_run_first_then_the_real_call() {
    let mut app = dialog_app();
    assert_eq!(app.key_places(), vec![Where::Recover(RecoverStage::Edit)]);
    assert_eq!(dialog(&app).value(RecoverField::Since), "1h");
    assert_eq!(dialog(&app).value(RecoverField::Statuses), "failed");
    // Keys are text in the dialog: q does not quit.
    app.update(ch('q'));
    assert!(!app.should_quit());
    app.update(key(KeyCode::Backspace));
    let (seq, dry) = sent(&app.update(key(KeyCode::Enter)));
    assert_eq!(
        dry,
        RecoverRequest {
            since: t0() - Duration::hours(1),
            until: None,
            status: vec![RecoverStatus::Failed],
            dry_run: true,
        }
    );
    assert_eq!(app.key_places(), vec![Where::Recover(RecoverStage::Done)]);
    let counts = RecoverCounts {
        matched: 12,
        queued: 0,
        unavailable: 1,
    };
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Ok(counts),
    });
    assert_eq!(
        app.key_places(),
        vec![Where::Recover(RecoverStage::Confirm)]
    );
    // e goes back to the window, Enter counts again.
    app.update(ch('e'));
    assert_eq!(dialog(&app).step, RecoverStep::Edit);
    let (seq, _) = sent(&app.update(key(KeyCode::Enter)));
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Ok(counts),
    });
    // The real call repeats the window the dry run sent.
    app.update(Action::Tick {
        now: t0() + Duration::seconds(30),
    });
    let (seq, real) = sent(&app.update(ch('y')));
    assert_eq!(
        real,
        RecoverRequest {
            dry_run: false,
            ..dry
        }
    );
    let done = RecoverCounts {
        matched: 12,
        queued: 11,
        unavailable: 1,
    };
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: false,
        result: Ok(done),
    });
    assert_eq!(dialog(&app).step, RecoverStep::Done { counts: done });
    assert!(app
        .flash()
        .unwrap()
        .text
        .ends_with("12 matched · 11 queued · 1 unavailable"));
    app.update(key(KeyCode::Enter));
    assert!(app.recover_dialog().is_none());
    assert_eq!(app.screen(), crate::screens::Screen::Subscriptions);
}

#[test]
fn fields_are_checked_before_anything_is_sent() {
    let mut app = dialog_app();
    app.update(ctrl('u'));
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let err = dialog(&app).error.clone().unwrap();
    assert_eq!(err.field, Some(RecoverField::Since));
    typed(&mut app, "2h");
    app.update(key(KeyCode::Tab));
    typed(&mut app, "3h");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    let err = dialog(&app).error.clone().unwrap();
    assert_eq!(
        (err.field, err.message.as_str()),
        (Some(RecoverField::Until), "must be after since")
    );
    app.update(ctrl('u'));
    typed(&mut app, "30m");
    app.update(key(KeyCode::Down));
    typed(&mut app, ",pending");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert_eq!(dialog(&app).focus, RecoverField::Statuses);
    for _ in 0..",pending".len() {
        app.update(key(KeyCode::Backspace));
    }
    typed(&mut app, ", succeeded");
    let (_, request) = sent(&app.update(key(KeyCode::Enter)));
    assert_eq!(request.since, t0() - Duration::hours(2));
    assert_eq!(request.until, Some(t0() - Duration::minutes(30)));
    assert_eq!(
        request.status,
        vec![RecoverStatus::Failed, RecoverStatus::Succeeded]
    );
    // Shift-Tab / Up go back.
    app.update(key(KeyCode::Esc));
    app.update(ch('R'));
    app.update(key(KeyCode::BackTab));
    assert_eq!(dialog(&app).focus, RecoverField::Statuses);
    app.update(key(KeyCode::Up));
    assert_eq!(dialog(&app).focus, RecoverField::Until);
}

#[test]
fn since_before_the_retention_says_what_is_still_there() {
    let mut app = dialog_app();
    let (seq, _) = sent(&app.update(key(KeyCode::Enter)));
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Err(RecoverError {
            error: ApiError::Http {
                status: 422,
                code: "validation".into(),
                message: "since is before the retention of the stream".into(),
                field: Some("since".into()),
            },
            oldest_available: Some(t0() - Duration::minutes(20)),
        }),
    });
    let d = dialog(&app);
    assert_eq!(d.step, RecoverStep::Edit);
    let err = d.error.clone().unwrap();
    assert_eq!(err.field, Some(RecoverField::Since));
    assert_eq!(err.message, "since is before the retention of the stream");
    assert_eq!(err.oldest_available, Some(t0() - Duration::minutes(20)));
    // Other refusals show in the dialog, not at a field.
    let (seq, _) = sent(&app.update(key(KeyCode::Enter)));
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Err(ApiError::Http {
            status: 409,
            code: "conflict".into(),
            message: "the subscription is disabled".into(),
            field: None,
        }
        .into()),
    });
    let err = dialog(&app).error.clone().unwrap();
    assert_eq!(err.field, None);
    assert_eq!(
        err.message,
        "the subscription is disabled (conflict, HTTP 409)"
    );
}

#[test]
fn answers_after_closing_only_flash_the_real_call() {
    let mut app = dialog_app();
    let (seq, _) = sent(&app.update(key(KeyCode::Enter)));
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Ok(RecoverCounts {
            matched: 0,
            ..RecoverCounts::default()
        }),
    });
    // Nothing matched: y does nothing.
    assert!(app.update(ch('y')).is_empty());
    app.update(ch('e'));
    let (seq, _) = sent(&app.update(key(KeyCode::Enter)));
    app.update(key(KeyCode::Esc));
    assert!(app.recover_dialog().is_none());
    app.update(Action::SubscriptionRecovered {
        seq,
        id: sub(1, "", None).id,
        dry_run: true,
        result: Ok(RecoverCounts::default()),
    });
    assert!(app.flash().is_none());
    app.update(Action::SubscriptionRecovered {
        seq: seq + 7,
        id: sub(1, "", None).id,
        dry_run: false,
        result: Ok(RecoverCounts {
            matched: 3,
            queued: 3,
            unavailable: 0,
        }),
    });
    assert_eq!(
        app.flash().unwrap().text,
        "Recovered 00000001: 3 matched · 3 queued · 0 unavailable"
    );
}

#[test]
fn recover_from_the_detail() {
    let mut app = loaded_app();
    app.update(key(KeyCode::Enter));
    app.update(ch('R'));
    assert_eq!(dialog(&app).id, sub(1, "", None).id);
    assert_eq!(
        crate::screens::breadcrumb(&app),
        "Subscriptions › subscription 00000001 › recover 00000001"
    );
}
