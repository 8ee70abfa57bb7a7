//! The recover dialog (`R` on a subscription): redeliver the
//! subscription's webhooks of a time window. It asks for the window
//! (`since`, default an hour ago; optional `until`; the statuses, default
//! failed), counts the matching webhooks with a dry run, and on `y`
//! recovers them for real and shows matched / queued / unavailable.

use chrono::{DateTime, Utc};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::confirm::dialog_keys;
use crate::api::{ApiError, RecoverCounts, RecoverError, RecoverRequest, Subscription};
use crate::app::{short_id, App, Effect};
use crate::keymap::{Cmd, Where};
use crate::widgets::{fmt_relative, fmt_time, popup_area, ACCENT};

#[cfg(test)]
mod tests;
mod when;

pub use when::{parse_span, parse_statuses, parse_when};

/// `since` when the dialog opens: an hour ago.
pub const DEFAULT_SINCE: &str = "1h";
/// The statuses when the dialog opens.
pub const DEFAULT_STATUSES: &str = "failed";

/// Which key table block applies: the dialog takes every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverStage {
    /// Editing the window.
    Edit,
    /// The dry run counted; recover for real?
    Confirm,
    /// Waiting for an answer, or done: only closing is left.
    Done,
}

/// The fields of the dialog, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverField {
    /// Start of the window.
    Since,
    /// End of the window (empty: now).
    Until,
    /// Comma-separated statuses.
    Statuses,
}

impl RecoverField {
    /// All fields in tab order.
    pub const ALL: [RecoverField; 3] = [
        RecoverField::Since,
        RecoverField::Until,
        RecoverField::Statuses,
    ];

    fn index(self) -> usize {
        match self {
            RecoverField::Since => 0,
            RecoverField::Until => 1,
            RecoverField::Statuses => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RecoverField::Since => "Since",
            RecoverField::Until => "Until",
            RecoverField::Statuses => "Statuses",
        }
    }

    /// The field a server error names.
    fn from_api(field: &str) -> Option<RecoverField> {
        match field {
            "since" => Some(RecoverField::Since),
            "until" => Some(RecoverField::Until),
            f if f == "status" || f.starts_with("status[") || f.starts_with("status.") => {
                Some(RecoverField::Statuses)
            }
            _ => None,
        }
    }
}

/// Where the dialog stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverStep {
    /// Editing the window.
    Edit,
    /// The dry run of `request` is in flight.
    Counting {
        /// The dry run sent.
        request: RecoverRequest,
    },
    /// The dry run answered; `request` is the real call to make.
    Counted {
        /// The same window, not a dry run.
        request: RecoverRequest,
        /// What the dry run found.
        counts: RecoverCounts,
    },
    /// The real call is in flight; `counts` are the dry run's.
    Recovering {
        /// What the dry run found.
        counts: RecoverCounts,
    },
    /// The real call answered.
    Done {
        /// What it did.
        counts: RecoverCounts,
    },
}

/// An error shown in the dialog: next to a field when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverProblem {
    /// The field it is about, if any.
    pub field: Option<RecoverField>,
    /// What went wrong.
    pub message: String,
    /// For a `since` before the retention: the oldest time available.
    pub oldest_available: Option<DateTime<Utc>>,
}

/// State of the recover dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverDialog {
    /// Subscription id.
    pub id: String,
    /// Its URL, to make sure the operator picks the right one.
    pub target_url: String,
    /// Text of each field, indexed like [`RecoverField::ALL`].
    pub values: [String; 3],
    /// Field with keyboard focus.
    pub focus: RecoverField,
    /// Where it stands.
    pub step: RecoverStep,
    /// The last error.
    pub error: Option<RecoverProblem>,
    /// Number of the request in flight (answers to others do not change
    /// the dialog).
    pub seq: u64,
}

impl RecoverDialog {
    fn new(sub: &Subscription) -> RecoverDialog {
        RecoverDialog {
            id: sub.id.clone(),
            target_url: sub.target_url.clone(),
            values: [
                DEFAULT_SINCE.to_string(),
                String::new(),
                DEFAULT_STATUSES.to_string(),
            ],
            focus: RecoverField::Since,
            step: RecoverStep::Edit,
            error: None,
            seq: 0,
        }
    }

