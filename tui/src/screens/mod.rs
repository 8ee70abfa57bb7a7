//! One module per screen: its state, what its commands do and how it is
//! drawn. The top-level screens are [`Tab`]s; the others are [`View`]s
//! stacked on top of a tab (Esc pops them).
//!
//! This module routes the commands of the key table, the periodic
//! refreshes and the drawing to the screen in front. A new screen is a
//! file here (state, an `impl App` block with its command handler, a
//! `draw` function, its tests), a [`Screen`] variant (and a [`View`] or
//! [`Tab`] one) with its arms in the matches below, and its block in the
//! key table (`keymap/table.rs`).

use ratatui::crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::Frame;

use crate::api::{Subscription, SubscriptionState};
use crate::app::{short_id, App, Effect};
use crate::keymap::{Cmd, Where};
use detail::DetailState;
use form::FormState;
use webhook::WebhookView;

pub mod confirm;
pub mod detail;
pub mod failed;
pub mod form;
pub mod list;
pub mod live;
pub mod overview;
pub mod recover;
pub mod webhook;

/// The top-level screens reachable with Tab and the number keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Rates, queue and what needs attention (key 1, the start screen).
    Overview,
    /// Subscription list (key 2).
    Subscriptions,
    /// Live delivery tail (key 3).
    Live,
    /// Failed webhooks across subscriptions (key 4).
    Failed,
}

impl Tab {
    /// Every tab, in the order of the tab bar.
    pub const ALL: [Tab; 4] = [Tab::Overview, Tab::Subscriptions, Tab::Live, Tab::Failed];

    fn position(self) -> usize {
        Tab::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }

    /// The tab after this one (wrapping).
    pub fn next(self) -> Tab {
        Tab::ALL[(self.position() + 1) % Tab::ALL.len()]
    }

    /// The tab before this one (wrapping).
    pub fn prev(self) -> Tab {
        Tab::ALL[(self.position() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }

    /// Name in the breadcrumb.
    pub fn crumb(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Subscriptions => "Subscriptions",
            Tab::Live => "Live deliveries",
            Tab::Failed => "Failed webhooks",
        }
    }

    /// Name in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Subscriptions => "Subscriptions",
            Tab::Live => "Live",
            Tab::Failed => "Failed",
        }
    }
}

/// Which screen is in front, for headers, footers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Rates, queue and what needs attention.
    Overview,
    /// Subscription list.
    Subscriptions,
    /// Live tail.
    Live,
    /// Failed webhooks.
    Failed,
    /// New / edit subscription form.
    Form,
    /// One subscription and its attempts.
    SubscriptionDetail,
    /// One webhook's status and attempt timeline.
    WebhookDetail,
}

/// Screens stacked on top of a [`Tab`]; Esc pops them.
#[derive(Debug, Clone)]
pub enum View {
    /// New / edit form.
    Form(FormState),
    /// Subscription detail.
    SubscriptionDetail(DetailState),
    /// Webhook detail.
    WebhookDetail(WebhookView),
}

impl View {
    /// This view's part of the breadcrumb.
    fn crumb(&self) -> String {
        match self {
            View::Form(f) => match &f.editing {
                Some(s) => format!("edit {}", short_id(&s.id)),
                None => "new subscription".to_string(),
            },
            View::SubscriptionDetail(d) => format!("subscription {}", short_id(&d.id)),
            View::WebhookDetail(w) => format!("webhook {}", short_id(&w.id)),
        }
    }
}

/// Rows one page move skips.
const PAGE_ROWS: usize = 10;

/// Move a row selection among `len` rows as `cmd` says; false when `cmd`
/// is not a move.
pub(crate) fn select_row(selected: &mut usize, len: usize, cmd: Cmd) -> bool {
    let last = len.saturating_sub(1);
    *selected = match cmd {
        Cmd::Up => selected.saturating_sub(1),
        Cmd::Down => (*selected + 1).min(last),
        Cmd::PageUp => selected.saturating_sub(PAGE_ROWS),
        Cmd::PageDown => (*selected + PAGE_ROWS).min(last),
        Cmd::Top => 0,
        Cmd::Bottom => last,
        _ => return false,
    };
    true
}

