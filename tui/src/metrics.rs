//! Just enough Prometheus text parsing for the header rates and the
//! overview: counters turned into per-second rates, the last
//! [`HISTORY_LEN`] rates for the charts, and a few gauges.
//!
//! The server exposes counters; a rate needs two scrapes, so [`Rates`] keeps
//! the previous sample and derives per-second rates from the next one;
//! [`Throughput`] keeps the rates of the last scrapes as well.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

/// Counter of webhooks accepted at ingest.
pub const ACCEPTED_TOTAL: &str = "webhookd_webhooks_accepted_total";
/// Counter of delivery attempts, labelled by `outcome`.
pub const DELIVERIES_TOTAL: &str = "webhookd_deliveries_total";
/// Gauge of subscriptions by circuit `state` (`open`, `half_open`).
pub const CIRCUITS: &str = "webhookd_circuits";
/// Gauge of disabled subscriptions.
pub const SUBSCRIPTIONS_DISABLED: &str = "webhookd_subscriptions_disabled";
/// Gauge of subscriptions held below their cap by the throttle.
pub const SUBSCRIPTIONS_THROTTLED: &str = "webhookd_subscriptions_throttled";
/// Gauge of webhooks queued and not yet handed to a worker.
pub const CONSUMER_PENDING: &str = "webhookd_consumer_pending";
/// Gauge of webhooks handed out: in flight or waiting for a retry delay.
pub const CONSUMER_ACK_PENDING: &str = "webhookd_consumer_ack_pending";
/// Rates kept for the overview charts (one per scrape).
pub const HISTORY_LEN: usize = 120;

/// The samples of the metric `name`: the text inside its `{..}` (empty
/// without labels) and its value. Comments, other metrics (`foo_total_bar`
/// when asked for `foo_total`) and values that are not finite numbers are
/// skipped.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let rest = line.strip_prefix(name)?;
        // The name must end here: `foo_total_bar` is another metric.
        let (labels, rest) = if let Some(labels) = rest.strip_prefix('{') {
            split_labels(labels)?
        } else if rest.starts_with(char::is_whitespace) {
            ("", rest)
        } else {
            return None;
        };
        let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
        value.is_finite().then_some((labels, value))
    })
}

/// Sum of all samples of the counter `name` (over every label set), or
/// `None` when the text has no sample of it.
pub fn counter_sum(text: &str, name: &str) -> Option<f64> {
    samples(text, name).fold(None, |sum, (_, v)| Some(sum.unwrap_or(0.0) + v))
}

/// Given the text after `{`, split it into the labels and the text after
/// the matching `}`, honouring quoted label values (which may contain `}`
/// or `\"`).
fn split_labels(s: &str) -> Option<(&str, &str)> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == '}' {
            return Some((&s[..i], s.get(i + 1..)?));
        }
    }
    None
}

/// The value of label `key` in `labels` (`a="1",b="x\"y"`), unescaped.
fn label(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        let (name, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i + 1,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        if name.trim().trim_start_matches(',').trim() == key {
            return Some(value);
        }
        rest = after.get(end + 1..)?;
    }
}

/// Sum of the samples of `name` whose label `key` is one of `values`;
/// `None` when the text has no sample of `name` at all (a family with
/// samples but none of these labels is at zero).
pub fn labelled_sum(text: &str, name: &str, key: &str, values: &[&str]) -> Option<f64> {
    let mut any = false;
    let mut total = 0.0;
    for (labels, value) in samples(text, name) {
        any = true;
        if label(labels, key).is_some_and(|v| values.contains(&v.as_str())) {
            total += value;
        }
    }
    any.then_some(total)
}

/// Whether the text declares the metric family `name` (a `# TYPE` line),
/// so that a family without samples yet (no delivery so far) reads as 0.
fn declared(text: &str, name: &str) -> bool {
    let family = name.strip_suffix("_total").unwrap_or(name);
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("#")
            && words.next() == Some("TYPE")
            && words.next().is_some_and(|w| w == name || w == family)
    })
}

