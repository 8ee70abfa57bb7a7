//! Versioned schema migrations, applied in order at startup. The highest
//! applied version is recorded in `schema_version`; a file from a newer
//! webhookd is refused rather than misread.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migrations in order; entry `i` brings the schema to version `i + 1`.
/// Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: subscriptions, webhooks and delivery attempts (docs/architecture.md, "Storage").
    "CREATE TABLE subscriptions (
         id          TEXT PRIMARY KEY NOT NULL,
         target_url  TEXT NOT NULL,
         secret      TEXT,
         events      TEXT,            -- JSON array of event types; NULL = all
         created_at  INTEGER NOT NULL, -- ms since epoch, UTC
         updated_at  INTEGER NOT NULL
     );
     CREATE TABLE webhooks (
         id               TEXT PRIMARY KEY NOT NULL,
         subscription_id  TEXT NOT NULL,
         event_type       TEXT,
         received_at      INTEGER NOT NULL,
         stream_seq       INTEGER,
         status           TEXT NOT NULL,
         attempts         INTEGER NOT NULL DEFAULT 0,
         last_attempt_at  INTEGER,
         last_outcome     TEXT,
         last_status_code INTEGER,
         last_error       TEXT,
         next_retry_at    INTEGER
     );
     CREATE INDEX webhooks_received_at ON webhooks(received_at);
     CREATE TABLE delivery_attempts (
         id              INTEGER PRIMARY KEY AUTOINCREMENT,
         webhook_id      TEXT NOT NULL,
         subscription_id TEXT NOT NULL,
         target_url      TEXT NOT NULL,
         timestamp       INTEGER NOT NULL,
         attempt_number  INTEGER NOT NULL,
         outcome         TEXT NOT NULL
                         CHECK (outcome IN ('success', 'failed_attempt', 'failure')),
         status_code     INTEGER,
         error           TEXT,
         duration_ms     INTEGER NOT NULL,
         response_body   TEXT
     );
     CREATE INDEX delivery_attempts_webhook ON delivery_attempts(webhook_id);
     CREATE INDEX delivery_attempts_subscription_ts
         ON delivery_attempts(subscription_id, timestamp);
     CREATE INDEX delivery_attempts_ts ON delivery_attempts(timestamp);",
    // 2: a subscription can be disabled (410 Gone, sustained failure, by hand).
    "ALTER TABLE subscriptions ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
         CHECK (state IN ('active', 'disabled'));
     ALTER TABLE subscriptions ADD COLUMN disabled_reason TEXT;
     ALTER TABLE subscriptions ADD COLUMN disabled_at INTEGER;",
    // 3: `GET /webhooks` filters, newest first: each index reads its range
    // in `received_at DESC, id DESC` order, so a page stops at its limit
    // without sorting (the unfiltered list uses webhooks_received_at).
    // Statuses only where operators look for the few among many: an index
    // on every status would be rewritten by each webhook's pending ->
    // succeeded (measured: 7% more webhookd CPU per delivered webhook).
    "CREATE INDEX webhooks_subscription_received
         ON webhooks(subscription_id, received_at, id);
     CREATE INDEX webhooks_failed_received ON webhooks(received_at, id)
         WHERE status = 'failed';
     CREATE INDEX webhooks_retrying_received ON webhooks(received_at, id)
         WHERE status = 'retrying';",
    // 4: redelivery and recovery. `redeliveries` counts the times the
    // webhook was queued again (0: only its first delivery); each attempt
    // says which of them it belongs to. `stream_seq` keeps the original
    // message, where the payload is read from.
    "ALTER TABLE webhooks ADD COLUMN redeliveries INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE webhooks ADD COLUMN redelivered_at INTEGER;
     ALTER TABLE delivery_attempts ADD COLUMN redelivery INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
