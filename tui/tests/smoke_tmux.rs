//! Smoke tests of the real binary in a real terminal (tmux).
//!
//! The first starts against a port where nothing listens, on the overview,
//! says "unreachable" instead of crashing, switches to the list on `2`,
//! shows the help on `?`, quits on `q`, and leaves the terminal restored
//! (main screen, shell output visible).
//!
//! The second runs against a real webhookd (with a real nats-server): a
//! webhook fails at a receiver answering 500, the receiver is fixed, and
//! the TUI's Failed screen redelivers it (`4`, `r`, `y`) until the
//! receiver gets it again; then the recover dialog (`R`) runs a dry run
//! and shows the server's answer to a window before the retention. It is
//! skipped, saying why, when tmux or nats-server is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webhookd_harness::nats::{self, NatsServer};
use webhookd_harness::receiver::{Receiver, Reply};
use webhookd_harness::server::{test_config, webhook_id, TestServer};
use webhookd_harness::wait::{eventually, DEADLINE as SERVER_DEADLINE};

/// How long any expected screen state may take to appear.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often the pane is captured while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Printed by the wrapper shell after the TUI exits.
const EXIT_MARKER: &str = "__WEBHOOKD_TUI_EXIT=";

/// A private tmux server (own socket file) holding one session; killed on
/// drop, socket removed, so nothing outlives the test even when an
/// assertion fails.
struct Tmux {
    socket: PathBuf,
    session: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        cmd.env("TERM", "xterm-256color");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running tmux {args:?}: {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, keys: &str) {
        self.run(&["send-keys", "-t", &self.session, keys]);
    }

    /// Poll the pane until `pred` holds; panic with the last screen after
    /// [`DEADLINE`].
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out after {DEADLINE:?} waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`Tmux::wait_for`] for async tests: sleeps without holding a
    /// runtime worker, so an in-process server keeps answering.
    async fn wait_for_async(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out after {DEADLINE:?} waiting for {what}; screen:\n{screen}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A detached 100x30 session running `script` in `sh`.
    fn start(name: String, script: &str, env: &[&str]) -> Tmux {
        let tmux = Tmux {
            socket: std::env::temp_dir().join(format!("{name}.sock")),
            session: name,
        };
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            "100",
            "-y",
            "30",
        ];
        for e in env {
            args.extend(["-e", e]);
        }
        args.extend(["sh", "-c", script]);
        tmux.run(&args);
        tmux
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["kill-session", "-t", &self.session])
            .output();
        let _ = self.command().arg("kill-server").output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Quote for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn require_tmux() {
    match Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs tmux, but `tmux -V` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "this test needs tmux (e.g. `apt-get install tmux`), but it could not be run: {e}"
        ),
    }
}

/// The shell command running the TUI against `url`. The shell stays alive
/// after the TUI exits so the restored screen and the exit status can be
/// read.
fn tui_script(url: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_webhookd-tui");
    format!(
        "{} --url {}; echo {EXIT_MARKER}$?; exec sleep 600",
        sh_quote(bin),
        sh_quote(url)
    )
}

/// Why the real-server test cannot run here, if it cannot: no tmux, or no
/// nats-server (`NATS_SERVER_BIN`, `.tools/bin`, `PATH`, `/usr/sbin`).
fn missing_tools() -> Option<String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(_) | Err(_) => return Some("tmux is not installed (apt-get install tmux)".into()),
    }
    let bin = nats::find_binary(None);
    match Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(_) | Err(_) => Some(format!(
            "nats-server is not installed ({} does not run); set NATS_SERVER_BIN, e.g. \
             export NATS_SERVER_BIN=$(scripts/install-nats-server)",
            bin.display()
        )),
    }
}

/// A loopback port with nothing listening on it.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}

