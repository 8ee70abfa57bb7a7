//! The SQLite store opened directly: schema migrations on a fresh file,
//! reopening an existing file, and refusing a file from a newer webhookd.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use webhookd::store::subscriptions::{NewSubscription, SubscriptionPatch};
use webhookd::store::{Store, StoreError, SCHEMA_VERSION};

/// Opens the store on the blocking pool, as `webhookd::run` does.
async fn open(path: &Path) -> Result<Store, StoreError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Store::open(&path, 2))
        .await
        .expect("open task")
}

/// The recorded schema versions, read with plain rusqlite.
fn versions(path: &Path) -> Vec<i64> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap()
}

fn max_version(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap()
}

/// A time with millisecond precision: what the store keeps.
fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap()
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    // A directory that does not exist yet: the store creates it.
    dir.path().join("nested").join("webhookd.db")
}

#[tokio::test]
async fn a_fresh_file_gets_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await.expect("open a fresh file");
    assert_eq!(store.path(), path.as_path());
    assert!(path.exists(), "the file and its directory were created");
    store.ping().await.expect("ping");

    assert_eq!(max_version(&path), SCHEMA_VERSION);
    assert_eq!(
        versions(&path),
        [SCHEMA_VERSION],
        "one row in schema_version"
    );

    let conn = Connection::open(&path).unwrap();
    let names = |kind: &str| -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = ?1 ORDER BY name")
            .unwrap();
        stmt.query_map([kind], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tables = names("table");
    for table in [
        "subscriptions",
        "webhooks",
        "delivery_attempts",
        "schema_version",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "no table {table}: {tables:?}"
        );
    }
    let indexes = names("index");
    for index in [
        "delivery_attempts_webhook",
        "delivery_attempts_subscription_ts",
        "delivery_attempts_ts",
        "webhooks_received_at",
        "webhooks_subscription_received",
        "webhooks_failed_received",
        "webhooks_retrying_received",
    ] {
        assert!(
            indexes.iter().any(|i| i == index),
            "no index {index}: {indexes:?}"
        );
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal", "the file is in WAL mode");
}

