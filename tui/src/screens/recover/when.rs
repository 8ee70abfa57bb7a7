//! What the recover dialog's fields accept: a time (RFC 3339, a UTC time
//! as the UI writes them, or a span before now such as `1h` or `1h30m`),
//! and a list of statuses.

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};

use crate::api::RecoverStatus;

/// The longest span a relative time may go back (ten years).
const MAX_SPAN_SECS: i64 = 10 * 366 * 86_400;

/// A span such as `90s`, `30m`, `1h`, `2d`, `1w` or `1h30m` (optionally
/// followed by ` ago`), as a duration.
pub fn parse_span(text: &str) -> Option<Duration> {
    let text = text.trim();
    let text = text.strip_suffix("ago").unwrap_or(text).trim_end();
    if text.is_empty() {
        return None;
    }
    let mut secs: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if c == ' ' && number.is_empty() {
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return None,
        };
        let n: i64 = number.parse().ok()?;
        number.clear();
        secs = secs.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() || secs > MAX_SPAN_SECS {
        return None;
    }
    Duration::try_seconds(secs)
}

/// The time `text` names: RFC 3339 (`2026-11-29T08:00:00Z`), a UTC time
/// as the UI shows them (`2026-11-29 08:00[:00]`), `now`, or a span before
/// `now` (`1h`); `None` for `now` means the clock is not known yet.
/// Relative times are cut to the millisecond, as the server stores them.
pub fn parse_when(text: &str, now: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("required".into());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    let span = if text.eq_ignore_ascii_case("now") {
        Some(Duration::zero())
    } else {
        parse_span(text)
    };
    let Some(span) = span else {
        return Err(format!(
            "`{text}` is not a time: give RFC 3339 (2026-11-29T08:00:00Z) or a span before now (1h, 30m, 2d)"
        ));
    };
    let Some(now) = now else {
        return Err("the clock is not known yet; give an RFC 3339 time".into());
    };
    let t = now
        .checked_sub_signed(span)
        .ok_or_else(|| format!("`{text}` goes back too far"))?;
    Ok(t.duration_trunc(Duration::milliseconds(1)).unwrap_or(t))
}

/// Comma-separated statuses; empty means failed only (the server's
/// default, sent explicitly).
pub fn parse_statuses(text: &str) -> Result<Vec<RecoverStatus>, String> {
    let mut statuses = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let status = RecoverStatus::parse(name)
            .ok_or_else(|| format!("unknown status `{name}`: use failed, succeeded or filtered"))?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    if statuses.is_empty() {
        statuses.push(RecoverStatus::Failed);
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 9, 41, 3).unwrap() + Duration::microseconds(123_456)
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("1h"), Some(Duration::hours(1)));
        assert_eq!(parse_span("30m"), Some(Duration::minutes(30)));
        assert_eq!(parse_span("1h30m"), Some(Duration::minutes(90)));
        assert_eq!(parse_span(" 2d ago "), Some(Duration::days(2)));
        assert_eq!(parse_span("1w 2d"), Some(Duration::days(9)));
        assert_eq!(parse_span("45s"), Some(Duration::seconds(45)));
        for bad in [
            "",
            "h",
            "1",
            "1x",
            "-1h",
            "ago",
            "99999999999999999999h",
            "5000w",
        ] {
            assert_eq!(parse_span(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let at = |s: &str| parse_when(s, Some(now()));
        let hour_ago =
            Utc.with_ymd_and_hms(2026, 11, 29, 8, 41, 3).unwrap() + Duration::milliseconds(123);
        assert_eq!(at("1h"), Ok(hour_ago));
        assert_eq!(
            at("2026-11-29T08:00:00.500+01:00"),
            Ok(Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0).unwrap() + Duration::milliseconds(500))
        );
        let eight = Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap();
        assert_eq!(at("2026-11-29 08:00:00"), Ok(eight));
        assert_eq!(at("2026-11-29 08:00"), Ok(eight));
        assert_eq!(at("2026-11-29T08:00:00"), Ok(eight));
        assert_eq!(at("now").map(|t| t.timestamp_subsec_micros()), Ok(123_000));
        assert_eq!(at(""), Err("required".into()));
        assert!(at("yesterday").unwrap_err().contains("not a time"));
        assert!(parse_when("1h", None).unwrap_err().contains("clock"));
        assert_eq!(parse_when("2026-11-29 08:00", None), Ok(eight));
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_statuses(""), Ok(vec![RecoverStatus::Failed]));
        assert_eq!(
            parse_statuses("failed, Filtered,failed"),
            Ok(vec![RecoverStatus::Failed, RecoverStatus::Filtered])
        );
        assert!(parse_statuses("failed, pending")
            .unwrap_err()
            .contains("`pending`"));
    }
}
