//! One webhook: its status, next retry, redeliveries and attempt
//! timeline (a separator before the first attempt of each redelivery),
//! polled until it can no longer change; `r` redelivers it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::TableState;
use ratatui::Frame;

use super::{select_row, View};
use ratatui::widgets::{Cell, Row};

use crate::api::{ApiError, Attempt, WebhookStatus};
use crate::app::{short_id, App, Effect};
use crate::keymap::Cmd;
use crate::widgets::{
    attempt_error_width, attempt_row, attempt_rows_table, fmt_relative, fmt_time, kv, message, opt,
    panel, unreachable_lines, ACCENT,
};

/// State of the webhook detail screen.
#[derive(Debug, Clone)]
pub struct WebhookView {
    /// Webhook id.
    pub id: String,
    /// Status, once loaded.
    pub status: Option<WebhookStatus>,
    /// Selected row of the timeline.
    pub selected: usize,
    /// Last load error.
    pub error: Option<ApiError>,
}

impl App {
    pub(crate) fn load_webhook(&mut self, id: &str) -> Option<Effect> {
        if !self.inflight.webhooks.insert(id.to_string()) {
            return None;
        }
        Some(Effect::LoadWebhookStatus(id.to_string()))
    }

    pub(crate) fn open_webhook(&mut self, id: String) -> Vec<Effect> {
        self.stack.push(View::WebhookDetail(WebhookView {
            id,
            status: None,
            selected: 0,
            error: None,
        }));
        self.refresh_front(true)
    }

    /// Reload the webhook in front unless it is final; `full` reloads it
    /// anyway (on open, `r`, reconnect).
    pub(crate) fn refresh_webhook(&mut self, full: bool) -> Vec<Effect> {
        let Some(View::WebhookDetail(w)) = self.stack.last() else {
            return Vec::new();
        };
        let done = w.status.as_ref().is_some_and(WebhookStatus::is_final);
        let id = w.id.clone();
        if full || !done {
            return self.load_webhook(&id).into_iter().collect();
        }
        Vec::new()
    }

    pub(crate) fn on_webhook(
        &mut self,
        id: String,
        result: Result<WebhookStatus, ApiError>,
    ) -> Vec<Effect> {
        self.inflight.webhooks.remove(&id);
        self.note(&result);
        for view in &mut self.stack {
            if let View::WebhookDetail(w) = view {
                if w.id == id {
                    match &result {
                        Ok(status) => {
                            w.selected = w.selected.min(status.attempts.len().saturating_sub(1));
                            w.status = Some(status.clone());
                            w.error = None;
                        }
                        Err(e) => w.error = Some(e.clone()),
                    }
                }
            }
        }
        Vec::new()
    }