/// The value of `found`, or 0 when the family `name` is declared but has
/// no samples yet.
fn or_declared(found: Option<f64>, text: &str, name: &str) -> Option<f64> {
    found.or_else(|| declared(text, name).then_some(0.0))
}

/// Gauges of one scrape; `None` where the server does not export one.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gauges {
    /// Queued, not yet handed to a worker.
    pub consumer_pending: Option<f64>,
    /// Handed out: in flight or waiting for a retry delay.
    pub consumer_ack_pending: Option<f64>,
    /// Subscriptions whose circuit is open.
    pub circuits_open: Option<f64>,
    /// Subscriptions whose circuit is half open (probing).
    pub circuits_half_open: Option<f64>,
    /// Disabled subscriptions.
    pub disabled: Option<f64>,
    /// Throttled subscriptions.
    pub throttled: Option<f64>,
}

impl Gauges {
    /// Read the gauges out of a scrape.
    pub fn parse(text: &str) -> Gauges {
        let gauge = |name: &str| or_declared(counter_sum(text, name), text, name);
        let circuits = |state: &str| {
            or_declared(
                labelled_sum(text, CIRCUITS, "state", &[state]),
                text,
                CIRCUITS,
            )
        };
        Gauges {
            consumer_pending: gauge(CONSUMER_PENDING),
            consumer_ack_pending: gauge(CONSUMER_ACK_PENDING),
            circuits_open: circuits("open"),
            circuits_half_open: circuits("half_open"),
            disabled: gauge(SUBSCRIPTIONS_DISABLED),
            throttled: gauge(SUBSCRIPTIONS_THROTTLED),
        }
    }

    /// Webhooks waiting: pending plus ack pending, when both are known.
    pub fn waiting(&self) -> Option<f64> {
        Some(self.consumer_pending? + self.consumer_ack_pending?)
    }
}

/// The counters at one point in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the scrape finished.
    pub at: DateTime<Utc>,
    /// `webhookd_webhooks_accepted_total`.
    pub accepted: Option<f64>,
    /// `webhookd_deliveries_total`, summed over `outcome`.
    pub deliveries: Option<f64>,
    /// `webhookd_deliveries_total{outcome="success"}`.
    pub delivered: Option<f64>,
    /// `webhookd_deliveries_total` with outcome `failed_attempt` or
    /// `failure`: every attempt that did not succeed.
    pub failed: Option<f64>,
    /// The gauges of the same scrape.
    pub gauges: Gauges,
}

impl Sample {
    /// Read the counters and gauges out of a scrape.
    pub fn parse(at: DateTime<Utc>, text: &str) -> Sample {
        let accepted = or_declared(counter_sum(text, ACCEPTED_TOTAL), text, ACCEPTED_TOTAL);
        // webhookd prints no line of the attempts family before the first
        // attempt: next to its accepted counter, that means none so far.
        let none_yet = accepted.map(|_| 0.0);
        let outcomes = |values: &[&str]| {
            or_declared(
                labelled_sum(text, DELIVERIES_TOTAL, "outcome", values),
                text,
                DELIVERIES_TOTAL,
            )
            .or(none_yet)
        };
        Sample {
            at,
            accepted,
            deliveries: or_declared(counter_sum(text, DELIVERIES_TOTAL), text, DELIVERIES_TOTAL)
                .or(none_yet),
            delivered: outcomes(&["success"]),
            failed: outcomes(&["failed_attempt", "failure"]),
            gauges: Gauges::parse(text),
        }
    }
}

/// Per-second rates between two scrapes; `None` where a counter is
/// missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    /// When the later scrape finished.
    pub at: DateTime<Utc>,
    /// Webhooks accepted per second.
    pub accepted: Option<f64>,
    /// Delivery attempts per second (any outcome).
    pub deliveries: Option<f64>,
    /// Successful deliveries per second.
    pub delivered: Option<f64>,
    /// Failed attempts per second (retried or final).
    pub failed: Option<f64>,
}

