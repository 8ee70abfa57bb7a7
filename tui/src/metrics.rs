//! Just enough Prometheus text parsing to show ingest and delivery rates in
//! the header.
//!
//! The server exposes counters; a rate needs two scrapes, so [`Rates`] keeps
//! the previous sample and derives per-second rates from the next one.

use chrono::{DateTime, Utc};

/// Counter of webhooks accepted at ingest.
pub const ACCEPTED_TOTAL: &str = "webhookd_webhooks_accepted_total";
/// Counter of delivery attempts, labelled by `outcome`.
pub const DELIVERIES_TOTAL: &str = "webhookd_deliveries_total";

/// Sum of all samples of the counter `name` (over every label set), or
/// `None` when the text has no sample of it.
pub fn counter_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `foo_total_bar` is another metric.
        let rest = if let Some(labels) = rest.strip_prefix('{') {
            match skip_labels(labels) {
                Some(after) => after,
                None => continue,
            }
        } else if rest.starts_with(char::is_whitespace) {
            rest
        } else {
            continue;
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            if v.is_finite() {
                *total.get_or_insert(0.0) += v;
            }
        }
    }
    total
}

/// Given the text after `{`, return the text after the matching `}`,
/// honouring quoted label values (which may contain `}` or `\"`).
fn skip_labels(s: &str) -> Option<&str> {
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
            return s.get(i + 1..);
        }
    }
    None
}

/// The two counters the header cares about, at one point in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the scrape finished.
    pub at: DateTime<Utc>,
    /// `webhookd_webhooks_accepted_total`.
    pub accepted: Option<f64>,
    /// `webhookd_deliveries_total`, summed over `outcome`.
    pub deliveries: Option<f64>,
}

impl Sample {
    /// Read both counters out of a scrape.
    pub fn parse(at: DateTime<Utc>, text: &str) -> Sample {
        Sample {
            at,
            accepted: counter_sum(text, ACCEPTED_TOTAL),
            deliveries: counter_sum(text, DELIVERIES_TOTAL),
        }
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
    /// Rates per second from the last two scrapes; `None` where the
    /// counter is missing.
    Known {
        /// Latest sample, the base of the next rate.
        last: Sample,
        /// Webhooks accepted per second.
        ingest: Option<f64>,
        /// Delivery attempts per second.
        delivery: Option<f64>,
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
        let secs = (sample.at - prev.at).num_milliseconds() as f64 / 1000.0;
        if secs <= 0.0 {
            return Rates::Measuring(sample);
        }
        let rate = |now: Option<f64>, before: Option<f64>| match (now, before) {
            // A counter that went down means the server restarted; the
            // delta is meaningless, so count from zero.
            (Some(n), Some(b)) if n >= b => Some((n - b) / secs),
            (Some(n), Some(_)) => Some(n / secs),
            _ => None,
        };
        Rates::Known {
            last: sample,
            ingest: rate(sample.accepted, prev.accepted),
            delivery: rate(sample.deliveries, prev.deliveries),
        }
    }

    /// Header text, e.g. `in 1.5/s · out 3.0/s`.
    pub fn label(&self) -> String {
        let fmt = |r: Option<f64>| match r {
            Some(r) => format!("{r:.1}/s"),
            None => "n/a".to_string(),
        };
        match self {
            Rates::Unknown | Rates::Measuring(_) => "rates …".to_string(),
            Rates::Unavailable => "rates n/a".to_string(),
            Rates::Known {
                ingest, delivery, ..
            } => format!("in {} · out {}", fmt(*ingest), fmt(*delivery)),
        }
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
}
