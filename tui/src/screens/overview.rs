//! The overview (tab 1, the start screen): where an operator looks first.
//! Charts of accepted, delivered and failed per second over the last
//! scrapes, the webhooks waiting in the queue, the circuit and disabled
//! counts, and the subscriptions that need attention (open or probing
//! circuit, disabled), which open, disable or enable from here.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Sparkline, Table, TableState};
use ratatui::widgets::{RenderDirection, SparklineBar};
use ratatui::Frame;

use super::select_row;
use crate::api::Subscription;
use crate::app::{short_id, App, Connection, Effect};
use crate::health::{attention_note, failures_cell, last_ok_cell, state_cell, Badge};
use crate::keymap::Cmd;
use crate::metrics::{per_second, Gauges, RatePoint, Rates};
use crate::widgets::{fill_width, fit, fmt_span, message, panel, unreachable_lines, ACCENT};

/// Width of the queue and counts panel.
const SIDE_WIDTH: u16 = 32;
/// Rows of each chart.
const CHART_ROWS: u16 = 3;
/// Chart values are hundredths per second, so rates below 1/s still show.
const CHART_SCALE: f64 = 100.0;

/// State of the overview.
#[derive(Debug, Clone, Default)]
pub struct OverviewState {
    /// Selected row of the attention list.
    pub selected: usize,
}

/// One chart: its name, colour and the rate it plots.
struct Series {
    name: &'static str,
    colour: Color,
    rate: fn(&RatePoint) -> Option<f64>,
}

const SERIES: [Series; 3] = [
    Series {
        name: "accepted",
        colour: ACCENT,
        rate: |p| p.accepted,
    },
    Series {
        name: "delivered",
        colour: Color::Green,
        rate: |p| p.delivered,
    },
    Series {
        name: "failed",
        colour: Color::Red,
        rate: |p| p.failed,
    },
];

/// Open circuits first, then probing, then disabled.
fn attention_rank(badge: Badge) -> u8 {
    match badge {
        Badge::Open => 0,
        Badge::Probing => 1,
        _ => 2,
    }
}

impl App {
    /// Subscriptions with an open or probing circuit or disabled, open
    /// circuits first (list order within each).
    pub fn needing_attention(&self) -> Vec<&Subscription> {
        let mut subs: Vec<&Subscription> = self
            .subs
            .items
            .iter()
            .filter(|s| self.badge(s).needs_attention())
            .collect();
        subs.sort_by_key(|s| attention_rank(self.badge(s)));
        subs
    }

    /// The selected row of the attention list.
    pub(crate) fn selected_attention(&self) -> Option<&Subscription> {
        let subs = self.needing_attention();
        let last = subs.len().checked_sub(1)?;
        subs.get(self.overview.selected.min(last)).copied()
    }

    pub(crate) fn overview_command(&mut self, cmd: Cmd) -> Vec<Effect> {
        let len = self.needing_attention().len();
        // The list shrinks under the selection as problems go away.
        self.overview.selected = self.overview.selected.min(len.saturating_sub(1));
        if select_row(&mut self.overview.selected, len, cmd) {
            return Vec::new();
        }
        let selected = self.selected_attention().cloned();
        match (cmd, selected) {
            (Cmd::Open, Some(sub)) => return self.open_detail(sub.id.clone(), Some(sub)),
            (Cmd::ToggleDisabled, Some(sub)) => self.ask_toggle(&sub),
            (Cmd::Refresh, _) => {
                let mut fx = Vec::new();
                if !self.subs.loading {
                    fx.push(self.load_subscriptions());
                }
                if !self.inflight.metrics {
                    self.inflight.metrics = true;
                    fx.push(Effect::ScrapeMetrics);
                }
                return fx;
            }
            _ => {}
        }
        Vec::new()
    }
}

/// Draw the overview into `area`.
pub(crate) fn draw(app: &App, frame: &mut Frame, area: Rect) {
    // Three charts of a label line and CHART_ROWS each, in a bordered panel.
    let charts_height = 3 * (1 + CHART_ROWS) + 2;
    let [top, bottom] =
        Layout::vertical([Constraint::Length(charts_height), Constraint::Min(3)]).areas(area);
    let [charts, side] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(SIDE_WIDTH)]).areas(top);
    draw_charts(app, frame, charts);
    draw_counts(app, frame, side);
    draw_attention(app, frame, bottom);
}

