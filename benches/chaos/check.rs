//! What each scenario is judged on: the load's answers, the receiver's
//! records and webhookd's SQLite file (read-only), put side by side.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use webhookd_harness::check::Check;
use webhookd_harness::receiver::{first_ok, Answer, Received};
use webhookd_harness::sqlite;
use webhookd_harness::webhookd::Lifecycle;

use crate::faults::{Event, Fault};
use crate::ingest::Post;

/// The parts of the SQLite file the checks read.
#[derive(Debug, Default)]
pub struct Db {
    /// webhook id → its attempt numbers, in row order.
    pub attempts: HashMap<String, Vec<i64>>,
    /// webhook id → (status, attempts).
    pub webhooks: HashMap<String, (String, i64)>,
    pub rows: usize,
}

impl Db {
    /// Reads the file read-only (webhookd may still run: WAL readers are fine).
    pub fn read(path: &Path) -> Result<Db> {
        let conn = sqlite::read_only(path)?;
        let mut db = Db::default();
        let attempts = sqlite::pairs(
            &conn,
            "SELECT webhook_id, attempt_number FROM delivery_attempts ORDER BY id",
        )?;
        for (id, a) in attempts {
            db.attempts.entry(id).or_default().push(a);
            db.rows += 1;
        }
        let mut stmt = conn.prepare("SELECT id, status, attempts FROM webhooks")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (id, status, attempts) = row?;
            db.webhooks.insert(id, (status, attempts));
        }
        Ok(db)
    }

    /// Ids (of `ids`) whose webhook row has a final status.
    pub fn count_final(path: &Path, ids: &HashSet<String>) -> Result<usize> {
        Db::count_status(path, ids, "status IN ('succeeded', 'failed')")
    }

    /// Ids (of `ids`) whose webhook row says `succeeded`.
    pub fn count_succeeded(path: &Path, ids: &HashSet<String>) -> Result<usize> {
        Db::count_status(path, ids, "status = 'succeeded'")
    }

    fn count_status(path: &Path, ids: &HashSet<String>, condition: &str) -> Result<usize> {
        let conn = sqlite::read_only(path)?;
        let found = sqlite::texts(&conn, &format!("SELECT id FROM webhooks WHERE {condition}"))?;
        Ok(found.iter().filter(|id| ids.contains(*id)).count())
    }
}

/// One line of the table, with its checks and notes.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub posted: usize,
    pub accepted: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Delivered although the post got no 202 (answer lost in a fault, or
    /// stored after a 503): not an error, the sender would retry.
    pub unaccepted_delivered: usize,
    pub rows: usize,
    pub seen: usize,
    /// Receiver-seen requests without an attempt row, not excused.
    pub missing_rows: usize,
    /// ... of which excused: in flight when webhookd was killed.
    pub excused_rows: usize,
    /// Attempt rows without a receiver-seen request.
    pub extra_rows: usize,
    pub drain_s: Option<f64>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    pub skipped: Option<String>,
    pub error: Option<String>,
}

impl Row {
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check::new(&self.name, name, ok, detail));
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn passed(&self) -> bool {
        self.error.is_none() && self.skipped.is_none() && self.checks.iter().all(|c| c.ok)
    }

    pub fn verdict(&self) -> &'static str {
        if self.error.is_some() {
            "ERROR"
        } else if self.skipped.is_some() {
            "SKIPPED"
        } else if self.passed() {
            "ok"
        } else {
            "FAIL"
        }
    }
}

/// Accepted webhook ids (202 with an id).
pub fn accepted_ids(posts: &[Post]) -> HashSet<String> {
    posts
        .iter()
        .filter(|p| p.status == Some(202))
        .filter_map(|p| p.webhook_id.clone())
        .collect()
}

/// How long before a kill of webhookd an attempt may have been in flight
/// (sent, answered, row not yet committed).
pub const IN_FLIGHT_WINDOW_US: u64 = 5_000_000;

/// How long after a kill of webhookd the receiver may still read, in full,
/// a request the killed process wrote before it died (a busy receiver reads
/// its socket a little late): such an arrival is in flight at the kill too.
pub const LATE_READ_US: u64 = 250_000;

/// Until when an arrival after the kill at `kill` may be the killed
/// process's: [`LATE_READ_US`] later, and never past the next start.
fn late_read_until(kill: u64, starts: &[u64]) -> u64 {
    let next_start = starts
        .iter()
        .copied()
        .filter(|s| *s > kill)
        .min()
        .unwrap_or(u64::MAX);
    (kill + LATE_READ_US).min(next_start)
}

