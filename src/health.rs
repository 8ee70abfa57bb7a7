//! Endpoint health: what this node has learned about each subscription's
//! receiver, and how much delivery work the receiver may have at once.
//!
//! Per subscription:
//! - a **circuit breaker**: closed → open after `failures` consecutive
//!   failed attempts (timeouts, connection errors, 5xx, 408, 429); open →
//!   half-open once a cool-down has passed; half-open lets one probe through;
//!   a probe that gets an answer closes the circuit, a failed one opens it
//!   again with a cool-down twice as long (up to a maximum);
//! - a **throttle**: 429, 502, 503 and 504 halve the attempts it may have in
//!   flight; each success gives one back, up to the per-subscription cap;
//! - the figures the API shows: consecutive failures, last success and last
//!   failure times, attempts in flight.
//!
//! This is node-local state: it lives in memory, is learned again after a
//! restart, and may differ between nodes sharing one NATS cluster. What a
//! user sets (a subscription disabled) is stored with the subscription.
//!
//! The state machine is pure: time is an argument, so it is table-tested
//! without sleeping. [`Health`] is the shared registry the delivery
//! scheduler updates and the API reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::SubscriptionId;

/// The settings of every endpoint's breaker and throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Attempts one subscription may have in flight at most.
    pub cap: usize,
    /// Consecutive failures that open the circuit (0: never opens).
    pub failures: u32,
    /// Cool-down after the first opening.
    pub cooldown: Duration,
    /// Longest cool-down, however often the circuit reopens.
    pub cooldown_max: Duration,
    /// No success for this long disables the subscription (zero: never).
    pub disable_after: Duration,
}

/// What one attempt tells about the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Success,
    /// The receiver answered, but not with 2xx, and not in a way that says
    /// it is unwell (4xx other than 408, 410, 429): neither a success nor a
    /// failure for the circuit, but proof that the receiver is up.
    Answered,
    /// 429, 502, 503 or 504: a failure that also asks for less traffic.
    Throttled,
    /// A timeout, a connection or TLS error, 5xx, 408.
    Failed,
    /// 410 Gone: the receiver asks never to be called again.
    Gone,
}

impl Verdict {
    /// The verdict of an HTTP status; `None` (no answer) is a failure.
    pub fn of_status(status: Option<u16>) -> Verdict {
        match status {
            Some(200..=299) => Verdict::Success,
            Some(410) => Verdict::Gone,
            Some(429 | 502 | 503 | 504) => Verdict::Throttled,
            Some(408 | 500..=599) | None => Verdict::Failed,
            Some(_) => Verdict::Answered,
        }
    }
}

/// The state of a circuit, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Nothing is sent until the cool-down is over.
    Open,
    /// One probe may go; the others wait for its answer.
    HalfOpen,
}

impl CircuitState {
    /// The spelling in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// May an attempt of this subscription start now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes. `probe`: it is the one probe of a half-open circuit.
    Start {
        /// Whether this attempt is the half-open probe.
        probe: bool,
    },
    /// Not yet: the subscription is at its limit, or a probe is out. The
    /// attempt waits for a slot of its own subscription.
    Wait,
    /// The circuit is open: nothing may be sent before `until`.
    Open {
        /// When the circuit turns half-open (the next probe time).
        until: DateTime<Utc>,
    },
}

/// A change worth one log line (and a metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened (or reopened after a failed probe).
    Opened {
        /// Consecutive failures so far.
        failures: u32,
        /// When the next probe may go.
        until: DateTime<Utc>,
    },
    /// The cool-down is over; one probe may go.
    HalfOpened,
    /// A probe got an answer: deliveries flow again.
    Closed,
    /// The subscription must be disabled (410 Gone, or no success for the
    /// configured span). The caller persists it.
    Disable {
        /// Why, for the subscription's `disabled_reason`.
        reason: String,
    },
}

/// The circuit with what it needs to move on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Circuit {
    Closed,
    Open {
        until: DateTime<Utc>,
        cooldown: Duration,
    },
    HalfOpen {
        probing: bool,
        cooldown: Duration,
    },
}

/// One subscription's receiver, as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    circuit: Circuit,
    consecutive_failures: u32,
    /// Attempts allowed in flight by the throttle (at most the cap).
    limit: usize,
    in_flight: usize,
    last_success: Option<DateTime<Utc>>,
    last_failure: Option<DateTime<Utc>>,
    /// First failure since the last success (or since this node first saw
    /// the endpoint fail): the start of a sustained failure.
    failing_since: Option<DateTime<Utc>>,
    /// Moving average of its attempts' durations, seconds: its pace.
    attempt_secs: f64,
}

