//! How the chaos suite's receiver (the harness's recording receiver)
//! answers deliveries: a mode, a seed for its coin and a delay.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use webhookd_harness::receiver::{self, HangUp, Options, Received, Receiver, Reply};

use crate::rng::Rng;

/// How the receiver answers deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 to everything.
    Ok = 0,
    /// 500 to the first request of each webhook-id, 200 afterwards.
    FailFirst = 1,
    /// 500 or 200 at random, half each.
    FailHalf = 2,
    /// At random: a quarter closed without an answer, a quarter closed
    /// after a partial answer head, half answered 200.
    CloseHalf = 3,
}

/// A `text/plain` answer, `ok` or `no`.
fn plain(status: u16) -> Reply {
    Reply {
        headers: vec![("content-type", "text/plain".to_string())],
        body: if status == 200 { "ok" } else { "no" }.into(),
        ..Reply::status(status)
    }
}

/// Starts a receiver on a free loopback port answering per `mode`, after
/// `delay`; its coin is seeded with `seed`.
pub async fn start(mode: Mode, seed: u64, delay: Duration) -> Result<Receiver> {
    let rng = Mutex::new(Rng::new(seed));
    let fail_first = receiver::fail_first(plain(500), plain(200));
    let script = move |n: usize, r: &Received| {
        // One roll per request in every mode: the same seed gives the same
        // answers to the same sequence of requests.
        let roll = rng.lock().map(|mut r| r.below(4)).unwrap_or(0);
        let reply = match mode {
            Mode::Ok => plain(200),
            Mode::FailFirst => fail_first(n, r),
            Mode::FailHalf => plain(if roll < 2 { 500 } else { 200 }),
            Mode::CloseHalf => match roll {
                0 => Reply::hang_up(HangUp::Silently),
                1 => Reply::hang_up(HangUp::MidHead),
                _ => plain(200),
            },
        };
        Reply { delay, ..reply }
    };
    Receiver::start(Options::default(), script).await
}

/// What a flapping receiver does during one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flap {
    /// Reads the request and never answers: closes the connection after
    /// the hang time (longer than webhookd's delivery timeout).
    Hang,
    /// 500 at once.
    Fail,
    /// 200 at once.
    Healthy,
}

/// Stretches of (mode, length) covering `total`, each `min..max` long and
/// in another mode than the one before, drawn from `rng`.
pub fn flap_plan(
    rng: &mut Rng,
    total: Duration,
    min: Duration,
    max: Duration,
) -> Vec<(Flap, Duration)> {
    const MODES: [Flap; 3] = [Flap::Hang, Flap::Fail, Flap::Healthy];
    let mut plan: Vec<(Flap, Duration)> = Vec::new();
    let mut covered = Duration::ZERO;
    // Bounded: at most 10,000 stretches.
    while covered < total && plan.len() < 10_000 {
        let mut mode = MODES[rng.below(3) as usize];
        if plan.last().is_some_and(|(m, _)| *m == mode) {
            mode = MODES[(mode as usize + 1 + rng.below(2) as usize) % 3];
        }
        let len = Duration::from_secs_f64(rng.range_f64(min.as_secs_f64(), max.as_secs_f64()));
        plan.push((mode, len));
        covered += len;
    }
    plan
}

/// The mode of `plan` at `elapsed` since its start: healthy after its end.
pub fn flap_at(plan: &[(Flap, Duration)], elapsed: Duration) -> Flap {
    let mut end = Duration::ZERO;
    for (mode, len) in plan {
        end += *len;
        if elapsed < end {
            return *mode;
        }
    }
    Flap::Healthy
}

/// Starts a receiver answering per `plan` from the moment `epoch` is set
/// (healthy before that and after the plan's end); a hanging answer closes
/// the connection without a byte after `hang`.
pub async fn start_flapping(
    plan: Vec<(Flap, Duration)>,
    epoch: Arc<OnceLock<Instant>>,
    hang: Duration,
) -> Result<Receiver> {
    let script = move |_: usize, _: &Received| {
        let mode = epoch
            .get()
            .map_or(Flap::Healthy, |e| flap_at(&plan, e.elapsed()));
        match mode {
            Flap::Hang => Reply {
                delay: hang,
                ..Reply::hang_up(HangUp::Silently)
            },
            Flap::Fail => plain(500),
            Flap::Healthy => plain(200),
        }
    };
    Receiver::start(Options::default(), script).await
}