fn draw_charts(app: &App, frame: &mut Frame, area: Rect) {
    let history = app.throughput.history();
    // One column per rate; the newest at the right edge.
    let width = usize::from(area.width.saturating_sub(2));
    let shown: Vec<&RatePoint> = history.iter().rev().take(width).collect();
    let title = match (shown.first(), shown.last()) {
        (Some(newest), Some(oldest)) if shown.len() > 1 => {
            let secs = (newest.at - oldest.at).num_seconds().unsigned_abs();
            format!(" Throughput per second · last {} ", fmt_span(secs))
        }
        _ => " Throughput per second ".to_string(),
    };
    let block = panel(title);
    let waiting = match app.throughput.rates() {
        _ if !shown.is_empty() => None,
        Rates::Unavailable => Some("  This server has no /metrics: nothing to chart."),
        _ => Some("  Measuring: a rate needs two /metrics scrapes, 2 s apart…"),
    };
    if matches!(app.connection(), Connection::Unreachable(_)) {
        // The attention list below says why and where.
        let text = Span::styled(
            "  Server unreachable: no rates.",
            Style::new().fg(Color::Red),
        );
        message(frame, area, block, vec![Line::from(""), Line::from(text)]);
        return;
    }
    if let Some(text) = waiting {
        message(frame, area, block, vec![Line::from(""), Line::from(text)]);
        return;
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical([Constraint::Length(1 + CHART_ROWS); 3]).split(inner);
    for (series, &row) in SERIES.iter().zip(rows.iter()) {
        let [label, chart] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(CHART_ROWS)]).areas(row);
        let rates: Vec<Option<f64>> = shown.iter().map(|p| (series.rate)(p)).collect();
        let max = rates.iter().flatten().copied().fold(0.0, f64::max);
        let now = rates.first().copied().flatten();
        frame.render_widget(
            Line::from(vec![
                Span::styled(
                    format!(" {:<10}", series.name),
                    Style::new().fg(series.colour).bold(),
                ),
                Span::raw(format!(
                    "{} now · {} max",
                    per_second(now),
                    per_second(Some(max))
                )),
            ]),
            label,
        );
        let bars = rates
            .iter()
            .map(|r| SparklineBar::from(r.map(|r| (r * CHART_SCALE).round().max(0.0) as u64)));
        frame.render_widget(
            Sparkline::default()
                .data(bars)
                .direction(RenderDirection::RightToLeft)
                .style(Style::new().fg(series.colour)),
            chart.inner(ratatui::layout::Margin::new(1, 0)),
        );
    }
}

/// A count line: label, value right-aligned, coloured when not zero.
fn count(label: &str, value: Option<f64>, alert: Style) -> Line<'static> {
    let (text, style) = match value {
        Some(v) => (
            format!("{v:.0}"),
            if v > 0.0 { alert } else { Style::new() },
        ),
        None => ("-".to_string(), Style::new().fg(Color::Gray)),
    };
    let width = usize::from(SIDE_WIDTH - 4).saturating_sub(label.chars().count());
    Line::from(vec![
        Span::styled(format!(" {label}"), Style::new().fg(Color::Gray)),
        Span::styled(format!("{text:>width$}"), style),
    ])
}

fn draw_counts(app: &App, frame: &mut Frame, area: Rect) {
    let g = app
        .throughput
        .gauges()
        .copied()
        .unwrap_or(Gauges::default());
    let plain = Style::new().bold();
    let yellow = Style::new().fg(Color::Yellow);
    let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let note = Style::new().fg(Color::DarkGray);
    let lines = vec![
        count("Webhooks waiting", g.waiting(), plain),
        count("  pending", g.consumer_pending, Style::new()),
        count("  ack pending", g.consumer_ack_pending, Style::new()),
        Line::from(""),
        count("Circuits open", g.circuits_open, red),
        count("Circuits half open", g.circuits_half_open, yellow),
        count("Disabled", g.disabled, red.remove_modifier(Modifier::BOLD)),
        count("Throttled", g.throttled, yellow),
        Line::from(""),
        Line::from(Span::styled(" pending: not handed out yet", note)),
        Line::from(Span::styled(" ack pending: in flight or", note)),
        Line::from(Span::styled("   waiting for a retry", note)),
    ];
    message(frame, area, panel(" Queue and endpoints "), lines);
}