#[tokio::test]
async fn reopening_an_existing_file_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let now = millis(1_700_000_000_123);

    let store = open(&path).await.unwrap();
    let kept = store
        .create_subscription(
            NewSubscription {
                target_url: "https://example.test/hook".into(),
                secret: Some("a-secret-of-enough-length".into()),
                events: Some(vec!["order.created".into(), "order.paid".into()]),
            },
            now,
        )
        .await
        .unwrap();
    let changed = store
        .create_subscription(
            NewSubscription {
                target_url: "https://example.test/other".into(),
                secret: None,
                events: None,
            },
            now,
        )
        .await
        .unwrap();
    let later = millis(1_700_000_100_456);
    let changed = store
        .update_subscription(
            changed.id,
            SubscriptionPatch {
                events: Some(Some(vec!["x".into()])),
                ..Default::default()
            },
            later,
        )
        .await
        .unwrap()
        .expect("updated");
    drop(store);

    let store = open(&path).await.expect("reopen");
    assert_eq!(
        store.subscription(kept.id).await.unwrap(),
        Some(kept.clone())
    );
    assert_eq!(
        store.subscription(changed.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(changed.updated_at, later);
    assert_eq!(changed.created_at, now);
    let all = store.list_subscriptions(None, 10).await.unwrap();
    assert_eq!(all, vec![kept.clone(), changed.clone()], "creation order");
    // The migrations were not applied again.
    assert_eq!(versions(&path), [SCHEMA_VERSION]);
    drop(store);

    // A third open still sees them, and writes still work.
    let store = open(&path).await.expect("reopen again");
    assert!(store.delete_subscription(kept.id).await.unwrap());
    drop(store);
    let store = open(&path).await.unwrap();
    assert_eq!(store.subscription(kept.id).await.unwrap(), None);
    assert_eq!(
        store.list_subscriptions(None, 10).await.unwrap(),
        vec![changed]
    );
}

#[tokio::test]
async fn a_file_from_a_newer_webhookd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    // A file this build migrated, whose version a newer build then raised.
    let store = open(&path).await.unwrap();
    let sub = store
        .create_subscription(
            NewSubscription {
                target_url: "https://example.test/hook".into(),
                secret: None,
                events: None,
            },
            millis(1_700_000_000_000),
        )
        .await
        .unwrap();
    drop(store);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE schema_version SET version = ?1",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    }

    match open(&path).await {
        Ok(_) => panic!("a schema_version of {} was accepted", SCHEMA_VERSION + 1),
        Err(e) => {
            let message = e.to_string();
            match e {
                StoreError::TooNew {
                    path: p,
                    found,
                    supported,
                } => {
                    assert_eq!(p, path);
                    assert_eq!(found, SCHEMA_VERSION + 1);
                    assert_eq!(supported, SCHEMA_VERSION);
                }
                other => panic!("expected StoreError::TooNew, got {other:?}"),
            }
            assert!(message.contains("newer"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }
    // Refusing touched nothing: the version and the rows are as they were.
    assert_eq!(versions(&path), [SCHEMA_VERSION + 1]);
    let conn = Connection::open(&path).unwrap();
    let id: String = conn
        .query_row("SELECT id FROM subscriptions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(id, sub.id.to_string());
}

#[tokio::test]
async fn a_bare_file_with_a_newer_version_row_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    }
    let err = match open(&path).await {
        Ok(_) => panic!("accepted a newer schema"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    // No migration ran on it.
    let conn = Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'subscriptions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn store_open_works_outside_a_runtime_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    for _ in 0..3 {
        let store = Store::open(&path, 2).expect("open");
        drop(store);
        assert_eq!(versions(&path), [SCHEMA_VERSION]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_succeed_while_another_connection_writes() {
    // The batched writer commits on its own connection all the time; a PATCH
    // that reads then writes must wait for the write lock, not fail.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhookd.db");
    let store = open(&path).await.unwrap();
    let sub = store
        .create_subscription(
            NewSubscription {
                target_url: "https://example.test/hook".into(),
                secret: None,
                events: None,
            },
            millis(1_700_000_000_000),
        )
        .await
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA busy_timeout = 5000").unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO webhooks (id, subscription_id, received_at, status) \
                     VALUES (?1, 's', 0, 'pending')",
                    [format!("w{n}")],
                )
                .unwrap();
                n += 1;
                // Pace the load like the batched writer (which commits, then
                // waits for more work) rather than re-taking the lock in a
                // tight loop, which would starve any other writer.
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            n
        })
    };

    let mut failures = Vec::new();
    for i in 0..300 {
        let patch = SubscriptionPatch {
            target_url: Some(format!("https://example.test/{i}")),
            ..Default::default()
        };
        if let Err(e) = store
            .update_subscription(sub.id, patch, millis(1_700_000_000_000 + i))
            .await
        {
            failures.push(format!("update {i}: {e}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let inserted = writer.join().unwrap();
    assert!(inserted > 0, "the other connection wrote meanwhile");
    assert!(
        failures.is_empty(),
        "{} of 300 updates failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let last = store.subscription(sub.id).await.unwrap().unwrap();
    assert_eq!(last.target_url, "https://example.test/299");
}

// The batched writer holds ingest's pending rows back (HOLD_PENDING): a
// webhook's first attempt writes its whole row, so most pending rows are
// never written; a flush, a redelivery, time, or the writer's end writes
// the others.

mod held_pending_rows {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use rusqlite::Connection;
    use webhookd::ids::{SubscriptionId, WebhookId};
    use webhookd::store::records::{Outcome, WebhookStatus};
    use webhookd::store::writer::{AttemptWrite, WebhookMeta, Write, Writer};
    use webhookd_harness::wait::eventually;

    fn meta(id: WebhookId) -> WebhookMeta {
        WebhookMeta {
            id,
            subscription_id: SubscriptionId::new(),
            event_type: Some("order.created".into()),
            received_at: Utc::now(),
            stream_seq: Some(7),
        }
    }

    fn pending(id: WebhookId) -> Write {
        Write::Webhook {
            meta: meta(id),
            status: WebhookStatus::Pending,
        }
    }

    fn delivered(id: WebhookId) -> Write {
        Write::Attempt(Arc::new(AttemptWrite {
            webhook: meta(id),
            target_url: "http://127.0.0.1:9/hook".into(),
            timestamp: Utc::now(),
            attempt_number: 1,
            outcome: Outcome::Success,
            status_code: Some(200),
            error: None,
            duration_ms: 3,
            response_body: None,
            next_retry_at: None,
            redelivery: 0,
        }))
    }

    /// `(status, attempts, redeliveries)` of the webhook's row, if any.
    fn row(path: &Path, id: WebhookId) -> Option<(String, i64, i64)> {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT status, attempts, redeliveries FROM webhooks WHERE id = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    }

    /// A writer on a fresh file, with one pending row enqueued.
    async fn one_enqueued(
        dir: &tempfile::TempDir,
    ) -> (
        Writer,
        std::thread::JoinHandle<()>,
        std::path::PathBuf,
        WebhookId,
    ) {
        let path = dir.path().join("webhookd.db");
        super::open(&path).await.unwrap();
        let (writer, thread) = Writer::start(&path).unwrap();
        let id = WebhookId::new();
        writer.enqueue(pending(id)).await.unwrap();
        (writer, thread, path, id)
    }

    #[tokio::test]
    async fn a_pending_row_superseded_by_its_first_attempt_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread, path, id) = one_enqueued(&dir).await;
        writer.write(delivered(id)).await.unwrap();
        assert_eq!(writer.coalesced(), 1, "the held pending row was dropped");
        assert_eq!(row(&path, id), Some(("succeeded".into(), 1, 0)));
        // Nothing is left to write it later either.
        writer.flush().await.unwrap();
        assert_eq!(row(&path, id), Some(("succeeded".into(), 1, 0)));
    }

    #[tokio::test]
    async fn a_flush_writes_the_held_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread, path, id) = one_enqueued(&dir).await;
        writer.flush().await.unwrap();
        assert_eq!(row(&path, id), Some(("pending".into(), 0, 0)));
        assert_eq!(writer.coalesced(), 0);
    }

    #[tokio::test]
    async fn a_held_row_is_written_once_its_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread, path, id) = one_enqueued(&dir).await;
        let found = eventually("the held row written", Duration::from_secs(10), || async {
            row(&path, id)
        })
        .await;
        assert_eq!(found, ("pending".into(), 0, 0));
        assert_eq!(writer.coalesced(), 0);
    }

    #[tokio::test]
    async fn a_redelivery_of_a_held_webhook_finds_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread, path, id) = one_enqueued(&dir).await;
        let redelivered = Write::Redelivered {
            id,
            number: 1,
            at: Utc::now(),
        };
        writer.write(redelivered).await.unwrap();
        assert_eq!(row(&path, id), Some(("pending".into(), 0, 1)));
    }

    #[tokio::test]
    async fn the_writers_end_writes_the_held_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread, path, id) = one_enqueued(&dir).await;
        drop(writer);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        assert_eq!(row(&path, id), Some(("pending".into(), 0, 0)));
    }
}