impl RatePoint {
    /// The rates from `prev` to `next`, `None` when no time passed.
    fn between(prev: &Sample, next: &Sample) -> Option<RatePoint> {
        let secs = (next.at - prev.at).num_milliseconds() as f64 / 1000.0;
        if secs <= 0.0 {
            return None;
        }
        let rate = |now: Option<f64>, before: Option<f64>| match (now, before) {
            // A counter that went down means the server restarted; the
            // delta is meaningless, so count from zero.
            (Some(n), Some(b)) if n >= b => Some((n - b) / secs),
            (Some(n), Some(_)) => Some(n / secs),
            _ => None,
        };
        Some(RatePoint {
            at: next.at,
            accepted: rate(next.accepted, prev.accepted),
            deliveries: rate(next.deliveries, prev.deliveries),
            delivered: rate(next.delivered, prev.delivered),
            failed: rate(next.failed, prev.failed),
        })
    }
}

/// What the header can say about throughput.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Rates {
    /// No scrape yet.
    #[default]
    Unknown,
    /// One scrape so far; a rate needs a second one.
    Measuring(Sample),
    /// Rates from the last two scrapes.
    Known {
        /// Latest sample, the base of the next rate.
        last: Sample,
        /// The rates up to it.
        now: RatePoint,
    },
    /// `/metrics` is missing or has neither counter.
    Unavailable,
}

impl Rates {
    /// Fold a new scrape in.
    pub fn observe(self, sample: Sample) -> Rates {
        if sample.accepted.is_none() && sample.deliveries.is_none() {
            return Rates::Unavailable;
        }
        let prev = match self {
            Rates::Measuring(prev) | Rates::Known { last: prev, .. } => prev,
            Rates::Unknown | Rates::Unavailable => return Rates::Measuring(sample),
        };
        match RatePoint::between(&prev, &sample) {
            Some(now) => Rates::Known { last: sample, now },
            None => Rates::Measuring(sample),
        }
    }

    /// The latest scrape, if any.
    pub fn latest(&self) -> Option<&Sample> {
        match self {
            Rates::Measuring(s) | Rates::Known { last: s, .. } => Some(s),
            Rates::Unknown | Rates::Unavailable => None,
        }
    }

    /// Header text, e.g. `in 1.5/s · out 3.0/s`.
    pub fn label(&self) -> String {
        match self {
            Rates::Unknown | Rates::Measuring(_) => "rates …".to_string(),
            Rates::Unavailable => "rates n/a".to_string(),
            Rates::Known { now, .. } => format!(
                "in {} · out {}",
                per_second(now.accepted),
                per_second(now.deliveries)
            ),
        }
    }
}

/// `1.5/s`, or `n/a` for an unknown rate.
pub fn per_second(rate: Option<f64>) -> String {
    match rate {
        Some(r) => format!("{r:.1}/s"),
        None => "n/a".to_string(),
    }
}

/// The header rates and the rates of the last [`HISTORY_LEN`] scrapes,
/// oldest first, for the overview charts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throughput {
    rates: Rates,
    history: VecDeque<RatePoint>,
}

impl Throughput {
    /// Fold a new scrape in; a new rate joins the history (the oldest
    /// leaves it when full).
    pub fn observe(&mut self, sample: Sample) {
        self.rates = self.rates.observe(sample);
        match self.rates {
            Rates::Known { now, .. } => {
                if self.history.len() == HISTORY_LEN {
                    self.history.pop_front();
                }
                self.history.push_back(now);
            }
            Rates::Unavailable => self.history.clear(),
            Rates::Unknown | Rates::Measuring(_) => {}
        }
    }

    /// `/metrics` is not there: no rates, no charts.
    pub fn unavailable(&mut self) {
        self.rates = Rates::Unavailable;
        self.history.clear();
    }

