//! The Failed screen (tab 4): the webhooks whose delivery gave up, across
//! subscriptions or of one (`f` cycles, `Esc` shows all again, `f` on a
//! subscription opens it filtered), newest first, with their last error.
//! Pages are read by following the list's `Link: rel="next"` as the
//! selection reaches the end; `r` redelivers the selected webhook.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::{select_row, Screen, Tab};
use crate::api::{ApiError, WebhookPage, WebhookSummary};
use crate::app::{short_id, App, Effect};
use crate::keymap::Cmd;
use crate::widgets::{fill_width, fit, fmt_time, kv, message, opt, panel, unreachable_lines};

/// Webhooks asked for per page.
pub const FAILED_PAGE_SIZE: u32 = 100;
/// The most one request may ask for (the server's `limit` bound is
/// 500): a reload asks for as many as are loaded, up to this.
pub const FAILED_MAX_LIMIT: u32 = 500;
/// Ticks (seconds) between reloads while the screen is in front.
pub const FAILED_EVERY_TICKS: u64 = 5;

/// State of the Failed screen.
#[derive(Debug, Clone, Default)]
pub struct FailedList {
    /// Failed webhooks, newest first: the pages read so far.
    pub items: Vec<WebhookSummary>,
    /// The `rel="next"` link of the last page read, if more follow.
    pub next: Option<String>,
    /// True once a load for the current filter succeeded.
    pub loaded: bool,
    /// A request is in flight.
    pub loading: bool,
    /// Number of the latest request; answers to older ones are dropped.
    pub seq: u64,
    /// Error of the last request, if it failed.
    pub error: Option<ApiError>,
    /// Selected row.
    pub selected: usize,
    /// Only this subscription's webhooks.
    pub subscription: Option<String>,
}

impl App {
    /// Failed screen state.
    pub fn failed(&self) -> &FailedList {
        &self.failed
    }

    /// The selected failed webhook.
    pub fn selected_failed(&self) -> Option<&WebhookSummary> {
        self.failed.items.get(self.failed.selected)
    }

    /// (Re)load the first page for the current filter, as many rows as
    /// are loaded now (so a reload keeps what was paged in). Supersedes a
    /// request in flight.
    fn load_failed(&mut self) -> Effect {
        let loaded = u32::try_from(self.failed.items.len()).unwrap_or(u32::MAX);
        let pages = loaded.div_ceil(FAILED_PAGE_SIZE).max(1);
        let limit = pages.saturating_mul(FAILED_PAGE_SIZE).min(FAILED_MAX_LIMIT);
        self.failed.seq += 1;
        self.failed.loading = true;
        Effect::LoadFailed {
            seq: self.failed.seq,
            subscription_id: self.failed.subscription.clone(),
            limit,
        }
    }

    /// The next page, when there is one and nothing is in flight.
    fn load_more_failed(&mut self) -> Option<Effect> {
        if self.failed.loading {
            return None;
        }
        let next = self.failed.next.clone()?;
        self.failed.seq += 1;
        self.failed.loading = true;
        Some(Effect::LoadFailedMore {
            seq: self.failed.seq,
            next,
        })
    }

    /// Reload the list in front every [`FAILED_EVERY_TICKS`]; `full`
    /// reloads now (on open, Ctrl-L, reconnect).
    pub(crate) fn refresh_failed(&mut self, full: bool) -> Vec<Effect> {
        let due = !self.failed.loading && self.ticks % FAILED_EVERY_TICKS == 0;
        if full || due {
            return vec![self.load_failed()];
        }
        Vec::new()
    }

    /// The Failed screen, of `subscription` only when given.
    pub(crate) fn show_failed(&mut self, subscription: Option<String>) -> Vec<Effect> {
        self.set_failed_filter(subscription);
        self.switch_tab(Tab::Failed)
    }

    /// Change the subscription filter; what was loaded is for another one.
    fn set_failed_filter(&mut self, subscription: Option<String>) {
        if self.failed.subscription == subscription {
            return;
        }
        self.failed = FailedList {
            subscription,
            seq: self.failed.seq,
            ..FailedList::default()
        };
    }

