//! Rendering: a pure function from [`App`] to a frame.
//!
//! Nothing here changes state or does I/O, so the same state always draws
//! the same screen; the snapshot tests rely on that.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph};
use ratatui::Frame;

use crate::app::{App, Connection};
use crate::keymap::{self, Cmd, Where};
use crate::screens::{self, confirm, failed, list, recover, Tab};
use crate::widgets::{popup_area, ACCENT};

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
    recover::draw(app, frame, body);
    confirm::draw(app, frame, body);
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
        Span::raw(app.throughput.label()),
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
    // Where the user is; when it does not fit, its end (the screen in
    // front) is what matters.
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let room = usize::from(area.width).saturating_sub(used);
    let crumb = screens::breadcrumb(app);
    let len = crumb.chars().count();
    let crumb = if len > room && room > 0 {
        let tail: String = crumb.chars().skip(len + 1 - room).collect();
        format!("…{tail}")
    } else {
        crumb
    };
    spans.push(Span::styled(
        crumb,
        Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The lines of one help column; `gap` puts a blank line between
/// sections. The keys take the width of the longest in the column.
fn help_column(blocks: &[&keymap::Block], gap: bool) -> Vec<Line<'static>> {
    let listed = |block: &&keymap::Block| block.bindings.iter().filter(|b| b.in_help);
    let width = blocks
        .iter()
        .flat_map(listed)
        .map(|b| b.keys.chars().count() + 2)
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    for block in blocks {
        if gap && !lines.is_empty() {
            lines.push(Line::from(""));
        }
        lines.push(Line::from(Span::styled(
            block.title,
            Style::new().fg(ACCENT).bold(),
        )));
        for b in listed(block) {
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<width$}", b.keys), Style::new().bold()),
                Span::raw(b.does),
            ]));
        }
    }
    lines
}

/// Where to split the help sections into two columns of similar height,
/// and the height of the taller one.
fn help_split(blocks: &[&keymap::Block], gap: bool) -> (usize, usize) {
    let height = |part: &[&keymap::Block]| -> usize {
        let lines: usize = part
            .iter()
            .map(|b| 1 + b.bindings.iter().filter(|b| b.in_help).count())
            .sum();
        lines + if gap { part.len().saturating_sub(1) } else { 0 }
    };
    (0..=blocks.len())
        .map(|i| (i, height(&blocks[..i]).max(height(&blocks[i..]))))
        .min_by_key(|&(_, tallest)| tallest)
        .unwrap_or((0, 0))
}

fn render_help(frame: &mut Frame, area: Rect) {
    let sections: Vec<&keymap::Block> = keymap::help_blocks().collect();
    // Blank lines between sections when the taller column still fits.
    let room = usize::from(area.height.saturating_sub(2));
    let gap = help_split(&sections, true).1 <= room;
    let (split, tallest) = help_split(&sections, gap);
    let popup = popup_area(area, 98, tallest as u16 + 2);
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
    let (first, second) = sections.split_at(split);
    frame.render_widget(Paragraph::new(Text::from(help_column(first, gap))), left);
    frame.render_widget(Paragraph::new(Text::from(help_column(second, gap))), right);
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
    } else if let Some(note) = list::filter_note(app).or_else(|| failed::filter_note(app)) {
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
            let does =
                screens::footer_words(app, place, cmd).unwrap_or_else(|| hint.does.to_string());
            (hint.keys.to_string(), does)
        })
        .collect()
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
