//! Loopback benchmark of webhookd (`just bench`, `just bench-quick`).
//!
//! `bench run` measures, in one run and all on 127.0.0.1:
//!
//! - `baseline`: a bare hyper server answering 202 (this binary re-executed
//!   as `bench baseline`), loaded exactly like webhookd: what this machine
//!   can do at all, so every figure is also a ratio to it;
//! - `floor`: the baseline plus a JetStream publish awaited before the 202
//!   (`bench floor`, on its own nats-server): what any server that answers
//!   only once a webhook is durable in JetStream can do here;
//! - `e2e-floor`: the floor's ingest plus, in the same process, a durable
//!   pull consumer POSTing each webhook to the receiver (`bench e2e-floor`:
//!   pooled reqwest client, 256 in flight, ack on a 2xx; no validation, no
//!   SQLite, no signing), loaded like `e2e`: what any server that stores
//!   before its 202 and delivers at least once can do here, end to end
//!   (delivered/s, arrival − send, CPU per webhook);
//! - `ingest`: webhookd (release binary, embedded nats-server, fresh data
//!   directory) accepting N webhooks at concurrency C, deliveries held;
//! - `e2e`: first post to last arrival at a fast receiver (`bench receiver`,
//!   a separate process: its scheduling and CPU are not the load
//!   generator's, so arrival times are not delayed by it), delivered/s,
//!   arrival − send, duplicates, lost; its share of `e2e-floor`'s rate and
//!   the CPU per delivered webhook of webhookd + its nats-server beside the
//!   floor's; peak and idle RSS of webhookd, of its nats-server, and of the
//!   whole service (their sum; under load the sum of the two peaks, which
//!   may come at different times: a conservative upper bound);
//! - `e2e-half`: the same at half the measured e2e rate (latency when not
//!   saturated);
//! - `retries`: a receiver failing each webhook's first attempt, 100 ms
//!   retry schedule; the attempt log is read from the SQLite file;
//! - `fan-in`: webhooks spread over many subscriptions;
//! - `slow`: a receiver answering after 200 ms (concurrency-bound);
//! - `isolation`: webhookd at its default settings, a backlog queued for a
//!   receiver answering only after 30 s ("hang30", its own process and
//!   port: every attempt times out), then a paced load (150/s) to a healthy
//!   receiver on another subscription: its arrival − send (target p99 ≤
//!   1 s), beside the same load sent alone earlier in the same run;
//! - `recovery`: 10,000 webhooks (1,000 with --quick) to a receiver
//!   answering 500 all end `failed` (100 ms retry schedule, no circuit
//!   breaker); a live subscription's paced load (150/s) alone; then the
//!   receiver answers 200, `POST /subscriptions/{id}/recover` is called and
//!   the same live load sent meanwhile: the call's time to its 202 and
//!   counts, the time until every recovered webhook arrived (each exactly
//!   once), the live p99 arrival − send of the webhooks sent during the
//!   recovery against alone (target ≤ 2×).
//!
//! webhookd runs as users run it: default logging (`--log info`, one line
//! per delivery attempt, read by the harness), plus `--shutdown-timeout 2s`
//! and `--delivery-concurrency` (256) for every scenario.
//!
//! A/B: `--compare-bin PATH` runs `e2e` and `isolation` again, each right
//! after its own, with another webhookd binary (rows `e2e@old`,
//! `isolation@old`; `--compare-label` to rename; a second memory line for
//! its e2e), given only the arguments every scenario passes plus
//! `--compare-args`. `--webhookd-args` adds arguments to this side's
//! webhookd; `--compare-args` alone compares the binary with itself under
//! other arguments, e.g. `--only isolation
//! --compare-args=--scheduler-wait=nak --compare-label nak` (the `=` forms
//! survive `just`, which does not keep quotes). `--webhookd-bin` replaces
//! this side's binary.
//!
//! Results: a table on stdout and JSON in `target/bench/results.json`
//! (`--out` to change). `--quick` runs N=2,000 per scenario and fails only on
//! correctness (0 lost, 0 errors, 2 attempt rows per webhook in retries,
//! every failed webhook recovered and delivered once), never on speed.
//! Every load is bounded in count and in time; every process started is
//! stopped at the end, also on error or Ctrl-C.

mod load;
mod procs;
mod report;
mod scenarios;
mod servers;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use webhookd_harness::args::{exit_code, subcommand_args, SuiteArgs};
use webhookd_harness::cargo::target_dir;
use webhookd_harness::wait::unless_interrupted;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Loopback benchmark of webhookd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios (what `just bench` and `just bench-quick` do):
    /// N=50,000 per scenario, or 2,000 with --quick, which fails on
    /// correctness only; e2e-half needs e2e.
    Run(RunArgs),
    /// Bare hyper server answering 202 (started by `run`).
    Baseline(servers::BaselineArgs),
    /// Bare hyper server storing each body in JetStream before its 202
    /// (started by `run`).
    Floor(servers::FloorArgs),
    /// The floor plus a durable consumer POSTing each webhook to a target
    /// (started by `run`).
    E2eFloor(servers::E2eFloorArgs),
    /// Recording webhook receiver (started by `run`).
    Receiver(servers::ReceiverArgs),
}