    /// The next filter of `f`: all, then each subscription in list order.
    fn next_failed_filter(&self) -> Option<String> {
        let ids: Vec<&String> = self.subs.items.iter().map(|s| &s.id).collect();
        match &self.failed.subscription {
            None => ids.first().map(|id| id.to_string()),
            Some(current) => match ids.iter().position(|id| *id == current) {
                Some(pos) => ids.get(pos + 1).map(|id| id.to_string()),
                None => ids.first().map(|id| id.to_string()),
            },
        }
    }

    /// Drop a webhook that is no longer failed (it was redelivered).
    pub(crate) fn forget_failed(&mut self, id: &str) {
        let selected = self.selected_failed().map(|w| w.id.clone());
        self.failed.items.retain(|w| w.id != id);
        self.reselect_failed(selected.as_deref());
    }

    fn reselect_failed(&mut self, id: Option<&str>) {
        let items = &self.failed.items;
        let pos = id.and_then(|id| items.iter().position(|w| w.id == id));
        let last = items.len().saturating_sub(1);
        self.failed.selected = pos.unwrap_or(self.failed.selected.min(last));
    }

    pub(crate) fn on_failed(
        &mut self,
        seq: u64,
        more: bool,
        result: Result<WebhookPage, ApiError>,
    ) -> Vec<Effect> {
        if seq != self.failed.seq {
            // Superseded: a reload or another filter asked since.
            return Vec::new();
        }
        self.failed.loading = false;
        self.note(&result);
        match result {
            Ok(page) => {
                let selected = self.selected_failed().map(|w| w.id.clone());
                if more {
                    let new: Vec<WebhookSummary> = page
                        .items
                        .into_iter()
                        .filter(|w| self.failed.items.iter().all(|have| have.id != w.id))
                        .collect();
                    self.failed.items.extend(new);
                } else {
                    self.failed.items = page.items;
                }
                self.failed.next = page.next;
                self.failed.loaded = true;
                self.failed.error = None;
                self.reselect_failed(selected.as_deref());
            }
            Err(e) => {
                if self.failed.loaded && !e.is_unreachable() {
                    self.set_flash(format!("Loading failed webhooks: {}", e.short()), true);
                }
                self.failed.error = Some(e);
            }
        }
        Vec::new()
    }

