//! How a subscription's health reads on screen: one [`Badge`] (symbol,
//! word, colour) for the tables, and the lines of the detail screen's
//! health block. Pure functions of the subscription, the clock and the
//! in-flight cap the app has seen.

use chrono::{DateTime, Utc};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Cell;

use crate::api::{Circuit, Health, Subscription, SubscriptionState};
use crate::widgets::{fmt_relative, fmt_time, kv};

/// The state of a subscription at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Badge {
    /// Active, circuit closed, at its full in-flight cap.
    Ok,
    /// Active, circuit closed, held below the cap after 429/5xx answers.
    Throttled,
    /// Half open: one probe decides whether the circuit closes.
    Probing,
    /// Open: nothing is sent until the next probe.
    Open,
    /// Disabled (by the server or an operator).
    Disabled,
    /// Active, but the server does not report health.
    Unreported,
    /// A state or circuit this client does not know.
    Unknown,
}

impl Badge {
    /// The badge of `sub`. `cap` is the largest `max_in_flight` seen (what
    /// a healthy endpoint is allowed); below it a closed circuit is
    /// throttled.
    pub fn of(sub: &Subscription, cap: u32) -> Badge {
        match sub.state {
            SubscriptionState::Disabled => return Badge::Disabled,
            SubscriptionState::Unknown => return Badge::Unknown,
            SubscriptionState::Active => {}
        }
        let Some(health) = &sub.health else {
            return Badge::Unreported;
        };
        match health.circuit {
            Circuit::Open => Badge::Open,
            Circuit::HalfOpen => Badge::Probing,
            Circuit::Unknown => Badge::Unknown,
            Circuit::Closed if health.max_in_flight < cap => Badge::Throttled,
            Circuit::Closed => Badge::Ok,
        }
    }

    /// Symbol and word, e.g. `○ open`.
    pub fn text(self) -> &'static str {
        match self {
            Badge::Ok => "● ok",
            Badge::Throttled => "▼ throttled",
            Badge::Probing => "◐ probing",
            Badge::Open => "○ open",
            Badge::Disabled => "⊘ disabled",
            Badge::Unreported => "– active",
            Badge::Unknown => "? unknown",
        }
    }

    /// Green for ok, yellow for degraded, red for open, dim red for
    /// disabled.
    pub fn style(self) -> Style {
        match self {
            Badge::Ok => Style::new().fg(Color::Green),
            Badge::Throttled | Badge::Probing => Style::new().fg(Color::Yellow),
            Badge::Open => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Badge::Disabled => Style::new().fg(Color::Red).add_modifier(Modifier::DIM),
            Badge::Unreported | Badge::Unknown => Style::new().fg(Color::Gray),
        }
    }

    /// The badge as a styled span.
    pub fn span(self) -> Span<'static> {
        Span::styled(self.text(), self.style())
    }

    /// Whether the overview lists it: nothing (or only a probe) is sent.
    pub fn needs_attention(self) -> bool {
        matches!(self, Badge::Open | Badge::Probing | Badge::Disabled)
    }
}

/// `12s ago` relative to `now`, the time itself before the first tick,
/// `-` for no time.
pub fn ago(now: Option<&DateTime<Utc>>, t: Option<&DateTime<Utc>>) -> String {
    match (now, t) {
        (_, None) => "-".to_string(),
        (Some(now), Some(t)) => fmt_relative(now, t),
        (None, Some(t)) => t.format("%H:%M:%S").to_string(),
    }
}

/// A time with its distance from now: `2026-11-29 09:41:03 (12s ago)`.
fn when(now: Option<&DateTime<Utc>>, t: &DateTime<Utc>) -> String {
    match now {
        Some(now) => format!("{} ({})", fmt_time(t), fmt_relative(now, t)),
        None => fmt_time(t),
    }
}

/// The STATE cell of the tables: the badge in its colour.
pub fn state_cell(badge: Badge) -> Cell<'static> {
    Cell::from(badge.text()).style(badge.style())
}

/// The FAILS cell of the tables: consecutive failures, red while the
/// endpoint keeps failing, `-` without health.
pub fn failures_cell(sub: &Subscription) -> Cell<'static> {
    match &sub.health {
        Some(h) if h.consecutive_failures > 0 => {
            Cell::from(h.consecutive_failures.to_string()).style(Style::new().fg(Color::Red))
        }
        Some(h) => Cell::from(h.consecutive_failures.to_string()),
        None => Cell::from("-"),
    }
}

/// The LAST OK cell of the tables: the last success relative to `now`.
pub fn last_ok_cell(sub: &Subscription, now: Option<&DateTime<Utc>>) -> Cell<'static> {
    let last_ok = sub.health.as_ref().and_then(|h| h.last_success_at.as_ref());
    Cell::from(ago(now, last_ok))
}

