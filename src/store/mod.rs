//! SQLite storage: subscriptions, webhooks and delivery attempts.
//!
//! [`Store`] is a cheap `Clone` handle over an r2d2 pool; every query runs on
//! tokio's blocking pool through [`Store::call`], never on an async worker.
//! Writes on the hot paths (ingest, delivery) go through the batched
//! [`writer::Writer`] instead.

mod migrations;
pub mod records;
pub mod redeliveries;
pub mod subscriptions;
pub mod webhooks;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub use migrations::SCHEMA_VERSION;

/// Pool of read/admin connections.
type Pool = r2d2::Pool<SqliteConnectionManager>;

/// What can go wrong talking to SQLite.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A statement failed (disk full, I/O error, constraint).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No connection could be had from the pool in time.
    #[error("sqlite connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// The file was written by a newer webhookd.
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this webhookd \
         supports: upgrade webhookd, or point --database at another file"
    )]
    TooNew {
        /// The SQLite file.
        path: PathBuf,
        /// Version recorded in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// The data directory could not be created.
    #[error("cannot create the database directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The SQLite file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The blocking task running a query panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The batched writer's thread could not be started.
    #[error("cannot start the database writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// The batch holding this write was not committed (disk full, I/O
    /// error); every write of the batch shares the one cause.
    #[error("batch not committed: {0}")]
    NotCommitted(#[source] std::sync::Arc<StoreError>),
    /// The batched writer has stopped (shutdown in progress).
    #[error("database writer is closed")]
    WriterClosed,
}

/// Handle to the database; clones share one pool.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    path: PathBuf,
}

/// How long a statement waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pragmas every connection runs: WAL for concurrent readers, NORMAL sync
/// (durable at checkpoints, safe against corruption), and foreign keys
/// enforced. With [`BUSY_TIMEOUT`] instead of immediate SQLITE_BUSY.
const CONNECTION_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = NORMAL;
     PRAGMA foreign_keys = ON;";

/// Sets up a new connection: the busy timeout and the pragmas.
fn init_connection(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(CONNECTION_PRAGMAS)
}

/// Opens a connection with the standard pragmas; used by the writer thread.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    init_connection(&mut conn)?;
    Ok(conn)
}

impl Store {
    /// Creates the parent directory if needed, opens the file, applies
    /// migrations and builds the pool. Blocking: call before serving, or from
    /// `spawn_blocking`.
    pub fn open(path: &Path, pool_size: u32) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = open_connection(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        migrations::apply(&mut conn, path)?;
        drop(conn);

        let manager = SqliteConnectionManager::file(path).with_init(init_connection);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(5))
            .build(manager)?;
        Ok(Store {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// The SQLite file behind this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }

    /// The readiness probe: SQLite answers a query and grants the write
    /// lock (which the attempt writer needs) within the busy timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("SELECT count(*) FROM schema_version", [], |_| Ok(()))?;
            // Give up within the probe's own deadline (2 s) instead of
            // holding a pooled connection for the full busy timeout.
            c.busy_timeout(Duration::from_millis(1500))?;
            let locked = c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
            c.busy_timeout(BUSY_TIMEOUT)?;
            Ok(locked?)
        })
        .await
    }
}

/// Milliseconds since the Unix epoch: how timestamps are stored (compact,
/// indexable, ordered).
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_millis`]; out-of-range values clamp to the epoch.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