fn draw_attention(app: &App, frame: &mut Frame, area: Rect) {
    let subs = app.needing_attention();
    let title = if subs.is_empty() {
        " Needs attention ".to_string()
    } else {
        format!(" Needs attention ({}) · open circuits first ", subs.len())
    };
    let block = panel(title);
    if !app.subs.loaded {
        let lines = unreachable_lines(app)
            .unwrap_or_else(|| vec![Line::from(""), Line::from("  Loading subscriptions…")]);
        message(frame, area, block, lines);
        return;
    }
    if subs.is_empty() {
        let text = if app.subs.items.is_empty() {
            Span::raw("  No subscriptions yet. Press 2, then n to create one.")
        } else if app.subs.items.iter().all(|s| s.health.is_none()) {
            Span::styled(
                "  No disabled subscription. This server does not report circuits.",
                Style::new().fg(Color::Gray),
            )
        } else {
            Span::styled(
                "  ✓ No open circuit, no disabled subscription.",
                Style::new().fg(Color::Green),
            )
        };
        message(frame, area, block, vec![Line::from(""), Line::from(text)]);
        return;
    }
    const FIXED: [u16; 5] = [8, 11, 26, 5, 10];
    let why_width = fill_width(area, &FIXED);
    let now = app.now.as_ref();
    let rows = subs.iter().map(|s| {
        Row::new(vec![
            Cell::from(short_id(&s.id).to_string()).style(Style::new().fg(ACCENT)),
            state_cell(app.badge(s)),
            Cell::from(fit(&s.target_url, FIXED[2])),
            failures_cell(s),
            last_ok_cell(s, now),
            Cell::from(fit(&attention_note(s, now), why_width)),
        ])
    });
    let mut widths: Vec<Constraint> = FIXED.iter().map(|&w| Constraint::Length(w)).collect();
    widths.push(Constraint::Fill(1));
    let header = Row::new(["ID", "STATE", "TARGET URL", "FAILS", "LAST OK", "WHY"])
        .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let selected = app.overview.selected.min(subs.len() - 1);
    let mut state = TableState::default().with_selected(Some(selected));
    frame.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiError, Circuit, SubscriptionState};
    use crate::app::Action;
    use crate::screens::confirm::Ask;
    use crate::screens::Screen;
    use crate::testkit::*;
    use chrono::Duration;
    use ratatui::crossterm::event::KeyCode;

    /// Four subscriptions: 1 ok, 2 disabled, 3 open, 4 probing.
    fn troubled_app() -> App {
        let mut subs: Vec<Subscription> = (1..=4)
            .map(|n| sub(n, &format!("https://{n}.example/hook"), None))
            .collect();
        subs[1].state = SubscriptionState::Disabled;
        subs[2].health.as_mut().unwrap().circuit = Circuit::Open;
        subs[3].health.as_mut().unwrap().circuit = Circuit::HalfOpen;
        let mut app = App::new("http://x");
        app.update(Action::Init);
        app.update(Action::SubscriptionsLoaded(Ok(subs)));
        app
    }

    fn attention_ids(app: &App) -> Vec<String> {
        app.needing_attention()
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    #[test]
    fn attention_list_orders_open_probing_disabled() {
        let app = troubled_app();
        assert_eq!(app.screen(), Screen::Overview);
        let ids = attention_ids(&app);
        assert_eq!(
            ids,
            [
                sub(3, "", None).id,
                sub(4, "", None).id,
                sub(2, "", None).id
            ]
        );
    }

    #[test]
    fn keys_select_open_and_toggle() {
        let mut app = troubled_app();
        app.update(key(KeyCode::Down));
        app.update(key(KeyCode::Down));
        // The disabled one: x offers to enable it.
        app.update(ch('x'));
        assert_eq!(app.confirmation().map(|c| c.ask), Some(Ask::Enable));
        assert_eq!(
            app.confirmation().map(|c| c.id.clone()),
            Some(sub(2, "", None).id)
        );
        app.update(ch('n'));
        app.update(key(KeyCode::Up));
        app.update(ch('x'));
        assert_eq!(app.confirmation().map(|c| c.ask), Some(Ask::Disable));
        app.update(key(KeyCode::Esc));
        let fx = app.update(key(KeyCode::Enter));
        assert_eq!(app.screen(), Screen::SubscriptionDetail);
        assert!(fx.contains(&Effect::LoadSubscription(sub(4, "", None).id)));
        app.update(key(KeyCode::Esc));
        assert_eq!(app.screen(), Screen::Overview);
    }

    #[test]
    fn selection_stays_in_a_shrinking_list() {
        let mut app = troubled_app();
        app.update(key(KeyCode::End));
        // Everything recovers but one.
        let mut open = sub(3, "", None);
        open.health.as_mut().unwrap().circuit = Circuit::Open;
        app.update(Action::SubscriptionsLoaded(Ok(vec![
            sub(1, "", None),
            open,
        ])));
        assert_eq!(
            app.selected_attention().map(|s| s.id.clone()),
            Some(sub(3, "", None).id)
        );
        app.update(ch('x'));
        assert_eq!(
            app.confirmation().map(|c| c.id.clone()),
            Some(sub(3, "", None).id)
        );
    }

    #[test]
    fn a_server_without_health_is_not_called_healthy() {
        let mut app = troubled_app();
        let mut old = sub(1, "", None);
        old.health = None;
        app.update(Action::SubscriptionsLoaded(Ok(vec![old])));
        let screen = render_text(&app);
        assert!(screen.contains("does not report circuits"), "{screen}");
        assert!(!screen.contains("No open circuit"), "{screen}");
        app.update(Action::SubscriptionsLoaded(Ok(vec![sub(1, "", None)])));
        assert!(render_text(&app).contains("No open circuit"));
    }

    fn render_text(app: &App) -> String {
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 30)).unwrap();
        terminal
            .draw(|frame| crate::ui::render(app, frame))
            .unwrap();
        terminal.backend().to_string()
    }

    #[test]
    fn refresh_reloads_list_and_metrics_once() {
        let mut app = troubled_app();
        app.update(Action::MetricsScraped {
            at: t0(),
            result: Ok(String::new()),
        });
        let fx = app.update(ch('r'));
        assert_eq!(fx, [Effect::LoadSubscriptions, Effect::ScrapeMetrics]);
        assert!(app.update(ch('r')).is_empty(), "both still in flight");
    }

    fn scrape(app: &mut App, secs: i64, accepted: u32, success: u32, failure: u32) {
        let text = format!(
            "webhookd_webhooks_accepted_total {accepted}\n\
             webhookd_deliveries_total{{outcome=\"success\"}} {success}\n\
             webhookd_deliveries_total{{outcome=\"failure\"}} {failure}\n\
             webhookd_consumer_pending 7\nwebhookd_consumer_ack_pending 2\n"
        );
        app.update(Action::MetricsScraped {
            at: t0() + Duration::seconds(secs),
            result: Ok(text),
        });
    }

    #[test]
    fn scrapes_fill_the_rate_ring() {
        let mut app = troubled_app();
        scrape(&mut app, 0, 0, 0, 0);
        assert!(app.throughput.history().is_empty());
        assert_eq!(app.throughput.gauges().and_then(Gauges::waiting), Some(9.0));
        scrape(&mut app, 2, 10, 6, 2);
        scrape(&mut app, 4, 10, 16, 2);
        let points: Vec<_> = app
            .throughput
            .history()
            .iter()
            .map(|p| (p.accepted, p.delivered, p.failed))
            .collect();
        assert_eq!(
            points,
            [
                (Some(5.0), Some(3.0), Some(1.0)),
                (Some(0.0), Some(5.0), Some(0.0))
            ]
        );
        // The server goes away: the chart starts afresh afterwards.
        app.update(Action::Health(Err(ApiError::Unreachable("refused".into()))));
        assert!(app.throughput.history().is_empty());
        app.update(Action::Health(Ok(())));
        scrape(&mut app, 10, 12, 16, 2);
        assert!(app.throughput.history().is_empty(), "one scrape is no rate");
        scrape(&mut app, 12, 16, 16, 2);
        let last = app.throughput.history().back().unwrap();
        assert_eq!((last.accepted, last.delivered), (Some(2.0), Some(0.0)));
    }
}
