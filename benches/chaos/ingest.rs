//! The load generator of the chaos suite, on the harness's keep-alive
//! [`Conn`]: C workers post webhooks until N were sent or the time limit
//! passed, and record every answer with its webhook id and times, so
//! answers can be placed against fault windows afterwards.
//!
//! Unlike the benchmark's generator, a worker whose connection cannot be
//! opened (webhookd is down) waits and reconnects without using up a
//! request number: only requests actually sent count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::Method;
use webhookd_harness::client::Conn;
use webhookd_harness::load::{body, now_us, Spec};

/// One request sent.
#[derive(Debug, Clone)]
pub struct Post {
    pub seq: usize,
    pub sent_us: u64,
    pub answered_us: u64,
    /// None: no answer (connection error or timeout).
    pub status: Option<u16>,
    /// From a 202's body.
    pub webhook_id: Option<String>,
    /// `error.code` of an error answer.
    pub code: Option<String>,
}

/// Live counters, for triggering faults at a point of the load.
#[derive(Default)]
pub struct Progress {
    /// Requests answered or failed.
    pub done: AtomicUsize,
    /// Answered 202.
    pub accepted: AtomicUsize,
    /// Ends the load early.
    pub stop: AtomicBool,
    posts: Mutex<Vec<Post>>,
}

impl Progress {
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `done` reaches `n`, the load ended, or `limit` passed.
    pub async fn wait_done(
        &self,
        n: usize,
        finished: &tokio::task::JoinHandle<()>,
        limit: Duration,
    ) {
        let until = Instant::now() + limit;
        while self.done() < n && !finished.is_finished() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A running load.
pub struct Load {
    pub progress: Arc<Progress>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts posting in the background.
    pub fn start(addr: SocketAddr, spec: Spec) -> Load {
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let task = tokio::spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let deadline = start + spec.max_time;
            let spec = Arc::new(spec);
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..spec.concurrency.max(1) {
                workers.spawn(worker(
                    addr,
                    next.clone(),
                    spec.clone(),
                    p.clone(),
                    start,
                    deadline,
                ));
            }
            while workers.join_next().await.is_some() {}
        });
        Load { progress, task }
    }

    /// Waits for the end of the load (bounded by its own time limit plus
    /// the request timeout) and returns every post, in request order.
    pub async fn finish(self, limit: Duration) -> Result<Vec<Post>> {
        tokio::time::timeout(limit, self.task)
            .await
            .context("the load did not end in time")?
            .context("the load task failed")?;
        let mut posts = std::mem::take(
            &mut *self
                .progress
                .posts
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?,
        );
        posts.sort_by_key(|p| p.seq);
        Ok(posts)
    }
}

async fn worker(
    addr: SocketAddr,
    next: Arc<AtomicUsize>,
    spec: Arc<Spec>,
    progress: Arc<Progress>,
    start: Instant,
    deadline: Instant,
) {
    let mut conn: Option<Conn> = None;
    let mut mine = Vec::new();
    loop {
        if Instant::now() >= deadline || progress.stop.load(Ordering::Relaxed) {
            break;
        }
        if conn.is_none() {
            match Conn::connect(addr).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    // webhookd is down: wait, do not use up a number.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
            }
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= spec.n {
            break;
        }
        if !spec.pace(start, deadline, seq).await {
            break;
        }
        let Some(c) = conn.as_mut() else { continue };
        let path = &spec.paths[seq % spec.paths.len()];
        let sent_us = now_us();
        let answer = c
            .request(
                Method::POST,
                path,
                &[
                    ("content-type", "application/json"),
                    ("x-event-type", "chaos.event"),
                ],
                body(&spec.tag, seq, sent_us, spec.body_size),
            )
            .await;
        let answered_us = now_us();
        let post = match answer {
            Ok((status, bytes)) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let webhook_id = v["webhook_id"].as_str().map(str::to_string);
                let code = v["error"]["code"].as_str().map(str::to_string);
                if status.as_u16() == 202 && webhook_id.is_some() {
                    progress.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Post {
                    seq,
                    sent_us,
                    answered_us,
                    status: Some(status.as_u16()),
                    webhook_id,
                    code,
                }
            }
            Err(_) => {
                conn = None;
                Post {
                    seq,
                    sent_us,
                    answered_us,
                    status: None,
                    webhook_id: None,
                    code: None,
                }
            }
        };
        mine.push(post);
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(mut all) = progress.posts.lock() {
        all.extend(mine);
    }
}
