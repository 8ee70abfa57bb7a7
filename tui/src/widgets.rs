//! Drawing helpers shared by the screens: panels, messages, the attempts
//! table, and the formatting of times, outcomes and cut-off text.

use chrono::{DateTime, Utc};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::api::{Attempt, Outcome, Subscription};
use crate::app::{short_id, success_rate, App, Connection};

/// Accent colour for keys, titles and focus.
pub(crate) const ACCENT: Color = Color::Cyan;

/// `2026-11-29 09:41:03`, always UTC so every operator sees the same times.
pub fn fmt_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A length of time: `12s`, `3m5s`, `2h0m`, `4d`.
pub fn fmt_span(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d", secs / 86_400)
    }
}

/// `in 12s` / `3m ago`, relative to `now`.
pub fn fmt_relative(now: &DateTime<Utc>, t: &DateTime<Utc>) -> String {
    let secs = (*t - *now).num_seconds();
    let amount = fmt_span(secs.unsigned_abs());
    if secs >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Colour for an attempt outcome: green, yellow, red.
pub fn outcome_style(outcome: Outcome) -> Style {
    match outcome {
        Outcome::Success => Style::new().fg(Color::Green),
        Outcome::FailedAttempt => Style::new().fg(Color::Yellow),
        Outcome::Failure => Style::new().fg(Color::Red),
        Outcome::Unknown => Style::new().fg(Color::Gray),
    }
}

/// Cut `text` to `width` columns, marking the cut with `…`, so truncated
/// values are recognisable as such.
pub fn fit(text: &str, width: u16) -> String {
    let width = usize::from(width);
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Width left for the one `Fill` column of a bordered table with a
/// highlight symbol, given the fixed column widths (column spacing 1).
pub(crate) fn fill_width(area: Rect, fixed: &[u16]) -> u16 {
    let used: u16 = fixed.iter().sum::<u16>() + fixed.len() as u16;
    area.width.saturating_sub(2 + 2 + used)
}

pub(crate) fn events_text(sub: &Subscription) -> String {
    match &sub.events {
        Some(e) => e.join(", "),
        None => "all".to_string(),
    }
}

pub(crate) fn rate_text(attempts: Option<&[Attempt]>) -> String {
    match attempts.and_then(success_rate) {
        Some((pct, n)) => format!("{pct:.0}% of {n}"),
        None => "-".to_string(),
    }
}

pub(crate) fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

pub(crate) fn panel(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().fg(Color::DarkGray))
        .title(title.into().style(Style::new().fg(ACCENT).bold()))
}

pub(crate) fn message(frame: &mut Frame, area: Rect, block: Block<'_>, lines: Vec<Line<'_>>) {
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

pub(crate) fn unreachable_lines(app: &App) -> Option<Vec<Line<'static>>> {
    match &app.connection {
        Connection::Unreachable(why) => Some(vec![
            Line::from(""),
            Line::from(Span::styled(
                format!("  Cannot reach {}: {why}", app.server),
                Style::new().fg(Color::Red).bold(),
            )),
            Line::from(
                "  Retrying every second. Check --url / WEBHOOKD_URL and that webhookd runs.",
            ),
        ]),
        _ => None,
    }
}

/// Fixed widths of the attempt table's columns; the error fills the rest.
fn attempt_fixed(with_webhook: bool) -> &'static [u16] {
    if with_webhook {
        &[19, 8, 2, 14, 6, 9]
    } else {
        &[19, 2, 14, 6, 9]
    }
}

/// Width left for the error column of an attempt table in `area`.
pub(crate) fn attempt_error_width(area: Rect, with_webhook: bool) -> u16 {
    fill_width(area, attempt_fixed(with_webhook))
}

/// One attempt as a row of the attempt table.
pub(crate) fn attempt_row(a: &Attempt, with_webhook: bool, error_width: u16) -> Row<'static> {
    let mut cells = vec![Cell::from(fmt_time(&a.timestamp))];
    if with_webhook {
        cells.push(Cell::from(short_id(&a.webhook_id).to_string()));
    }
    cells.extend([
        Cell::from(a.attempt_number.to_string()),
        Cell::from(a.outcome.as_str()).style(outcome_style(a.outcome)),
        Cell::from(opt(&a.status_code)),
        Cell::from(format!("{} ms", a.duration_ms)),
        Cell::from(fit(a.error.as_deref().unwrap_or_default(), error_width)),
    ]);
    Row::new(cells)
}

/// An attempt table of `rows` (from [`attempt_row`] and others of the
/// same columns) in `block`.
pub(crate) fn attempt_rows_table<'a>(
    rows: Vec<Row<'a>>,
    with_webhook: bool,
    block: Block<'a>,
) -> Table<'a> {
    let mut header = vec!["TIME"];
    if with_webhook {
        header.push("WEBHOOK");
    }
    header.extend(["#", "OUTCOME", "STATUS", "DURATION", "ERROR"]);
    let mut widths: Vec<Constraint> = attempt_fixed(with_webhook)
        .iter()
        .map(|&w| Constraint::Length(w))
        .collect();
    widths.push(Constraint::Fill(1));
    Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold().fg(Color::Gray)))
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ")
}

pub(crate) fn attempts_table<'a>(
    attempts: &'a [Attempt],
    with_webhook: bool,
    block: Block<'a>,
    area: Rect,
) -> Table<'a> {
    let error_width = attempt_error_width(area, with_webhook);
    let rows = attempts
        .iter()
        .map(|a| attempt_row(a, with_webhook, error_width))
        .collect();
    attempt_rows_table(rows, with_webhook, block)
}

pub(crate) fn kv(key: &str, value: impl Into<String>) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("  {key:<14}"), Style::new().fg(Color::Gray)),
        Span::raw(value.into()),
    ])
}

pub(crate) fn popup_area(area: Rect, width: u16, height: u16) -> Rect {
    area.centered(
        Constraint::Length(width.min(area.width)),
        Constraint::Length(height.min(area.height)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn fit_marks_cuts() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abcdef", 0), "");
    }

    #[test]
    fn relative_times() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap();
        assert_eq!(
            fmt_relative(&now, &(now + chrono::Duration::seconds(5))),
            "in 5s"
        );
        assert_eq!(
            fmt_relative(&now, &(now - chrono::Duration::seconds(125))),
            "2m5s ago"
        );
        assert_eq!(
            fmt_relative(&now, &(now + chrono::Duration::hours(3))),
            "in 3h0m"
        );
    }
}
