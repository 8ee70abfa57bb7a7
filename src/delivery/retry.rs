//! The retry decision: a pure function of the attempt number, what happened,
//! the schedule and a random draw given by the caller. No I/O, no clock, no
//! randomness of its own: table-tested below.

use std::time::Duration;

use crate::config::RetrySchedule;
use crate::store::records::Outcome;

/// How an attempt went, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    /// The receiver answered 2xx.
    Delivered,
    /// A failure worth retrying (non-2xx, timeout, connection error).
    Failed {
        /// The receiver's `Retry-After` (on 429 or 503), if any.
        retry_after: Option<Duration>,
    },
    /// A failure no retry can fix (target refused by the SSRF guard).
    Refused,
    /// Nothing was sent: the subscription's circuit is open for `wait`
    /// more. It uses up no step of the schedule, but the webhook's life
    /// stays within the schedule's span: `left` is what remains of it.
    NotSent {
        /// Until the circuit lets its next probe through.
        wait: Duration,
        /// The webhook's life left: received at + the schedule's span - now.
        left: Duration,
    },
}

/// The random spread of retry delays: each delay is multiplied by
/// `1 + fraction * (2 * draw - 1)`, so `fraction` 0.2 spreads it ±20%.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Largest relative change (0: none).
    pub fraction: f64,
    /// A uniform random number in [0, 1), drawn by the caller.
    pub draw: f64,
}

impl Jitter {
    /// No spread: exact delays.
    pub const NONE: Jitter = Jitter {
        fraction: 0.0,
        draw: 0.5,
    };

    /// `delay` spread both ways.
    fn spread(self, delay: Duration) -> Duration {
        delay.mul_f64((1.0 + self.fraction * (2.0 * self.draw - 1.0)).max(0.0))
    }

    /// `delay` spread later only (never before a probe time).
    fn later(self, delay: Duration) -> Duration {
        delay.mul_f64(1.0 + self.fraction * self.draw)
    }
}

/// What to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the attempt row says.
    pub outcome: Outcome,
    /// For `FailedAttempt`: the delay before the next attempt.
    pub retry_in: Option<Duration>,
}

/// Decides the outcome of an attempt; `sent` counts the attempts sent so
/// far, this one included (1-based). Sent attempt `n` failing is retried
/// after `schedule[n-1]`, spread by the jitter, while the schedule has
/// entries; a receiver's Retry-After can lengthen that delay up to the
/// schedule's longest step, never shorten it. An attempt not sent because
/// the circuit is open is retried when the circuit lets a probe through (a
/// little later with jitter, so deferred webhooks do not all come back at
/// once), unless that is beyond the webhook's life: deferral never keeps a
/// webhook longer than the schedule would.
pub fn decide(sent: u32, result: Result, schedule: &RetrySchedule, jitter: Jitter) -> Decision {
    match result {
        Result::Delivered => Decision {
            outcome: Outcome::Success,
            retry_in: None,
        },
        Result::Refused => Decision {
            outcome: Outcome::Failure,
            retry_in: None,
        },
        Result::Failed { retry_after } => {
            let asked = retry_after.unwrap_or_default().min(schedule.max_delay());
            next_step(sent, schedule, |delay| jitter.spread(delay).max(asked))
        }
        Result::NotSent { wait, left } if wait <= left => Decision {
            outcome: Outcome::FailedAttempt,
            retry_in: Some(jitter.later(wait).min(left)),
        },
        Result::NotSent { .. } => Decision {
            outcome: Outcome::Failure,
            retry_in: None,
        },
    }
}

