//! One webhook: its status, next retry and attempt timeline, polled until
//! it can no longer change.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::TableState;
use ratatui::Frame;

use super::{select_row, View};
use crate::api::{ApiError, WebhookStatus};
use crate::app::{short_id, App, Effect};
use crate::keymap::Cmd;
use crate::widgets::{
    attempts_table, fmt_relative, fmt_time, kv, message, opt, panel, unreachable_lines,
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
        Constraint::Length(10),
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
        let mut state = TableState::default().with_selected(Some(w.selected));
        frame.render_stateful_widget(
            attempts_table(&status.attempts, false, block, middle),
            middle,
            &mut state,
        );
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
        Some(a) => format!(" Attempt {} ", a.attempt_number),
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
}