impl App {
    /// The screen in front.
    pub fn screen(&self) -> Screen {
        match self.stack.last() {
            Some(View::Form(_)) => Screen::Form,
            Some(View::SubscriptionDetail(_)) => Screen::SubscriptionDetail,
            Some(View::WebhookDetail(_)) => Screen::WebhookDetail,
            None => match self.tab {
                Tab::Overview => Screen::Overview,
                Tab::Subscriptions => Screen::Subscriptions,
                Tab::Live => Screen::Live,
                Tab::Failed => Screen::Failed,
            },
        }
    }

    /// Refresh the screen in front. `full` also reloads what rarely
    /// changes (on open, `r`, reconnect).
    pub(crate) fn refresh_front(&mut self, full: bool) -> Vec<Effect> {
        match self.screen() {
            Screen::SubscriptionDetail => self.refresh_detail(full),
            Screen::WebhookDetail => self.refresh_webhook(full),
            Screen::Failed => self.refresh_failed(full),
            Screen::Overview | Screen::Subscriptions | Screen::Live | Screen::Form => Vec::new(),
        }
    }

    /// Carry out `cmd` (which `key` means) on `screen`, the one in front.
    pub(crate) fn screen_command(
        &mut self,
        screen: Screen,
        cmd: Cmd,
        key: KeyEvent,
    ) -> Vec<Effect> {
        match screen {
            Screen::Overview => self.overview_command(cmd),
            Screen::Subscriptions => self.list_command(cmd),
            Screen::Live => self.live_command(cmd),
            Screen::Form => self.form_command(cmd, key),
            Screen::SubscriptionDetail => self.detail_command(cmd),
            Screen::WebhookDetail => self.webhook_command(cmd),
            Screen::Failed => self.failed_command(cmd),
        }
    }
}

/// Footer words of `place` that show the screen's state instead of the
/// key table's words for `cmd`.
pub(crate) fn footer_words(app: &App, place: Where, cmd: Cmd) -> Option<String> {
    match (place, cmd) {
        (Where::Screen(Screen::Live), _) => live::footer_words(app, cmd),
        (Where::Screen(Screen::Failed), _) => failed::footer_words(app, cmd),
        // x enables what is disabled.
        (Where::Screen(screen), Cmd::ToggleDisabled) => app
            .toggle_target(screen)
            .filter(|s| s.state == SubscriptionState::Disabled)
            .map(|_| "enable".to_string()),
        _ => None,
    }
}

impl App {
    /// The subscription `x` would disable or enable on `screen`.
    fn toggle_target(&self, screen: Screen) -> Option<&Subscription> {
        match (screen, self.stack.last()) {
            (Screen::Overview, _) => self.selected_attention(),
            (Screen::Subscriptions, _) => self.selected_subscription(),
            (Screen::SubscriptionDetail, Some(View::SubscriptionDetail(d))) => d.sub.as_ref(),
            _ => None,
        }
    }
}

/// Draw the screen in front into `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    match app.stack.last() {
        Some(View::Form(f)) => form::draw(f, frame, area),
        Some(View::SubscriptionDetail(d)) => detail::draw(app, d, frame, area),
        Some(View::WebhookDetail(w)) => webhook::draw(app, w, frame, area),
        None => match app.tab {
            Tab::Overview => overview::draw(app, frame, area),
            Tab::Subscriptions => list::draw(app, frame, area),
            Tab::Live => live::draw(app, frame, area),
            Tab::Failed => failed::draw(app, frame, area),
        },
    }
}

/// Where the user is: the tab, the stacked views, the help overlay.
pub(crate) fn breadcrumb(app: &App) -> String {
    let mut parts = vec![app.tab.crumb().to_string()];
    parts.extend(app.stack.iter().map(View::crumb));
    if let Some(d) = &app.recover {
        parts.push(format!("recover {}", short_id(&d.id)));
    }
    if app.show_help {
        parts.push("help".to_string());
    }
    parts.join(" › ")
}