/// A retry after `delay(step)` while the schedule has a step for this
/// attempt; given up after the last.
fn next_step(
    attempt: u32,
    schedule: &RetrySchedule,
    delay: impl Fn(Duration) -> Duration,
) -> Decision {
    let index = attempt.saturating_sub(1) as usize;
    match schedule.delays().get(index) {
        Some(&step) => Decision {
            outcome: Outcome::FailedAttempt,
            retry_in: Some(delay(step)),
        },
        None => Decision {
            outcome: Outcome::Failure,
            retry_in: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> RetrySchedule {
        text.parse().unwrap()
    }

    #[test]
    fn decision_table() {
        let default = s("10s,30s,1m,5m,15m");
        let none = s("none");
        let secs = Duration::from_secs;
        let fail = Result::Failed { retry_after: None };
        let cases: Vec<(u32, Result, &RetrySchedule, Outcome, Option<Duration>)> = vec![
            (1, Result::Delivered, &default, Outcome::Success, None),
            (6, Result::Delivered, &default, Outcome::Success, None),
            (1, fail, &default, Outcome::FailedAttempt, Some(secs(10))),
            (2, fail, &default, Outcome::FailedAttempt, Some(secs(30))),
            (3, fail, &default, Outcome::FailedAttempt, Some(secs(60))),
            (4, fail, &default, Outcome::FailedAttempt, Some(secs(300))),
            (5, fail, &default, Outcome::FailedAttempt, Some(secs(900))),
            (6, fail, &default, Outcome::Failure, None),
            (9, fail, &default, Outcome::Failure, None),
            (1, Result::Refused, &default, Outcome::Failure, None),
            // Retry-After lengthens, capped at the longest step...
            (
                1,
                Result::Failed {
                    retry_after: Some(secs(120)),
                },
                &default,
                Outcome::FailedAttempt,
                Some(secs(120)),
            ),
            (
                1,
                Result::Failed {
                    retry_after: Some(secs(3600)),
                },
                &default,
                Outcome::FailedAttempt,
                Some(secs(900)),
            ),
            // ...and never shortens.
            (
                3,
                Result::Failed {
                    retry_after: Some(secs(1)),
                },
                &default,
                Outcome::FailedAttempt,
                Some(secs(60)),
            ),
            // No retries configured: the first failure is final.
            (1, fail, &none, Outcome::Failure, None),
        ];
        for (attempt, result, schedule, outcome, retry_in) in cases {
            let d = decide(attempt, result, schedule, Jitter::NONE);
            assert_eq!(d.outcome, outcome, "attempt {attempt} {result:?}");
            assert_eq!(d.retry_in, retry_in, "attempt {attempt} {result:?}");
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let default = s("10s,30s,1m,5m,15m");
        let fail = Result::Failed { retry_after: None };
        let cases = [
            // (fraction, draw, attempt, expected ms)
            (0.2, 0.0, 1, 8_000),
            (0.2, 0.5, 1, 10_000),
            (0.2, 0.999_999_9, 1, 12_000),
            (0.2, 0.25, 2, 27_000),
            (0.0, 0.9, 3, 60_000),
        ];
        for (fraction, draw, attempt, want) in cases {
            let d = decide(attempt, fail, &default, Jitter { fraction, draw });
            let got = d.retry_in.map(|d| d.as_millis()).unwrap_or_default();
            assert!(
                got.abs_diff(want) <= 1,
                "fraction {fraction} draw {draw}: {got} ms, want {want}"
            );
        }
        // Over many draws, every delay is within ±20% and both sides are used.
        let (mut low, mut high) = (u128::MAX, 0);
        for i in 0..1000 {
            let jitter = Jitter {
                fraction: 0.2,
                draw: f64::from(i) / 1000.0,
            };
            let ms = decide(1, fail, &default, jitter)
                .retry_in
                .map(|d| d.as_millis())
                .unwrap_or_default();
            assert!((8_000..=12_000).contains(&ms), "{ms}");
            low = low.min(ms);
            high = high.max(ms);
        }
        assert!(low < 8_100 && high > 11_900, "{low}..{high}");
        // Retry-After still sets a floor under the jittered delay.
        let asked = Result::Failed {
            retry_after: Some(Duration::from_secs(20)),
        };
        let d = decide(
            1,
            asked,
            &default,
            Jitter {
                fraction: 0.2,
                draw: 0.0,
            },
        );
        assert_eq!(d.retry_in, Some(Duration::from_secs(20)));
    }

    #[test]
    fn not_sent_waits_for_the_probe_within_the_webhooks_life() {
        let sched = s("10s,30s");
        let wait = Duration::from_secs(5);
        let left = Duration::from_secs(40);
        let jitter = Jitter {
            fraction: 0.2,
            draw: 0.5,
        };
        // Whatever the steps used so far: deferral uses none.
        for sent in [0, 1, 2, 9] {
            let d = decide(sent, Result::NotSent { wait, left }, &sched, jitter);
            assert_eq!(d.outcome, Outcome::FailedAttempt);
            assert_eq!(d.retry_in, Some(Duration::from_millis(5_500)));
        }
        let no_spread = Jitter {
            fraction: 0.2,
            draw: 0.0,
        };
        let never_early = decide(1, Result::NotSent { wait, left }, &sched, no_spread);
        assert_eq!(never_early.retry_in, Some(wait));
        // The spread never goes past the end of its life...
        let short = Duration::from_millis(5_100);
        let d = decide(1, Result::NotSent { wait, left: short }, &sched, jitter);
        assert_eq!(d.retry_in, Some(short));
        // ...and a probe after it ends the webhook, like a failed last attempt.
        let late = Result::NotSent {
            wait,
            left: Duration::from_secs(4),
        };
        let d = decide(1, late, &sched, jitter);
        assert_eq!(d.outcome, Outcome::Failure);
        assert_eq!(d.retry_in, None);
    }
}
