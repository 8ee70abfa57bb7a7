//! Retention purge: deletes attempt logs and webhook rows older than the
//! retention, in small batches (one short transaction each) so ingest and
//! delivery never wait long for SQLite's write lock.
//!
//! The cut-off is an argument: tests purge with a cut-off of their choice
//! instead of waiting 72 hours.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, TableLabel};
use crate::store::{to_millis, Store, StoreError};

/// Rows deleted per transaction.
pub const BATCH: usize = 5_000;

/// The batch delete of each table, by its timestamp index (the bundled
/// SQLite has no `DELETE ... LIMIT`): `(table, statement)`, with `?1` the
/// cut-off (ms since epoch) and `?2` the batch size. Public so tests can
/// check the query plan.
pub const DELETES: [(&str, &str); 2] = [
    (
        "delivery_attempts",
        "DELETE FROM delivery_attempts WHERE rowid IN
             (SELECT rowid FROM delivery_attempts WHERE timestamp < ?1 ORDER BY timestamp LIMIT ?2)",
    ),
    (
        "webhooks",
        "DELETE FROM webhooks WHERE rowid IN
             (SELECT rowid FROM webhooks WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
    ),
];

/// Rows removed by one purge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// From `delivery_attempts`.
    pub attempts: u64,
    /// From `webhooks`.
    pub webhooks: u64,
}

/// Deletes every row older than `cutoff`, batch by batch.
pub async fn purge_before(
    store: &Store,
    cutoff: DateTime<Utc>,
    metrics: &Metrics,
) -> Result<Purged, StoreError> {
    let mut purged = Purged::default();
    for (table, sql) in DELETES {
        loop {
            let n = store
                .call(move |c| Ok(c.execute(sql, params![to_millis(cutoff), BATCH as i64])?))
                .await? as u64;
            if n == 0 {
                break;
            }
            metrics
                .purged_rows
                .get_or_create(&TableLabel { table })
                .inc_by(n);
            match table {
                "webhooks" => purged.webhooks += n,
                _ => purged.attempts += n,
            }
            // Let queued writers take the lock between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(purged)
}

/// Runs the purge at startup and then every `interval` until `shutdown`.
pub async fn run(
    store: Store,
    retention: Duration,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        match purge_before(&store, cutoff, &metrics).await {
            Ok(p) if p.attempts + p.webhooks > 0 => {
                tracing::info!(
                    attempts = p.attempts,
                    webhooks = p.webhooks,
                    "retention purge"
                )
            }
            Ok(_) => tracing::debug!("retention purge: nothing to remove"),
            Err(e) => tracing::error!(error = %e, "retention purge failed; retrying next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
