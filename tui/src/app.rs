//! Application state and the single place it changes: [`App::update`].
//!
//! `App` does no I/O. Key presses, clock ticks and API results arrive as
//! [`Action`]s; `update` changes the state and returns the [`Effect`]s the
//! runtime should carry out (HTTP calls), whose results come back as further
//! actions. This keeps every behaviour testable by feeding actions in and
//! looking at the state (or its rendering) afterwards.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::{KeyEvent, KeyEventKind};

pub use crate::action::{Action, Effect};
use crate::api::{ApiError, Attempt, Outcome};
use crate::keymap::{self, Cmd, Where};
use crate::metrics::{Sample, Throughput};
use crate::screens::confirm::Confirm;
use crate::screens::failed::FailedList;
use crate::screens::list::SubscriptionList;
use crate::screens::live::LiveState;
use crate::screens::overview::OverviewState;
use crate::screens::recover::RecoverDialog;
use crate::screens::{Screen, Tab, View};

/// Ticks (seconds) between health checks while the server is reachable.
pub const HEALTH_EVERY_TICKS: u64 = 2;
/// Ticks (seconds) between `/metrics` scrapes.
pub const METRICS_EVERY_TICKS: u64 = 2;
/// Ticks a flash message stays in the footer.
pub const FLASH_TICKS: u8 = 5;

/// Whether the server answers, as far as the last requests tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    /// The last request got an answer.
    Reachable,
    /// The last request got none; the text says why.
    Unreachable(String),
}

/// A short message in the footer that fades after a few ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// What to say.
    pub text: String,
    /// Shown in red when true.
    pub is_error: bool,
    ticks_left: u8,
}

/// In-flight requests, so that slow answers do not pile up polls.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight {
    pub(crate) health: bool,
    pub(crate) metrics: bool,
    pub(crate) live: bool,
    pub(crate) live_catchups: u8,
    pub(crate) attempts: HashSet<String>,
    pub(crate) subscriptions: HashSet<String>,
    pub(crate) webhooks: HashSet<String>,
}

/// The whole UI state. Render it with [`crate::ui::render`]; change it only
/// with [`App::update`].
#[derive(Debug, Clone)]
pub struct App {
    pub(crate) server: String,
    pub(crate) now: Option<DateTime<Utc>>,
    pub(crate) ticks: u64,
    pub(crate) connection: Connection,
    pub(crate) throughput: Throughput,
    pub(crate) tab: Tab,
    pub(crate) stack: Vec<View>,
    pub(crate) show_help: bool,
    pub(crate) confirm: Option<Confirm>,
    pub(crate) flash: Option<Flash>,
    pub(crate) subs: SubscriptionList,
    pub(crate) overview: OverviewState,
    /// Recent attempts per subscription id, most recent first.
    pub(crate) recent: HashMap<String, Vec<Attempt>>,
    pub(crate) live: LiveState,
    pub(crate) failed: FailedList,
    pub(crate) recover: Option<RecoverDialog>,
    pub(crate) recover_seq: u64,
    pub(crate) inflight: InFlight,
    should_quit: bool,
}

/// Strip credentials from a URL before it is shown on screen.
pub fn display_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        let (auth, path) = rest.split_at(auth_end);
        if let Some((_, host)) = auth.rsplit_once('@') {
            return format!("{scheme}://{host}{path}");
        }
    }
    trimmed.to_string()
}

/// Last 8 characters of an id, as shown in tables.
pub fn short_id(id: &str) -> &str {
    // webhookd's ids are UUIDv7: the first characters are a timestamp shared
    // by ids made in the same second; the last ones are random.
    let start = id.char_indices().rev().nth(7).map(|(i, _)| i).unwrap_or(0);
    &id[start..]
}

/// Share of successful attempts in `attempts` as (percent, count), `None`
/// when there are none.
pub fn success_rate(attempts: &[Attempt]) -> Option<(f64, usize)> {
    if attempts.is_empty() {
        return None;
    }
    let ok = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Success)
        .count();
    Some((ok as f64 * 100.0 / attempts.len() as f64, attempts.len()))
}

