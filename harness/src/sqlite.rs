//! webhookd's SQLite file seen from outside: opened read-only to check what
//! webhookd wrote (also while it runs: WAL readers do not block it), and
//! locked from another connection to make webhookd's writes wait or fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// How long a reader waits for webhookd's writer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `path` read-only, waiting up to 5 s on a busy database.
pub fn read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The integer `sql` selects (one row, one column), e.g. a `count(*)`.
pub fn count(conn: &Connection, sql: &str) -> Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
        .with_context(|| format!("running {sql}"))
}

/// The (text, integer) rows `sql` selects, in order: ids with a number,
/// or a `GROUP BY` with its counts.
pub fn pairs(conn: &Connection, sql: &str) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn
        .prepare(sql)
        .with_context(|| format!("preparing {sql}"))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .with_context(|| format!("running {sql}"))
}

/// The text column `sql` selects, in order.
pub fn texts(conn: &Connection, sql: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(sql)
        .with_context(|| format!("preparing {sql}"))?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .with_context(|| format!("running {sql}"))
}

/// Holds SQLite's write lock on `db` from another connection for `hold`,
/// as a full disk or another process would refuse webhookd's writes (past
/// its busy timeout) or delay them (under it). Returns once the lock is
/// taken; join the handle to wait for its release.
pub fn hold_write_lock(db: PathBuf, hold: Duration) -> std::thread::JoinHandle<()> {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = Connection::open(db).expect("open the database");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        locked_tx.send(()).expect("tell the test");
        std::thread::sleep(hold);
        conn.execute_batch("ROLLBACK")
            .expect("release the write lock");
    });
    locked_rx.recv().expect("the lock holder started");
    holder
}
