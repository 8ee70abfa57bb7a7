//! The embedded nats-server: with no `NATS_URL`, webhookd runs
//! `nats-server -js` as a child process on loopback, with its store under the
//! data directory.
//!
//! The child is restarted on the same port if it dies, gets SIGTERM if
//! webhookd dies (`PR_SET_PDEATHSIG`), runs in its own process group (a
//! terminal's Ctrl-C reaches webhookd, which then stops the child last, after
//! its acks are flushed), and is stopped cleanly by [`EmbeddedNats::stop`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::QueueError;

/// How long the child gets to start, and to stop before it is killed.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A supervised nats-server child process.
pub struct EmbeddedNats {
    url: String,
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
}

/// How webhookd runs its nats-server.
pub struct Settings<'a> {
    /// The nats-server binary.
    pub bin: &'a Path,
    /// webhookd's data directory: the store goes in its `nats` directory.
    pub data_dir: &'a Path,
    /// Must hold the largest webhook body plus its headers.
    pub max_payload: usize,
    /// The Go runtime's soft memory limit (GOMEMLIMIT) in bytes; 0: none
    /// set by webhookd.
    pub memory_limit: usize,
}

/// Everything needed to (re)start the child.
#[derive(Clone)]
struct Spec {
    bin: PathBuf,
    store_dir: PathBuf,
    run_dir: PathBuf,
    memory_limit: usize,
}

impl Spec {
    fn conf_file(&self) -> PathBuf {
        self.store_dir.join("nats-server.conf")
    }
}

impl EmbeddedNats {
    /// Starts nats-server on a free loopback port and waits until it listens.
    pub async fn start(settings: Settings<'_>) -> Result<EmbeddedNats, QueueError> {
        let Settings {
            bin,
            data_dir,
            max_payload,
            memory_limit,
        } = settings;
        let spec = Spec {
            bin: bin.to_path_buf(),
            store_dir: data_dir.join("nats"),
            run_dir: data_dir.join("nats").join("run"),
            memory_limit,
        };
        std::fs::create_dir_all(&spec.run_dir).map_err(|source| QueueError::EmbeddedIo {
            what: format!("creating {}", spec.run_dir.display()),
            source,
        })?;
        // Settings the command line cannot give; written anew at each start.
        let conf = format!(
            "# Written by webhookd at each start; edits are lost.\nmax_payload: {max_payload}\n"
        );
        std::fs::write(spec.conf_file(), conf).map_err(|source| QueueError::EmbeddedIo {
            what: format!("writing {}", spec.conf_file().display()),
            source,
        })?;
        let (child, port) = spawn(&spec, None).await?;
        let url = format!("nats://127.0.0.1:{port}");
        tracing::info!(%url, bin = %spec.bin.display(), "embedded nats-server started");
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(spec, child, port, stop.clone()));
        Ok(EmbeddedNats {
            url,
            stop,
            supervisor,
        })
    }

    /// The client URL of the child.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the child (SIGTERM, then SIGKILL after a deadline) and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.supervisor.await {
            tracing::warn!(error = %e, "nats-server supervisor ended abnormally");
        }
    }
}

/// Watches the child; restarts it on the same port if it exits on its own.
async fn supervise(spec: Spec, mut child: Child, port: u16, stop: CancellationToken) {
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::error!(?status, "embedded nats-server exited; restarting it");
                let mut delay = Duration::from_millis(100);
                loop {
                    if stop.is_cancelled() {
                        return;
                    }
                    match spawn(&spec, Some(port)).await {
                        Ok((c, _)) => {
                            tracing::info!(port, "embedded nats-server restarted");
                            child = c;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "restarting embedded nats-server");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

/// SIGTERM, wait, then SIGKILL.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => tracing::info!("embedded nats-server stopped"),
        Err(_) => {
            tracing::warn!("embedded nats-server did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// Starts one child; `port` None means "pick a free one" (read back from the
/// ports file nats-server writes).
async fn spawn(spec: &Spec, port: Option<u16>) -> Result<(Child, u16), QueueError> {
    // Old ports files would be mistaken for this child's.
    if let Ok(entries) = std::fs::read_dir(&spec.run_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let log_file = spec.store_dir.join("nats-server.log");
    let mut cmd = command(spec, port, &log_file);
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            QueueError::NatsServerMissing {
                bin: spec.bin.clone(),
            }
        } else {
            QueueError::EmbeddedIo {
                what: format!("starting {}", spec.bin.display()),
                source,
            }
        }
    })?;
    let pid = child.id().unwrap_or_default();
    let ports_file = spec.run_dir.join(format!("nats-server_{pid}.ports"));
    let started = Instant::now();
    loop {
        if let Some(port) = read_port(&ports_file) {
            return Ok((child, port));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(QueueError::EmbeddedStart(format!(
                "nats-server exited at startup ({status}); last log lines:\n{}",
                tail(&log_file, 10)
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill().await;
            return Err(QueueError::EmbeddedStart(format!(
                "nats-server did not start within {START_TIMEOUT:?}; last log lines:\n{}",
                tail(&log_file, 10)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The nats-server command line: JetStream with its store under the data
/// directory, loopback only, the given port (or any free one, written to
/// the ports file), its log to a file, its Go runtime's memory limit. In
/// its own process group, and sent SIGTERM when webhookd dies.
fn command(spec: &Spec, port: Option<u16>, log_file: &Path) -> Command {
    let mut cmd = Command::new(&spec.bin);
    cmd.arg("-c")
        .arg(spec.conf_file())
        .arg("-js")
        .arg("-sd")
        .arg(&spec.store_dir)
        .args(["-a", "127.0.0.1", "-p"])
        .arg(port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into()))
        .arg("--ports_file_dir")
        .arg(&spec.run_dir)
        .arg("-l")
        .arg(log_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if spec.memory_limit > 0 {
        // Go reads it at startup, a bare number in bytes.
        cmd.env("GOMEMLIMIT", spec.memory_limit.to_string());
    }
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The client port from a ports file (`{"nats": ["nats://127.0.0.1:4222"]}`
/// on 2.9, `"client"` on some newer servers). Public for the test harness,
/// which starts nats-server the same way.
pub fn read_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let urls = value.get("nats").or_else(|| value.get("client"))?;
    let url = urls.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// The last `n` lines of a log file, for startup errors.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
