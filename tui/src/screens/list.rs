//! The subscription list (tab 2): all subscriptions with their health at a
//! glance (state, consecutive failures, last success) and recent success
//! rate, a substring filter, and the way into everything else.

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::confirm::Ask;
use super::form::FormState;
use super::{select_row, Screen, View};
use crate::api::{ApiError, Subscription};
use crate::app::{short_id, App, Effect};
use crate::health::{failures_cell, last_ok_cell, state_cell, Badge};
use crate::keymap::Cmd;
use crate::widgets::{
    events_text, fill_width, fit, message, panel, rate_text, unreachable_lines, ACCENT,
};

/// Subscriptions whose recent attempts are fetched after a list load, so the
/// success-rate column fills in without opening each one.
pub const RATE_PREFETCH_MAX: usize = 50;
/// Ticks (seconds) between reloads of the subscription list while it (or
/// the overview) is on screen: new subscriptions, health and success rates
/// show up by themselves.
pub const LIST_EVERY_TICKS: u64 = 5;

/// State of the subscription list screen.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionList {
    /// All subscriptions, in creation order.
    pub items: Vec<Subscription>,
    /// True once one load succeeded.
    pub loaded: bool,
    /// A load is in flight.
    pub loading: bool,
    /// Error of the last load, if it failed.
    pub error: Option<ApiError>,
    /// Selected row among the visible (filtered) rows.
    pub selected: usize,
    /// Substring filter on id, URL and events.
    pub filter: String,
    /// The filter line has keyboard focus.
    pub filter_editing: bool,
    /// The largest `max_in_flight` seen in any subscription's health: the
    /// cap of a healthy endpoint (a closed circuit below it is throttled).
    pub in_flight_cap: u32,
}

/// True when `sub` matches the list filter (case-insensitive substring of
/// id, URL or events; subscriptions to all events match "all").
pub fn matches_filter(sub: &Subscription, filter: &str) -> bool {
    let filter = filter.trim().to_lowercase();
    if filter.is_empty() {
        return true;
    }
    let events = match &sub.events {
        Some(e) => e.join(","),
        None => "all".to_string(),
    };
    sub.id.to_lowercase().contains(&filter)
        || sub.target_url.to_lowercase().contains(&filter)
        || events.to_lowercase().contains(&filter)
}

impl App {
    /// Subscription list state.
    pub fn subscriptions(&self) -> &SubscriptionList {
        &self.subs
    }

    /// Subscriptions passing the filter, in list order.
    pub fn visible_subscriptions(&self) -> Vec<&Subscription> {
        self.subs
            .items
            .iter()
            .filter(|s| matches_filter(s, &self.subs.filter))
            .collect()
    }

    /// The selected row of the subscription list.
    pub fn selected_subscription(&self) -> Option<&Subscription> {
        self.visible_subscriptions()
            .get(self.subs.selected)
            .copied()
    }

    pub(crate) fn load_subscriptions(&mut self) -> Effect {
        self.subs.loading = true;
        Effect::LoadSubscriptions
    }

    /// Reload the list on a tick: every other tick until one load worked,
    /// then every [`LIST_EVERY_TICKS`] while it is on screen.
    pub(crate) fn reload_list_when_due(&mut self) -> Option<Effect> {
        let stale = !self.subs.loaded && self.ticks % 2 == 0;
        let on_screen = self.subs.loaded
            && matches!(self.screen(), Screen::Subscriptions | Screen::Overview)
            && self.ticks % LIST_EVERY_TICKS == 0;
        (!self.subs.loading && (stale || on_screen)).then(|| self.load_subscriptions())
    }

    pub(crate) fn on_subscriptions(
        &mut self,
        result: Result<Vec<Subscription>, ApiError>,
    ) -> Vec<Effect> {
        self.subs.loading = false;
        self.note(&result);
        match result {
            Ok(items) => {
                let selected_id = self.selected_subscription().map(|s| s.id.clone());
                for sub in &items {
                    self.note_cap(sub);
                }
                self.subs.items = items;
                self.subs.loaded = true;
                self.subs.error = None;
                self.reselect(selected_id.as_deref());
                let ids: Vec<String> = self
                    .subs
                    .items
                    .iter()
                    .take(RATE_PREFETCH_MAX)
                    .map(|s| s.id.clone())
                    .collect();
                self.recent
                    .retain(|id, _| self.subs.items.iter().any(|s| &s.id == id));
                ids.iter().filter_map(|id| self.load_attempts(id)).collect()
            }
            Err(e) => {
                if self.subs.loaded && !e.is_unreachable() {
                    self.set_flash(format!("Refresh failed: {}", e.short()), true);
                }
                self.subs.error = Some(e);
                Vec::new()
            }
        }
    }