    /// Start measuring afresh (after the server was unreachable: old
    /// rates would look live, and a chart would hide the gap).
    pub fn reset(&mut self) {
        self.rates = Rates::Unknown;
        self.history.clear();
    }

    /// The header state.
    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    /// The rates of the last scrapes, oldest first.
    pub fn history(&self) -> &VecDeque<RatePoint> {
        &self.history
    }

    /// The gauges of the latest scrape, if any.
    pub fn gauges(&self) -> Option<&Gauges> {
        self.rates.latest().map(|s| &s.gauges)
    }

    /// Header text, see [`Rates::label`].
    pub fn label(&self) -> String {
        self.rates.label()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const TEXT: &str = r#"
# HELP webhookd_webhooks_accepted_total Webhooks accepted.
# TYPE webhookd_webhooks_accepted_total counter
webhookd_webhooks_accepted_total 10
webhookd_webhooks_accepted_total_created 1700000000
webhookd_deliveries_total{outcome="success"} 7
webhookd_deliveries_total{outcome="failed_attempt",note="a}b \"q\""} 2 1700000000000
webhookd_deliveries_total{outcome="failure"} 1
"#;

    #[test]
    fn sums_counters_over_labels() {
        assert_eq!(counter_sum(TEXT, ACCEPTED_TOTAL), Some(10.0));
        assert_eq!(counter_sum(TEXT, DELIVERIES_TOTAL), Some(10.0));
        assert_eq!(counter_sum(TEXT, "nope_total"), None);
    }

    #[test]
    fn rates_need_two_samples() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap();
        let t1 = t0 + chrono::Duration::seconds(2);
        let r = Rates::Unknown.observe(Sample::parse(t0, TEXT));
        assert_eq!(r.label(), "rates …");
        let later = TEXT
            .replace("accepted_total 10", "accepted_total 13")
            .replace("} 1\n", "} 5\n");
        let r = r.observe(Sample::parse(t1, &later));
        assert_eq!(r.label(), "in 1.5/s · out 2.0/s");
    }

    #[test]
    fn missing_counters_mean_unavailable() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap();
        let r = Rates::Unknown.observe(Sample::parse(t0, "other_metric 1\n"));
        assert_eq!(r, Rates::Unavailable);
        assert_eq!(r.label(), "rates n/a");
    }

    const HEALTH_TEXT: &str = r#"
