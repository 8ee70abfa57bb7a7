//! Fair scheduling of delivery attempts across subscriptions.
//!
//! One pull stream feeds every subscription's messages to the workers, so
//! without a scheduler one slow receiver holds every worker slot while the
//! others wait. Here each subscription has a lane:
//!
//! - a message whose subscription may start an attempt now takes a worker
//!   slot and runs;
//! - otherwise it is **parked** in its lane: it holds no worker slot, uses
//!   up no attempt, and gets in-progress acks so JetStream does not hand it
//!   out again behind the worker's back;
//! - a lane parks at most about a second of its own work (its limit times
//!   one second over its average attempt time): a fast receiver's lane may
//!   fill the whole parking, which then drains within that second; a slow or
//!   hanging receiver's lane parks a few messages. A message beyond that
//!   **overflows**: it is NAKed with a delay paced by how long the lane needs
//!   for the work ahead of it, and comes back then. No attempt is used;
//! - a message whose subscription's circuit is open is **deferred**: it
//!   takes a worker slot only to log a "not sent" attempt and be NAKed until
//!   the next probe time.
//!
//! A subscription may run at most `min(its endpoint limit, fair share)`
//! attempts at once. The endpoint limit is the per-subscription cap,
//! lowered by the throttle (429, 502-504) and by the circuit (one probe
//! when half-open). The fair share is `slots / (busy lanes + 1)`: with `n`
//! subscriptions holding work, each gets an equal part of the slots, and one
//! part stays free for a subscription whose work arrives next (max-min
//! fairness: a subscription that needs less leaves the rest to the others).
//! A subscription whose last attempts failed may never take that last
//! share, even when there are more subscriptions than slots: a healthy
//! subscription finds a free slot however many receivers hang. Freed slots
//! go to lanes in turn (round robin).
//!
//! The scheduler is synchronous and generic over the job (a JetStream
//! message in webhookd, a number in the tests), with time an argument: the
//! rules are tested without NATS and without sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::health::{Admission, Health, Transition, Verdict};
use crate::ids::SubscriptionId;

/// Bounds of the parking, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Worker slots: attempts in flight at most, all subscriptions together.
    pub slots: usize,
    /// Messages all lanes together may park: the pull waits beyond it.
    pub park_total: usize,
    /// Payload bytes all lanes together may park: the pull waits beyond it.
    pub park_bytes: usize,
    /// Nothing parked: every message that must wait is NAKed with the
    /// shortest overflow delay (the alternative measured against parking).
    pub nak_only: bool,
}

/// How much of its own work a lane may park: this long at its pace.
const PARK_WINDOW_SECS: f64 = 1.0;

/// Shortest and longest overflow delay. A NAK delay cannot be shortened
/// once sent, so the longest is also how long an overflowed webhook may
/// still wait after its receiver is well again (60 s held them back that
/// long in the flapping chaos run); beyond a few seconds it saves little
/// (a backlog of 10,000 comes back at 1,000/s, each a cheap NAK).
const OVERFLOW_MIN: Duration = Duration::from_millis(200);
const OVERFLOW_MAX: Duration = Duration::from_secs(10);

/// What to do with a message now. Every variant but `Parked` and
/// `Overflow` holds a worker slot: give it back with
/// [`Scheduler::finish`].
#[derive(Debug, PartialEq)]
pub enum Dispatch<J> {
    /// Send the attempt.
    Run {
        /// The subscription.
        sub: SubscriptionId,
        /// The message.
        job: J,
        /// Whether it is the probe of a half-open circuit.
        probe: bool,
    },
    /// Log a "not sent: circuit open" attempt and NAK it until `until`.
    Defer {
        /// The subscription.
        sub: SubscriptionId,
        /// The message.
        job: J,
        /// The next probe time.
        until: DateTime<Utc>,
    },
}

/// Where an offered message went.
#[derive(Debug, PartialEq)]
pub enum Placement<J> {
    /// It holds a slot now.
    Now(Dispatch<J>),
    /// Kept in its lane until a slot of its subscription frees.
    Parked,
    /// No room to park it: NAK it with this delay.
    Overflow {
        /// The message.
        job: J,
        /// When it should come back.
        delay: Duration,
    },
}

/// How a dispatched message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// An attempt reached the receiver (or failed to): its verdict and how
    /// long it took.
    Sent(Verdict, Duration),
    /// A `Run` that sent nothing (subscription gone or disabled, shutdown).
    NotSent,
    /// A `Defer` was logged and NAKed.
    Deferred,
}