    pub(crate) fn failed_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let len = self.failed.items.len();
        if select_row(&mut self.failed.selected, len, cmd) {
            // At the last row: read the next page.
            if len > 0 && self.failed.selected + 1 == len {
                return self.load_more_failed().into_iter().collect();
            }
            return Vec::new();
        }
        match cmd {
            Cmd::Refresh => return self.refresh_failed(true),
            Cmd::CycleFilter => {
                let next = self.next_failed_filter();
                self.set_failed_filter(next);
                return self.refresh_failed(true);
            }
            Cmd::ClearFilter if self.failed.subscription.is_some() => {
                self.set_failed_filter(None);
                return self.refresh_failed(true);
            }
            Cmd::Open => {
                if let Some(w) = self.selected_failed() {
                    let id = w.id.clone();
                    return self.open_webhook(id);
                }
            }
            Cmd::Redeliver => {
                if let Some(w) = self.selected_failed() {
                    let (id, sub) = (w.id.clone(), w.subscription_id.clone());
                    self.ask_redeliver(&id, &sub);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// `short-id  url` of a subscription, or its id when not in the list.
    fn subscription_label(&self, id: &str) -> String {
        match self.subs.items.iter().find(|s| s.id == id) {
            Some(s) => format!("{}  {}", short_id(id), s.target_url),
            None => id.to_string(),
        }
    }
}

/// The words of the `f` hint: the filter in force.
pub(crate) fn footer_words(app: &App, cmd: Cmd) -> Option<String> {
    match cmd {
        Cmd::CycleFilter => Some(match &app.failed.subscription {
            Some(id) => format!("sub: {}", short_id(id)),
            None => "sub: all".to_string(),
        }),
        _ => None,
    }
}

/// A reminder, in the status line, that only one subscription is shown.
pub(crate) fn filter_note(app: &App) -> Option<Line<'static>> {
    let id = app.failed.subscription.as_ref()?;
    (app.screen() == Screen::Failed).then(|| {
        Line::from(Span::styled(
            format!(
                " only subscription {} (f: next, Esc: all)",
                app.subscription_label(id)
            ),
            Style::new().fg(Color::Gray),
        ))
    })
}

/// Draw the list into `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let list = &app.failed;
    let of = match &list.subscription {
        Some(id) => format!(" of {}", short_id(id)),
        None => String::new(),
    };
    let count = match (&list.next, list.loading && list.loaded) {
        (_, true) => format!("{}, loading…", list.items.len()),
        (Some(_), false) => format!("{}+, more below", list.items.len()),
        (None, false) => list.items.len().to_string(),
    };
    let title = if list.loaded {
        format!(" Failed webhooks{of} ({count}) · newest first ")
    } else {
        format!(" Failed webhooks{of} ")
    };
    let block = panel(title);
    if !list.loaded {
        let lines = if let Some(lines) = unreachable_lines(app) {
            lines
        } else if let Some(err) = &list.error {
            vec![
                Line::from(""),
                Line::from(Span::styled(
                    format!("  Could not load failed webhooks: {}", err.short()),
                    Style::new().fg(Color::Red),
                )),
                Line::from("  Retrying; press Ctrl-L to retry now."),
            ]
        } else {
            vec![Line::from(""), Line::from("  Loading failed webhooks…")]
        };
        message(frame, area, block, lines);
        return;
    }
    if list.items.is_empty() {
        let lines = match &list.subscription {
            None => vec![
                Line::from(""),
                Line::from(
                    "  No failed webhooks: every webhook was delivered, filtered or is still being retried.",
                ),
            ],
            Some(id) => vec![
                Line::from(""),
                Line::from(format!(
                    "  No failed webhooks for subscription {}.",
                    app.subscription_label(id)
                )),
                Line::from("  f shows the next subscription's, Esc those of all."),
            ],
        };
        message(frame, area, block, lines);
        return;
    }
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(6)]).areas(area);
    // RECEIVED, WEBHOOK, SUB, EVENT, TRIES, CODE, then the error fills.
    const FIXED: [u16; 6] = [19, 8, 8, 16, 5, 4];
    let error_width = fill_width(table_area, &FIXED);
    let header = Row::new([
        "RECEIVED",
        "WEBHOOK",
        "SUB",
        "EVENT",
        "TRIES",
        "CODE",
        "LAST ERROR",
    ])
    .style(Style::new().bold().fg(Color::Gray));
    let rows = list.items.iter().map(|w| {
        Row::new(vec![
            Cell::from(fmt_time(&w.received_at)),
            Cell::from(short_id(&w.id).to_string()),
            Cell::from(short_id(&w.subscription_id).to_string()),
            Cell::from(fit(w.event_type.as_deref().unwrap_or("-"), FIXED[3])),
            Cell::from(w.attempt_count.to_string()),
            Cell::from(opt(&w.last_status_code)),
            Cell::from(fit(w.last_error.as_deref().unwrap_or("-"), error_width))
                .style(Style::new().fg(Color::Red)),
        ])
    });
    let mut widths: Vec<Constraint> = FIXED.iter().map(|&w| Constraint::Length(w)).collect();
    widths.push(Constraint::Fill(1));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(list.selected));
    frame.render_stateful_widget(table, table_area, &mut state);

    let Some(w) = app.selected_failed() else {
        return;
    };
    let last = match &w.last_attempt_at {
        Some(t) => format!(
            "{} · {} attempt(s) · status {}",
            fmt_time(t),
            w.attempt_count,
            opt(&w.last_status_code)
        ),
        None => format!("{} attempt(s)", w.attempt_count),
    };
    let lines = vec![
        kv("Subscription", app.subscription_label(&w.subscription_id)),
        kv("Last attempt", last),
        Line::from(vec![
            Span::styled(
                format!("  {:<14}", "Last error"),
                Style::new().fg(Color::Gray),
            ),
            Span::styled(opt(&w.last_error), Style::new().fg(Color::Red)),
        ]),
    ];
    message(
        frame,
        detail_area,
        panel(format!(" Webhook {} ", w.id)),
        lines,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Action;
    use crate::screens::confirm::Ask;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    /// The app on the Failed screen, its first load answered with `page`.
    fn on_failed(page: WebhookPage) -> App {
        let mut app = loaded_app();
        app.update(ch('4'));
        let seq = app.failed().seq;
        app.update(Action::FailedLoaded {
            seq,
            more: false,
            result: Ok(page),
        });
        app
    }

    fn load_of(fx: &[Effect]) -> Option<(u64, Option<String>, u32)> {
        fx.iter().find_map(|e| match e {
            Effect::LoadFailed {
                seq,
                subscription_id,
                limit,
            } => Some((*seq, subscription_id.clone(), *limit)),
            _ => None,
        })
    }

    #[test]
    fn opening_loads_and_the_end_of_the_list_reads_the_next_page() {
        let mut app = loaded_app();
        let fx = app.update(ch('4'));
        assert_eq!(app.screen(), Screen::Failed);
        assert_eq!(load_of(&fx), Some((1, None, FAILED_PAGE_SIZE)));
        app.update(Action::FailedLoaded {
            seq: 1,
            more: false,
            result: Ok(failed_page(
                1..=3,
                Some("http://127.0.0.1:8000/webhooks?cursor=c"),
            )),
        });
        assert_eq!(app.failed().items.len(), 3);
        assert!(app.update(key(KeyCode::Down)).is_empty());
        let fx = app.update(key(KeyCode::Down));
        assert_eq!(
            fx,
            vec![Effect::LoadFailedMore {
                seq: 2,
                next: "http://127.0.0.1:8000/webhooks?cursor=c".into()
            }]
        );
        // Not twice while in flight.
        assert!(app.update(key(KeyCode::End)).is_empty());
        app.update(Action::FailedLoaded {
            seq: 2,
            more: true,
            result: Ok(failed_page(3..=5, None)),
        });
        let ids: Vec<String> = app.failed().items.iter().map(|w| w.id.clone()).collect();
        assert_eq!(ids.len(), 5, "the page is appended, the repeat dropped");
        assert_eq!(app.failed().next, None);
        assert_eq!(app.selected_failed().map(|w| &w.id), Some(&ids[2]));
        // A reload asks for as many as are loaded.
        let fx = app.update(Action::Key(ratatui::crossterm::event::KeyEvent::new(
            KeyCode::Char('l'),
            ratatui::crossterm::event::KeyModifiers::CONTROL,
        )));
        assert_eq!(load_of(&fx), Some((3, None, FAILED_PAGE_SIZE)));
    }

    #[test]
    fn the_list_reloads_itself_and_drops_superseded_answers() {
        let mut app = on_failed(failed_page(1..=2, None));
        let loads = |app: &mut App| {
            (0..FAILED_EVERY_TICKS)
                .flat_map(|_| app.update(Action::Tick { now: t0() }))
                .filter_map(|e| match e {
                    Effect::LoadFailed { seq, .. } => Some(seq),
                    _ => None,
                })
                .collect::<Vec<u64>>()
        };
        let seqs = loads(&mut app);
        assert_eq!(seqs.len(), 1, "one reload per {FAILED_EVERY_TICKS} ticks");
        // Unanswered: no more reloads pile up.
        assert!(loads(&mut app).is_empty());
        // f changes the filter: a new request; the old answer is dropped.
        let fx = app.update(ch('f'));
        let sub1 = sub(1, "", None).id;
        let (seq, filter, _) = load_of(&fx).unwrap();
        assert_eq!(filter.as_deref(), Some(sub1.as_str()));
        app.update(Action::FailedLoaded {
            seq: seqs[0],
            more: false,
            result: Ok(failed_page(1..=9, None)),
        });
        assert!(!app.failed().loaded);
        assert!(app.failed().items.is_empty());
        app.update(Action::FailedLoaded {
            seq,
            more: false,
            result: Ok(failed_page(1..=1, None)),
        });
        assert_eq!(app.failed().items.len(), 1);
        // f again: the second subscription, then all again; Esc: all.
        let fx = app.update(ch('f'));
        assert_eq!(load_of(&fx).unwrap().1, Some(sub(2, "", None).id));
        let fx = app.update(ch('f'));
        assert_eq!(load_of(&fx).unwrap().1, None);
        app.update(ch('f'));
        let fx = app.update(key(KeyCode::Esc));
        assert_eq!(load_of(&fx).unwrap().1, None);
        assert_eq!(app.failed().subscription, None);
        assert_eq!(app.screen(), Screen::Failed);
    }

    #[test]
    fn f_on_a_subscription_opens_its_failed_webhooks() {
        let mut app = loaded_app();
        app.update(key(KeyCode::Down));
        let fx = app.update(ch('f'));
        assert_eq!(app.screen(), Screen::Failed);
        assert_eq!(load_of(&fx).unwrap().1, Some(sub(2, "", None).id));
        // From the detail too.
        app.update(ch('2'));
        app.update(key(KeyCode::Up));
        app.update(key(KeyCode::Enter));
        let fx = app.update(ch('f'));
        assert_eq!(app.screen(), Screen::Failed);
        assert_eq!(load_of(&fx).unwrap().1, Some(sub(1, "", None).id));
    }

    #[test]
    fn r_asks_then_redelivers_and_the_webhook_leaves_the_list() {
        let mut app = on_failed(failed_page(1..=2, None));
        let id = failed_webhook(1, "").id;
        app.update(ch('r'));
        let confirm = app.confirmation().unwrap();
        assert_eq!((confirm.ask, &confirm.id), (Ask::Redeliver, &id));
        assert_eq!(confirm.target_url, "https://a.example/hook");
        assert!(app.update(ch('n')).is_empty());
        assert!(app.confirmation().is_none());
        app.update(ch('r'));
        assert_eq!(app.update(ch('y')), vec![Effect::Redeliver(id.clone())]);
        app.update(Action::WebhookRedelivered {
            id: id.clone(),
            result: Ok(crate::api::Redelivery {
                webhook_id: id.clone(),
                status: "pending".into(),
                redelivery: 1,
            }),
        });
        let flash = app.flash().unwrap();
        assert!(!flash.is_error);
        assert_eq!(flash.text, "Redelivery 1 queued for webhook 00000001");
        assert_eq!(app.failed().items.len(), 1);
        // A refusal shows the server's words.
        app.update(ch('r'));
        app.update(ch('y'));
        app.update(Action::WebhookRedelivered {
            id: failed_webhook(2, "").id,
            result: Err(ApiError::Http {
                status: 410,
                code: "gone".into(),
                message: "the payload is no longer in the stream".into(),
                field: None,
            }),
        });
        let flash = app.flash().unwrap();
        assert!(flash.is_error);
        assert!(flash
            .text
            .contains("the payload is no longer in the stream (gone, HTTP 410)"));
        assert_eq!(app.failed().items.len(), 1);
    }

    #[test]
    fn enter_opens_the_webhook_and_esc_comes_back() {
        let mut app = on_failed(failed_page(1..=2, None));
        app.update(key(KeyCode::Down));
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(app.screen(), Screen::WebhookDetail);
        assert_eq!(
            fx,
            vec![Effect::LoadWebhookStatus(failed_webhook(2, "").id)]
        );
        app.update(key(KeyCode::Esc));
        assert_eq!(app.screen(), Screen::Failed);
    }
}