impl App {
    /// A fresh app for the server at `server_url` (shown in the header,
    /// credentials stripped).
    pub fn new(server_url: &str) -> App {
        App {
            server: display_url(server_url),
            now: None,
            ticks: 0,
            connection: Connection::Connecting,
            throughput: Throughput::default(),
            tab: Tab::Overview,
            stack: Vec::new(),
            show_help: false,
            confirm: None,
            flash: None,
            subs: SubscriptionList::default(),
            overview: OverviewState::default(),
            recent: HashMap::new(),
            live: LiveState::default(),
            failed: FailedList::default(),
            recover: None,
            recover_seq: 0,
            inflight: InFlight::default(),
            should_quit: false,
        }
    }

    /// True once the user asked to quit.
    pub fn should_quit(&self) -> bool {
        self.should_quit
    }

    /// Whether the key help overlay is open.
    pub fn help_visible(&self) -> bool {
        self.show_help
    }

    /// Connection state as the header shows it.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Current flash message.
    pub fn flash(&self) -> Option<&Flash> {
        self.flash.as_ref()
    }

    /// Apply one action; return the effects the runtime must run.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Init => self.init(),
            Action::Tick { now } => self.tick(now),
            Action::Key(key) => self.on_key(key),
            Action::Health(result) => self.on_health(result),
            Action::SubscriptionsLoaded(result) => self.on_subscriptions(result),
            Action::SubscriptionLoaded { id, result } => self.on_subscription(id, result),
            Action::SubscriptionAttemptsLoaded { id, result } => {
                self.on_subscription_attempts(id, result)
            }
            Action::SubscriptionCreated(result) => self.on_created(result),
            Action::SubscriptionUpdated { id, result } => self.on_updated(id, result),
            Action::SubscriptionDeleted { id, result } => self.on_deleted(id, result),
            Action::SubscriptionStateSet { state, result, .. } => self.on_state_set(state, result),
            Action::WebhookStatusLoaded { id, result } => self.on_webhook(id, result),
            Action::AttemptsPolled { after, result } => self.on_attempts(after, result),
            Action::FailedLoaded { seq, more, result } => self.on_failed(seq, more, result),
            Action::WebhookRedelivered { id, result } => self.on_redelivered(id, result),
            Action::SubscriptionRecovered {
                seq,
                id,
                dry_run,
                result,
            } => self.on_recovered(seq, id, dry_run, result),
            Action::MetricsScraped { at, result } => self.on_metrics(at, result),
        }
    }

    // ----- time and connection -------------------------------------------

    fn init(&mut self) -> Vec<Effect> {
        let mut fx = vec![self.check_health()];
        fx.push(self.load_subscriptions());
        self.inflight.metrics = true;
        fx.push(Effect::ScrapeMetrics);
        fx.extend(self.poll_live());
        fx
    }

    fn tick(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        self.now = Some(now);
        self.ticks += 1;
        self.inflight.live_catchups = 0;
        if let Some(flash) = &mut self.flash {
            flash.ticks_left = flash.ticks_left.saturating_sub(1);
            if flash.ticks_left == 0 {
                self.flash = None;
            }
        }
        let mut fx = Vec::new();
        let reachable = self.connection == Connection::Reachable;
        if !self.inflight.health && (!reachable || self.ticks % HEALTH_EVERY_TICKS == 0) {
            fx.push(self.check_health());
        }
        if matches!(self.connection, Connection::Unreachable(_)) {
            // Only the health check runs while the server is away; its
            // success reloads everything.
            return fx;
        }
        if !self.inflight.metrics && self.ticks % METRICS_EVERY_TICKS == 0 {
            self.inflight.metrics = true;
            fx.push(Effect::ScrapeMetrics);
        }
        fx.extend(self.reload_list_when_due());
        fx.extend(self.poll_live());
        fx.extend(self.refresh_front(false));
        fx
    }

    pub(crate) fn check_health(&mut self) -> Effect {
        self.inflight.health = true;
        Effect::CheckHealth
    }

    /// Record what a result says about reachability.
    pub(crate) fn note<T>(&mut self, result: &Result<T, ApiError>) {
        match result {
            Err(ApiError::Unreachable(why)) => {
                self.connection = Connection::Unreachable(why.clone());
                // Old rates would look live; start measuring afresh later.
                self.throughput.reset();
            }
            Ok(_) | Err(ApiError::Http { .. }) => self.connection = Connection::Reachable,
            Err(_) => {}
        }
    }

    fn on_health(&mut self, result: Result<(), ApiError>) -> Vec<Effect> {
        self.inflight.health = false;
        let was_down = matches!(self.connection, Connection::Unreachable(_));
        self.note(&result);
        if was_down && self.connection == Connection::Reachable {
            // Back online: reload what is stale.
            self.set_flash("Connection restored", false);
            let mut fx = Vec::new();
            if !self.subs.loading {
                fx.push(self.load_subscriptions());
            }
            fx.extend(self.poll_live());
            fx.extend(self.refresh_front(true));
            return fx;
        }
        Vec::new()
    }

    fn on_metrics(&mut self, at: DateTime<Utc>, result: Result<String, ApiError>) -> Vec<Effect> {
        self.inflight.metrics = false;
        self.note(&result);
        match result {
            Ok(text) => self.throughput.observe(Sample::parse(at, &text)),
            Err(ApiError::Http { .. }) | Err(ApiError::Decode(_)) => self.throughput.unavailable(),
            Err(_) => {}
        }
        Vec::new()
    }

    pub(crate) fn set_flash(&mut self, text: impl Into<String>, is_error: bool) {
        self.flash = Some(Flash {
            text: text.into(),
            is_error,
            ticks_left: FLASH_TICKS,
        });
    }

    // ----- keys --------------------------------------------------------------

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        // Ctrl-C quits from anywhere, forms and dialogs included.
        if keymap::command(Where::Everywhere, &key) == Some(Cmd::ForceQuit) {
            self.should_quit = true;
            return Vec::new();
        }
        for place in self.key_places() {
            if let Some(cmd) = keymap::command(place, &key) {
                return self.run(place, cmd, key);
            }
        }
        Vec::new()
    }

    /// Where keys are looked up, first match wins: an overlay, a dialog
    /// or a form takes every key; otherwise the filter line (while it has focus),
    /// the screen, then the keys that work everywhere. The first place is
    /// also the one the footer describes.
    pub fn key_places(&self) -> Vec<Where> {
        if self.show_help {
            return vec![Where::HelpOverlay];
        }
        if let Some(confirm) = &self.confirm {
            return vec![Where::Dialog(confirm.ask)];
        }
        if let Some(recover) = &self.recover {
            return vec![Where::Recover(recover.stage())];
        }
        let screen = self.screen();
        if screen == Screen::Form {
            return vec![Where::Screen(screen)];
        }
        let mut places = Vec::with_capacity(3);
        if screen == Screen::Subscriptions && self.subs.filter_editing {
            places.push(Where::FilterLine);
        }
        places.push(Where::Screen(screen));
        places.push(Where::Everywhere);
        places
    }

    /// Carry out `cmd`, which `key` means in `place`.
    fn run(&mut self, place: Where, cmd: Cmd, key: KeyEvent) -> Vec<Effect> {
        match place {
            Where::Everywhere => self.global_command(cmd),
            Where::HelpOverlay => {
                match cmd {
                    Cmd::Quit => self.should_quit = true,
                    Cmd::CloseHelp => self.show_help = false,
                    _ => {}
                }
                Vec::new()
            }
            Where::Dialog(_) => self.confirm_command(cmd),
            Where::Recover(_) => self.recover_command(cmd, key),
            Where::FilterLine => {
                self.filter_command(cmd, key);
                Vec::new()
            }
            Where::Screen(screen) => self.screen_command(screen, cmd, key),
        }
    }

    fn global_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        match cmd {
            Cmd::Quit | Cmd::ForceQuit => self.should_quit = true,
            Cmd::Help => self.show_help = true,
            Cmd::Show(tab) => return self.switch_tab(tab),
            Cmd::NextTab => return self.switch_tab(self.tab.next()),
            Cmd::PrevTab => return self.switch_tab(self.tab.prev()),
            Cmd::Back => {
                self.stack.pop();
            }
            _ => {}
        }
        Vec::new()
    }

    /// Show `tab` (closing the views on top) and load what it shows.
    pub(crate) fn switch_tab(&mut self, tab: Tab) -> Vec<Effect> {
        self.stack.clear();
        self.tab = tab;
        self.subs.filter_editing = false;
        self.refresh_front(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screens::form::parse_events;
    use crate::screens::live::LIVE_POLL_LIMIT;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn init_requests_everything_once() {
        let mut app = App::new("http://127.0.0.1:8000");
        let fx = app.update(Action::Init);
        assert_eq!(
            fx,
            vec![
                Effect::CheckHealth,
                Effect::LoadSubscriptions,
                Effect::ScrapeMetrics,
                Effect::PollAttempts {
                    after: None,
                    limit: LIVE_POLL_LIMIT
                },
            ]
        );
        // Nothing answered yet: a tick must not pile up the same requests.
        let fx = app.update(Action::Tick { now: t0() });
        assert!(fx.is_empty(), "{fx:?}");
    }

    #[test]
    fn unreachable_is_reported_and_only_health_is_retried() {
        let mut app = App::new("http://x");
        app.update(Action::Init);
        app.update(Action::Health(Err(ApiError::Unreachable(
            "Connection refused".into(),
        ))));
        app.update(Action::SubscriptionsLoaded(Err(ApiError::Unreachable(
            "Connection refused".into(),
        ))));
        app.update(Action::AttemptsPolled {
            after: None,
            result: Err(ApiError::Unreachable("Connection refused".into())),
        });
        assert!(matches!(app.connection(), Connection::Unreachable(_)));
        let fx = app.update(Action::Tick { now: t0() });
        assert_eq!(fx, vec![Effect::CheckHealth]);
        // Back online: everything reloads.
        let fx = app.update(Action::Health(Ok(())));
        assert!(fx.contains(&Effect::LoadSubscriptions));
        assert!(fx.contains(&Effect::PollAttempts {
            after: None,
            limit: LIVE_POLL_LIMIT
        }));
        assert_eq!(app.connection(), &Connection::Reachable);
    }

    #[test]
    fn navigation_and_quit() {
        let mut app = App::new("http://x");
        assert_eq!(app.screen(), Screen::Overview, "the start screen");
        app.update(key(KeyCode::Tab));
        assert_eq!(app.screen(), Screen::Subscriptions);
        app.update(key(KeyCode::Tab));
        assert_eq!(app.screen(), Screen::Live);
        let fx = app.update(key(KeyCode::Tab));
        assert_eq!(app.screen(), Screen::Failed);
        assert!(
            matches!(fx.as_slice(), [Effect::LoadFailed { .. }]),
            "the Failed screen loads when shown: {fx:?}"
        );
        app.update(key(KeyCode::Tab));
        assert_eq!(app.screen(), Screen::Overview);
        app.update(key(KeyCode::BackTab));
        assert_eq!(app.screen(), Screen::Failed);
        app.update(ch('1'));
        assert_eq!(app.screen(), Screen::Overview);
        app.update(ch('2'));
        assert_eq!(app.screen(), Screen::Subscriptions);
        app.update(ch('3'));
        assert_eq!(app.screen(), Screen::Live);
        app.update(ch('4'));
        assert_eq!(app.screen(), Screen::Failed);
        app.update(ch('?'));
        assert!(app.help_visible());
        app.update(key(KeyCode::Esc));
        assert!(!app.help_visible());
        app.update(ch('5'));
        assert!(app.help_visible());
        app.update(ch('5'));
        assert!(!app.help_visible());
        app.update(ch('5'));
        app.update(ch('q'));
        assert!(app.should_quit());
    }

    #[test]
    fn metrics_rates_and_absence() {
        let mut app = loaded_app();
        let text = |a: u32, d: u32| {
            format!(
                "webhookd_webhooks_accepted_total {a}\nwebhookd_deliveries_total{{outcome=\"success\"}} {d}\n"
            )
        };
        app.update(Action::MetricsScraped {
            at: t0(),
            result: Ok(text(0, 0)),
        });
        app.update(Action::MetricsScraped {
            at: t0() + chrono::Duration::seconds(2),
            result: Ok(text(4, 10)),
        });
        assert_eq!(app.throughput.label(), "in 2.0/s · out 5.0/s");
        app.update(Action::MetricsScraped {
            at: t0(),
            result: Err(ApiError::Http {
                status: 404,
                code: "not_found".into(),
                message: "no".into(),
                field: None,
            }),
        });
        assert_eq!(app.throughput.label(), "rates n/a");
    }

    #[test]
    fn helpers() {
        assert_eq!(short_id("0193a4c2-0000-7000-8000-00000a1b2c3d"), "0a1b2c3d");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(display_url("http://user:pw@host:1/x/"), "http://host:1/x");
        assert_eq!(
            display_url("http://127.0.0.1:8000"),
            "http://127.0.0.1:8000"
        );
        assert_eq!(display_url("http://h/a@b"), "http://h/a@b");
        assert_eq!(parse_events(" , "), None);
        assert_eq!(
            parse_events("a,b"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }
}
