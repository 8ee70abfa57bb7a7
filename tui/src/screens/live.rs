//! The live tail (tab 3): every delivery attempt as it happens, polled
//! with a cursor, capped, pausable (new attempts are buffered) and
//! filtered by outcome.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, HighlightSpacing, Row, Table, TableState};
use ratatui::Frame;

use crate::api::{ApiError, Attempt, AttemptsPage, Outcome};
use crate::app::{short_id, App, Effect};
use crate::keymap::Cmd;
use crate::widgets::{fill_width, fit, message, opt, outcome_style, panel, unreachable_lines};

/// How many attempts the live tail keeps (and buffers while paused).
pub const LIVE_CAPACITY: usize = 500;
/// Page size of one live-tail poll.
pub const LIVE_POLL_LIMIT: u32 = 200;
/// Extra live-tail polls allowed per tick when pages come back full, so a
/// backlog is caught up quickly without turning into a busy loop.
pub const LIVE_CATCHUP_PER_TICK: u8 = 4;

/// Which outcomes the live tail shows; `f` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutcomeFilter {
    /// Everything.
    #[default]
    All,
    /// Only this outcome.
    Only(Outcome),
}

impl OutcomeFilter {
    /// The next filter in the cycle all → success → failed_attempt → failure.
    pub fn next(self) -> OutcomeFilter {
        match self {
            OutcomeFilter::All => OutcomeFilter::Only(Outcome::Success),
            OutcomeFilter::Only(Outcome::Success) => OutcomeFilter::Only(Outcome::FailedAttempt),
            OutcomeFilter::Only(Outcome::FailedAttempt) => OutcomeFilter::Only(Outcome::Failure),
            OutcomeFilter::Only(_) => OutcomeFilter::All,
        }
    }

    /// Whether `outcome` passes.
    pub fn matches(self, outcome: Outcome) -> bool {
        match self {
            OutcomeFilter::All => true,
            OutcomeFilter::Only(o) => o == outcome,
        }
    }

    /// Text for the footer.
    pub fn label(self) -> &'static str {
        match self {
            OutcomeFilter::All => "all",
            OutcomeFilter::Only(o) => o.as_str(),
        }
    }
}

/// State of the live tail.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Shown attempts, oldest first, at most [`LIVE_CAPACITY`].
    pub ring: VecDeque<Attempt>,
    /// Attempts that arrived while paused, appended on resume.
    pub buffered: VecDeque<Attempt>,
    /// Largest attempt id seen: the `after` of the next poll.
    pub cursor: Option<i64>,
    /// Paused: polling goes on but new attempts are buffered.
    pub paused: bool,
    /// Outcome filter.
    pub filter: OutcomeFilter,
    /// Selected attempt id; `None` follows the tail.
    pub selected: Option<i64>,
    /// Last poll error.
    pub error: Option<ApiError>,
    /// At least one poll succeeded.
    pub loaded: bool,
}

impl LiveState {
    /// Attempts passing the filter, oldest first.
    pub fn visible(&self) -> Vec<&Attempt> {
        self.ring
            .iter()
            .filter(|a| self.filter.matches(a.outcome))
            .collect()
    }

    fn push(&mut self, attempt: Attempt) {
        let queue = if self.paused {
            &mut self.buffered
        } else {
            &mut self.ring
        };
        queue.push_back(attempt);
        while queue.len() > LIVE_CAPACITY {
            queue.pop_front();
        }
    }

    fn resume(&mut self) {
        self.paused = false;
        while let Some(a) = self.buffered.pop_front() {
            self.push(a);
        }
    }

    fn move_selection(&mut self, up: bool) {
        let ids: Vec<i64> = self.visible().iter().map(|a| a.id).collect();
        let Some(&last) = ids.last() else {
            self.selected = None;
            return;
        };
        let pos = self
            .selected
            .and_then(|id| ids.iter().position(|&x| x == id));
        self.selected = Some(match (pos, up) {
            (None, _) => last,
            (Some(p), true) => ids[p.saturating_sub(1)],
            (Some(p), false) => ids[(p + 1).min(ids.len() - 1)],
        });
    }
}

impl App {
    /// Live tail state.
    pub fn live(&self) -> &LiveState {
        &self.live
    }

    pub(crate) fn poll_live(&mut self) -> Option<Effect> {
        if self.inflight.live {
            return None;
        }
        self.inflight.live = true;
        Some(Effect::PollAttempts {
            after: self.live.cursor,
            limit: LIVE_POLL_LIMIT,
        })
    }

