//! What the benchmark reads about its processes in /proc (memory, CPU
//! time, load) and the one line its server processes announce themselves
//! with. Starting and stopping them is the harness's
//! [`ChildGuard`](webhookd_harness::process::ChildGuard).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use webhookd_harness::process::{all_processes, ChildGuard};

/// Takes the child's stdout and reads its first line, which must be
/// `LISTENING <addr>`; bounded by `timeout`.
pub async fn read_listen_line(
    guard: &mut ChildGuard,
    name: &str,
    timeout: Duration,
) -> Result<SocketAddr> {
    let stdout = guard
        .child_mut()
        .and_then(|c| c.stdout.take())
        .ok_or_else(|| anyhow!("{name}: no stdout to read"))?;
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("{name} did not report its address within {timeout:?}"))?
        .context("reading a child's stdout")?
        .with_context(|| format!("reading {name}'s stdout"))?;
    line.trim()
        .strip_prefix("LISTENING ")
        .ok_or_else(|| anyhow!("{name} said {line:?} instead of its address"))?
        .parse()
        .with_context(|| format!("{name}'s address {line:?}"))
}

/// Resident set size now and at its peak (VmRSS, VmHWM), in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:").unwrap_or(0),
    })
}

/// CPU time (user + system, all threads) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((utime + stime) as f64 / hz)
}

/// Samples the RSS of some processes every 100 ms until finished, and
/// measures the CPU time each used meanwhile.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<HashMap<String, Peak>>>,
    cpu_start: HashMap<String, f64>,
    task: tokio::task::JoinHandle<()>,
}

/// What a sampler saw of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    /// Highest VmRSS sampled.
    pub max_rss_kib: u64,
    /// VmHWM at the last sample (peak since the process started).
    pub hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
    /// CPU seconds used between start and finish.
    pub cpu_s: f64,
}

impl Sampler {
    pub fn start(procs: Vec<(String, u32)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Mutex<HashMap<String, Peak>>> = Arc::default();
        let cpu_start = procs
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), cpu_seconds(*pid)?)))
            .collect();
        let (s, p) = (stop.clone(), peaks.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            // Bounded: a forgotten sampler ends by itself after an hour.
            for _ in 0..36_000 {
                tick.tick().await;
                if s.load(Ordering::Relaxed) {
                    break;
                }
                sample(&procs, &p);
            }
        });
        Sampler {
            stop,
            peaks,
            cpu_start,
            task,
        }
    }

    /// Takes a last sample and returns the peaks by name.
    pub async fn finish(self, procs: &[(String, u32)]) -> HashMap<String, Peak> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        sample(procs, &self.peaks);
        let mut peaks = self.peaks.lock().map(|p| p.clone()).unwrap_or_default();
        for (name, pid) in procs {
            if let (Some(start), Some(now)) = (self.cpu_start.get(name), cpu_seconds(*pid)) {
                peaks.entry(name.clone()).or_default().cpu_s = now - start;
            }
        }
        peaks
    }
}

fn sample(procs: &[(String, u32)], peaks: &Mutex<HashMap<String, Peak>>) {
    for (name, pid) in procs {
        if let Some(r) = rss(*pid) {
            if let Ok(mut peaks) = peaks.lock() {
                let p = peaks.entry(name.clone()).or_default();
                p.max_rss_kib = p.max_rss_kib.max(r.rss_kib);
                p.hwm_kib = r.hwm_kib;
                p.samples += 1;
            }
        }
    }
}

/// `uptime`'s load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Removes data directories left in `dir` by an earlier run that was killed
/// (SIGKILL leaves no chance to clean up), unless a live process still
/// names one on its command line.
pub fn remove_stale_dirs(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let live: Vec<String> = all_processes().into_iter().map(|(_, c)| c).collect();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let p = path.to_string_lossy();
        if live.iter().any(|c| c.contains(p.as_ref())) {
            continue;
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}
