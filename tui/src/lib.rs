//! `webhookd-tui`: a keyboard-driven terminal client for the webhookd HTTP
//! API.
//!
//! The crate is a library so that the pieces can be tested on their own
//! (and the API client reused by the server's integration tests):
//!
//! - [`api`]: reqwest client and serde types of the HTTP API;
//! - [`app`]: all UI state, changed only by `App::update(Action)`, no I/O;
//! - [`screens`]: one module per screen: its state, commands and drawing;
//! - `health`: how a subscription's circuit, throttle and state read;
//! - [`ui`]: rendering as a pure function of the state (the shared chrome);
//! - [`keymap`]: the key table behind key handling, footer, help and README;
//! - [`event`]: the one channel of ticks, terminal input and API results;
//! - [`runtime`]: the loop gluing them together and running effects;
//! - [`metrics`]: Prometheus parsing: header rates, chart history, gauges.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod action;
pub mod api;
pub mod app;
pub mod event;
mod health;
pub mod keymap;
pub mod metrics;
pub mod runtime;
pub mod screens;
pub mod ui;
mod widgets;

#[cfg(test)]
mod testkit;
