//! One subscription: its settings, its health (circuit, failures, last
//! success, throttle, why it is disabled) and success rate, its recent
//! attempts (refreshed every tick), the way to edit, delete, disable or
//! enable it and to open an attempt's webhook.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::TableState;
use ratatui::Frame;

use super::confirm::Ask;
use super::form::FormState;
use super::{select_row, View};
use crate::api::{ApiError, Attempt, Subscription};
use crate::app::{short_id, App, Effect};
use crate::health;
use crate::keymap::Cmd;
use crate::widgets::{
    attempts_table, events_text, fmt_time, kv, message, panel, rate_text, unreachable_lines,
};

/// Attempts fetched per subscription (detail screen and success rates).
pub const RECENT_ATTEMPTS_LIMIT: u32 = 20;
/// Ticks (seconds) between reloads of the subscription in front, whose
/// health changes with every attempt.
pub const DETAIL_EVERY_TICKS: u64 = 2;

/// State of the subscription detail screen.
#[derive(Debug, Clone)]
pub struct DetailState {
    /// Subscription id.
    pub id: String,
    /// Its settings, once known.
    pub sub: Option<Subscription>,
    /// Selected attempt row.
    pub selected: usize,
    /// Last load error.
    pub error: Option<ApiError>,
}

impl App {
    /// Recent attempts of a subscription, if loaded (most recent first).
    pub fn recent_attempts(&self, id: &str) -> Option<&[Attempt]> {
        self.recent.get(id).map(Vec::as_slice)
    }

    pub(crate) fn load_attempts(&mut self, id: &str) -> Option<Effect> {
        if !self.inflight.attempts.insert(id.to_string()) {
            return None;
        }
        Some(Effect::LoadSubscriptionAttempts {
            id: id.to_string(),
            limit: RECENT_ATTEMPTS_LIMIT,
        })
    }

    pub(crate) fn open_detail(&mut self, id: String, sub: Option<Subscription>) -> Vec<Effect> {
        self.stack.push(View::SubscriptionDetail(DetailState {
            id,
            sub,
            selected: 0,
            error: None,
        }));
        self.refresh_front(true)
    }

    /// Reload the attempts of the subscription in front, and its settings
    /// and health every [`DETAIL_EVERY_TICKS`]; `full` reloads both now
    /// (on open, `r`, reconnect).
    pub(crate) fn refresh_detail(&mut self, full: bool) -> Vec<Effect> {
        let Some(View::SubscriptionDetail(d)) = self.stack.last() else {
            return Vec::new();
        };
        let id = d.id.clone();
        let mut fx = Vec::new();
        let due = full || self.ticks % DETAIL_EVERY_TICKS == 0;
        if due && self.inflight.subscriptions.insert(id.clone()) {
            fx.push(Effect::LoadSubscription(id.clone()));
        }
        fx.extend(self.load_attempts(&id));
        fx
    }

    pub(crate) fn on_subscription(
        &mut self,
        id: String,
        result: Result<Subscription, ApiError>,
    ) -> Vec<Effect> {
        self.inflight.subscriptions.remove(&id);
        self.note(&result);
        match result {
            Ok(sub) => self.upsert_subscription(&sub),
            Err(e) => {
                for view in &mut self.stack {
                    if let View::SubscriptionDetail(d) = view {
                        if d.id == id {
                            d.error = Some(e.clone());
                        }
                    }
                }
            }
        }
        Vec::new()
    }