    pub(crate) fn webhook_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let Some(View::WebhookDetail(w)) = self.stack.last_mut() else {
            return Vec::new();
        };
        let len = w.status.as_ref().map_or(0, |s| s.attempts.len());
        if select_row(&mut w.selected, len, cmd) {
            return Vec::new();
        }
        match cmd {
            Cmd::Refresh => return self.refresh_front(true),
            Cmd::Redeliver => {
                let id = w.id.clone();
                let sub = w.status.as_ref().map(|s| s.subscription_id.clone());
                self.ask_redeliver(&id, sub.as_deref().unwrap_or("?"));
            }
            Cmd::OpenSubscription => {
                if let Some(status) = &w.status {
                    let id = status.subscription_id.clone();
                    let sub = self.subs.items.iter().find(|s| s.id == id).cloned();
                    return self.open_detail(id, sub);
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// A row of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineRow {
    /// The attempt at this index of the status's attempts.
    Attempt(usize),
    /// The line before the first attempt of redelivery n.
    Redelivery(u32),
    /// Redelivery n is queued and has no attempt yet.
    Queued(u32),
}

/// The timeline of `status`: its attempts, oldest first, with a separator
/// before the first attempt of each redelivery, and a last line for a
/// redelivery that has no attempt yet.
pub fn timeline(status: &WebhookStatus) -> Vec<TimelineRow> {
    let mut rows = Vec::with_capacity(status.attempts.len() + 2);
    let mut current = 0;
    for (i, a) in status.attempts.iter().enumerate() {
        if a.redelivery != current {
            current = a.redelivery;
            rows.push(TimelineRow::Redelivery(current));
        }
        rows.push(TimelineRow::Attempt(i));
    }
    if status.redeliveries > current {
        rows.push(TimelineRow::Queued(status.redeliveries));
    }
    rows
}

fn separator(text: String) -> Row<'static> {
    Row::new([Cell::from(text)]).style(Style::new().fg(ACCENT).bold())
}

/// The timeline table's rows, and the row of the `selected` attempt.
fn timeline_rows(
    status: &WebhookStatus,
    selected: usize,
    error_width: u16,
) -> (Vec<Row<'static>>, usize) {
    let mut at = 0;
    let rows = timeline(status)
        .into_iter()
        .enumerate()
        .map(|(row, r)| match r {
            TimelineRow::Attempt(i) => {
                if i == selected {
                    at = row;
                }
                attempt_row(&status.attempts[i], false, error_width)
            }
            TimelineRow::Redelivery(n) => separator(format!("── redelivery {n} ──")),
            TimelineRow::Queued(n) => Row::new([
                Cell::from(format!("── redelivery {n} ──")),
                Cell::from(""),
                Cell::from("queued, no attempt yet"),
            ])
            .style(Style::new().fg(ACCENT).bold()),
        })
        .collect();
    (rows, at)
}

fn redeliveries_text(status: &WebhookStatus) -> String {
    match (status.redeliveries, &status.redelivered_at) {
        (0, _) => "0".to_string(),
        (n, Some(t)) => format!("{n} · last {}", fmt_time(t)),
        (n, None) => n.to_string(),
    }
}

fn attempt_title(a: &Attempt) -> String {
    match a.redelivery {
        0 => format!(" Attempt {} ", a.attempt_number),
        n => format!(" Attempt {} · redelivery {n} ", a.attempt_number),
    }
}

fn status_style(status: &str) -> Style {
    match status {
        "succeeded" => Style::new().fg(Color::Green).bold(),
        "failed" => Style::new().fg(Color::Red).bold(),
        "retrying" => Style::new().fg(Color::Yellow).bold(),
        _ => Style::new().bold(),
    }
}

/// Draw the webhook of `w` into `area`.
pub(crate) fn draw(app: &App, w: &WebhookView, frame: &mut Frame, area: Rect) {
    let title = format!(" Webhook {} ", short_id(&w.id));
    let Some(status) = &w.status else {
        let lines = match (&w.error, unreachable_lines(app)) {
            (_, Some(lines)) => lines,
            (Some(err), None) => vec![
                Line::from(""),
                Line::from(Span::styled(
                    format!("  ✖ {}", err.short()),
                    Style::new().fg(Color::Red).bold(),
                )),
            ],
            (None, None) => vec![Line::from(""), Line::from("  Loading status…")],
        };
        message(frame, area, panel(title), lines);
        return;
    };
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(11),
        Constraint::Min(4),
        Constraint::Length(6),
    ])
    .areas(area);

    let sub_text = match app
        .subs
        .items
        .iter()
        .find(|s| s.id == status.subscription_id)
    {
        Some(s) => format!("{}  {}", short_id(&s.id), s.target_url),
        None => status.subscription_id.clone(),
    };
    let next_retry = match (&status.next_retry_at, &app.now) {
        (Some(t), Some(now)) => format!("{} ({})", fmt_time(t), fmt_relative(now, t)),
        (Some(t), None) => fmt_time(t),
        (None, _) => "-".to_string(),
    };
    let lines = vec![
        kv("Webhook", status.webhook_id.clone()),
        kv("Subscription", sub_text),
        kv("Event type", opt(&status.event_type)),
        kv("Received", fmt_time(&status.received_at)),
        Line::from(vec![
            Span::styled(format!("  {:<14}", "Status"), Style::new().fg(Color::Gray)),
            Span::styled(status.status.clone(), status_style(&status.status)),
            Span::raw(format!("  after {} attempt(s)", status.attempt_count)),
        ]),
        kv("Next retry", next_retry),
        kv("Redeliveries", redeliveries_text(status)),
        Line::from(vec![
            Span::styled(
                format!("  {:<14}", "Last error"),
                Style::new().fg(Color::Gray),
            ),
            Span::styled(opt(&status.last_error), Style::new().fg(Color::Red)),
        ]),
        match &w.error {
            Some(e) => Line::from(Span::styled(
                format!("  ✖ refresh failed: {}", e.short()),
                Style::new().fg(Color::Red),
            )),
            None => Line::from(""),
        },
    ];
    message(frame, top, panel(title), lines);

    let block = panel(" Timeline (oldest first) ");
    if status.attempts.is_empty() {
        message(frame, middle, block, vec![Line::from("  No attempts yet.")]);
    } else {
        let error_width = attempt_error_width(middle, false);
        let (rows, at) = timeline_rows(status, w.selected, error_width);
        let mut state = TableState::default().with_selected(Some(at));
        frame.render_stateful_widget(attempt_rows_table(rows, false, block), middle, &mut state);
    }

