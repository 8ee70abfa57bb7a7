//! Rendering: a pure function from [`App`] to a frame.
//!
//! Nothing here changes state or does I/O, so the same state always draws
//! the same screen; the snapshot tests rely on that.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, BorderType, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap,
};
use ratatui::Frame;

use crate::app::{short_id, App, Connection};
use crate::keymap::{self, Cmd, Where};
use crate::screens::{self, list, Screen, Tab};
use crate::widgets::{
    fill_width, fit, message, opt, outcome_style, panel, popup_area, unreachable_lines, ACCENT,
};

/// Draw the whole UI for `app` into `frame`.
pub fn render(app: &App, frame: &mut Frame) {
    let [header, tabs, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    render_header(app, frame, header);
    render_tabs(app, frame, tabs);
    screens::draw(app, frame, body);
    render_status(app, frame, status);
    render_keys(app, frame, keys);
    if let Some(confirm) = &app.confirm_delete {
        render_confirm(&confirm.id, &confirm.target_url, frame, body);
    }
    if app.show_help {
        render_help(frame, body);
    }
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let conn = match &app.connection {
        Connection::Connecting => Span::styled("… connecting", Style::new().fg(Color::Yellow)),
        Connection::Reachable => Span::styled("● reachable", Style::new().fg(Color::Green)),
        Connection::Unreachable(_) => Span::styled(
            "✖ unreachable, retrying",
            Style::new().fg(Color::Red).bold(),
        ),
    };
    let line = Line::from(vec![
        Span::styled(
            " webhookd-tui ",
            Style::new().fg(Color::Black).bg(ACCENT).bold(),
        ),
        Span::raw("  "),
        Span::styled(app.server.clone(), Style::new().bold()),
        Span::raw("  "),
        conn,
        Span::raw("  │  "),
        Span::raw(app.rates.label()),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let tab = |cmd: Cmd, name: &str, active: bool| {
        let style = if active {
            Style::new().fg(Color::Black).bg(Color::White).bold()
        } else {
            Style::new().fg(Color::Gray)
        };
        let key = keymap::key_name(Where::Everywhere, cmd).unwrap_or_default();
        Span::styled(format!(" {key} {name} "), style)
    };
    let mut spans = Vec::new();
    for t in Tab::ALL {
        spans.push(Span::raw(" "));
        spans.push(tab(Cmd::Show(t), t.title(), app.tab == t));
    }
    spans.push(Span::raw(" "));
    spans.push(tab(Cmd::Help, "Help", app.show_help));
    spans.push(Span::raw("   "));
    spans.push(Span::styled(
        screens::breadcrumb(app),
        Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub(crate) fn render_live(app: &App, frame: &mut Frame, area: Rect) {
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

fn render_confirm(id: &str, url: &str, frame: &mut Frame, area: Rect) {
    let popup = popup_area(area, 64, 7);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(Style::new().fg(Color::Red))
        .title(Line::from(" Delete subscription? ").style(Style::new().fg(Color::Red).bold()));
    let lines = vec![
        Line::from(vec![
            Span::raw(" Delete "),
            Span::styled(short_id(id).to_string(), Style::new().bold()),
            Span::raw(format!(" → {url}")),
        ]),
        Line::from(" Its pending deliveries stop. This cannot be undone."),
        Line::from(""),
        Line::from(dialog_keys(Where::DeleteDialog)),
    ];
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}

/// The answers of a dialog as buttons, from its key table block: the one
/// that confirms in red.
fn dialog_keys(place: Where) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for b in keymap::block(place).map_or(&[][..], |block| block.bindings) {
        let confirms = b.map.iter().any(|&(_, cmd)| cmd == Cmd::Confirm);
        let bg = if confirms { Color::Red } else { Color::Gray };
        if !spans.is_empty() {
            spans.push(Span::raw("    "));
        }
        spans.push(Span::styled(
            format!(" {} ", b.keys),
            Style::new().fg(Color::Black).bg(bg).bold(),
        ));
        spans.push(Span::raw(format!(" {}", b.does)));
    }
    spans
}

fn help_column(blocks: &[&keymap::Block]) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for block in blocks {
        lines.push(Line::from(Span::styled(
            block.title,
            Style::new().fg(ACCENT).bold(),
        )));
        for b in block.bindings.iter().filter(|b| b.in_help) {
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<15}", b.keys), Style::new().bold()),
                Span::raw(b.does),
            ]));
        }
        lines.push(Line::from(""));
    }
    lines
}

/// Where to split the help sections into two columns of similar height.
fn help_split(blocks: &[&keymap::Block]) -> usize {
    let heights: Vec<usize> = blocks
        .iter()
        .map(|b| 2 + b.bindings.iter().filter(|b| b.in_help).count())
        .collect();
    let total: usize = heights.iter().sum();
    (0..=blocks.len())
        .min_by_key(|&i| {
            let left: usize = heights[..i].iter().sum();
            left.max(total - left)
        })
        .unwrap_or(0)
}

fn render_help(frame: &mut Frame, area: Rect) {
    let popup = popup_area(area, 92, 26);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().fg(ACCENT))
        .title(Line::from(" Key bindings ").style(Style::new().fg(ACCENT).bold()))
        .title_bottom(Line::from(" Esc or ? closes · q quits ").centered());
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(inner.inner(ratatui::layout::Margin::new(1, 0)));
    let sections: Vec<&keymap::Block> = keymap::help_blocks().collect();
    let (first, second) = sections.split_at(help_split(&sections));
    frame.render_widget(Paragraph::new(Text::from(help_column(first))), left);
    frame.render_widget(Paragraph::new(Text::from(help_column(second))), right);
}

fn render_status(app: &App, frame: &mut Frame, area: Rect) {
    let line = if let Some(line) = list::filter_input(app) {
        line
    } else if let Some(flash) = &app.flash {
        let style = if flash.is_error {
            Style::new().fg(Color::Red).bold()
        } else {
            Style::new().fg(Color::Green)
        };
        Line::from(Span::styled(format!(" {}", flash.text), style))
    } else if let Connection::Unreachable(why) = &app.connection {
        Line::from(Span::styled(
            format!(" Server unreachable: {why}. Retrying every second; data may be stale."),
            Style::new().fg(Color::Red),
        ))
    } else if let Some(note) = list::filter_note(app) {
        note
    } else {
        Line::from("")
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The key hints of the footer for the current screen, from the key table.
pub fn key_hints(app: &App) -> Vec<(String, String)> {
    let Some(&place) = app.key_places().first() else {
        return Vec::new();
    };
    keymap::footer(place)
        .into_iter()
        .map(|(cmd, hint)| {
            let does = live_words(app, place, cmd).unwrap_or_else(|| hint.does.to_string());
            (hint.keys.to_string(), does)
        })
        .collect()
}

/// Footer words that show the live tail's state.
fn live_words(app: &App, place: Where, cmd: Cmd) -> Option<String> {
    if place != Where::Screen(Screen::Live) {
        return None;
    }
    match cmd {
        Cmd::TogglePause if app.live.paused => {
            Some(format!("resume ({} buffered)", app.live.buffered.len()))
        }
        Cmd::CycleFilter => Some(format!("filter: {}", app.live.filter.label())),
        _ => None,
    }
}

fn render_keys(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = vec![Span::raw(" ")];
    for (key, what) in key_hints(app) {
        spans.push(Span::styled(key, Style::new().fg(ACCENT).bold()));
        spans.push(Span::styled(
            format!(" {what}  "),
            Style::new().fg(Color::Gray),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
