//! A real nats-server with JetStream on a loopback port, with its own
//! store: what the tests and the chaos suite point webhookd at (`NATS_URL`)
//! when they need to kill and restart NATS themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::process::{self, ChildGuard};

/// Bound on a start: the ports file, then a connection that succeeds.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The nats-server binary: `flag` if given, else `NATS_SERVER_BIN`, else
/// the repository's `.tools/bin/nats-server` (`just install-nats`), else
/// `nats-server` on PATH, else Debian's `/usr/sbin/nats-server`.
pub fn find_binary(flag: Option<PathBuf>) -> PathBuf {
    if let Some(bin) = flag.filter(|b| !b.as_os_str().is_empty()) {
        return bin;
    }
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let local = crate::cargo::workspace_root().join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").exists()))
        .unwrap_or(false);
    if !on_path && Path::new("/usr/sbin/nats-server").exists() {
        return PathBuf::from("/usr/sbin/nats-server");
    }
    PathBuf::from("nats-server")
}

/// The last `lines` lines of the server's log file, for start errors.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where a server keeps its files: a temp dir of its own, or a directory
/// the caller owns.
enum Dir {
    Temp(TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

/// A nats-server child with JetStream on 127.0.0.1. The first start takes
/// a port the server picks itself (read from its ports file, so no other
/// process can take it in between); restarts reuse that port, since a
/// client only knows the first URL. Stopped when dropped.
pub struct NatsServer {
    guard: Option<ChildGuard>,
    port: u16,
    bin: PathBuf,
    dir: Dir,
}

impl NatsServer {
    /// A server for one test: the default binary ([`find_binary`]), a temp
    /// store. Panics (saying how to install nats-server) if it cannot start.
    pub async fn start() -> NatsServer {
        let bin = find_binary(None);
        let dir = tempfile::tempdir().expect("a temp dir for nats-server");
        NatsServer::launch(bin.clone(), Dir::Temp(dir))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e:#}; run `just install-nats` or set NATS_SERVER_BIN",
                    bin.display()
                )
            })
    }

    /// A server from `bin` with its store and log under `dir` (created),
    /// which the caller removes.
    pub async fn start_in(bin: &Path, dir: &Path) -> Result<NatsServer> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        NatsServer::launch(bin.to_path_buf(), Dir::Given(dir.to_path_buf())).await
    }

    async fn launch(bin: PathBuf, dir: Dir) -> Result<NatsServer> {
        let mut nats = NatsServer {
            guard: None,
            port: 0,
            bin,
            dir,
        };
        nats.spawn(None).await?;
        Ok(nats)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    async fn spawn(&mut self, port: Option<u16>) -> Result<()> {
        let run_dir = self.dir.path().join("run");
        // An old ports file would be mistaken for this child's.
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let port_arg = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&run_dir)
            .arg("-l")
            .arg(self.log())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn("nats-server", &mut cmd)?;
        let ports = run_dir.join(format!("nats-server_{}.ports", guard.pid()));
        let started = Instant::now();
        let port = loop {
            if let Some(p) = webhookd::queue::embedded::read_port(&ports) {
                break p;
            }
            if let Some(status) = guard.exited() {
                bail!(
                    "nats-server exited at start ({status}):\n{}",
                    log_tail(&self.log(), 10)
                );
            }
            if started.elapsed() > START_LIMIT {
                bail!("nats-server wrote no ports file within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The ports file appears once the client listener is up; JetStream
        // may still be recovering its store: wait until a connection
        // succeeds.
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > START_LIMIT {
                bail!("nats-server not listening on port {port} within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.port = port;
        self.guard = Some(guard);
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid (0 when not running).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, ChildGuard::pid)
    }

    /// kill -9, as a crash would; the process is reaped.
    pub fn kill9(&mut self) -> Result<()> {
        let mut guard = self.guard.take().context("nats-server is not running")?;
        process::signal(guard.pid(), libc::SIGKILL)?;
        guard.stop(Duration::from_secs(5));
        Ok(())
    }

    /// Starts again on the same port and store (after [`Self::kill9`]).
    pub async fn restart(&mut self) -> Result<()> {
        if self.guard.is_some() {
            bail!("nats-server is still running");
        }
        let port = self.port;
        self.spawn(Some(port)).await
    }
}