    pub(crate) fn on_attempts(
        &mut self,
        after: Option<i64>,
        result: Result<AttemptsPage, ApiError>,
    ) -> Vec<Effect> {
        self.inflight.live = false;
        self.note(&result);
        match result {
            Ok(page) => {
                self.live.error = None;
                self.live.loaded = true;
                let full_page = page.items.len() >= LIVE_POLL_LIMIT as usize;
                let mut cursor = self.live.cursor;
                for attempt in page.items {
                    // Skip anything at or below the cursor: a stale or
                    // overlapping page must never duplicate rows.
                    if cursor.is_some_and(|c| attempt.id <= c) {
                        continue;
                    }
                    cursor = Some(attempt.id);
                    self.live.push(attempt);
                }
                if let Some(next) = page.next_cursor {
                    cursor = Some(cursor.map_or(next, |c| c.max(next)));
                }
                self.live.cursor = cursor;
                // A full page means more are waiting: catch up at once.
                if full_page
                    && after.is_some()
                    && cursor != after
                    && self.inflight.live_catchups < LIVE_CATCHUP_PER_TICK
                {
                    self.inflight.live_catchups += 1;
                    return self.poll_live().into_iter().collect();
                }
                Vec::new()
            }
            Err(e) => {
                self.live.error = Some(e);
                Vec::new()
            }
        }
    }