    /// Current text of `field`.
    pub fn value(&self, field: RecoverField) -> &str {
        &self.values[field.index()]
    }

    /// The key table block in force.
    pub fn stage(&self) -> RecoverStage {
        match self.step {
            RecoverStep::Edit => RecoverStage::Edit,
            RecoverStep::Counted { .. } => RecoverStage::Confirm,
            RecoverStep::Counting { .. }
            | RecoverStep::Recovering { .. }
            | RecoverStep::Done { .. } => RecoverStage::Done,
        }
    }

    fn move_focus(&mut self, forward: bool) {
        let n = RecoverField::ALL.len();
        let i = self.focus.index();
        let next = if forward { i + 1 } else { i + n - 1 };
        self.focus = RecoverField::ALL[next % n];
    }

    fn fail(&mut self, problem: RecoverProblem) {
        if let Some(f) = problem.field {
            self.focus = f;
        }
        self.step = RecoverStep::Edit;
        self.error = Some(problem);
    }

    /// The dry-run request the fields describe, or the field at fault.
    fn request(&self, now: Option<DateTime<Utc>>) -> Result<RecoverRequest, RecoverProblem> {
        let problem = |field, message| RecoverProblem {
            field: Some(field),
            message,
            oldest_available: None,
        };
        let since = parse_when(self.value(RecoverField::Since), now)
            .map_err(|m| problem(RecoverField::Since, m))?;
        let until = match self.value(RecoverField::Until).trim() {
            "" => None,
            text => Some(parse_when(text, now).map_err(|m| problem(RecoverField::Until, m))?),
        };
        if until.is_some_and(|u| u <= since) {
            return Err(problem(RecoverField::Until, "must be after since".into()));
        }
        let status = parse_statuses(self.value(RecoverField::Statuses))
            .map_err(|m| problem(RecoverField::Statuses, m))?;
        Ok(RecoverRequest {
            since,
            until,
            status,
            dry_run: true,
        })
    }
}

/// What a failed recover call says, where it belongs in the dialog.
fn problem_of(e: &RecoverError) -> RecoverProblem {
    let field = e.error.field().and_then(RecoverField::from_api);
    let field = field.or(e.oldest_available.map(|_| RecoverField::Since));
    let message = match &e.error {
        ApiError::Http { message, .. } if field.is_some() => message.clone(),
        other => other.short(),
    };
    RecoverProblem {
        field,
        message,
        oldest_available: e.oldest_available,
    }
}

fn counts_text(c: &RecoverCounts) -> String {
    format!(
        "{} matched · {} queued · {} unavailable",
        c.matched, c.queued, c.unavailable
    )
}

impl App {
    /// The recover dialog, if open.
    pub fn recover_dialog(&self) -> Option<&RecoverDialog> {
        self.recover.as_ref()
    }

    /// Open the dialog for `sub`.
    pub(crate) fn open_recover(&mut self, sub: &Subscription) {
        self.recover = Some(RecoverDialog::new(sub));
    }

    /// Send `request` for the dialog's subscription under a new number.
    fn send_recover(&mut self, request: RecoverRequest) -> Vec<Effect> {
        self.recover_seq += 1;
        let seq = self.recover_seq;
        let Some(d) = self.recover.as_mut() else {
            return Vec::new();
        };
        d.seq = seq;
        vec![Effect::Recover {
            seq,
            id: d.id.clone(),
            request,
        }]
    }

    pub(crate) fn recover_command(&mut self, cmd: Cmd, key: KeyEvent) -> Vec<Effect> {
        let now = self.now;
        let Some(d) = self.recover.as_mut() else {
            return Vec::new();
        };
        let field = d.focus.index();
        match (d.stage(), cmd) {
            (_, Cmd::Cancel) => self.recover = None,
            (RecoverStage::Edit, Cmd::NextField) => d.move_focus(true),
            (RecoverStage::Edit, Cmd::PrevField) => d.move_focus(false),
            (RecoverStage::Edit, Cmd::Erase) => {
                d.values[field].pop();
            }
            (RecoverStage::Edit, Cmd::ClearField) => d.values[field].clear(),
            (RecoverStage::Edit, Cmd::Type) => {
                if let KeyCode::Char(c) = key.code {
                    d.values[field].push(c);
                }
            }
            (RecoverStage::Edit, Cmd::Save) => match d.request(now) {
                Ok(request) => {
                    d.step = RecoverStep::Counting {
                        request: request.clone(),
                    };
                    d.error = None;
                    return self.send_recover(request);
                }
                Err(p) => d.fail(p),
            },
            (RecoverStage::Confirm, Cmd::Edit) => d.step = RecoverStep::Edit,
            (RecoverStage::Confirm, Cmd::Confirm) => {
                if let RecoverStep::Counted { request, counts } = d.step.clone() {
                    if counts.matched > 0 {
                        d.step = RecoverStep::Recovering { counts };
                        return self.send_recover(request);
                    }
                }
            }
            _ => {}
        }
        Vec::new()
    }

