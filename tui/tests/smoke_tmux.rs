//! Smoke test of the real binary in a real terminal (tmux): it starts
//! against a port where nothing listens, on the overview, says
//! "unreachable" instead of crashing, switches to the list on `2`, shows
//! the help on `?`, quits on `q`, and leaves the terminal restored (main
//! screen, shell output visible).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

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
    let tmux = Tmux {
        socket: std::env::temp_dir().join(format!("{name}.sock")),
        session: name,
    };
    let bin = env!("CARGO_BIN_EXE_webhookd-tui");
    // The shell stays alive after the TUI exits so the restored screen and
    // the exit status can be read.
    let script = format!(
        "{} --url http://127.0.0.1:{port}; echo {EXIT_MARKER}$?; exec sleep 600",
        sh_quote(bin)
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        &tmux.session,
        "-x",
        "100",
        "-y",
        "30",
        "-e",
        "WEBHOOKD_API_TOKEN=smoke-secret-token",
        "sh",
        "-c",
        &script,
    ]);

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