    pub(crate) fn live_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        match cmd {
            Cmd::TogglePause => {
                if self.live.paused {
                    self.live.resume();
                } else {
                    self.live.paused = true;
                }
            }
            Cmd::CycleFilter => {
                self.live.filter = self.live.filter.next();
                self.live.selected = None;
            }
            Cmd::Clear => {
                self.live.ring.clear();
                self.live.buffered.clear();
                self.live.selected = None;
            }
            Cmd::Up => self.live.move_selection(true),
            Cmd::Down => self.live.move_selection(false),
            Cmd::Follow => self.live.selected = None,
            Cmd::Open => {
                let webhook = self.live.selected.and_then(|id| {
                    self.live
                        .ring
                        .iter()
                        .find(|a| a.id == id)
                        .map(|a| a.webhook_id.clone())
                });
                if let Some(w) = webhook {
                    return self.open_webhook(w);
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

/// Footer words that show the live tail's state.
pub(crate) fn footer_words(app: &App, cmd: Cmd) -> Option<String> {
    match cmd {
        Cmd::TogglePause if app.live.paused => {
            Some(format!("resume ({} buffered)", app.live.buffered.len()))
        }
        Cmd::CycleFilter => Some(format!("filter: {}", app.live.filter.label())),
        _ => None,
    }
}

/// Draw the live tail into `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let live = &app.live;
    let visible = live.visible();
    let mode = if live.paused {
        format!("⏸ paused, {} buffered", live.buffered.len())
    } else if live.selected.is_some() {
        "scrolled (End follows)".to_string()
    } else {
        "● following".to_string()
    };
    let title = format!(
        " Live deliveries · {} shown · filter: {} · {mode} ",
        visible.len(),
        live.filter.label()
    );
    let block = panel(title);
    if visible.is_empty() {
        let lines = if let Some(lines) = unreachable_lines(app) {
            lines
        } else if let Some(err) = &live.error {
            vec![
                Line::from(""),
                Line::from(Span::styled(
                    format!("  ✖ {}", err.short()),
                    Style::new().fg(Color::Red),
                )),
            ]
        } else if !live.loaded {
            vec![Line::from(""), Line::from("  Loading…")]
        } else if live.ring.is_empty() {
            vec![
                Line::from(""),
                Line::from("  Waiting for delivery attempts…"),
            ]
        } else {
            vec![
                Line::from(""),
                Line::from(format!(
                    "  No {} attempts among the last {}. Press f to change the filter.",
                    live.filter.label(),
                    live.ring.len()
                )),
            ]
        };
        message(frame, area, block, lines);
        return;
    }
    let header = Row::new([
        "TIME",
        "SUB",
        "WEBHOOK",
        "#",
        "OUTCOME",
        "STATUS",
        "DURATION",
        "TARGET / ERROR",
    ])
    .style(Style::new().bold().fg(Color::Gray));
    const FIXED: [u16; 7] = [12, 8, 8, 2, 14, 6, 9];
    let tail_width = fill_width(area, &FIXED);
    let rows = visible.iter().map(|a| {
        let style = outcome_style(a.outcome);
        let tail = fit(a.error.as_deref().unwrap_or(&a.target_url), tail_width);
        Row::new(vec![
            Cell::from(a.timestamp.format("%H:%M:%S%.3f").to_string()),
            Cell::from(short_id(&a.subscription_id).to_string()),
            Cell::from(short_id(&a.webhook_id).to_string()),
            Cell::from(a.attempt_number.to_string()),
            Cell::from(a.outcome.as_str()),
            Cell::from(opt(&a.status_code)),
            Cell::from(format!("{} ms", a.duration_ms)),
            Cell::from(tail),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(FIXED[0]),
            Constraint::Length(FIXED[1]),
            Constraint::Length(FIXED[2]),
            Constraint::Length(FIXED[3]),
            Constraint::Length(FIXED[4]),
            Constraint::Length(FIXED[5]),
            Constraint::Length(FIXED[6]),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("▶ ")
    // Keep the columns still when the selection comes and goes.
    .highlight_spacing(HighlightSpacing::Always);
    // Rows that fit: the area minus borders and the header row.
    let height = usize::from(area.height.saturating_sub(3));
    let selected = live
        .selected
        .and_then(|id| visible.iter().position(|a| a.id == id));
    let mut state = TableState::default()
        .with_offset(visible.len().saturating_sub(height))
        .with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Action;
    use crate::screens::Screen;
    use crate::testkit::*;
    use ratatui::crossterm::event::KeyCode;

    #[test]
    fn live_tail_appends_dedups_and_caps() {
        let mut app = loaded_app();
        app.update(Action::AttemptsPolled {
            after: None,
            result: Ok(page(1..=3)),
        });
        assert_eq!(app.live().cursor, Some(3));
        let fx = app.update(Action::Tick { now: t0() });
        assert!(fx.contains(&Effect::PollAttempts {
            after: Some(3),
            limit: LIVE_POLL_LIMIT
        }));
        // Overlapping page: 2 and 3 are not added twice.
        app.update(Action::AttemptsPolled {
            after: Some(3),
            result: Ok(page(2..=5)),
        });
        let ids: Vec<i64> = app.live().ring.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        // A full page triggers an immediate catch-up poll.
        app.update(Action::Tick { now: t0() });
        let fx = app.update(Action::AttemptsPolled {
            after: Some(5),
            result: Ok(page(6..=205)),
        });
        assert_eq!(
            fx,
            vec![Effect::PollAttempts {
                after: Some(205),
                limit: LIVE_POLL_LIMIT
            }]
        );
        for start in (206..=806).step_by(200) {
            app.update(Action::AttemptsPolled {
                after: Some(start - 1),
                result: Ok(page(start..=start + 199)),
            });
        }
        assert_eq!(app.live().ring.len(), LIVE_CAPACITY);
        assert_eq!(app.live().ring.back().map(|a| a.id), Some(1005));
    }

    #[test]
    fn live_pause_buffers_and_filter_cycles() {
        let mut app = loaded_app();
        app.update(ch('3'));
        app.update(Action::AttemptsPolled {
            after: None,
            result: Ok(page(1..=3)),
        });
        app.update(ch(' '));
        assert!(app.live().paused);
        app.update(Action::AttemptsPolled {
            after: Some(3),
            result: Ok(page(4..=6)),
        });
        assert_eq!(app.live().ring.len(), 3);
        assert_eq!(app.live().buffered.len(), 3);
        app.update(ch(' '));
        assert_eq!(app.live().ring.len(), 6);
        assert!(app.live().buffered.is_empty());

        app.update(ch('f'));
        assert_eq!(app.live().filter, OutcomeFilter::Only(Outcome::Success));
        assert!(app
            .live()
            .visible()
            .iter()
            .all(|a| a.outcome == Outcome::Success));
        app.update(ch('f'));
        assert_eq!(
            app.live().filter,
            OutcomeFilter::Only(Outcome::FailedAttempt)
        );
        app.update(ch('f'));
        assert_eq!(app.live().filter, OutcomeFilter::Only(Outcome::Failure));
        app.update(ch('f'));
        assert_eq!(app.live().filter, OutcomeFilter::All);

        // Select the newest, move up, open its webhook.
        app.update(key(KeyCode::Up));
        assert_eq!(app.live().selected, Some(6));
        app.update(key(KeyCode::Up));
        assert_eq!(app.live().selected, Some(5));
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::LoadWebhookStatus(
                attempt(5, "", Outcome::Success).webhook_id
            )]
        );
        assert_eq!(app.screen(), Screen::WebhookDetail);
    }
}
