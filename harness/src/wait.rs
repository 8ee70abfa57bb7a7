//! Waiting on conditions with a deadline, never for a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Default deadline of the tests' waits.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`; panics, naming
/// `what`, once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `run` unless Ctrl-C comes first: a suite's whole run, whose guards
/// stop every process it started either way.
pub async fn unless_interrupted<T>(
    run: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => {
            anyhow::bail!("interrupted; every process started was stopped")
        }
    }
}
