//! Entry point: parse flags, set up the terminal, run the app, and put the
//! terminal back the way it was, also on errors and panics.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, stdout};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

use webhookd_tui::api::Client;
use webhookd_tui::app::App;
use webhookd_tui::event::EventLoop;
use webhookd_tui::runtime;

/// Seconds between ticks: the polling period of live screens.
const TICK: Duration = Duration::from_secs(1);

/// Terminal UI for webhookd: subscriptions, deliveries and webhook status
/// over the HTTP API.
#[derive(Debug, Parser)]
#[command(name = "webhookd-tui", version, about)]
struct Cli {
    /// Base URL of the webhookd API.
    #[arg(long, env = "WEBHOOKD_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// API token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "WEBHOOKD_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Leave raw mode and the alternate screen. Safe to call more than once.
fn restore_terminal() -> io::Result<()> {
    disable_raw_mode()?;
    execute!(stdout(), LeaveAlternateScreen, Show)
}

/// Restores the terminal when dropped, so every return path (including `?`)
/// leaves the shell usable.
struct RestoreGuard;

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        let _ = restore_terminal();
    }
}

/// On panic: restore the terminal first so the message is readable, print
/// it, and exit. Exiting also covers panics in background tasks, which
/// would otherwise leave the UI running on a restored (garbled) terminal.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = restore_terminal();
        previous(info);
        std::process::exit(101);
    }));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Validate the configuration before touching the terminal.
    let client = Client::new(&cli.url, cli.token).context("cannot set up the API client")?;
    let app = App::new(&cli.url);

    install_panic_hook();
    enable_raw_mode().context("cannot switch the terminal to raw mode (is this a TTY?)")?;
    let guard = RestoreGuard;
    execute!(stdout(), EnterAlternateScreen).context("cannot enter the alternate screen")?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(stdout())).context("cannot set up the terminal")?;
    terminal.clear().context("cannot clear the terminal")?;

    let events = EventLoop::new();
    events.start(TICK);
    let result = runtime::run(&mut terminal, app, client, events).await;
    drop(guard);
    result.context("terminal UI failed")
}
