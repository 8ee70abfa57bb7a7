//! Child processes the suites start, and what they read about processes in
//! /proc.
//!
//! Every process started lives in a [`ChildGuard`]: dropping it (also on an
//! error or a panic) sends SIGTERM, waits a bounded time, then SIGKILLs.
//! Children also get `PR_SET_PDEATHSIG`, so they go when the suite itself
//! is killed. A child's own children (webhookd's embedded nats-server) can
//! be tracked as "followers": after the child is gone, a follower still
//! alive (checked by pid *and* command line, against pid reuse) is stopped
//! the same way.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A process started by a suite, stopped when dropped.
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
        // are spawned from a test's or suite's main thread or a runtime
        // worker, which live as long as the run.
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

    /// The child itself, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
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

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then the followers.
    /// Returns the child's exit status (None if it had to be killed or was
    /// already stopped).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut status = None;
        if let Some(mut child) = self.child.take() {
            status = terminate(&mut child, grace);
            if status.is_none() {
                eprintln!(
                    "harness: {} did not stop within {grace:?}; killed",
                    self.name
                );
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
    let alive = || cmdline(pid).is_some_and(|c| c.contains(marker)) && alive(pid);
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
        eprintln!("harness: process {pid} ({marker}) did not stop; killed");
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Sends `sig` to `pid` (a process the caller started or found under /proc).
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    if pid == 0 {
        bail!("no process to signal");
    }
    // SAFETY: kill(2) on a pid the caller started (or just read from /proc).
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until `pid` is gone (or a zombie); false after `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A process's command line, arguments joined by spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Every running process (pid, command line), read from /proc.
pub fn all_processes() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .map(|procs| {
            procs
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, cmdline(pid)?)))
                .collect()
        })
        .unwrap_or_default()
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