    pub(crate) fn on_recovered(
        &mut self,
        seq: u64,
        id: String,
        dry_run: bool,
        result: Result<RecoverCounts, RecoverError>,
    ) -> Vec<Effect> {
        let reached: Result<(), ApiError> =
            result.as_ref().map(|_| ()).map_err(|e| e.error.clone());
        self.note(&reached);
        let label = short_id(&id).to_string();
        let dialog = self.recover.as_mut().filter(|d| d.seq == seq && d.id == id);
        match (dialog, result) {
            (Some(d), Ok(counts)) => {
                if dry_run {
                    // The real call repeats the dry run's window as sent,
                    // so a relative `since` does not move meanwhile.
                    if let RecoverStep::Counting { request } = &d.step {
                        let request = RecoverRequest {
                            dry_run: false,
                            ..request.clone()
                        };
                        d.step = RecoverStep::Counted { request, counts };
                    }
                } else {
                    d.step = RecoverStep::Done { counts };
                    let text = format!("Recovered {label}: {}", counts_text(&counts));
                    self.set_flash(text, false);
                }
            }
            (Some(d), Err(e)) => d.fail(problem_of(&e)),
            // The dialog was closed (or is another one): a dry run no
            // longer matters, the real call's outcome is still news.
            (None, Ok(counts)) if !dry_run => {
                self.set_flash(
                    format!("Recovered {label}: {}", counts_text(&counts)),
                    false,
                );
            }
            (None, Err(e)) if !dry_run => {
                self.set_flash(format!("Recover {label} failed: {}", e.error.short()), true);
            }
            (None, _) => {}
        }
        Vec::new()
    }
}

/// The line under a time field: the time it names, or why it names none.
fn time_hint(app: &App, d: &RecoverDialog, field: RecoverField) -> Line<'static> {
    let text = d.value(field);
    if field == RecoverField::Until && text.trim().is_empty() {
        return hint_line("empty: up to now".to_string());
    }
    match parse_when(text, app.now) {
        Ok(t) => {
            let ago = app
                .now
                .map(|now| format!(" ({})", fmt_relative(&now, &t)))
                .unwrap_or_default();
            hint_line(format!("= {} UTC{ago}", fmt_time(&t)))
        }
        Err(_) => hint_line("RFC 3339, 2026-11-29 08:00 (UTC), or 1h / 30m / 2d ago".to_string()),
    }
}

/// Where the values, hints and errors of the fields start.
const INDENT: usize = 12;
/// Room for a hint or error line in the dialog (84 wide, framed).
const TEXT_WIDTH: usize = 82 - INDENT - 2;

fn hint_line(text: String) -> Line<'static> {
    Line::from(Span::styled(
        format!("{:INDENT$}{text}", ""),
        Style::new().fg(Color::DarkGray),
    ))
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// A problem at a field: the message, wrapped under the value, and the
/// oldest time still available when the server said.
fn problem_lines(p: &RecoverProblem) -> Vec<Line<'static>> {
    let red = Style::new().fg(Color::Red).bold();
    let mut lines: Vec<Line<'static>> = wrap(&p.message, TEXT_WIDTH)
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let mark = if i == 0 { "✖ " } else { "  " };
            Line::from(Span::styled(format!("{:INDENT$}{mark}{text}", ""), red))
        })
        .collect();
    if let Some(oldest) = &p.oldest_available {
        lines.push(Line::from(Span::styled(
            format!("{:INDENT$}  oldest available: {} UTC", "", fmt_time(oldest)),
            Style::new().fg(Color::Yellow).bold(),
        )));
    }
    lines
}

