//! What was done to the system during a scenario, and when: the fault
//! windows the results are judged against.

use webhookd_harness::webhookd::{self, Lifecycle};

/// One kind of thing done to a process or the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Something done to webhookd (killed, stopped, started, ...).
    Webhookd(Lifecycle),
    /// The nats-server was killed.
    NatsKill,
    /// The nats-server was listening again.
    NatsStarted,
    /// The SQLite file system became full.
    DiskFull,
    /// Its space came back.
    DiskFreed,
}

/// A fault and when it happened (µs since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub at_us: u64,
    pub fault: Fault,
}

impl Event {
    /// `fault`, now.
    pub fn now(fault: Fault) -> Event {
        Event {
            at_us: webhookd_harness::load::now_us(),
            fault,
        }
    }
}

/// What was done to `wh`, as events.
pub fn of_webhookd(wh: &webhookd::Webhookd) -> Vec<Event> {
    wh.events()
        .iter()
        .map(|e| Event {
            at_us: e.at_us,
            fault: Fault::Webhookd(e.what),
        })
        .collect()
}

/// When `fault` last happened (0: never).
pub fn last(events: &[Event], fault: Fault) -> u64 {
    events
        .iter()
        .filter(|e| e.fault == fault)
        .map(|e| e.at_us)
        .max()
        .unwrap_or(0)
}