    /// Put the selection back on `id` after the list changed.
    pub(crate) fn reselect(&mut self, id: Option<&str>) {
        let visible = self.visible_subscriptions();
        let pos = id.and_then(|id| visible.iter().position(|s| s.id == id));
        let len = visible.len();
        self.subs.selected = pos.unwrap_or(self.subs.selected.min(len.saturating_sub(1)));
    }

    fn note_cap(&mut self, sub: &Subscription) {
        if let Some(h) = &sub.health {
            self.subs.in_flight_cap = self.subs.in_flight_cap.max(h.max_in_flight);
        }
    }

    /// The health badge of `sub`.
    pub fn badge(&self, sub: &Subscription) -> Badge {
        Badge::of(sub, self.subs.in_flight_cap)
    }

    pub(crate) fn upsert_subscription(&mut self, sub: &Subscription) {
        self.note_cap(sub);
        match self.subs.items.iter_mut().find(|s| s.id == sub.id) {
            Some(existing) => *existing = sub.clone(),
            None => self.subs.items.push(sub.clone()),
        }
        for view in &mut self.stack {
            if let View::SubscriptionDetail(d) = view {
                if d.id == sub.id {
                    d.sub = Some(sub.clone());
                    d.error = None;
                }
            }
        }
    }

    fn clear_filter(&mut self) {
        self.subs.filter_editing = false;
        self.subs.filter.clear();
        self.subs.selected = 0;
    }

    /// A command of the filter line (which has the keyboard).
    pub(crate) fn filter_command(&mut self, cmd: Cmd, key: KeyEvent) {
        match cmd {
            Cmd::FilterDone => self.subs.filter_editing = false,
            Cmd::ClearFilter => self.clear_filter(),
            Cmd::Erase => {
                self.subs.filter.pop();
                self.subs.selected = 0;
            }
            Cmd::Type => {
                if let KeyCode::Char(c) = key.code {
                    self.subs.filter.push(c);
                    self.subs.selected = 0;
                }
            }
            _ => {}
        }
    }