    pub(crate) fn on_subscription_attempts(
        &mut self,
        id: String,
        result: Result<Vec<Attempt>, ApiError>,
    ) -> Vec<Effect> {
        self.inflight.attempts.remove(&id);
        self.note(&result);
        // Keep the selection on the same attempt while new ones push in
        // at the top.
        let previous = self.recent.get(&id);
        let detail = self.stack.iter_mut().rev().find_map(|v| match v {
            View::SubscriptionDetail(d) if d.id == id => Some(d),
            _ => None,
        });
        match result {
            Ok(attempts) => {
                if let Some(d) = detail {
                    let selected_id = previous.and_then(|p| p.get(d.selected)).map(|a| a.id);
                    let pos = selected_id.and_then(|sid| attempts.iter().position(|a| a.id == sid));
                    d.selected = pos.unwrap_or(d.selected.min(attempts.len().saturating_sub(1)));
                    if d.error.as_ref().is_some_and(|e| e.status().is_none()) {
                        d.error = None;
                    }
                }
                self.recent.insert(id, attempts);
            }
            Err(e) => {
                if let Some(d) = detail {
                    d.error = Some(e);
                }
            }
        }
        Vec::new()
    }

    pub(crate) fn detail_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let Some(View::SubscriptionDetail(d)) = self.stack.last_mut() else {
            return Vec::new();
        };
        let len = self.recent.get(&d.id).map_or(0, Vec::len);
        if select_row(&mut d.selected, len, cmd) {
            return Vec::new();
        }
        match cmd {
            Cmd::Open => {
                let webhook = self
                    .recent
                    .get(&d.id)
                    .and_then(|a| a.get(d.selected))
                    .map(|a| a.webhook_id.clone());
                if let Some(w) = webhook {
                    return self.open_webhook(w);
                }
            }
            Cmd::Refresh => return self.refresh_front(true),
            Cmd::Edit => {
                if let Some(sub) = d.sub.clone() {
                    self.stack.push(View::Form(FormState::edit(&sub)));
                }
            }
            Cmd::Delete => {
                if let Some(sub) = d.sub.clone() {
                    self.ask(Ask::Delete, &sub);
                }
            }
            Cmd::ToggleDisabled => {
                if let Some(sub) = d.sub.clone() {
                    self.ask_toggle(&sub);
                }
            }
            Cmd::Recover => {
                if let Some(sub) = d.sub.clone() {
                    self.open_recover(&sub);
                }
            }
            Cmd::ShowFailed => {
                let id = d.id.clone();
                return self.show_failed(Some(id));
            }
            _ => {}
        }
        Vec::new()
    }
}