/// What finishing gave: dispatches that now hold the freed slot (and any
/// further ones), and the endpoint's state changes to log.
#[derive(Debug, PartialEq)]
pub struct Next<J> {
    /// Start these.
    pub dispatches: Vec<Dispatch<J>>,
    /// Log (and act on) these.
    pub transitions: Vec<Transition>,
}

struct ParkedJob<J> {
    job: J,
    /// Payload bytes, for the parking's byte bound.
    size: usize,
    /// When it was parked or last told JetStream it is in progress.
    progress_at: Instant,
}

#[derive(Default)]
struct Lane<J> {
    parked: VecDeque<ParkedJob<J>>,
    /// `Run`s holding a slot.
    running: usize,
    /// When the messages this lane overflowed are due back, oldest first:
    /// work ahead of the next overflow.
    overflowed: VecDeque<Instant>,
}

impl<J> Lane<J> {
    fn new() -> Lane<J> {
        Lane {
            parked: VecDeque::new(),
            running: 0,
            overflowed: VecDeque::new(),
        }
    }

    fn idle(&self) -> bool {
        self.parked.is_empty() && self.running == 0 && self.overflowed.is_empty()
    }

    fn busy(&self) -> bool {
        !self.parked.is_empty() || self.running > 0
    }
}

struct State<J> {
    /// Slots held by dispatches.
    busy: usize,
    lanes: HashMap<SubscriptionId, Lane<J>>,
    /// Lanes with parked messages, in the order they get freed slots.
    rotation: VecDeque<SubscriptionId>,
    /// Parked messages in all lanes.
    parked: usize,
    /// Their payload bytes.
    parked_bytes: usize,
    /// Lanes with parked or running work (the fair share divides by it).
    busy_lanes: usize,
}

/// The fair scheduler; shared by the pull loop and the workers.
pub struct Scheduler<J> {
    limits: Limits,
    health: Health,
    state: Mutex<State<J>>,
    /// Woken when a slot frees: the pull loop waits on it.
    freed: Notify,
}

