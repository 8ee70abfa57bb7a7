//! Chaos suite for webhookd (`just chaos`, `just chaos-quick`).
//!
//! Runs webhookd (the release binary) as a separate process with a real
//! nats-server, an in-process recording receiver and a load generator, all
//! on 127.0.0.1, and breaks things while webhooks flow:
//!
//! 1. kill -9 of webhookd three times during the ingest, restarted on the
//!    same data directory;
//! 2. kill -9 of an external nats-server (`NATS_URL`) during ingest and
//!    during retries, restarted on the same port after a few seconds;
//! 3. the same with webhookd's embedded nats-server, which webhookd restarts;
//! 4. receivers that fail half the requests, or close connections
//!    mid-response, or (4c) several that flap between hanging, answering
//!    500 and healthy while webhooks are posted, then turn healthy;
//! 5. the SQLite file's file system (a 2 MiB tmpfs) filling up;
//! 6. SIGTERM mid-burst with a restart, and SIGSTOP past the ack wait.
//!
//! After each scenario it checks, from the load's answers, the receiver's
//! records, webhookd's API and its SQLite file (read-only), that every
//! webhook answered 202 was delivered (2xx), that every request the
//! receiver saw has an attempt row (except one in flight at a kill -9), and
//! counts duplicates. One table row per scenario; exit status 1 on any
//! failed check.
//!
//! Everything is bounded: each load in count and time, each wait by a
//! deadline, the whole run by a watchdog. Every process started lives in a
//! guard that stops it on exit, error or panic; the tmpfs is unmounted by a
//! guard and, as a backstop, lives in a mount namespace private to this
//! process, so it disappears with it whatever happens.
//!
//! The processes, the receiver, the clients and the SQLite reader are the
//! harness's (`webhookd-harness`); this suite keeps its scenarios, its
//! load generator and its report.

mod check;
mod disk;
mod faults;
mod ingest;
mod receiver;
mod rng;
mod scenarios;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use webhookd_harness::args::{exit_code, subcommand_args, SuiteArgs};
use webhookd_harness::cargo::target_dir;
use webhookd_harness::load::now_us;
use webhookd_harness::wait::unless_interrupted;

use crate::check::Row;
use crate::receiver::Mode;
use crate::scenarios::Env;

/// Scenarios, in the order they run.
const SCENARIOS: &[&str] = &[
    "webhookd-kill9",
    "nats-kill9",
    "embedded-nats-kill9",
    "receiver-fail50",
    "receiver-close",
    "receiver-flap",
    "disk-full",
    "sigterm",
    "sigstop",
];

#[derive(Debug, Parser)]
#[command(name = "chaos", about = "Chaos suite of webhookd (loopback only)")]
enum Cli {
    /// Run the scenarios (--quick: 1,000-1,500 webhooks per scenario, each
    /// once).
    Run(RunArgs),
}

/// `chaos run`'s options.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    suite: SuiteArgs,
    /// Seed of the fault moments and the receiver's coin (default: time).
    #[arg(long)]
    seed: Option<u64>,
    /// Connections of the load generator.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let Some(args) = subcommand_args(
        "chaos",
        &["run"],
        "use `just chaos` or `just chaos-quick` (cargo bench --bench chaos -- run [--quick])",
    ) else {
        return ExitCode::SUCCESS;
    };
    let Cli::Run(args) = Cli::parse_from(args);
    // Before any thread exists: mounts made from now on are private to this
    // process and vanish with it.
    let private_mounts = disk::private_mount_namespace();
    exit_code("chaos", run(args, private_mounts))
}