/// The pace assumed of a receiver not attempted yet.
const UNKNOWN_PACE_SECS: f64 = 1.0;

/// What the API shows of an endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthView {
    /// `closed`, `open` or `half_open`.
    pub circuit: CircuitState,
    /// When an open circuit lets its next probe through.
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Failed attempts since the last success or answer.
    pub consecutive_failures: u32,
    /// The last 2xx this node saw.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failed attempt this node saw.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Attempts allowed in flight now (lower than the cap while throttled).
    pub max_in_flight: usize,
}

impl Endpoint {
    fn new(settings: &HealthSettings) -> Endpoint {
        Endpoint {
            circuit: Circuit::Closed,
            consecutive_failures: 0,
            limit: settings.cap,
            in_flight: 0,
            last_success: None,
            last_failure: None,
            failing_since: None,
            attempt_secs: UNKNOWN_PACE_SECS,
        }
    }

    /// Counts an attempt's duration into the pace (after `record`).
    pub fn time(&mut self, took: Duration) {
        self.attempt_secs = 0.8 * self.attempt_secs + 0.2 * took.as_secs_f64();
    }

    /// The average duration of its attempts, seconds (1 s until known).
    pub fn pace(&self) -> f64 {
        self.attempt_secs
    }

    /// Whether an attempt may start; turns an open circuit whose cool-down
    /// is over half-open (reported in `changes`).
    pub fn admit(&mut self, now: DateTime<Utc>, changes: &mut Vec<Transition>) -> Admission {
        if let Circuit::Open { until, cooldown } = self.circuit {
            if now < until {
                return Admission::Open { until };
            }
            self.circuit = Circuit::HalfOpen {
                probing: false,
                cooldown,
            };
            changes.push(Transition::HalfOpened);
        }
        match self.circuit {
            Circuit::HalfOpen { probing: true, .. } => Admission::Wait,
            Circuit::HalfOpen { cooldown, .. } => {
                self.circuit = Circuit::HalfOpen {
                    probing: true,
                    cooldown,
                };
                self.in_flight += 1;
                Admission::Start { probe: true }
            }
            _ if self.in_flight >= self.limit => Admission::Wait,
            _ => {
                self.in_flight += 1;
                Admission::Start { probe: false }
            }
        }
    }

    /// Records how an admitted attempt went.
    pub fn record(
        &mut self,
        verdict: Verdict,
        settings: &HealthSettings,
        now: DateTime<Utc>,
        changes: &mut Vec<Transition>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let probing = matches!(self.circuit, Circuit::HalfOpen { .. });
        match verdict {
            Verdict::Success | Verdict::Answered => {
                if verdict == Verdict::Success {
                    self.last_success = Some(now);
                    self.failing_since = None;
                    self.limit = (self.limit + 1).min(settings.cap);
                }
                self.consecutive_failures = 0;
                if probing {
                    self.circuit = Circuit::Closed;
                    changes.push(Transition::Closed);
                }
            }
            Verdict::Gone => {
                self.note_failure(now);
                changes.push(Transition::Disable {
                    reason: "the receiver answered 410 Gone".to_string(),
                });
            }
            Verdict::Throttled | Verdict::Failed => {
                self.note_failure(now);
                if verdict == Verdict::Throttled {
                    self.limit = (self.limit / 2).max(1);
                }
                self.trip(settings, now, probing, changes);
                self.check_sustained(settings, now, changes);
            }
        }
    }