#[test]
fn unreachable_server_help_and_clean_quit() {
    require_tmux();
    let port = dead_port();
    let name = format!("webhookd-tui-smoke-{}-{port}", std::process::id());
    let tmux = Tmux::start(
        name,
        &tui_script(&format!("http://127.0.0.1:{port}")),
        &["WEBHOOKD_API_TOKEN=smoke-secret-token"],
    );

    let screen = tmux.wait_for("the unreachable notice", |s| s.contains("unreachable"));
    assert!(screen.contains("webhookd-tui"), "no header:\n{screen}");
    assert!(
        screen.contains(&format!("127.0.0.1:{port}")),
        "server not shown:\n{screen}"
    );
    assert!(
        !screen.contains("smoke-secret-token"),
        "token on screen:\n{screen}"
    );
    assert!(screen.contains("q quit"), "no key footer:\n{screen}");
    assert!(
        screen.contains("Throughput per second") && screen.contains("Needs attention"),
        "the overview is not the start screen:\n{screen}"
    );

    tmux.send("2");
    tmux.wait_for("the subscription list", |s| s.contains("╭ Subscriptions"));

    tmux.send("?");
    tmux.wait_for("the help overlay", |s| {
        s.contains("Key bindings") && s.contains("Live deliveries")
    });

    tmux.send("q");
    let screen = tmux.wait_for("the TUI to exit", |s| s.contains(EXIT_MARKER));
    assert!(
        screen.contains(&format!("{EXIT_MARKER}0")),
        "non-zero exit:\n{screen}"
    );
    assert!(
        !screen.contains("Key bindings"),
        "the UI is still on screen after exit:\n{screen}"
    );
    let alt = tmux.run(&[
        "display-message",
        "-p",
        "-t",
        &tmux.session,
        "#{alternate_on}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "0",
        "the alternate screen was not left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_webhook_is_redelivered_from_the_failed_screen() {
    if let Some(why) = missing_tools() {
        eprintln!("skipping the real-server smoke test: {why}");
        return;
    }
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    // The webhook fails within milliseconds; the breaker stays out of the way.
    let mut config = test_config(dir.path(), Some(nats.url()));
    config.retry_schedule = "5ms,5ms".parse().expect("a retry schedule");
    config.circuit_failures = 0;
    let server = TestServer::start(config).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let receiver = Receiver::scripted(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) {
            200
        } else {
            500
        })
    })
    .await;
    let sub = server
        .subscribe(serde_json::json!({ "target_url": receiver.url() }))
        .await;
    let (code, answer) = server.ingest(&sub, r#"{"order": 1}"#, &[]).await;
    assert_eq!(code, 202, "{answer}");
    let webhook = webhook_id(&answer);
    server
        .wait_status(&webhook, |s| s["status"] == "failed")
        .await;
    let failed_attempts = receiver.count();
    assert!(failed_attempts >= 1);
    assert!(receiver.received().iter().all(|r| !r.answer.ok()));
    fixed.store(true, Ordering::SeqCst);

    let name = format!("webhookd-tui-redeliver-{}", std::process::id());
    let tmux = Tmux::start(name, &tui_script(&format!("http://{}", server.addr)), &[]);
    tmux.wait_for_async("the overview, reachable", |s| s.contains("● reachable"))
        .await;
    tmux.send("4");
    // The selected row's id is in full in the panel below the list.
    tmux.wait_for_async("the failed webhook on the Failed screen", |s| {
        s.contains("Failed webhooks (1)") && s.contains(&webhook)
    })
    .await;
    tmux.send("r");
    tmux.wait_for_async("the redeliver question", |s| {
        s.contains("Redeliver webhook?")
    })
    .await;
    tmux.send("y");
    tmux.wait_for_async("the redelivery to be queued", |s| {
        s.contains("Redelivery 1 queued")
    })
    .await;
    let delivered = eventually(
        "the receiver to get the webhook a second time",
        SERVER_DEADLINE,
        || async {
            let got = receiver.received();
            let ok = got
                .iter()
                .filter(|r| r.webhook_id() == webhook && r.answer.ok())
                .count();
            (ok >= 1).then_some(got)
        },
    )
    .await;
    assert!(
        delivered.len() > failed_attempts,
        "no new request: {delivered:?}"
    );
    let status = server
        .wait_status(&webhook, |s| s["status"] == "succeeded")
        .await;
    assert_eq!(status["redeliveries"], 1, "{status}");
    // The list no longer shows it (it is not failed any more).
    tmux.wait_for_async("the Failed screen to empty", |s| {
        s.contains("No failed webhooks")
    })
    .await;

    // The recover dialog against the same server: a dry run of the last
    // hour finds nothing failed any more; 30 days is before the retention,
    // and the dialog says what is still available.
    tmux.send("2");
    tmux.wait_for_async("the subscription list", |s| s.contains("Subscriptions (1)"))
        .await;
    tmux.send("R");
    tmux.wait_for_async("the recover dialog", |s| s.contains("Recover subscription"))
        .await;
    tmux.send("Enter");
    tmux.wait_for_async("the dry run's count", |s| {
        s.contains("No webhook matches this window")
    })
    .await;
    tmux.send("e");
    tmux.send("C-u");
    tmux.send("30d");
    tmux.send("Enter");
    tmux.wait_for_async("the retention error", |s| s.contains("oldest available:"))
        .await;
    tmux.send("Escape");
    tmux.wait_for_async("the dialog to close", |s| {
        !s.contains("Recover subscription")
    })
    .await;

    tmux.send("q");
    let screen = tmux
        .wait_for_async("the TUI to exit", |s| s.contains(EXIT_MARKER))
        .await;
    assert!(
        screen.contains(&format!("{EXIT_MARKER}0")),
        "non-zero exit:\n{screen}"
    );
}
