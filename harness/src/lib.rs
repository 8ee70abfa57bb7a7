//! What webhookd's integration tests (`tests/`), benchmark
//! (`benches/bench`) and chaos suite (`benches/chaos`) share, written once:
//! the real parts they run (a nats-server on a loopback port with its own
//! store, the `webhookd` binary as a child process or webhookd in-process,
//! recording HTTP receivers on 127.0.0.1), how they wait (on conditions,
//! with deadlines), and how they read webhookd's SQLite file.
//!
//! Test code: failures panic with a message saying what was expected, or
//! return an error with context where a suite reports instead of panicking.
//! Nothing here talks to anything but loopback.

#![warn(missing_docs)]

pub mod args;
pub mod cargo;
pub mod check;
pub mod client;
pub mod load;
pub mod nats;
pub mod net;
pub mod process;
pub mod raw_http;
pub mod receiver;
pub mod server;
pub mod sign;
pub mod sqlite;
pub mod wait;
pub mod webhookd;