fn run(args: RunArgs, private_mounts: bool) -> Result<bool> {
    let selected = args.suite.selected(SCENARIOS)?;
    let seed = args
        .seed
        .unwrap_or_else(|| now_us() ^ u64::from(std::process::id()));
    let env = Env {
        quick: args.suite.quick,
        seed,
        n: args.suite.n,
        concurrency: args.concurrency.max(1),
        webhookd_bin: args.suite.webhookd_bin(env!("CARGO_BIN_EXE_webhookd"))?,
        nats_bin: args.suite.nats_bin(),
        work_dir: target_dir().join("chaos").join("tmp"),
        ci: std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
    };
    println!(
        "chaos: {} run, seed {seed}, webhookd {}, nats-server {}, scenarios: {}{}",
        if env.quick { "quick" } else { "full" },
        env.webhookd_bin.display(),
        env.nats_bin.display(),
        selected.join(", "),
        if private_mounts {
            ""
        } else {
            " (no private mount namespace: the tmpfs is unmounted by its guard only)"
        }
    );
    // The whole run is bounded.
    let watchdog = if env.quick {
        Duration::from_secs(15 * 60)
    } else {
        Duration::from_secs(60 * 60)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let started = Instant::now();
    let rows = rt.block_on(unless_interrupted(async {
        match tokio::time::timeout(watchdog, run_all(&env, &selected)).await {
            Ok(rows) => Ok(rows),
            Err(_) => {
                bail!("the suite did not finish within {watchdog:?}; every process was stopped")
            }
        }
    }))?;
    rt.shutdown_timeout(Duration::from_secs(5));
    let wall = started.elapsed();
    print_table(&rows, wall);
    // Clean the scratch directory (the per-scenario directories are gone).
    let _ = std::fs::remove_dir(&env.work_dir);
    Ok(rows
        .iter()
        .all(|r| r.passed() || (r.skipped.is_some() && !(env.ci && is_root()))))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

async fn run_all(env: &Env, selected: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for name in selected {
        let t0 = Instant::now();
        eprintln!("chaos: --- {name}");
        let result = match *name {
            "webhookd-kill9" => scenarios::webhookd_kill9(env).await,
            "nats-kill9" => scenarios::nats_kill9(env, false).await,
            "embedded-nats-kill9" => scenarios::nats_kill9(env, true).await,
            "receiver-fail50" => scenarios::bad_receiver(env, Mode::FailHalf).await,
            "receiver-close" => scenarios::bad_receiver(env, Mode::CloseHalf).await,
            "receiver-flap" => scenarios::receiver_flap(env).await,
            "disk-full" => scenarios::disk_full(env).await,
            "sigterm" => scenarios::sigterm(env).await,
            "sigstop" => scenarios::sigstop(env).await,
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        let row = match result {
            Ok(row) => row,
            Err(e) => Row {
                name: name.to_string(),
                error: Some(format!("{e:#}")),
                ..Row::default()
            },
        };
        eprintln!(
            "chaos: --- {name}: {} in {:.0}s",
            row.verdict(),
            t0.elapsed().as_secs_f64()
        );
        print_row_details(&row);
        rows.push(row);
    }
    rows
}

fn print_row_details(row: &Row) {
    for c in &row.checks {
        eprintln!("chaos:   {}", c.line());
    }
    for n in &row.notes {
        eprintln!("chaos:   note: {n}");
    }
    if let Some(s) = &row.skipped {
        eprintln!("chaos:   SKIPPED: {s}");
    }
    if let Some(e) = &row.error {
        eprintln!("chaos:   ERROR: {e}");
    }
}

fn print_table(rows: &[Row], wall: Duration) {
    println!();
    println!(
        "{:<32} {:>7} {:>8} {:>9} {:>5} {:>5} {:>7} {:>17} {:>7} {:>7}  result",
        "scenario",
        "posted",
        "accepted",
        "delivered",
        "lost",
        "dups",
        "no-202",
        "attempts/seen",
        "excused",
        "drain s"
    );
    for r in rows {
        if r.skipped.is_some() || r.error.is_some() {
            println!(
                "{:<32} {:>7} {:>8} {:>9} {:>5} {:>5} {:>7} {:>17} {:>7} {:>7}  {}",
                r.name,
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                r.verdict()
            );
            continue;
        }
        println!(
            "{:<32} {:>7} {:>8} {:>9} {:>5} {:>5} {:>7} {:>17} {:>7} {:>7}  {}",
            r.name,
            r.posted,
            r.accepted,
            r.delivered,
            r.lost,
            r.duplicates,
            r.unaccepted_delivered,
            format!("{}/{}", r.rows, r.seen),
            r.excused_rows,
            r.drain_s.map_or("-".to_string(), |d| format!("{d:.1}")),
            r.verdict()
        );
    }
    println!(
        "\nno-202: delivered although the post got no 202 (answer lost in a fault, or stored \
         after a 503 timeout); excused: receiver-seen requests without an attempt row, in flight \
         at a kill -9 of webhookd; drain: from the end of the last fault (or of the load, if \
         later) to the last first delivery. 4a/4b: delivered = succeeded, lost = neither \
         succeeded nor failed past the schedule."
    );
    println!("wall time {:.0}s", wall.as_secs_f64());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        println!("chaos: all scenarios passed");
    } else {
        println!("chaos: NOT PASSED: {}", failed.join(", "));
    }
}