    pub(crate) fn list_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let len = self.visible_subscriptions().len();
        if select_row(&mut self.subs.selected, len, cmd) {
            return Vec::new();
        }
        match cmd {
            Cmd::Filter => self.subs.filter_editing = true,
            Cmd::ClearFilter => self.clear_filter(),
            Cmd::Refresh if !self.subs.loading => {
                return vec![self.load_subscriptions()];
            }
            Cmd::New => self.stack.push(View::Form(FormState::create())),
            Cmd::Edit => {
                if let Some(sub) = self.selected_subscription().cloned() {
                    self.stack.push(View::Form(FormState::edit(&sub)));
                }
            }
            Cmd::Delete => {
                if let Some(sub) = self.selected_subscription().cloned() {
                    self.ask(Ask::Delete, &sub);
                }
            }
            Cmd::ToggleDisabled => {
                if let Some(sub) = self.selected_subscription().cloned() {
                    self.ask_toggle(&sub);
                }
            }
            Cmd::Recover => {
                if let Some(sub) = self.selected_subscription().cloned() {
                    self.open_recover(&sub);
                }
            }
            Cmd::ShowFailed => {
                if let Some(id) = self.selected_subscription().map(|s| s.id.clone()) {
                    return self.show_failed(Some(id));
                }
            }
            Cmd::Open => {
                if let Some(sub) = self.selected_subscription().cloned() {
                    return self.open_detail(sub.id.clone(), Some(sub));
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// Draw the list into `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let visible = app.visible_subscriptions();
    let total = app.subs.items.len();
    let title = if !app.subs.loaded {
        " Subscriptions ".to_string()
    } else if app.subs.filter.is_empty() {
        format!(" Subscriptions ({total}) ")
    } else {
        format!(
            " Subscriptions ({}/{total} matching \"{}\") ",
            visible.len(),
            app.subs.filter
        )
    };
    let block = panel(title);
    if !app.subs.loaded {
        let lines = if let Some(lines) = unreachable_lines(app) {
            lines
        } else if let Some(err) = &app.subs.error {
            vec![
                Line::from(""),
                Line::from(Span::styled(
                    format!("  Could not load subscriptions: {}", err.short()),
                    Style::new().fg(Color::Red),
                )),
                Line::from("  Retrying; press r to retry now."),
            ]
        } else {
            vec![Line::from(""), Line::from("  Loading subscriptions…")]
        };
        message(frame, area, block, lines);
        return;
    }
    if visible.is_empty() {
        let text = if total == 0 {
            "  No subscriptions yet. Press n to create one.".to_string()
        } else {
            format!(
                "  No subscription matches \"{}\". Esc clears the filter.",
                app.subs.filter
            )
        };
        message(frame, area, block, vec![Line::from(""), Line::from(text)]);
        return;
    }
    let header = Row::new([
        "ID",
        "STATE",
        "TARGET URL",
        "EVENTS",
        "FAILS",
        "LAST OK",
        "SUCCESS",
    ])
    .style(Style::new().bold().fg(Color::Gray));
    // ID, STATE, then the URL fills; EVENTS, FAILS, LAST OK, SUCCESS.
    const FIXED: [u16; 6] = [8, 11, 16, 5, 10, 10];
    let url_width = fill_width(area, &FIXED);
    let rows = visible.iter().map(|s| {
        Row::new(vec![
            Cell::from(short_id(&s.id).to_string()).style(Style::new().fg(ACCENT)),
            state_cell(app.badge(s)),
            Cell::from(fit(&s.target_url, url_width)),
            Cell::from(fit(&events_text(s), FIXED[2])),
            failures_cell(s),
            last_ok_cell(s, app.now.as_ref()),
            Cell::from(rate_text(app.recent_attempts(&s.id))),
        ])
    });
    let mut widths = vec![Constraint::Length(FIXED[0]), Constraint::Length(FIXED[1])];
    widths.push(Constraint::Fill(1));
    widths.extend(FIXED[2..].iter().map(|&w| Constraint::Length(w)));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(app.subs.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The filter line while it has the keyboard.
pub(crate) fn filter_input(app: &App) -> Option<Line<'static>> {
    (app.screen() == Screen::Subscriptions && app.subs.filter_editing).then(|| {
        Line::from(vec![
            Span::styled(" / ", Style::new().fg(Color::Black).bg(ACCENT).bold()),
            Span::raw(format!(" {}", app.subs.filter)),
            Span::styled("▏", Style::new().fg(ACCENT)),
        ])
    })
}

/// A reminder that a filter hides rows.
pub(crate) fn filter_note(app: &App) -> Option<Line<'static>> {
    (app.screen() == Screen::Subscriptions && !app.subs.filter.is_empty()).then(|| {
        Line::from(Span::styled(
            format!(" filter: \"{}\" (Esc clears)", app.subs.filter),
            Style::new().fg(Color::Gray),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Outcome;
    use crate::app::{success_rate, Action, Connection};
    use crate::screens::detail::RECENT_ATTEMPTS_LIMIT;
    use crate::testkit::*;

    #[test]
    fn the_list_on_screen_reloads_itself() {
        let mut app = App::new("http://x");
        app.update(Action::Init);
        let s = sub(1, "https://a.example/hook", None);
        app.update(Action::SubscriptionsLoaded(Ok(vec![s])));
        let reloads = |app: &mut App| {
            let n = (0..LIST_EVERY_TICKS)
                .flat_map(|_| app.update(Action::Tick { now: t0() }))
                .filter(|e| *e == Effect::LoadSubscriptions)
                .count();
            app.update(Action::SubscriptionsLoaded(Ok(vec![])));
            n
        };
        // The overview (the start screen) shows the list's problems.
        assert_eq!(app.screen(), Screen::Overview);
        assert_eq!(
            reloads(&mut app),
            1,
            "one reload per {LIST_EVERY_TICKS} ticks"
        );
        app.update(key(KeyCode::Char('2')));
        assert_eq!(reloads(&mut app), 1);
        // Not while the live tail is on screen.
        app.update(key(KeyCode::Char('3')));
        assert_eq!(reloads(&mut app), 0);
    }

    #[test]
    fn list_load_prefetches_success_rates() {
        let mut app = App::new("http://x");
        app.update(Action::Init);
        let s = sub(1, "https://a.example/hook", None);
        let fx = app.update(Action::SubscriptionsLoaded(Ok(vec![s.clone()])));
        assert_eq!(
            fx,
            vec![Effect::LoadSubscriptionAttempts {
                id: s.id.clone(),
                limit: RECENT_ATTEMPTS_LIMIT
            }]
        );
        app.update(Action::SubscriptionAttemptsLoaded {
            id: s.id.clone(),
            result: Ok(vec![
                attempt(2, &s.id, Outcome::Success),
                attempt(1, &s.id, Outcome::FailedAttempt),
            ]),
        });
        let rate = success_rate(app.recent_attempts(&s.id).unwrap());
        assert_eq!(rate, Some((50.0, 2)));
        assert_eq!(app.connection(), &Connection::Reachable);
    }

    #[test]
    fn filter_narrows_the_list() {
        let mut app = loaded_app();
        app.update(ch('/'));
        typed(&mut app, "order");
        assert_eq!(app.visible_subscriptions().len(), 1);
        app.update(key(KeyCode::Enter));
        assert!(!app.subscriptions().filter_editing);
        // Null events match "all".
        app.update(ch('/'));
        for _ in 0..5 {
            app.update(key(KeyCode::Backspace));
        }
        typed(&mut app, "ALL");
        assert_eq!(app.visible_subscriptions().len(), 1);
        assert_eq!(
            app.selected_subscription().map(|s| s.target_url.as_str()),
            Some("https://b.example/hook")
        );
        app.update(key(KeyCode::Esc));
        assert_eq!(app.visible_subscriptions().len(), 2);
    }
}
