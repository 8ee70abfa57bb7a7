//! At startup: the pending rows the last process held back (see
//! `store::writer::HOLD_PENDING`) or lost with an uncommitted batch when it
//! died. Its webhooks are safe in JetStream either way, and their first
//! attempt writes their rows; this makes them known to the status API from
//! the start instead.

use std::time::Duration;

use futures_util::StreamExt;

use super::attempt::Parsed;
use super::Deliverer;
use crate::store::writer::HOLD_PENDING;

/// How far before the newest row the read starts, beyond the hold and the
/// publish timeout (a webhook's received-at time is taken before its
/// publish): the clocks of webhookd (received-at) and of NATS (the
/// stream's timestamps) may differ a little.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);

/// Messages read at most: the newest row is recent on any restart but the
/// first, and a first start has little in its stream.
const READ_AT_MOST: u64 = 200_000;

/// Rows written per transaction.
const CHUNK: usize = 1024;

/// How long the read waits for the next message before it gives up.
const READ_WAIT: Duration = Duration::from_secs(5);

impl Deliverer {
    /// Writes a pending row for each webhook queued since just before the
    /// newest row in SQLite that has none (a row already there is kept).
    /// Trouble is logged: the rows come with the first attempts anyway.
    pub async fn restore_pending_rows(&self) {
        match self.restore().await {
            Ok((0, _)) => tracing::debug!("no recent webhooks to check for rows"),
            Ok((read, restored)) => tracing::info!(
                read,
                restored,
                "checked the rows of the webhooks queued last before the restart"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "checking the rows of the webhooks queued last before the restart; \
                 their first attempts write them"
            ),
        }
    }

    /// `(messages read, rows written)`.
    async fn restore(&self) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
        let back = HOLD_PENDING + self.queue.publish_timeout() + CLOCK_MARGIN;
        let since = self
            .store
            .latest_received_at()
            .await?
            .map(|t| t - chrono::Duration::from_std(back).unwrap_or_default());
        let (count, mut messages) = self.queue.recent_webhooks(since).await?;
        let want = count.min(READ_AT_MOST);
        let (mut read, mut written) = (0, 0);
        let mut chunk = Vec::with_capacity(CHUNK);
        while read < want {
            let Ok(next) = tokio::time::timeout(READ_WAIT, messages.next()).await else {
                break;
            };
            let Some(msg) = next else { break };
            read += 1;
            match Parsed::from_message(&msg?) {
                Ok(parsed) => chunk.push(parsed.meta),
                Err(reason) => tracing::debug!(reason, "unreadable queue message skipped"),
            }
            if chunk.len() == CHUNK {
                written += self
                    .store
                    .restore_pending(std::mem::take(&mut chunk))
                    .await?;
            }
        }
        if !chunk.is_empty() {
            written += self.store.restore_pending(chunk).await?;
        }
        Ok((read, written))
    }
}
