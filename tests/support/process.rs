//! The real `webhookd` binary as a child process (for signals, exit codes
//! and captured logs), on a free loopback port, stderr read line by line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{eventually, free_port, nats_server_bin, DEADLINE};

/// Log lines captured so far; clones share them.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Every line so far, joined.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// A `webhookd` process, killed when dropped.
pub struct WebhookdProcess {
    pub child: Child,
    pub port: u16,
    lines: LogLines,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WebhookdProcess {
    /// Starts webhookd on `data_dir` with loopback targets allowed and the
    /// harness's nats-server binary (embedded mode unless `envs` sets
    /// `NATS_URL`); `args` and `envs` come last and win.
    pub fn spawn(data_dir: &Path, args: &[&str], envs: &[(&str, String)]) -> WebhookdProcess {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhookd"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--nats-server-bin")
            .arg(nats_server_bin())
            .args(["--allow-targets", "127.0.0.0/8"])
            .args(args)
            .env_remove("NATS_URL")
            .env_remove("WEBHOOKD_LOG")
            .env_remove("WEBHOOKD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start webhookd");
        let stderr = child.stderr.take().unwrap();
        let lines = LogLines::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                match line {
                    Ok(l) => sink.0.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        WebhookdProcess {
            child,
            port,
            lines,
            reader: Some(reader),
        }
    }

    /// An absolute URL of this process's API.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The captured log (a shared handle).
    pub fn lines(&self) -> LogLines {
        self.lines.clone()
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.lines.text()
    }

    /// Waits until /healthz answers 200; panics with the log if the process
    /// exits or the deadline passes.
    pub async fn wait_healthy(&mut self, http: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("webhookd exited at startup ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "webhookd did not answer /healthz:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits for the process to exit, then for its stderr to be read to the
    /// end; returns the exit status and every log line.
    pub async fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, String) {
        let status = eventually("webhookd to exit", deadline, || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await;
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.log())
    }
}

impl Drop for WebhookdProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