/// Fills the common columns of `row` and adds the common checks:
/// nothing accepted lost; every receiver-seen request has an attempt row
/// (except attempts in flight at a kill of webhookd, or written by it just
/// before and read by the receiver just after).
pub fn judge(
    row: &mut Row,
    posts: &[Post],
    arrivals: &[Received],
    db: &Db,
    events: &[Event],
    drain_from_us: u64,
) {
    let accepted = accepted_ids(posts);
    let first_ok = first_ok(arrivals);
    row.posted = posts.len();
    row.accepted = accepted.len();
    row.delivered = accepted
        .iter()
        .filter(|id| first_ok.contains_key(*id))
        .count();
    row.lost = row.accepted - row.delivered;
    row.unaccepted_delivered = first_ok.keys().filter(|id| !accepted.contains(*id)).count();
    let mut oks: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashMap<&str, Vec<&Received>> = HashMap::new();
    for a in arrivals {
        if a.answer.ok() {
            *oks.entry(a.webhook_id()).or_default() += 1;
        }
        seen.entry(a.webhook_id()).or_default().push(a);
    }
    row.duplicates = oks.values().map(|n| n - 1).sum();
    row.seen = arrivals.len();
    row.rows = db.rows;

    let kills: Vec<u64> = events
        .iter()
        .filter(|e| e.fault == Fault::Webhookd(Lifecycle::Killed))
        .map(|e| e.at_us)
        .collect();
    let starts: Vec<u64> = events
        .iter()
        .filter(|e| e.fault == Fault::Webhookd(Lifecycle::Started))
        .map(|e| e.at_us)
        .collect();
    let mut unexplained = Vec::new();
    for (id, list) in &seen {
        let rows = db.attempts.get(*id).map_or(0, Vec::len);
        if rows >= list.len() {
            continue;
        }
        let missing = list.len() - rows;
        let near_kill = list
            .iter()
            .filter(|a| {
                kills.iter().any(|k| {
                    (a.at_us <= *k && k - a.at_us <= IN_FLIGHT_WINDOW_US)
                        || (a.at_us > *k && a.at_us <= late_read_until(*k, &starts))
                })
            })
            .count();
        let excused = missing.min(near_kill);
        row.excused_rows += excused;
        if missing > excused {
            row.missing_rows += missing - excused;
            if unexplained.len() < 5 {
                let answers: Vec<String> = list.iter().map(|a| format!("{:?}", a.answer)).collect();
                // Where the first arrival lies against the kills (µs).
                let since_kill = kills
                    .iter()
                    .filter(|k| **k <= list[0].at_us)
                    .map(|k| list[0].at_us - k)
                    .min();
                unexplained.push(format!(
                    "{id}: seen {} ({}), rows {rows}{}",
                    list.len(),
                    answers.join(","),
                    since_kill
                        .map(|us| format!(", first {:.0} ms after a kill", us as f64 / 1e3))
                        .unwrap_or_default()
                ));
            }
        }
    }
    for (id, rows) in &db.attempts {
        let n = seen.get(id.as_str()).map_or(0, Vec::len);
        row.extra_rows += rows.len().saturating_sub(n);
    }

    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !first_ok.contains_key(*id))
        .collect();
    let mut detail = format!("{} of {} accepted delivered", row.delivered, row.accepted);
    if !lost.is_empty() {
        let _ = write!(detail, "; lost e.g. ");
        for id in lost.iter().take(5) {
            let status = db
                .webhooks
                .get(id.as_str())
                .map(|(s, n)| format!("{s}/{n} attempts"))
                .unwrap_or_else(|| "no webhook row".into());
            let _ = write!(
                detail,
                "{id} ({status}, receiver saw {}) ",
                seen.get(id.as_str()).map_or(0, Vec::len)
            );
        }
    }
    row.check("no accepted webhook lost", row.lost == 0, detail);
    row.check(
        "every receiver-seen request has an attempt row",
        row.missing_rows == 0,
        format!(
            "{} rows, {} requests seen, {} without a row ({} excused: in flight at a kill -9){}",
            row.rows,
            row.seen,
            row.missing_rows + row.excused_rows,
            row.excused_rows,
            if unexplained.is_empty() {
                String::new()
            } else {
                format!("; e.g. {}", unexplained.join("; "))
            }
        ),
    );
    if row.lost == 0 {
        let last = accepted
            .iter()
            .filter_map(|id| first_ok.get(id))
            .max()
            .copied()
            .unwrap_or(0);
        row.drain_s = Some(last.saturating_sub(drain_from_us) as f64 / 1e6);
    }
    let unsent = arrivals
        .iter()
        .filter(|a| matches!(a.answer, Answer::Unsent(_)))
        .count();
    if unsent > 0 {
        row.note(format!(
            "{unsent} answers could not be written (webhookd gone)"
        ));
    }
}

/// Every accepted webhook's row in SQLite says `succeeded` (scenarios whose
/// receiver ends up answering 2xx to everything).
pub fn check_succeeded(row: &mut Row, posts: &[Post], db: &Db) {
    let accepted = accepted_ids(posts);
    let mut other: HashMap<String, usize> = HashMap::new();
    let mut examples = Vec::new();
    for id in &accepted {
        let status = db.webhooks.get(id).map_or("no row", |(s, _)| s.as_str());
        if status != "succeeded" {
            *other.entry(status.to_string()).or_default() += 1;
            if examples.len() < 3 {
                examples.push(id.clone());
            }
        }
    }
    row.check(
        "every accepted webhook's status is succeeded",
        other.is_empty(),
        if other.is_empty() {
            format!("{} succeeded", accepted.len())
        } else {
            format!(
                "not succeeded: {} (e.g. {})",
                hist_text(&other),
                examples.join(", ")
            )
        },
    );
}

/// Status histogram of posts answered within `[from, to]`.
pub fn statuses_between(
    posts: &[Post],
    from: u64,
    to: u64,
) -> (HashMap<String, usize>, Vec<String>) {
    let mut hist: HashMap<String, usize> = HashMap::new();
    let mut accepted = Vec::new();
    for p in posts
        .iter()
        .filter(|p| p.answered_us >= from && p.answered_us <= to)
    {
        let key = match (p.status, &p.code) {
            (Some(s), Some(c)) => format!("{s} {c}"),
            (Some(s), None) => s.to_string(),
            (None, _) => "no answer".to_string(),
        };
        *hist.entry(key).or_default() += 1;
        if p.status == Some(202) {
            if let Some(id) = &p.webhook_id {
                accepted.push(id.clone());
            }
        }
    }
    (hist, accepted)
}

/// `{"503 queue_unavailable": 12, ...}` as one short sorted string.
pub fn hist_text(hist: &HashMap<String, usize>) -> String {
    let mut v: Vec<_> = hist.iter().collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
