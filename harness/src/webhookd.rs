//! The real `webhookd` binary as a child process: for exit codes, signals
//! (SIGTERM, SIGSTOP, kill -9), captured logs and restarts on the same data
//! directory and port. The tests, the benchmark and the chaos suite all
//! start it through [`Webhookd`].

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::client::{answers_2xx, Conn};
use crate::load::now_us;
use crate::process::{self, ChildGuard};
use crate::wait::DEADLINE;

/// Bound on [`Webhookd::start`]'s wait for `/readyz`.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Log lines (stderr) captured so far, over every start; clones share them.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lock().iter().any(|l| l.contains(needle))
    }

    /// Every line so far, joined.
    pub fn text(&self) -> String {
        self.lock().join("\n")
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lock();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn push(&self, line: String) {
        self.lock().push(line);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What was done to the process, for placing results against fault windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Started and ready.
    Started,
    /// kill -9.
    Killed,
    /// SIGTERM (graceful stop).
    Terminated,
    /// SIGSTOP.
    Stopped,
    /// SIGCONT.
    Continued,
}

/// One [`Lifecycle`] step and when it happened (µs since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// [`now_us`] at the step.
    pub at_us: u64,
    /// The step.
    pub what: Lifecycle,
}

/// A `webhookd` process on 127.0.0.1 with a data directory, restartable on
/// the same port and data; stopped (and its embedded nats-server with it)
/// when dropped.
///
/// Always given: `--listen`, `--data-dir`, `--nats-server-bin` and
/// `--allow-targets 127.0.0.0/8`; `NATS_URL`, `WEBHOOKD_LOG` and
/// `WEBHOOKD_LOG_FORMAT` are cleared from the environment (embedded NATS
/// unless [`Webhookd::nats_url`] sets one). Arguments and environment set
/// by the caller come last and win.
pub struct Webhookd {
    guard: Option<ChildGuard>,
    /// Where its API listens.
    pub addr: SocketAddr,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    /// Its SQLite file (`--database`, else `<data dir>/webhookd.db`).
    pub db: PathBuf,
    bin: PathBuf,
    nats_bin: PathBuf,
    nats_url: Option<String>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    lines: LogLines,
    reader: Option<std::thread::JoinHandle<()>>,
    sigstopped: bool,
    ever_ready: bool,
    events: Vec<Event>,
}

impl Webhookd {
    /// Describes (does not start) `bin` on `data_dir` and a free loopback
    /// port, with the default nats-server binary for its embedded server.
    pub fn new(bin: impl Into<PathBuf>, data_dir: &Path) -> Result<Webhookd> {
        Ok(Webhookd {
            guard: None,
            addr: ([127, 0, 0, 1], crate::net::free_port()?).into(),
            data_dir: data_dir.to_path_buf(),
            db: data_dir.join("webhookd.db"),
            bin: bin.into(),
            nats_bin: crate::nats::find_binary(None),
            nats_url: None,
            args: Vec::new(),
            envs: Vec::new(),
            lines: LogLines::default(),
            reader: None,
            sigstopped: false,
            ever_ready: false,
            events: Vec::new(),
        })
    }

    /// The nats-server binary webhookd starts (`--nats-server-bin`).
    pub fn nats_server_bin(mut self, bin: &Path) -> Webhookd {
        self.nats_bin = bin.to_path_buf();
        self
    }

    /// An external NATS (`NATS_URL`) instead of the embedded server.
    pub fn nats_url(mut self, url: impl Into<String>) -> Webhookd {
        self.nats_url = Some(url.into());
        self
    }

    /// The SQLite file elsewhere than the data directory (`--database`).
    pub fn database(mut self, db: &Path) -> Webhookd {
        self.db = db.to_path_buf();
        self.args.extend(["--database".into(), db.into()]);
        self
    }

