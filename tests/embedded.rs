//! The embedded nats-server's runtime settings, read from the real child
//! process webhookd starts (`/proc/<pid>/environ`).

use std::time::Duration;

use webhookd_harness::wait::{eventually, DEADLINE};
use webhookd_harness::webhookd::Webhookd;

/// The value of `name` in a process's environment, if set.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
}

/// Starts webhookd with `args` and `envs`, returns GOMEMLIMIT as its
/// nats-server child sees it.
async fn child_memory_limit(args: &[&str], envs: &[(&str, &str)]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Webhookd::new(env!("CARGO_BIN_EXE_webhookd"), dir.path())
        .unwrap()
        .args(args);
    for (k, v) in envs {
        proc = proc.env(k, *v);
    }
    proc.start_healthy().await.expect("webhookd healthy");
    let pid = eventually("the embedded nats-server child", DEADLINE, || async {
        proc.nats_pid()
    })
    .await;
    let limit = env_of(pid, "GOMEMLIMIT");
    proc.term(Duration::from_secs(15)).expect("webhookd stops");
    limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_gets_the_default_memory_limit() {
    assert_eq!(
        child_memory_limit(&[], &[]).await.as_deref(),
        Some("67108864"),
        "64 MiB in bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_is_a_setting() {
    // The flag wins over a GOMEMLIMIT in webhookd's own environment.
    assert_eq!(
        child_memory_limit(&["--nats-memory-limit", "48MiB"], &[("GOMEMLIMIT", "1GiB")])
            .await
            .as_deref(),
        Some("50331648")
    );
    // 0: webhookd sets nothing, the environment's value passes through.
    assert_eq!(
        child_memory_limit(
            &[],
            &[("WEBHOOKD_NATS_MEMORY_LIMIT", "0"), ("GOMEMLIMIT", "1GiB")]
        )
        .await
        .as_deref(),
        Some("1GiB")
    );
}
