//! Child processes of the benchmark and what is read about them in /proc.
//!
//! Every process the benchmark starts lives in a [`ChildGuard`]: dropping it
//! (also on an error or a panic) sends SIGTERM, waits a bounded time, then
//! SIGKILLs. Children also get `PR_SET_PDEATHSIG`, so they go when the
//! benchmark itself is killed. webhookd's own child, the embedded
//! nats-server, is tracked as a "follower": after webhookd is gone, a
//! follower still alive (checked by pid *and* command line, against pid
//! reuse) is stopped the same way.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A process started by the benchmark, stopped when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    /// Processes started by the child (pid, a string their command line
    /// contains), stopped after it.
    followers: Vec<(u32, String)>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and a parent-death signal.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<ChildGuard> {
        cmd.stdin(Stdio::null());
        // SAFETY: prctl(2) is async-signal-safe and the closure allocates
        // nothing. PDEATHSIG fires when the spawning *thread* ends: children
        // are spawned from the main thread or a runtime worker, both of which
        // live as long as the benchmark.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child: Some(child),
            followers: Vec::new(),
        })
    }

    /// The child's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Also stop `pid` (if its command line still contains `marker`) when
    /// this child is stopped.
    pub fn add_follower(&mut self, pid: u32, marker: &str) {
        self.followers.push((pid, marker.to_string()));
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Takes the child's stdout and reads its first line, which must be
    /// `LISTENING <addr>`; bounded by `timeout`.
    pub async fn read_listen_line(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let stdout = self
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| anyhow!("{}: no stdout to read", self.name))?;
        let read = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| {
                anyhow!(
                    "{} did not report its address within {timeout:?}",
                    self.name
                )
            })?
            .context("reading a child's stdout")?
            .with_context(|| format!("reading {}'s stdout", self.name))?;
        line.trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| anyhow!("{} said {line:?} instead of its address", self.name))?
            .parse()
            .with_context(|| format!("{}'s address {line:?}", self.name))
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then the followers.
    /// Returns the child's exit status (None if it had to be killed or was
    /// already stopped).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            status = terminate(&mut child, grace);
            if status.is_none() {
                eprintln!("bench: {} did not stop within {grace:?}; killed", self.name);
            }
        }
        for (pid, marker) in std::mem::take(&mut self.followers) {
            stop_follower(pid, &marker, grace);
        }
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Stops a process that is not our child (cannot be waited for): only while
/// its command line still contains `marker`.
fn stop_follower(pid: u32, marker: &str, grace: Duration) {
    let alive = || cmdline(pid).is_some_and(|c| c.contains(marker)) && !is_zombie(pid);
    if !alive() {
        return;
    }
    // SAFETY: kill(2) on a pid whose command line we just checked.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive() {
        eprintln!("bench: process {pid} ({marker}) did not stop; killed");
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Children of `pid` (over all its threads) whose command line contains
/// `needle`.
pub fn find_child(pid: u32, needle: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if cmdline(child).is_some_and(|c| c.contains(needle)) {
                return Some(child);
            }
        }
    }
    None
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

/// A loopback port free right now (bound, read, released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// The last `lines` lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `uptime`'s load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Refuses any address that is not loopback.
pub fn ensure_loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: the benchmark only uses 127.0.0.0/8");
    }
    Ok(())
}

/// Removes data directories left in `dir` by an earlier run that was killed
/// (SIGKILL leaves no chance to clean up), unless a live process still
/// names one on its command line.
pub fn remove_stale_dirs(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let live: Vec<String> = std::fs::read_dir("/proc")
        .map(|procs| {
            procs
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(cmdline)
                .collect()
        })
        .unwrap_or_default();
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

/// Where `target/` is.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The nats-server binary: the flag, else `NATS_SERVER_BIN`, else the
/// repository's `.tools/bin/nats-server`, else `nats-server` on PATH, else
/// Debian's `/usr/sbin/nats-server`.
pub fn find_nats(arg: Option<PathBuf>) -> PathBuf {
    if let Some(bin) = arg.filter(|b| !b.as_os_str().is_empty()) {
        return bin;
    }
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").exists()))
        .unwrap_or(false);
    if !on_path && std::path::Path::new("/usr/sbin/nats-server").exists() {
        return PathBuf::from("/usr/sbin/nats-server");
    }
    PathBuf::from("nats-server")
}