/// One field: its label and value (the focused one marked, with a
/// cursor while editing), then its hint or error.
fn field_lines(app: &App, d: &RecoverDialog, field: RecoverField) -> Vec<Line<'static>> {
    let editing = d.step == RecoverStep::Edit;
    let focused = editing && d.focus == field;
    let (marker, label_style) = if focused {
        ("▸", Style::new().fg(ACCENT).bold())
    } else {
        (" ", Style::new().fg(Color::Gray))
    };
    let mut value = vec![Span::styled(
        format!(" {marker} {:<w$}", field.label(), w = INDENT - 3),
        label_style,
    )];
    let shown = d.value(field).to_string();
    value.push(Span::styled(shown, Style::new().bold()));
    if focused {
        value.push(Span::styled("▏", Style::new().fg(ACCENT)));
    }
    let error = d.error.as_ref().filter(|e| e.field == Some(field));
    let below = match (error, field) {
        (Some(e), _) => problem_lines(e),
        (None, RecoverField::Statuses) => vec![hint_line(
            "comma separated: failed, succeeded, filtered".to_string(),
        )],
        (None, _) => vec![time_hint(app, d, field)],
    };
    let mut lines = vec![Line::from(value)];
    lines.extend(below);
    lines
}

/// What the dialog says at its current step.
fn step_lines(d: &RecoverDialog) -> Vec<Line<'static>> {
    let bold = |text: String, colour: Color| {
        Line::from(Span::styled(text, Style::new().fg(colour).bold()))
    };
    match &d.step {
        RecoverStep::Edit => match d.error.as_ref().filter(|e| e.field.is_none()) {
            Some(e) => wrap(&e.message, 78)
                .into_iter()
                .enumerate()
                .map(|(i, text)| {
                    let mark = if i == 0 { "✖" } else { " " };
                    bold(format!(" {mark} {text}"), Color::Red)
                })
                .collect(),
            None => vec![Line::from(Span::styled(
                " Enter counts the matching webhooks first (a dry run); nothing is sent yet.",
                Style::new().fg(Color::DarkGray),
            ))],
        },
        RecoverStep::Counting { .. } => vec![bold(" Counting…".into(), Color::Yellow)],
        RecoverStep::Counted { counts, .. } if counts.matched == 0 => {
            vec![bold(
                " No webhook matches this window.".into(),
                Color::Yellow,
            )]
        }
        RecoverStep::Counted { counts, .. } => {
            let mut line = vec![Span::styled(
                format!(" {} webhooks match", counts.matched),
                Style::new().bold(),
            )];
            if counts.unavailable > 0 {
                line.push(Span::styled(
                    format!(
                        " · {} no longer available (aged out of the stream)",
                        counts.unavailable
                    ),
                    Style::new().fg(Color::Yellow),
                ));
            }
            vec![Line::from(line)]
        }
        RecoverStep::Recovering { counts } => vec![
            bold(
                format!(" Redelivering {} webhooks…", counts.matched),
                Color::Yellow,
            ),
            Line::from(" Closing the dialog is fine: the answer also shows in the status line."),
        ],
        RecoverStep::Done { counts } => {
            vec![bold(
                format!(" Done: {}", counts_text(counts)),
                Color::Green,
            )]
        }
    }
}

/// Draw the dialog, if open, over `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let Some(d) = &app.recover else {
        return;
    };
    let colour = Color::Yellow;
    let mut lines = vec![
        Line::from(vec![
            Span::raw(" Redeliver the webhooks of "),
            Span::styled(short_id(&d.id).to_string(), Style::new().bold()),
            Span::raw(format!(" → {}", d.target_url)),
        ]),
        Line::from(" received in a window, with one of the statuses:"),
        Line::from(""),
    ];
    for field in RecoverField::ALL {
        lines.extend(field_lines(app, d, field));
    }
    lines.push(Line::from(""));
    lines.extend(step_lines(d));
    let stage = d.stage();
    if stage != RecoverStage::Edit {
        lines.push(Line::from(""));
        lines.push(Line::from(dialog_keys(Where::Recover(stage), colour)));
    }
    let popup = popup_area(area, 84, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(Style::new().fg(colour))
        .title(
            Line::from(format!(" Recover subscription {} ", short_id(&d.id)))
                .style(Style::new().fg(colour).bold()),
        );
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}
