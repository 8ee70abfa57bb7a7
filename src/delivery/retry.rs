//! The retry decision: a pure function of the attempt number, what happened
//! and the schedule. No I/O, no clock, no randomness: table-tested below.

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
}

/// What to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the attempt row says.
    pub outcome: Outcome,
    /// For `FailedAttempt`: the delay before the next attempt.
    pub retry_in: Option<Duration>,
}

/// Decides the outcome of attempt `attempt` (1-based). Attempt `n` failing
/// is retried after `schedule[n-1]` while the schedule has entries; a
/// receiver's Retry-After can lengthen that delay up to the schedule's
/// longest step, never shorten it.
pub fn decide(attempt: u32, result: Result, schedule: &RetrySchedule) -> Decision {
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
            let index = attempt.saturating_sub(1) as usize;
            match schedule.delays().get(index) {
                Some(&delay) => {
                    let asked = retry_after.unwrap_or_default().min(schedule.max_delay());
                    Decision {
                        outcome: Outcome::FailedAttempt,
                        retry_in: Some(delay.max(asked)),
                    }
                }
                None => Decision {
                    outcome: Outcome::Failure,
                    retry_in: None,
                },
            }
        }
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
            let d = decide(attempt, result, schedule);
            assert_eq!(d.outcome, outcome, "attempt {attempt} {result:?}");
            assert_eq!(d.retry_in, retry_in, "attempt {attempt} {result:?}");
        }
    }
}