    let selected = status.attempts.get(w.selected);
    let lines = match selected {
        None => vec![Line::from("  -")],
        Some(a) => vec![
            kv("Target", a.target_url.clone()),
            kv("Error", opt(&a.error)),
            kv(
                "Response",
                a.response_body
                    .as_deref()
                    .map_or_else(|| "-".to_string(), |b| b.replace(['\n', '\r'], " ")),
            ),
        ],
    };
    let title = match selected {
        Some(a) => attempt_title(a),
        None => " Attempt ".to_string(),
    };
    message(frame, bottom, panel(title), lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Outcome;
    use crate::app::Action;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn webhook_polling_stops_when_final() {
        let mut app = loaded_app();
        app.update(ch('3'));
        app.update(Action::AttemptsPolled {
            after: None,
            result: Ok(page(1..=1)),
        });
        app.update(key(KeyCode::Up));
        app.update(key(KeyCode::Enter));
        let wid = attempt(1, "", Outcome::Success).webhook_id;
        let status = WebhookStatus {
            webhook_id: wid.clone(),
            subscription_id: "s".into(),
            event_type: None,
            received_at: t0(),
            status: "retrying".into(),
            attempt_count: 1,
            next_retry_at: Some(t0()),
            last_error: None,
            attempts: vec![],
            redeliveries: 0,
            redelivered_at: None,
        };
        app.update(Action::WebhookStatusLoaded {
            id: wid.clone(),
            result: Ok(status.clone()),
        });
        let fx = app.update(Action::Tick { now: t0() });
        assert!(fx.contains(&Effect::LoadWebhookStatus(wid.clone())));
        let mut done = status;
        done.status = "succeeded".into();
        app.update(Action::WebhookStatusLoaded {
            id: wid.clone(),
            result: Ok(done),
        });
        let fx = app.update(Action::Tick { now: t0() });
        assert!(!fx.contains(&Effect::LoadWebhookStatus(wid)));
    }

    fn with_redeliveries(redeliveries: u32, of: &[u32]) -> WebhookStatus {
        let attempts = of
            .iter()
            .enumerate()
            .map(|(i, &r)| Attempt {
                redelivery: r,
                ..attempt(i as i64 + 1, "s", Outcome::Failure)
            })
            .collect();
        WebhookStatus {
            webhook_id: "w".into(),
            subscription_id: "s".into(),
            event_type: None,
            received_at: t0(),
            status: "failed".into(),
            attempt_count: of.len() as u32,
            next_retry_at: None,
            last_error: None,
            attempts,
            redeliveries,
            redelivered_at: None,
        }
    }

    #[test]
    fn the_timeline_marks_each_redelivery() {
        use TimelineRow::*;
        assert_eq!(
            timeline(&with_redeliveries(0, &[0, 0])),
            [Attempt(0), Attempt(1)]
        );
        assert_eq!(
            timeline(&with_redeliveries(2, &[0, 0, 1, 2, 2])),
            [
                Attempt(0),
                Attempt(1),
                Redelivery(1),
                Attempt(2),
                Redelivery(2),
                Attempt(3),
                Attempt(4)
            ]
        );
        // Queued, no attempt yet; and older attempts already pruned.
        assert_eq!(
            timeline(&with_redeliveries(3, &[2])),
            [Redelivery(2), Attempt(0), Queued(3)]
        );
        assert_eq!(timeline(&with_redeliveries(1, &[])), [Queued(1)]);
    }

    #[test]
    fn r_redelivers_the_webhook_in_front_and_polls_it_again() {
        let mut app = loaded_app();
        app.update(ch('3'));
        app.update(Action::AttemptsPolled {
            after: None,
            result: Ok(page(1..=1)),
        });
        app.update(key(KeyCode::Up));
        app.update(key(KeyCode::Enter));
        let wid = attempt(1, "", Outcome::Success).webhook_id;
        let mut status = with_redeliveries(0, &[0]);
        status.webhook_id = wid.clone();
        app.update(Action::WebhookStatusLoaded {
            id: wid.clone(),
            result: Ok(status),
        });
        assert!(!app
            .update(Action::Tick { now: t0() })
            .contains(&Effect::LoadWebhookStatus(wid.clone())));
        app.update(ch('r'));
        assert_eq!(app.update(ch('y')), vec![Effect::Redeliver(wid.clone())]);
        let fx = app.update(Action::WebhookRedelivered {
            id: wid.clone(),
            result: Ok(crate::api::Redelivery {
                webhook_id: wid.clone(),
                status: "pending".into(),
                redelivery: 1,
            }),
        });
        assert_eq!(fx, vec![Effect::LoadWebhookStatus(wid)]);
        assert_eq!(
            app.flash().unwrap().text,
            "Redelivery 1 queued for webhook 00000000"
        );
    }
}