impl<J: Clone> Scheduler<J> {
    /// An idle scheduler.
    pub fn new(limits: Limits, health: Health) -> Scheduler<J> {
        Scheduler {
            limits,
            health,
            state: Mutex::new(State {
                busy: 0,
                lanes: HashMap::new(),
                rotation: VecDeque::new(),
                parked: 0,
                parked_bytes: 0,
                busy_lanes: 0,
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a worker slot is free and the parking has room: the pull
    /// loop takes the next message only then, so messages wait in
    /// JetStream, not in memory, while every slot is busy.
    pub async fn ready(&self) {
        self.ready_below(self.limits.park_total).await
    }

    /// As [`Scheduler::ready`], with room for `parked` messages at most in
    /// the parking: the pull of redeliveries stops at a quarter of it, so
    /// a recovery never fills the parking ahead of live webhooks.
    pub async fn ready_below(&self, parked: usize) {
        loop {
            let notified = self.freed.notified();
            {
                let st = self.lock();
                if st.busy < self.limits.slots
                    && st.parked < parked.min(self.limits.park_total)
                    && st.parked_bytes < self.limits.park_bytes
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// A quarter of the parking: what redeliveries may fill.
    pub fn redelivery_parking(&self) -> usize {
        (self.limits.park_total / 4).max(1)
    }

    /// Places a message just pulled; `size` is its payload's length.
    pub fn offer(
        &self,
        sub: SubscriptionId,
        job: J,
        size: usize,
        now: DateTime<Utc>,
    ) -> (Placement<J>, Vec<Transition>) {
        let mut transitions = Vec::new();
        let mut state = self.lock();
        let st = &mut *state;
        let was_busy = st.lanes.get(&sub).is_some_and(Lane::busy);
        let lane = st.lanes.entry(sub).or_insert_with(Lane::new);
        let mono = Instant::now();
        while lane.overflowed.front().is_some_and(|t| *t <= mono) {
            lane.overflowed.pop_front();
        }
        // Behind parked messages of its own lane, it parks too (FIFO).
        if lane.parked.is_empty() && st.busy < self.limits.slots {
            let fair = fair_share(self.limits.slots, st.busy_lanes + usize::from(!was_busy));
            if lane.running < fair && self.may_take(st.busy, fair, sub) {
                match self.health.with(sub, |e, _| e.admit(now, &mut transitions)) {
                    Admission::Start { probe } => {
                        lane.running += 1;
                        st.busy += 1;
                        if !was_busy {
                            st.busy_lanes += 1;
                        }
                        return (
                            Placement::Now(Dispatch::Run { sub, job, probe }),
                            transitions,
                        );
                    }
                    Admission::Open { until } => {
                        st.busy += 1;
                        if lane.idle() {
                            st.lanes.remove(&sub);
                        }
                        return (
                            Placement::Now(Dispatch::Defer { sub, job, until }),
                            transitions,
                        );
                    }
                    Admission::Wait => {}
                }
            }
        }
        let placement = self.park(st, sub, job, size, mono, was_busy);
        (placement, transitions)
    }

    /// Parks a message that cannot start now, or, when its lane's parking is
    /// full, sends it back to JetStream with a delay paced on the endpoint.
    fn park(
        &self,
        st: &mut State<J>,
        sub: SubscriptionId,
        job: J,
        size: usize,
        mono: Instant,
        was_busy: bool,
    ) -> Placement<J> {
        if self.limits.nak_only {
            return Placement::Overflow {
                job,
                delay: OVERFLOW_MIN,
            };
        }
        // A lane parks what it can start within about a second: its limit
        // over the endpoint's pace. An endpoint not proven (no success yet,
        // or failing now) may be one that hangs: its lane counts only its
        // fair share of the slots, at the assumed pace of 1 s until known,
        // and never takes the last share of the parking, so the pull never
        // stops for its backlog. A proven one may fill the parking, which
        // then drains within the second.
        let lanes = st.busy_lanes + usize::from(!was_busy);
        let (limit, pace, proven) = self.health.with(sub, |e, _| {
            (
                e.view().max_in_flight.max(1),
                e.pace().max(1e-3),
                e.proven(),
            )
        });
        let (runs, most) = if proven {
            (limit, self.limits.park_total)
        } else {
            (
                limit.min(fair_share(self.limits.slots, lanes)),
                fair_share(self.limits.park_total, lanes),
            )
        };
        let lane_room = (runs as f64 * PARK_WINDOW_SECS / pace)
            .round()
            .clamp(1.0, most as f64) as usize;
        let lane = st.lanes.entry(sub).or_insert_with(Lane::new);
        if lane.parked.len() >= lane_room {
            let ahead = lane.parked.len() + lane.running + lane.overflowed.len();
            let delay = Duration::from_secs_f64(pace * ahead as f64 / runs as f64)
                .clamp(OVERFLOW_MIN, OVERFLOW_MAX);
            lane.overflowed.push_back(mono + delay);
            return Placement::Overflow { job, delay };
        }
        if lane.parked.is_empty() {
            st.rotation.push_back(sub);
        }
        lane.parked.push_back(ParkedJob {
            job,
            size,
            progress_at: mono,
        });
        st.parked += 1;
        st.parked_bytes += size;
        if !was_busy {
            st.busy_lanes += 1;
        }
        Placement::Parked
    }

    /// Gives back the slot of a dispatch, records what the endpoint learned,
    /// and hands freed slots to parked messages.
    pub fn finish(&self, sub: SubscriptionId, finished: Finished, now: DateTime<Utc>) -> Next<J> {
        let mut transitions = Vec::new();
        let mut state = self.lock();
        let st = &mut *state;
        st.busy = st.busy.saturating_sub(1);
        if finished != Finished::Deferred {
            self.health.with(sub, |e, settings| match finished {
                Finished::Sent(verdict, took) => {
                    e.record(verdict, settings, now, &mut transitions);
                    e.time(took);
                }
                _ => e.release(),
            });
            if let Some(lane) = st.lanes.get_mut(&sub) {
                lane.running = lane.running.saturating_sub(1);
                if !lane.busy() {
                    st.busy_lanes = st.busy_lanes.saturating_sub(1);
                }
                if lane.idle() {
                    st.lanes.remove(&sub);
                }
            }
        }
        let dispatches = self.fill(st, now, &mut transitions);
        drop(state);
        self.freed.notify_one();
        Next {
            dispatches,
            transitions,
        }
    }

    /// Whether `sub` may take a slot with `busy` taken: a failing endpoint
    /// leaves the last `fair` slots to the others.
    fn may_take(&self, busy: usize, fair: usize, sub: SubscriptionId) -> bool {
        busy + fair < self.limits.slots || !self.health.with(sub, |e, _| e.failing())
    }

    /// Hands free slots to parked messages, lane by lane in turn, until
    /// the slots are gone or a whole round starts nothing.
    fn fill(
        &self,
        st: &mut State<J>,
        now: DateTime<Utc>,
        transitions: &mut Vec<Transition>,
    ) -> Vec<Dispatch<J>> {
        let mut out = Vec::new();
        loop {
            let round = st.rotation.len();
            let mut started = false;
            for _ in 0..round {
                if st.busy >= self.limits.slots {
                    return out;
                }
                let Some(sub) = st.rotation.pop_front() else {
                    break;
                };
                if let Some(d) = self.start_parked(st, sub, now, transitions) {
                    started = true;
                    out.push(d);
                }
            }
            if !started || st.rotation.is_empty() {
                return out;
            }
        }
    }

    /// Starts (or defers) the first parked message of `sub`'s lane if its
    /// subscription may start one now; keeps the lane in the rotation while
    /// it has parked messages.
    fn start_parked(
        &self,
        st: &mut State<J>,
        sub: SubscriptionId,
        now: DateTime<Utc>,
        transitions: &mut Vec<Transition>,
    ) -> Option<Dispatch<J>> {
        let fair = fair_share(self.limits.slots, st.busy_lanes);
        let may_take = self.may_take(st.busy, fair, sub);
        let lane = st.lanes.get_mut(&sub)?;
        let mut dispatch = None;
        if lane.running < fair && may_take {
            match self.health.with(sub, |e, _| e.admit(now, transitions)) {
                Admission::Start { probe } => {
                    if let Some(p) = lane.parked.pop_front() {
                        lane.running += 1;
                        st.parked_bytes -= p.size;
                        dispatch = Some(Dispatch::Run {
                            sub,
                            job: p.job,
                            probe,
                        });
                    }
                }
                Admission::Open { until } => {
                    if let Some(p) = lane.parked.pop_front() {
                        st.parked_bytes -= p.size;
                        dispatch = Some(Dispatch::Defer {
                            sub,
                            job: p.job,
                            until,
                        });
                    }
                }
                Admission::Wait => {}
            }
        }
        if dispatch.is_some() {
            st.busy += 1;
            st.parked -= 1;
        }
        if !lane.parked.is_empty() {
            st.rotation.push_back(sub);
        } else {
            if !lane.busy() {
                st.busy_lanes = st.busy_lanes.saturating_sub(1);
            }
            if lane.idle() {
                st.lanes.remove(&sub);
            }
        }
        dispatch
    }

    /// Parked messages last told "in progress" `every` ago or earlier:
    /// send each an in-progress ack. Marks them as told now. Called about
    /// once a second; also forgets overflows that are due back.
    pub fn progress_due(&self, every: Duration) -> Vec<J> {
        let mono = Instant::now();
        let mut state = self.lock();
        let mut due = Vec::new();
        for lane in state.lanes.values_mut() {
            for p in lane.parked.iter_mut() {
                if mono.duration_since(p.progress_at) >= every {
                    p.progress_at = mono;
                    due.push(p.job.clone());
                }
            }
            while lane.overflowed.front().is_some_and(|t| *t <= mono) {
                lane.overflowed.pop_front();
            }
        }
        // Lanes kept only for overflows now due back.
        state.lanes.retain(|_, lane| !lane.idle());
        due
    }

    /// Takes every parked message out (shutdown: they are handed back).
    pub fn drain_parked(&self) -> Vec<J> {
        let mut state = self.lock();
        let st = &mut *state;
        let mut out = Vec::with_capacity(st.parked);
        for lane in st.lanes.values_mut() {
            out.extend(lane.parked.drain(..).map(|p| p.job));
        }
        st.parked = 0;
        st.parked_bytes = 0;
        st.rotation.clear();
        st.busy_lanes = st.lanes.values().filter(|l| l.busy()).count();
        out
    }

    /// Messages parked now, and slots busy now (metrics, tests).
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.parked, state.busy)
    }
}

/// Slots per busy lane, one share kept free for the next lane to get work.
fn fair_share(slots: usize, busy_lanes: usize) -> usize {
    (slots / (busy_lanes + 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CircuitState, HealthSettings};

    fn health(cap: usize) -> Health {
        Health::new(HealthSettings {
            cap,
            failures: 2,
            cooldown: Duration::from_secs(10),
            cooldown_max: Duration::from_secs(60),
            disable_after: Duration::ZERO,
        })
    }

    fn scheduler(slots: usize, cap: usize) -> Scheduler<u32> {
        let limits = Limits {
            slots,
            park_total: 100,
            park_bytes: 1 << 20,
            nak_only: false,
        };
        Scheduler::new(limits, health(cap))
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn offer(s: &Scheduler<u32>, sub: SubscriptionId, job: u32) -> Placement<u32> {
        s.offer(sub, job, 10, t(0)).0
    }

    /// One delivery that took 1 s: the endpoint is proven, its pace 1 s.
    fn prove(s: &Scheduler<u32>, sub: SubscriptionId) {
        assert!(matches!(offer(s, sub, 0), Placement::Now(_)));
        s.finish(
            sub,
            Finished::Sent(Verdict::Success, Duration::from_secs(1)),
            t(0),
        );
    }

    fn run(sub: SubscriptionId, job: u32) -> Placement<u32> {
        Placement::Now(Dispatch::Run {
            sub,
            job,
            probe: false,
        })
    }

    fn ok() -> Finished {
        Finished::Sent(Verdict::Success, Duration::from_millis(10))
    }

    #[test]
    fn a_lane_runs_up_to_its_cap_then_parks_in_order() {
        let s = scheduler(10, 2);
        let a = SubscriptionId::new();
        assert_eq!(offer(&s, a, 1), run(a, 1));
        assert_eq!(offer(&s, a, 2), run(a, 2));
        assert_eq!(offer(&s, a, 3), Placement::Parked);
        assert_eq!(offer(&s, a, 4), Placement::Parked);
        assert_eq!(s.load(), (2, 2));
        let next = s.finish(a, ok(), t(1));
        assert_eq!(
            next.dispatches,
            vec![Dispatch::Run {
                sub: a,
                job: 3,
                probe: false
            }]
        );
        let next = s.finish(a, ok(), t(1));
        assert_eq!(next.dispatches.len(), 1);
        assert!(s.finish(a, ok(), t(1)).dispatches.is_empty());
        assert!(s.finish(a, ok(), t(1)).dispatches.is_empty());
        assert_eq!(s.load(), (0, 0));
    }

    #[test]
    fn a_stuck_lane_leaves_slots_to_the_others() {
        let s = scheduler(8, 8);
        let stuck = SubscriptionId::new();
        let healthy = SubscriptionId::new();
        // Alone, the stuck lane gets half the slots (one share kept free).
        let running = (0..8)
            .filter(|&n| matches!(offer(&s, stuck, n), Placement::Now(_)))
            .count();
        assert_eq!(running, 4);
        // A healthy subscription starts at once, again and again.
        for n in 0..20 {
            assert_eq!(offer(&s, healthy, 100 + n), run(healthy, 100 + n));
            s.finish(healthy, ok(), t(1));
        }
    }

    #[test]
    fn thirty_stuck_lanes_leave_a_share_free() {
        let s = scheduler(64, 64);
        let stuck: Vec<SubscriptionId> = (0..30).map(|_| SubscriptionId::new()).collect();
        for round in 0..4 {
            for sub in &stuck {
                offer(&s, *sub, round);
            }
        }
        let (_, busy) = s.load();
        assert_eq!(busy, 60, "two slots each (64 / 31)");
        let healthy = SubscriptionId::new();
        for n in 0..10 {
            assert_eq!(offer(&s, healthy, 1000 + n), run(healthy, 1000 + n));
            s.finish(healthy, ok(), t(1));
        }
    }

    #[test]
    fn failing_lanes_never_take_the_last_share_even_when_they_outnumber_the_slots() {
        let s = scheduler(16, 64);
        let failed = Finished::Sent(Verdict::Failed, Duration::from_secs(10));
        let stuck: Vec<SubscriptionId> = (0..100).map(|_| SubscriptionId::new()).collect();
        // Each has failed once already (its circuit still closed).
        for sub in &stuck {
            if let Placement::Now(_) = offer(&s, *sub, 0) {
                s.finish(*sub, failed, t(0));
            }
        }
        for sub in &stuck {
            offer(&s, *sub, 1);
        }
        let (_, busy) = s.load();
        assert!(busy < 16, "every slot taken by failing lanes: {busy}");
        let healthy = SubscriptionId::new();
        assert_eq!(offer(&s, healthy, 7), run(healthy, 7));
    }

    #[test]
    fn freed_slots_go_to_lanes_in_turn() {
        let s = scheduler(3, 8);
        let (a, b) = (SubscriptionId::new(), SubscriptionId::new());
        prove(&s, a);
        prove(&s, b);
        // a takes slots 1 and 2 (3 / (0 + 1) ... fair share shrinks as b arrives).
        assert_eq!(offer(&s, a, 1), run(a, 1));
        assert_eq!(offer(&s, b, 10), run(b, 10));
        for n in 2..5 {
            assert_eq!(offer(&s, a, n), Placement::Parked);
        }
        for n in 11..14 {
            assert_eq!(offer(&s, b, n), Placement::Parked);
        }
        let mut order = Vec::new();
        let mut pending = vec![a, b];
        while let Some(sub) = pending.pop() {
            for d in s.finish(sub, ok(), t(1)).dispatches {
                if let Dispatch::Run { sub, job, .. } = d {
                    order.push(job);
                    pending.insert(0, sub);
                }
            }
        }
        order.sort_unstable();
        assert_eq!(order, vec![2, 3, 4, 11, 12, 13]);
        assert_eq!(s.load(), (0, 0));
    }

    #[test]
    fn a_lane_parks_a_second_of_its_work_and_overflows_the_rest_paced() {
        let s = scheduler(4, 2);
        let a = SubscriptionId::new();
        assert_eq!(offer(&s, a, 0), run(a, 0));
        assert_eq!(offer(&s, a, 1), run(a, 1));
        // Unknown pace (1 s per attempt assumed): one round of its limit.
        assert_eq!(offer(&s, a, 2), Placement::Parked);
        assert_eq!(offer(&s, a, 3), Placement::Parked);
        let delays: Vec<Duration> = (4..8)
            .map(|n| match offer(&s, a, n) {
                Placement::Overflow { job, delay } => {
                    assert_eq!(job, n);
                    delay
                }
                other => panic!("{other:?}"),
            })
            .collect();
        // 1 s per attempt, two at a time: 4, 5, 6, 7 attempts ahead.
        assert_eq!(delays[0], Duration::from_secs(2));
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        // Another subscription is not held up by a's full lane.
        let b = SubscriptionId::new();
        assert_eq!(offer(&s, b, 50), run(b, 50));
    }

    #[test]
    fn a_fast_lane_may_fill_the_parking_and_the_pull_then_waits() {
        let s = scheduler(4, 2);
        let a = SubscriptionId::new();
        // Teach the lane its pace: 10 ms attempts.
        for n in 0..40 {
            if let Placement::Now(_) = offer(&s, a, n) {
                s.finish(
                    a,
                    Finished::Sent(Verdict::Success, Duration::from_millis(10)),
                    t(0),
                );
            }
        }
        offer(&s, a, 100);
        offer(&s, a, 101);
        let parked = (0..200)
            .take_while(|n| offer(&s, a, 200 + n) == Placement::Parked)
            .count();
        assert_eq!(parked, 100, "the whole parking (100), no overflow");
        let waited = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map(|rt| {
                rt.block_on(async {
                    tokio::time::timeout(Duration::from_millis(50), s.ready())
                        .await
                        .is_err()
                })
            })
            .unwrap_or(false);
        assert!(waited, "the pull must wait while the parking is full");
    }

    #[test]
    fn an_open_circuit_defers_and_a_probe_goes_alone() {
        let s = scheduler(10, 4);
        let a = SubscriptionId::new();
        let failed = Finished::Sent(Verdict::Failed, Duration::from_secs(1));
        offer(&s, a, 1);
        offer(&s, a, 2);
        s.finish(a, failed, t(0));
        let next = s.finish(a, failed, t(0));
        assert_eq!(
            next.transitions,
            vec![Transition::Opened {
                failures: 2,
                until: t(10)
            }]
        );
        // Open: each message takes a slot only to be deferred to the probe time.
        assert_eq!(
            s.offer(a, 3, 10, t(5)).0,
            Placement::Now(Dispatch::Defer {
                sub: a,
                job: 3,
                until: t(10)
            })
        );
        s.finish(a, Finished::Deferred, t(5));
        // Half-open: one probe, the others park behind it.
        let (probe, changes) = s.offer(a, 4, 10, t(11));
        assert_eq!(
            probe,
            Placement::Now(Dispatch::Run {
                sub: a,
                job: 4,
                probe: true
            })
        );
        assert_eq!(changes, vec![Transition::HalfOpened]);
        assert_eq!(s.offer(a, 5, 10, t(11)).0, Placement::Parked);
        // Behind a probe, one at its pace; the rest come back later.
        assert!(matches!(
            s.offer(a, 6, 10, t(11)).0,
            Placement::Overflow { job: 6, .. }
        ));
        // The probe succeeds: the circuit closes and the parked one runs.
        let next = s.finish(a, ok(), t(12));
        assert_eq!(next.transitions, vec![Transition::Closed]);
        assert_eq!(next.dispatches.len(), 1);
        assert!(next
            .dispatches
            .iter()
            .all(|d| matches!(d, Dispatch::Run { probe: false, .. })));
    }

    #[test]
    fn a_failed_probe_defers_what_waited_behind_it() {
        let s = scheduler(10, 4);
        let a = SubscriptionId::new();
        let failed = Finished::Sent(Verdict::Failed, Duration::from_secs(1));
        offer(&s, a, 1);
        offer(&s, a, 2);
        s.finish(a, failed, t(0));
        s.finish(a, failed, t(0));
        assert!(matches!(
            s.offer(a, 3, 10, t(11)).0,
            Placement::Now(Dispatch::Run { probe: true, .. })
        ));
        assert_eq!(s.offer(a, 4, 10, t(11)).0, Placement::Parked);
        let next = s.finish(a, failed, t(12));
        assert_eq!(
            next.dispatches,
            vec![Dispatch::Defer {
                sub: a,
                job: 4,
                until: t(32)
            }]
        );
        assert_eq!(s.health.view(a).circuit, CircuitState::Open);
    }

    #[test]
    fn parked_messages_get_progress_acks_and_are_handed_back() {
        let s = scheduler(1, 2);
        let a = SubscriptionId::new();
        prove(&s, a);
        offer(&s, a, 1);
        offer(&s, a, 2);
        offer(&s, a, 3);
        assert_eq!(s.progress_due(Duration::ZERO), vec![2, 3]);
        assert!(s.progress_due(Duration::from_secs(3600)).is_empty());
        let mut back = s.drain_parked();
        back.sort_unstable();
        assert_eq!(back, vec![2, 3]);
        assert_eq!(s.load(), (0, 1));
    }

    #[test]
    fn a_stuck_lane_never_fills_the_parking() {
        // 8 slots, a cap far above the fair share, parking for 32.
        let limits = Limits {
            slots: 8,
            park_total: 32,
            park_bytes: 1 << 20,
            nak_only: false,
        };
        let s = Scheduler::new(limits, health(64));
        let stuck = SubscriptionId::new();
        let placed: Vec<Placement<u32>> = (0..40).map(|n| offer(&s, stuck, n)).collect();
        let running = placed
            .iter()
            .filter(|p| matches!(p, Placement::Now(_)))
            .count();
        let parked = placed.iter().filter(|p| **p == Placement::Parked).count();
        // It runs its share (8 / 2) and parks a second of that share (its
        // pace unknown: 1 s), not a second of its cap.
        assert_eq!((running, parked), (4, 4));
        let (in_parking, _) = s.load();
        assert!(in_parking < 32, "room left in the parking: {in_parking}");
        let healthy = SubscriptionId::new();
        assert_eq!(offer(&s, healthy, 100), run(healthy, 100));
    }

    #[test]
    fn fair_share_keeps_one_share_free() {
        assert_eq!(fair_share(256, 0), 256);
        assert_eq!(fair_share(256, 1), 128);
        assert_eq!(fair_share(256, 31), 8);
        assert_eq!(fair_share(256, 1000), 1);
    }

    #[test]
    fn nak_only_parks_nothing() {
        let limits = Limits {
            slots: 4,
            park_total: 100,
            park_bytes: 1 << 20,
            nak_only: true,
        };
        let s: Scheduler<u32> = Scheduler::new(limits, health(1));
        let a = SubscriptionId::new();
        assert_eq!(offer(&s, a, 1), run(a, 1));
        assert_eq!(
            offer(&s, a, 2),
            Placement::Overflow {
                job: 2,
                delay: OVERFLOW_MIN
            }
        );
        assert_eq!(s.load(), (0, 1));
    }
}