# TYPE webhookd_circuits gauge
webhookd_circuits{state="open"} 2
webhookd_circuits{state="half_open"} 1
webhookd_subscriptions_disabled 3
webhookd_subscriptions_throttled 0
webhookd_consumer_pending 12
webhookd_consumer_ack_pending 5
webhookd_consumer_pending_total_bogus 99
"#;

    #[test]
    fn gauges_and_labels() {
        let g = Gauges::parse(HEALTH_TEXT);
        assert_eq!(g.circuits_open, Some(2.0));
        assert_eq!(g.circuits_half_open, Some(1.0));
        assert_eq!(g.disabled, Some(3.0));
        assert_eq!(g.throttled, Some(0.0));
        assert_eq!(g.consumer_pending, Some(12.0));
        assert_eq!(g.consumer_ack_pending, Some(5.0));
        assert_eq!(g.waiting(), Some(17.0));
        // An older server: none of them.
        let g = Gauges::parse(TEXT);
        assert_eq!(g, Gauges::default());
        assert_eq!(g.waiting(), None);
        assert_eq!(
            label(r#"a="1",note="x\"}y",b="2""#, "b").as_deref(),
            Some("2")
        );
        assert_eq!(label(r#"note="x\"}y""#, "note").as_deref(), Some("x\"}y"));
        assert_eq!(label(r#"a="1""#, "b"), None);
    }

    #[test]
    fn outcomes_split_and_declared_families_read_zero() {
        let s = Sample::parse(t(0), TEXT);
        assert_eq!(s.delivered, Some(7.0));
        assert_eq!(s.failed, Some(3.0));
        // Successes only so far: failures are at zero, not unknown.
        let s = Sample::parse(t(0), "webhookd_deliveries_total{outcome=\"success\"} 4\n");
        assert_eq!(s.failed, Some(0.0));
        // No attempt yet: the family is declared without samples.
        let fresh = "# TYPE webhookd_deliveries counter\n# TYPE webhookd_circuits gauge\n";
        let s = Sample::parse(t(0), fresh);
        assert_eq!(
            (s.deliveries, s.delivered, s.failed),
            (Some(0.0), Some(0.0), Some(0.0))
        );
        assert_eq!(s.gauges.circuits_open, Some(0.0));
        assert_eq!(s.accepted, None);
        assert_eq!(Sample::parse(t(0), "").failed, None);
        // What webhookd prints before its first attempt: no line at all of
        // the attempts family, but the accepted counter.
        let s = Sample::parse(
            t(0),
            "# TYPE webhookd_webhooks_accepted counter\nwebhookd_webhooks_accepted_total 0\n",
        );
        assert_eq!(
            (s.accepted, s.deliveries, s.failed),
            (Some(0.0), Some(0.0), Some(0.0))
        );
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn counters(accepted: u32, success: u32, failed: u32) -> String {
        format!(
            "webhookd_webhooks_accepted_total {accepted}\n\
             webhookd_deliveries_total{{outcome=\"success\"}} {success}\n\
             webhookd_deliveries_total{{outcome=\"failed_attempt\"}} {failed}\n"
        )
    }

    #[test]
    fn history_keeps_one_rate_per_interval() {
        let mut th = Throughput::default();
        th.observe(Sample::parse(t(0), &counters(0, 0, 0)));
        assert!(th.history().is_empty(), "one scrape is no rate yet");
        th.observe(Sample::parse(t(2), &counters(4, 2, 6)));
        // A longer interval: the rate divides by the time that passed.
        th.observe(Sample::parse(t(6), &counters(4, 22, 6)));
        let rates: Vec<_> = th
            .history()
            .iter()
            .map(|p| (p.at, p.accepted, p.delivered, p.failed, p.deliveries))
            .collect();
        assert_eq!(
            rates,
            [
                (t(2), Some(2.0), Some(1.0), Some(3.0), Some(4.0)),
                (t(6), Some(0.0), Some(5.0), Some(0.0), Some(5.0)),
            ]
        );
        assert_eq!(th.label(), "in 0.0/s · out 5.0/s");
        // A server restart (counters went down) counts from zero.
        th.observe(Sample::parse(t(8), &counters(2, 0, 0)));
        assert_eq!(th.history().back().and_then(|p| p.accepted), Some(1.0));
        // A scrape at the same instant adds no rate.
        th.observe(Sample::parse(t(8), &counters(3, 0, 0)));
        assert_eq!(th.history().len(), 3);
    }

    #[test]
    fn history_is_a_ring_of_the_last_rates() {
        let mut th = Throughput::default();
        for i in 0..=(HISTORY_LEN as u32 + 10) {
            th.observe(Sample::parse(t(2 * i64::from(i)), &counters(i * i, 0, 0)));
        }
        assert_eq!(th.history().len(), HISTORY_LEN);
        // The oldest rates left: the first kept ends at scrape 11, whose
        // accepted counter grew by 11² - 10² = 21 in 2 s.
        let first = th.history().front().unwrap();
        assert_eq!((first.at, first.accepted), (t(22), Some(10.5)));
        assert_eq!(
            th.history().back().unwrap().at,
            t(2 * (HISTORY_LEN as i64 + 10))
        );
        th.reset();
        assert!(th.history().is_empty());
        assert_eq!(th.label(), "rates …");
        th.observe(Sample::parse(t(0), &counters(0, 0, 0)));
        th.observe(Sample::parse(t(2), &counters(2, 0, 0)));
        assert_eq!(th.history().len(), 1);
        th.unavailable();
        assert!(th.history().is_empty());
        assert_eq!(th.label(), "rates n/a");
    }
}