/// Why a subscription needs attention, in a few words: the disabled
/// reason, the next probe of an open circuit.
pub fn attention_note(sub: &Subscription, now: Option<&DateTime<Utc>>) -> String {
    match Badge::of(sub, 0) {
        Badge::Disabled => sub
            .disabled_reason
            .clone()
            .unwrap_or_else(|| "disabled".to_string()),
        Badge::Open => match sub.health.as_ref().and_then(|h| h.circuit_open_until) {
            Some(until) => format!("next probe {}", ago(now, Some(&until))),
            None => "no probe scheduled".to_string(),
        },
        Badge::Probing => "one probe in flight decides".to_string(),
        _ => String::new(),
    }
}

/// The lines of the detail screen's health block.
pub fn detail_lines(
    sub: &Subscription,
    cap: u32,
    now: Option<&DateTime<Utc>>,
) -> Vec<Line<'static>> {
    let badge = Badge::of(sub, cap);
    let mut state = vec![
        Span::styled(format!("  {:<14}", "State"), Style::new().fg(Color::Gray)),
        badge.span(),
    ];
    if let (Badge::Disabled, Some(at)) = (badge, &sub.disabled_at) {
        state.push(Span::raw(format!(" since {}", when(now, at))));
    }
    let mut lines = vec![Line::from(state)];
    if badge == Badge::Disabled {
        let reason = sub.disabled_reason.as_deref().unwrap_or("not given");
        lines.push(kv("Reason", reason.to_string()));
    }
    let Some(h) = &sub.health else {
        lines.push(kv("Health", "not reported by this server"));
        return lines;
    };
    lines.push(kv("Circuit", circuit_text(h, now)));
    let mut failures = format!("{} in a row", h.consecutive_failures);
    if let Some(at) = &h.last_failure_at {
        failures.push_str(&format!(" · last {}", when(now, at)));
    }
    lines.push(kv("Failures", failures));
    lines.push(kv(
        "Last success",
        h.last_success_at.as_ref().map_or_else(
            || "none since the server started".to_string(),
            |at| when(now, at),
        ),
    ));
    let mut in_flight = format!("{} of {} allowed", h.in_flight, h.max_in_flight);
    if badge == Badge::Throttled {
        in_flight.push_str(&format!(" (throttled; {cap} when healthy)"));
    }
    lines.push(kv("In flight", in_flight));
    lines
}

fn circuit_text(h: &Health, now: Option<&DateTime<Utc>>) -> String {
    match h.circuit {
        Circuit::Closed => "closed".to_string(),
        Circuit::Open => match &h.circuit_open_until {
            Some(until) => format!("open · next probe {}", when(now, until)),
            None => "open".to_string(),
        },
        Circuit::HalfOpen => "half open · one probe in flight".to_string(),
        Circuit::Unknown => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Health;
    use crate::testkit::{sub, t0};

    fn with(circuit: Circuit, max_in_flight: u32) -> Subscription {
        let mut s = sub(1, "https://a.example/hook", None);
        s.health = Some(Health {
            circuit,
            max_in_flight,
            ..Health::default()
        });
        s
    }

    #[test]
    fn badges() {
        assert_eq!(Badge::of(&with(Circuit::Closed, 64), 64), Badge::Ok);
        assert_eq!(Badge::of(&with(Circuit::Closed, 8), 64), Badge::Throttled);
        assert_eq!(Badge::of(&with(Circuit::HalfOpen, 1), 64), Badge::Probing);
        assert_eq!(Badge::of(&with(Circuit::Open, 0), 64), Badge::Open);
        assert_eq!(Badge::of(&with(Circuit::Unknown, 0), 64), Badge::Unknown);
        let mut s = with(Circuit::Open, 0);
        s.state = SubscriptionState::Disabled;
        assert_eq!(Badge::of(&s, 64), Badge::Disabled);
        s.health = None;
        s.state = SubscriptionState::Active;
        assert_eq!(Badge::of(&s, 64), Badge::Unreported);
        assert!(Badge::Open.needs_attention() && !Badge::Throttled.needs_attention());
    }

    #[test]
    fn times() {
        assert_eq!(ago(None, None), "-");
        assert_eq!(ago(None, Some(&t0())), "09:41:03");
        assert_eq!(ago(Some(&t0()), Some(&t0())), "in 0s");
    }

    #[test]
    fn attention_notes() {
        let mut s = with(Circuit::Open, 0);
        s.health.as_mut().unwrap().circuit_open_until = Some(t0() + chrono::Duration::seconds(25));
        assert_eq!(attention_note(&s, Some(&t0())), "next probe in 25s");
        s.state = SubscriptionState::Disabled;
        s.disabled_reason = Some("the receiver answered 410 Gone".into());
        assert_eq!(attention_note(&s, None), "the receiver answered 410 Gone");
    }
}
