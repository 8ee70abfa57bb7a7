//! One channel for everything the runtime reacts to.
//!
//! Clock ticks, terminal input and the results of background API calls all
//! arrive on a single tokio mpsc channel, so the runtime is one simple loop:
//! take the next event, update the app, redraw.

use std::thread;
use std::time::Duration;

use ratatui::crossterm::event as ct;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::MissedTickBehavior;

use crate::app::Action;

/// How long the input thread blocks in one poll, which bounds how late it
/// notices that the app has quit.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Something the runtime must handle.
#[derive(Debug)]
pub enum Event {
    /// The periodic clock tick (polling, relative times, flash expiry).
    Tick,
    /// Keyboard, resize or other terminal input.
    Terminal(ct::Event),
    /// The result of a background task, ready for [`crate::app::App::update`]
    /// (boxed: an action carrying subscriptions is much larger than the
    /// other events).
    App(Box<Action>),
    /// Terminal input can no longer be read; the UI cannot be driven.
    InputFailed(String),
}

/// Owner of the event channel and of the tick and input sources feeding it.
pub struct EventLoop {
    tx: UnboundedSender<Event>,
    rx: UnboundedReceiver<Event>,
}

impl Default for EventLoop {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLoop {
    /// A channel with no sources yet; see [`EventLoop::start`].
    pub fn new() -> EventLoop {
        let (tx, rx) = mpsc::unbounded_channel();
        EventLoop { tx, rx }
    }

    /// A sender for background tasks to report their results.
    pub fn sender(&self) -> UnboundedSender<Event> {
        self.tx.clone()
    }

    /// Start the tick task (first tick at once, then every `tick`) and the
    /// terminal input thread. Both stop when the receiver is dropped.
    pub fn start(&self, tick: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                if tx.send(Event::Tick).is_err() {
                    break;
                }
            }
        });
        let tx = self.tx.clone();
        // crossterm's reader is blocking; a plain thread keeps it off the
        // async workers. It polls with a timeout so it can see the channel
        // close and end.
        thread::spawn(move || loop {
            if tx.is_closed() {
                break;
            }
            match ct::poll(INPUT_POLL) {
                Ok(false) => {}
                Ok(true) => match ct::read() {
                    Ok(ev) => {
                        if tx.send(Event::Terminal(ev)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Event::InputFailed(e.to_string()));
                        break;
                    }
                },
                Err(e) => {
                    let _ = tx.send(Event::InputFailed(e.to_string()));
                    break;
                }
            }
        });
    }

    /// Wait for the next event.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is already queued.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}