    /// Gives back the slot of an admitted attempt that never reached the
    /// receiver (the subscription was gone or disabled, shutdown): the
    /// endpoint learns nothing, and a probe slot is offered again.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Circuit::HalfOpen { cooldown, .. } = self.circuit {
            self.circuit = Circuit::HalfOpen {
                probing: false,
                cooldown,
            };
        }
    }

    /// Closes the circuit and forgets the failures (a user re-enabled the
    /// subscription).
    pub fn reset(&mut self, settings: &HealthSettings) {
        self.circuit = Circuit::Closed;
        self.consecutive_failures = 0;
        self.failing_since = None;
        self.limit = settings.cap;
    }

    fn note_failure(&mut self, now: DateTime<Utc>) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_failure = Some(now);
        self.failing_since.get_or_insert(now);
    }

    /// Opens the circuit after too many failures, or reopens it after a
    /// failed probe with a longer cool-down.
    fn trip(
        &mut self,
        settings: &HealthSettings,
        now: DateTime<Utc>,
        probing: bool,
        changes: &mut Vec<Transition>,
    ) {
        let cooldown = match self.circuit {
            Circuit::HalfOpen { cooldown, .. } if probing => {
                (cooldown * 2).min(settings.cooldown_max)
            }
            Circuit::Closed
                if settings.failures > 0 && self.consecutive_failures >= settings.failures =>
            {
                settings.cooldown.min(settings.cooldown_max)
            }
            // Already open (an attempt admitted before it opened), or not
            // enough failures yet.
            _ => return,
        };
        let until = now + chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
        self.circuit = Circuit::Open { until, cooldown };
        changes.push(Transition::Opened {
            failures: self.consecutive_failures,
            until,
        });
    }

    /// No success for `disable_after`: the subscription is disabled.
    fn check_sustained(
        &mut self,
        settings: &HealthSettings,
        now: DateTime<Utc>,
        changes: &mut Vec<Transition>,
    ) {
        let Some(since) = self.failing_since else {
            return;
        };
        if settings.disable_after.is_zero() {
            return;
        }
        let span =
            chrono::Duration::from_std(settings.disable_after).unwrap_or(chrono::Duration::MAX);
        if now - since >= span {
            changes.push(Transition::Disable {
                reason: format!(
                    "no successful delivery for {} (failing since {})",
                    crate::config::format_duration(settings.disable_after),
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
            // Counted again from the next failure after a re-enable.
            self.failing_since = None;
        }
    }

    /// The state of the circuit.
    pub fn circuit(&self) -> CircuitState {
        match self.circuit {
            Circuit::Closed => CircuitState::Closed,
            Circuit::Open { .. } => CircuitState::Open,
            Circuit::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether the throttle holds it below the cap.
    pub fn throttled(&self, settings: &HealthSettings) -> bool {
        self.limit < settings.cap
    }

    /// Whether its last attempts failed: such an endpoint may not take the
    /// last free share of the worker slots.
    pub fn failing(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// Whether it has delivered and its last attempt did not fail: such an
    /// endpoint's pace is known, and its lane may fill the parking.
    pub fn proven(&self) -> bool {
        self.last_success.is_some() && self.consecutive_failures == 0
    }

    /// Attempts in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// What the API shows.
    pub fn view(&self) -> HealthView {
        HealthView {
            circuit: self.circuit(),
            circuit_open_until: match self.circuit {
                Circuit::Open { until, .. } => Some(until),
                _ => None,
            },
            consecutive_failures: self.consecutive_failures,
            last_success_at: self.last_success,
            last_failure_at: self.last_failure,
            in_flight: self.in_flight,
            max_in_flight: match self.circuit {
                Circuit::Closed => self.limit,
                Circuit::HalfOpen { .. } => 1,
                Circuit::Open { .. } => 0,
            },
        }
    }
}

/// Counts for /metrics: no label per subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Circuits open now.
    pub open: usize,
    /// Circuits half-open now.
    pub half_open: usize,
    /// Subscriptions held below their cap by the throttle.
    pub throttled: usize,
}

/// Every endpoint this node has seen; cheap to clone.
#[derive(Clone)]
pub struct Health {
    settings: HealthSettings,
    endpoints: Arc<Mutex<HashMap<SubscriptionId, Endpoint>>>,
}

impl Health {
    /// An empty registry.
    pub fn new(settings: HealthSettings) -> Health {
        Health {
            settings,
            endpoints: Arc::default(),
        }
    }

    /// The settings every endpoint follows.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SubscriptionId, Endpoint>> {
        // The map stays consistent whatever a panicking holder did: every
        // update is a few field writes.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the endpoint of `id` (created healthy on first use).
    pub fn with<T>(
        &self,
        id: SubscriptionId,
        f: impl FnOnce(&mut Endpoint, &HealthSettings) -> T,
    ) -> T {
        let mut map = self.lock();
        let endpoint = map
            .entry(id)
            .or_insert_with(|| Endpoint::new(&self.settings));
        f(endpoint, &self.settings)
    }

    /// What the API shows of `id`: a healthy endpoint when this node has
    /// not delivered to it yet.
    pub fn view(&self, id: SubscriptionId) -> HealthView {
        match self.lock().get(&id) {
            Some(endpoint) => endpoint.view(),
            None => Endpoint::new(&self.settings).view(),
        }
    }

    /// Forgets what was learned of `id` (re-enabled by a user, or deleted).
    pub fn reset(&self, id: SubscriptionId) {
        if let Some(endpoint) = self.lock().get_mut(&id) {
            endpoint.reset(&self.settings);
        }
    }

    /// Forgets `id` altogether (the subscription was deleted).
    pub fn remove(&self, id: SubscriptionId) {
        self.lock().remove(&id);
    }

    /// Counts by state, for /metrics.
    pub fn counts(&self) -> HealthCounts {
        let map = self.lock();
        let mut counts = HealthCounts::default();
        for endpoint in map.values() {
            match endpoint.circuit() {
                CircuitState::Open => counts.open += 1,
                CircuitState::HalfOpen => counts.half_open += 1,
                CircuitState::Closed => {}
            }
            if endpoint.throttled(&self.settings) {
                counts.throttled += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            cap: 8,
            failures: 3,
            cooldown: Duration::from_secs(10),
            cooldown_max: Duration::from_secs(30),
            disable_after: Duration::from_secs(3600),
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    /// Admits one attempt at `now` and records `verdict` for it.
    fn attempt(e: &mut Endpoint, verdict: Verdict, now: DateTime<Utc>) -> Vec<Transition> {
        let mut changes = Vec::new();
        let admitted = e.admit(now, &mut changes);
        assert!(matches!(admitted, Admission::Start { .. }), "{admitted:?}");
        e.record(verdict, &settings(), now, &mut changes);
        changes
    }

    #[test]
    fn verdicts_of_statuses() {
        let cases = [
            (Some(200), Verdict::Success),
            (Some(204), Verdict::Success),
            (Some(301), Verdict::Answered),
            (Some(400), Verdict::Answered),
            (Some(404), Verdict::Answered),
            (Some(408), Verdict::Failed),
            (Some(410), Verdict::Gone),
            (Some(429), Verdict::Throttled),
            (Some(500), Verdict::Failed),
            (Some(501), Verdict::Failed),
            (Some(502), Verdict::Throttled),
            (Some(503), Verdict::Throttled),
            (Some(504), Verdict::Throttled),
            (None, Verdict::Failed),
        ];
        for (status, verdict) in cases {
            assert_eq!(Verdict::of_status(status), verdict, "{status:?}");
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_4xx_does_not_count() {
        let mut e = Endpoint::new(&settings());
        assert!(attempt(&mut e, Verdict::Failed, t(0)).is_empty());
        assert!(attempt(&mut e, Verdict::Failed, t(1)).is_empty());
        // A 400 proves the receiver is up: the count starts again.
        assert!(attempt(&mut e, Verdict::Answered, t(2)).is_empty());
        assert_eq!(e.view().consecutive_failures, 0);
        attempt(&mut e, Verdict::Failed, t(3));
        attempt(&mut e, Verdict::Failed, t(4));
        let changes = attempt(&mut e, Verdict::Failed, t(5));
        assert_eq!(
            changes,
            vec![Transition::Opened {
                failures: 3,
                until: t(15)
            }]
        );
        assert_eq!(e.circuit(), CircuitState::Open);
        let mut changes = Vec::new();
        assert_eq!(
            e.admit(t(14), &mut changes),
            Admission::Open { until: t(15) }
        );
        assert!(changes.is_empty());
    }

    #[test]
    fn half_open_lets_one_probe_and_a_good_answer_closes() {
        let mut e = Endpoint::new(&settings());
        for s in 0..3 {
            attempt(&mut e, Verdict::Failed, t(s));
        }
        let mut changes = Vec::new();
        assert_eq!(
            e.admit(t(12), &mut changes),
            Admission::Start { probe: true }
        );
        assert_eq!(changes, vec![Transition::HalfOpened]);
        // Only one probe at a time.
        assert_eq!(e.admit(t(12), &mut changes), Admission::Wait);
        assert_eq!(e.view().max_in_flight, 1);
        let mut changes = Vec::new();
        e.record(Verdict::Success, &settings(), t(13), &mut changes);
        assert_eq!(changes, vec![Transition::Closed]);
        assert_eq!(e.circuit(), CircuitState::Closed);
        assert_eq!(e.view().consecutive_failures, 0);
        assert_eq!(e.view().last_success_at, Some(t(13)));
    }

    #[test]
    fn failed_probes_reopen_with_a_cooldown_that_doubles_up_to_the_max() {
        let mut e = Endpoint::new(&settings());
        for s in 0..3 {
            attempt(&mut e, Verdict::Failed, t(s));
        }
        // Opened at t(2) for 10 s; probes fail at 12, then 32, then 62.
        let mut now = t(12);
        for expected_cooldown in [20, 30, 30] {
            let changes = attempt(&mut e, Verdict::Failed, now);
            let until = now + chrono::Duration::seconds(expected_cooldown);
            assert_eq!(
                changes,
                vec![
                    Transition::HalfOpened,
                    Transition::Opened {
                        failures: e.view().consecutive_failures,
                        until
                    }
                ]
            );
            now = until;
        }
    }

    #[test]
    fn a_released_probe_slot_is_offered_again() {
        let mut e = Endpoint::new(&settings());
        for s in 0..3 {
            attempt(&mut e, Verdict::Failed, t(s));
        }
        let mut changes = Vec::new();
        assert_eq!(
            e.admit(t(20), &mut changes),
            Admission::Start { probe: true }
        );
        e.release();
        assert_eq!(
            e.admit(t(20), &mut changes),
            Admission::Start { probe: true }
        );
    }

    #[test]
    fn throttle_halves_and_grows_back_one_per_success() {
        let s = settings();
        let mut e = Endpoint::new(&s);
        let mut changes = Vec::new();
        e.admit(t(0), &mut changes);
        e.record(Verdict::Throttled, &s, t(0), &mut changes);
        assert_eq!(e.view().max_in_flight, 4);
        assert!(e.throttled(&s));
        e.admit(t(0), &mut changes);
        e.record(Verdict::Throttled, &s, t(0), &mut changes);
        assert_eq!(e.view().max_in_flight, 2);
        for (n, want) in [(1, 3), (2, 4), (6, 8), (7, 8)] {
            let mut e2 = e.clone();
            for _ in 0..n {
                e2.admit(t(1), &mut changes);
                e2.record(Verdict::Success, &s, t(1), &mut changes);
            }
            assert_eq!(e2.view().max_in_flight, want, "after {n} successes");
        }
        // The limit holds admissions.
        let mut e = e.clone();
        assert!(matches!(
            e.admit(t(2), &mut changes),
            Admission::Start { .. }
        ));
        assert!(matches!(
            e.admit(t(2), &mut changes),
            Admission::Start { .. }
        ));
        assert_eq!(e.admit(t(2), &mut changes), Admission::Wait);
    }

    #[test]
    fn gone_disables_at_once() {
        let mut e = Endpoint::new(&settings());
        let changes = attempt(&mut e, Verdict::Gone, t(0));
        assert_eq!(
            changes,
            vec![Transition::Disable {
                reason: "the receiver answered 410 Gone".to_string()
            }]
        );
    }

    #[test]
    fn no_success_for_the_span_disables() {
        let s = HealthSettings {
            failures: 0,
            ..settings()
        };
        let mut e = Endpoint::new(&s);
        let mut changes = Vec::new();
        for now in [t(0), t(1800), t(3599)] {
            e.admit(now, &mut changes);
            e.record(Verdict::Failed, &s, now, &mut changes);
        }
        assert!(changes.is_empty(), "{changes:?}");
        e.admit(t(3600), &mut changes);
        e.record(Verdict::Failed, &s, t(3600), &mut changes);
        assert!(
            matches!(&changes[..], [Transition::Disable { reason }] if reason.contains("1h")),
            "{changes:?}"
        );
        // Zero turns it off.
        let never = HealthSettings {
            disable_after: Duration::ZERO,
            ..s
        };
        let mut e = Endpoint::new(&never);
        let mut changes = Vec::new();
        for now in [t(0), t(999_999)] {
            e.admit(now, &mut changes);
            e.record(Verdict::Failed, &never, now, &mut changes);
        }
        assert!(changes.is_empty());
    }

    #[test]
    fn registry_counts_resets_and_removes() {
        let health = Health::new(settings());
        let a = SubscriptionId::new();
        let b = SubscriptionId::new();
        health.with(a, |e, s| {
            for n in 0..3 {
                let mut c = Vec::new();
                e.admit(t(n), &mut c);
                e.record(Verdict::Failed, s, t(n), &mut c);
            }
        });
        health.with(b, |e, s| {
            let mut c = Vec::new();
            e.admit(t(0), &mut c);
            e.record(Verdict::Success, s, t(0), &mut c);
        });
        assert_eq!(
            health.counts(),
            HealthCounts {
                open: 1,
                half_open: 0,
                throttled: 0
            }
        );
        health.reset(a);
        assert_eq!(health.view(a).circuit, CircuitState::Closed);
        assert_eq!(health.counts(), HealthCounts::default());
        assert_eq!(health.view(b).last_success_at, Some(t(0)));
        health.remove(b);
        assert_eq!(health.view(b).last_success_at, None);
    }
}