/// Scenarios in the order they run.
const SCENARIOS: &[&str] = &[
    "baseline",
    "floor",
    "ingest",
    "e2e-floor",
    "e2e",
    "e2e-half",
    "retries",
    "fan-in",
    "slow",
    "isolation",
    "recovery",
];

/// `bench run`'s options.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    suite: SuiteArgs,
    /// Connections of the load generator (requests in flight).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// webhookd's --delivery-concurrency.
    #[arg(long, default_value_t = 256)]
    delivery_concurrency: usize,
    /// Seconds to wait after the last e2e delivery before reading the idle
    /// RSS (default 5, or 1 with --quick).
    #[arg(long)]
    idle_wait_s: Option<u64>,
    /// Results file (default target/bench/results.json, or
    /// results-quick.json with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra arguments for every webhookd started, separated by white
    /// space (e.g. `--webhookd-args=--scheduler-wait=nak`).
    #[arg(long, allow_hyphen_values = true)]
    webhookd_args: Option<String>,
    /// A/B: run e2e and isolation again with this webhookd binary (rows
    /// `<scenario>@<label>`); it gets only the arguments every scenario
    /// passes plus --compare-args, so an older binary that does not know
    /// the newer flags runs too.
    #[arg(long)]
    compare_bin: Option<PathBuf>,
    /// Extra arguments for the compared webhookd, separated by white space
    /// (instead of --webhookd-args). Without --compare-bin the same binary
    /// is compared with itself under these arguments.
    #[arg(long, allow_hyphen_values = true)]
    compare_args: Option<String>,
    /// Label of the compared rows (default `old` with --compare-bin, else
    /// `cmp`).
    #[arg(long)]
    compare_label: Option<String>,
}

/// White-space separated arguments.
fn split_args(args: Option<&str>) -> Vec<String> {
    args.map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let Some(args) = subcommand_args(
        "bench",
        &["run", "baseline", "floor", "e2e-floor", "receiver"],
        "use `just bench` or `just bench-quick` (cargo bench --bench bench -- run [--quick])",
    ) else {
        return ExitCode::SUCCESS;
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Baseline(args) => servers::baseline(args).map(|()| true),
        Command::Floor(args) => servers::floor(args).map(|()| true),
        Command::E2eFloor(args) => servers::e2e_floor(args).map(|()| true),
        Command::Receiver(args) => servers::receiver(args).map(|()| true),
    };
    exit_code("bench", result)
}

/// Runs the scenarios; Ok(false) when a correctness check failed.
fn run(args: RunArgs) -> Result<bool> {
    let selected = args.suite.selected(SCENARIOS)?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let quick = args.suite.quick;
    let mut sizes = scenarios::Sizes::new(quick, args.suite.n);
    if let Some(s) = args.idle_wait_s {
        sizes.idle_wait = std::time::Duration::from_secs(s.min(600));
    }
    let env = scenarios::Env {
        quick,
        sizes,
        concurrency: args.concurrency,
        delivery_concurrency: args.delivery_concurrency,
        self_exe: std::env::current_exe().context("finding the bench binary")?,
        webhookd_bin: args.suite.webhookd_bin(env!("CARGO_BIN_EXE_webhookd"))?,
        webhookd_args: split_args(args.webhookd_args.as_deref()),
        nats_bin: args.suite.nats_bin(),
        work_dir: target_dir().join("bench").join("tmp"),
    };
    let compare = if args.compare_bin.is_some() || args.compare_args.is_some() {
        let bin = match &args.compare_bin {
            Some(bin) if !bin.exists() => bail!("--compare-bin {} not found", bin.display()),
            Some(bin) => bin.clone(),
            None => env.webhookd_bin.clone(),
        };
        let label = args.compare_label.clone().unwrap_or_else(|| {
            if args.compare_bin.is_some() {
                "old"
            } else {
                "cmp"
            }
            .to_string()
        });
        Some(report::Compare {
            label,
            env: scenarios::Env {
                webhookd_bin: bin,
                webhookd_args: split_args(args.compare_args.as_deref()),
                ..env.clone()
            },
        })
    } else {
        None
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let file = if quick {
            "results-quick.json"
        } else {
            "results.json"
        };
        target_dir().join("bench").join(file)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(unless_interrupted(report::run_all(
        &env,
        compare.as_ref(),
        &selected,
        &out,
    )))
}