/// Draw the subscription of `d` into `area`.
pub(crate) fn draw(app: &App, d: &DetailState, frame: &mut Frame, area: Rect) {
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Min(3),
    ])
    .areas(area);
    let attempts = app.recent_attempts(&d.id);
    let mut lines = vec![kv("ID", d.id.clone())];
    match &d.sub {
        Some(s) => {
            lines.push(kv("Target URL", s.target_url.clone()));
            lines.push(kv("Events", events_text(s)));
            lines.push(kv(
                "Secret",
                s.secret.clone().unwrap_or_else(|| "none".into()),
            ));
            lines.push(kv("Created", fmt_time(&s.created_at)));
            lines.push(kv("Updated", fmt_time(&s.updated_at)));
        }
        None => lines.push(kv("", "loading…")),
    }
    if let Some(err) = &d.error {
        lines.push(Line::from(Span::styled(
            format!("  ✖ {}", err.short()),
            Style::new().fg(Color::Red).bold(),
        )));
    }
    message(
        frame,
        top,
        panel(format!(" Subscription {} ", short_id(&d.id))),
        lines,
    );
    let mut health = match &d.sub {
        Some(s) => health::detail_lines(s, app.subs.in_flight_cap, app.now.as_ref()),
        None => vec![kv("", "loading…")],
    };
    health.push(kv("Success rate", rate_text(attempts)));
    message(frame, middle, panel(" Health "), health);
    let block = panel(" Recent attempts · refreshed every second ");
    match attempts {
        None => {
            let text = unreachable_lines(app)
                .unwrap_or_else(|| vec![Line::from(""), Line::from("  Loading attempts…")]);
            message(frame, bottom, block, text);
        }
        Some([]) => message(
            frame,
            bottom,
            block,
            vec![Line::from(""), Line::from("  No delivery attempts yet.")],
        ),
        Some(list) => {
            let mut state = TableState::default().with_selected(Some(d.selected));
            frame.render_stateful_widget(
                attempts_table(list, true, block, bottom),
                bottom,
                &mut state,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Outcome;
    use crate::app::Action;
    use crate::screens::Screen;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn enter_opens_detail_and_esc_goes_back() {
        let mut app = loaded_app();
        app.update(key(KeyCode::Down));
        let fx = app.update(key(KeyCode::Enter));
        let id = sub(2, "", None).id;
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
        assert!(fx.contains(&Effect::LoadSubscription(id.clone())));
        // The list load already prefetched attempts for this one, still in flight.
        app.update(Action::SubscriptionAttemptsLoaded {
            id: id.clone(),
            result: Ok(vec![attempt(9, &id, Outcome::Failure)]),
        });
        // Each tick refreshes the attempts.
        let fx = app.update(Action::Tick { now: t0() });
        assert!(fx.contains(&Effect::LoadSubscriptionAttempts {
            id: id.clone(),
            limit: RECENT_ATTEMPTS_LIMIT
        }));
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(app.screen(), Screen::WebhookDetail);
        assert_eq!(
            fx,
            vec![Effect::LoadWebhookStatus(
                attempt(9, "", Outcome::Failure).webhook_id
            )]
        );
        app.update(key(KeyCode::Esc));
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
        app.update(key(KeyCode::Esc));
        assert_eq!(app.screen(), Screen::Subscriptions);
    }

    #[test]
    fn detail_selection_follows_the_attempt() {
        let mut app = loaded_app();
        let id = sub(1, "", None).id;
        app.update(key(KeyCode::Enter));
        app.update(Action::SubscriptionAttemptsLoaded {
            id: id.clone(),
            result: Ok(vec![
                attempt(2, &id, Outcome::Success),
                attempt(1, &id, Outcome::Success),
            ]),
        });
        app.update(key(KeyCode::Down));
        // A new attempt arrives on top; the selection stays on attempt 1.
        app.update(Action::SubscriptionAttemptsLoaded {
            id: id.clone(),
            result: Ok(vec![
                attempt(3, &id, Outcome::Success),
                attempt(2, &id, Outcome::Success),
                attempt(1, &id, Outcome::Success),
            ]),
        });
        let Some(View::SubscriptionDetail(d)) = app.stack.last() else {
            panic!("not on detail");
        };
        assert_eq!(d.selected, 2);
    }

    #[test]
    fn detail_reloads_its_health_without_piling_up() {
        let mut app = loaded_app();
        let id = sub(1, "", None).id;
        let fx = app.update(key(KeyCode::Enter));
        assert!(fx.contains(&Effect::LoadSubscription(id.clone())));
        let loads = |fx: &[Effect]| {
            fx.iter()
                .filter(|e| **e == Effect::LoadSubscription(id.clone()))
                .count()
        };
        // Not answered yet: the ticks ask for nothing more.
        for _ in 0..DETAIL_EVERY_TICKS * 2 {
            assert_eq!(loads(&app.update(Action::Tick { now: t0() })), 0);
        }
        let mut disabled = sub(1, "", None);
        disabled.state = crate::api::SubscriptionState::Disabled;
        app.update(Action::SubscriptionLoaded {
            id: id.clone(),
            result: Ok(disabled),
        });
        assert_eq!(
            app.badge(&app.subscriptions().items[0]),
            crate::health::Badge::Disabled
        );
        let asked: usize = (0..DETAIL_EVERY_TICKS)
            .map(|_| loads(&app.update(Action::Tick { now: t0() })))
            .sum();
        assert_eq!(asked, 1, "one reload per {DETAIL_EVERY_TICKS} ticks");
    }
}