    /// More command-line arguments.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: &[S]) -> Webhookd {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// One more environment variable.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Webhookd {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the process without waiting for it (a test may expect it to
    /// exit at once). Its stderr is read line by line into [`Self::lines`].
    pub fn spawn(&mut self) -> Result<()> {
        if self.guard.is_some() {
            bail!("webhookd is already running");
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--nats-server-bin")
            .arg(&self.nats_bin)
            .args(["--allow-targets", "127.0.0.0/8"])
            .args(&self.args)
            .env_remove("NATS_URL")
            .env_remove("WEBHOOKD_LOG")
            .env_remove("WEBHOOKD_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &self.nats_url {
            cmd.env("NATS_URL", url);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut guard = ChildGuard::spawn("webhookd", &mut cmd)?;
        let stderr = guard
            .child_mut()
            .and_then(|c| c.stderr.take())
            .context("webhookd's stderr")?;
        let sink = self.lines.clone();
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.push(l),
                    Err(_) => break,
                }
            }
        }));
        self.guard = Some(guard);
        self.sigstopped = false;
        Ok(())
    }

    /// Starts the process and waits until `/healthz` answers 2xx (webhookd
    /// is listening; NATS may still be connecting), at most [`DEADLINE`].
    pub async fn start_healthy(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_answering("/healthz", DEADLINE).await
    }

    /// Starts the process, waits until `/readyz` answers 2xx, and tracks its
    /// embedded nats-server. A first start whose port was taken meanwhile
    /// ("cannot listen") is retried on another port.
    pub async fn start(&mut self) -> Result<()> {
        for _ in 0..3 {
            self.spawn()?;
            match self.wait_answering("/readyz", READY_LIMIT).await {
                Ok(()) => {
                    self.ever_ready = true;
                    self.track_nats();
                    self.note(Lifecycle::Started);
                    return Ok(());
                }
                Err(e) if !self.ever_ready && self.lines.contains("cannot listen") => {
                    eprintln!(
                        "harness: webhookd could not listen on {}: {e:#}; another port",
                        self.addr
                    );
                    self.guard = None;
                    self.addr = ([127, 0, 0, 1], crate::net::free_port()?).into();
                }
                Err(e) => return Err(e),
            }
        }
        Err(anyhow!("webhookd found no port to listen on"))
    }

    /// Waits until `GET path` answers 2xx; fails with the log's tail if the
    /// process exits first or `limit` passes.
    pub async fn wait_answering(&mut self, path: &str, limit: Duration) -> Result<()> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "webhookd exited ({status}) before {path} answered:\n{}",
                    self.lines.tail(30)
                );
            }
            if answers_2xx(self.addr, path).await {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "webhookd's {path} did not answer 2xx within {limit:?}:\n{}",
                    self.lines.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn note(&mut self, what: Lifecycle) {
        self.events.push(Event {
            at_us: now_us(),
            what,
        });
    }

    /// What was done to the process so far, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// An absolute URL of its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The captured log (a shared handle, it keeps growing).
    pub fn lines(&self) -> LogLines {
        self.lines.clone()
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.lines.text()
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, ChildGuard::pid)
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.guard.as_mut().and_then(ChildGuard::exited)
    }

    /// Fails (with the log's tail) if the process is not running.
    pub fn ensure_alive(&mut self) -> Result<()> {
        if self.guard.is_none() {
            bail!("webhookd is not running");
        }
        match self.exited() {
            Some(status) => bail!(
                "webhookd exited unexpectedly ({status}):\n{}",
                self.lines.tail(30)
            ),
            None => Ok(()),
        }
    }

    /// The embedded nats-server child (its command line names the data dir).
    pub fn nats_pid(&self) -> Option<u32> {
        let marker = self.data_dir.to_string_lossy().into_owned();
        process::find_child(self.pid(), &marker)
    }

    /// Also stops the current embedded nats-server when webhookd is stopped
    /// and did not stop it (after webhookd restarted it, its pid changed).
    pub fn track_nats(&mut self) {
        if self.nats_url.is_some() {
            return;
        }
        let marker = self.data_dir.to_string_lossy().into_owned();
        if let (Some(pid), Some(g)) = (self.nats_pid(), self.guard.as_mut()) {
            g.add_follower(pid, &marker);
        }
    }

    /// Sends SIGTERM and returns at once (see [`Self::wait_exit`]).
    pub fn sigterm(&mut self) -> Result<()> {
        process::signal(self.pid(), libc::SIGTERM)?;
        self.note(Lifecycle::Terminated);
        Ok(())
    }

    /// Waits for the process to exit, then for its stderr to be read to the
    /// end; returns the exit status and every log line.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<(ExitStatus, String)> {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            if Instant::now() > until {
                bail!(
                    "webhookd did not exit within {limit:?}:\n{}",
                    self.lines.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader
                .join()
                .map_err(|_| anyhow!("the stderr reader panicked"))?;
        }
        Ok((status, self.log()))
    }

    /// kill -9 webhookd, reap it, and wait until its embedded nats-server
    /// (which gets SIGTERM through PDEATHSIG) is gone, as a supervisor
    /// restarting the service would. Returns how long that took.
    pub fn kill9(&mut self) -> Result<Duration> {
        let nats = self.nats_pid();
        process::signal(self.pid(), libc::SIGKILL)?;
        self.note(Lifecycle::Killed);
        let t0 = Instant::now();
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
        if let Some(nats) = nats {
            if !process::wait_gone(nats, Duration::from_secs(20)) {
                eprintln!(
                    "harness: embedded nats-server {nats} still alive 20 s after webhookd died; killing it"
                );
                let _ = process::signal(nats, libc::SIGKILL);
                process::wait_gone(nats, Duration::from_secs(5));
            }
        }
        Ok(t0.elapsed())
    }

    /// SIGTERM (SIGCONT first if stopped) and wait up to `limit` for the
    /// graceful stop, then for its embedded nats-server. Returns the exit
    /// status (None: killed after `limit`) and how long the stop took.
    pub fn term(&mut self, limit: Duration) -> Result<(Option<ExitStatus>, Duration)> {
        if self.sigstopped {
            self.cont()?;
        }
        let nats = self.nats_pid();
        self.note(Lifecycle::Terminated);
        let t0 = Instant::now();
        let status = match self.guard.take() {
            Some(mut g) => g.stop(limit),
            None => bail!("webhookd is not running"),
        };
        if let Some(nats) = nats {
            process::wait_gone(nats, Duration::from_secs(15));
        }
        Ok((status, t0.elapsed()))
    }

    /// SIGSTOP.
    pub fn sigstop(&mut self) -> Result<()> {
        process::signal(self.pid(), libc::SIGSTOP)?;
        self.sigstopped = true;
        self.note(Lifecycle::Stopped);
        Ok(())
    }

    /// SIGCONT.
    pub fn cont(&mut self) -> Result<()> {
        process::signal(self.pid(), libc::SIGCONT)?;
        self.sigstopped = false;
        self.note(Lifecycle::Continued);
        Ok(())
    }

    /// Creates one subscription per target URL over one connection; returns
    /// their ids in order.
    pub async fn subscribe_all(&self, targets: &[String]) -> Result<Vec<String>> {
        let mut conn = Conn::connect(self.addr).await?;
        let mut ids = Vec::with_capacity(targets.len());
        for target in targets {
            let body = serde_json::json!({ "target_url": target }).to_string();
            let (status, answer) = conn.post_json("/subscriptions", body).await?;
            if status.as_u16() != 201 {
                bail!(
                    "creating a subscription: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&answer)
                .with_context(|| format!("a subscription answer {answer:?}"))?;
            let id = v["id"].as_str().ok_or_else(|| anyhow!("no id in {v}"))?;
            ids.push(id.to_string());
        }
        Ok(ids)
    }

    /// Creates a subscription to `target`; returns its id.
    pub async fn subscribe(&self, target: &str) -> Result<String> {
        let mut ids = self.subscribe_all(&[target.to_string()]).await?;
        ids.pop().context("no subscription created")
    }

    /// Ingests `{"i": 0}` .. `{"i": n-1}` to `sub` over one connection;
    /// fails unless each is answered 202. Returns the webhook ids in order.
    pub async fn ingest_numbered(&self, sub: &str, n: usize) -> Result<Vec<String>> {
        let mut conn = Conn::connect(self.addr).await?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let path = format!("/ingest/{sub}");
            let (status, answer) = conn.post_json(&path, format!(r#"{{"i": {i}}}"#)).await?;
            if status.as_u16() != 202 {
                bail!("ingest {i}: {status} {}", String::from_utf8_lossy(&answer));
            }
            let v: serde_json::Value = serde_json::from_slice(&answer)
                .with_context(|| format!("an ingest answer {answer:?}"))?;
            let id = v["webhook_id"]
                .as_str()
                .ok_or_else(|| anyhow!("no webhook_id in {v}"))?;
            ids.push(id.to_string());
        }
        Ok(ids)
    }
}

impl Drop for Webhookd {
    fn drop(&mut self) {
        if self.sigstopped {
            let _ = process::signal(self.pid(), libc::SIGCONT);
        }
        // The guard's own Drop stops the process, then its nats-server.
    }
}
