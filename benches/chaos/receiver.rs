//! How the chaos suite's receiver (the harness's recording receiver)
//! answers deliveries: a mode, a seed for its coin and a delay.

use std::sync::Mutex;
use std::time::Duration;

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
