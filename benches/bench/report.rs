//! Runs the selected scenarios in order, prints the table and the targets,
//! writes the JSON results file.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use webhookd_harness::check::Check;

use crate::procs;
use crate::scenarios::{self, Carry, Env, Kind, Row};

/// Scenarios an A/B run repeats with the other webhookd.
const COMPARED: &[&str] = &["e2e", "isolation"];

/// The other side of an A/B run: the scenarios of [`COMPARED`] run again
/// with this environment (another webhookd binary, other arguments), their
/// rows and checks named `<scenario>@<label>`.
pub struct Compare {
    pub label: String,
    pub env: Env,
}

/// One target of the issue, measured.
struct Target {
    name: &'static str,
    measured: Option<f64>,
    unit: &'static str,
    /// true: measured must be ≥ goal; false: ≤ goal.
    at_least: bool,
    goal: f64,
    vs_baseline: Option<String>,
}

impl Target {
    /// Decimals to print the measure with: enough for goals below 1.
    fn decimals(&self) -> usize {
        if self.goal < 1.0 {
            3
        } else {
            1
        }
    }

    fn met(&self) -> Option<bool> {
        self.measured.map(|m| {
            if self.at_least {
                m >= self.goal
            } else {
                m <= self.goal
            }
        })
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn fmt_count(v: Option<usize>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn nats_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn print_row(r: &Row) {
    println!(
        "{:<13} {:>6} {:>3} {:>8} {:<5} {:>7} {:>7} {:>7} {:<12} {:>4} {:>4} {:>4}  {}",
        r.name,
        r.n,
        r.c,
        fmt_opt(r.rate, 0),
        r.rate_unit,
        fmt_opt(r.p50, 1),
        fmt_opt(r.p95, 1),
        fmt_opt(r.p99, 1),
        r.lat_kind,
        fmt_count(r.errors),
        fmt_count(r.lost),
        fmt_count(r.dups),
        r.note
    );
}

fn print_header() {
    println!(
        "{:<13} {:>6} {:>3} {:>14} {:>7} {:>7} {:>7} {:<12} {:>4} {:>4} {:>4}  note",
        "scenario",
        "N",
        "C",
        "rate",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "latency of",
        "err",
        "lost",
        "dups"
    );
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// `compared`: the label and isolation p99 of the other side of an A/B run.
fn targets(carry: &Carry, compared: Option<(&str, f64)>) -> Vec<Target> {
    let base = carry.baseline_rate;
    let ratio = |v: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(format!("{:.2}x baseline", v / b)),
        _ => None,
    };
    let rss_ratio = |v: Option<u64>| match (v, carry.baseline_rss_kib) {
        (Some(v), Some(b)) if b > 0 => Some(format!(
            "{:.1}x baseline's {:.1} MiB",
            v as f64 / b as f64,
            b as f64 / 1024.0
        )),
        _ => None,
    };
    vec![
        Target {
            name: "ingest accepted/s at C=64",
            measured: carry.ingest_rate,
            unit: "/s",
            at_least: true,
            goal: 15_000.0,
            vs_baseline: ratio(carry.ingest_rate),
        },
        Target {
            name: "ingest rate / baseline rate",
            measured: carry.ingest_rate.zip(base).map(|(i, b)| i / b * 100.0),
            unit: "%",
            at_least: true,
            goal: 50.0,
            // The JetStream floor bounds what this target can reach.
            vs_baseline: carry.floor_rate.zip(base).map(|(f, b)| {
                let of_floor = carry
                    .ingest_rate
                    .map(|i| format!("; ingest is {:.0}% of it", i / f * 100.0))
                    .unwrap_or_default();
                format!(
                    "floor (JetStream publish) is {:.0}%{of_floor}",
                    f / b * 100.0
                )
            }),
        },
        Target {
            name: "ingest p99 latency",
            measured: carry.ingest_p99_ms,
            unit: "ms",
            at_least: false,
            goal: 25.0,
            vs_baseline: None,
        },
        Target {
            name: "e2e delivered/s",
            measured: carry.e2e_rate,
            unit: "/s",
            at_least: true,
            goal: 5_000.0,
            vs_baseline: ratio(carry.e2e_rate),
        },
        Target {
            name: "e2e delivered/s / e2e floor",
            measured: carry
                .e2e_rate
                .zip(carry.e2e_floor_rate)
                .filter(|(_, f)| *f > 0.0)
                .map(|(e, f)| e / f * 100.0),
            unit: "%",
            at_least: true,
            goal: 80.0,
            vs_baseline: carry.e2e_floor_rate.map(|f| format!("e2e floor {f:.0}/s")),
        },
        Target {
            name: "CPU per delivered webhook (webhookd + nats-server)",
            measured: carry.e2e_cpu_ms,
            unit: "ms",
            at_least: false,
            goal: 0.12,
            vs_baseline: carry
                .e2e_floor_cpu_ms
                .map(|f| format!("e2e floor {f:.3} ms (e2e-floor + its nats-server)")),
        },
        Target {
            name: "e2e-half p99 arrival-send",
            measured: carry.half_p99_ms,
            unit: "ms",
            at_least: false,
            goal: 250.0,
            vs_baseline: None,
        },
        Target {
            name: "webhookd RSS under e2e load",
            measured: mib(carry.load_rss_kib),
            unit: "MiB",
            at_least: false,
            goal: 64.0,
            vs_baseline: rss_ratio(carry.load_rss_kib),
        },
        Target {
            name: "webhookd RSS idle",
            measured: mib(carry.idle_rss_kib),
            unit: "MiB",
            at_least: false,
            goal: 24.0,
            vs_baseline: rss_ratio(carry.idle_rss_kib),
        },
        Target {
            name: "service RSS (webhookd + nats-server) under e2e load",
            measured: mib(carry.service_load_rss_kib()),
            unit: "MiB",
            at_least: false,
            goal: 64.0,
            vs_baseline: rss_ratio(carry.service_load_rss_kib()),
        },
        Target {
            name: "service RSS idle",
            measured: mib(carry.service_idle_rss_kib()),
            unit: "MiB",
            at_least: false,
            goal: 40.0,
            vs_baseline: rss_ratio(carry.service_idle_rss_kib()),
        },
        Target {
            name: "isolation healthy p99",
            measured: carry.isolation_p99_ms,
            unit: "ms",
            at_least: false,
            goal: 1_000.0,
            vs_baseline: carry.isolation_alone_p99_ms.map(|alone| {
                let other = compared
                    .map(|(label, p)| format!("; @{label} {p:.1} ms"))
                    .unwrap_or_default();
                format!("alone {alone:.1} ms{other}")
            }),
        },
        Target {
            name: "recovery live p99 / alone",
            measured: carry
                .recovery_p99_ms
                .zip(carry.recovery_alone_p99_ms)
                .filter(|(_, alone)| *alone > 0.0)
                .map(|(during, alone)| during / alone),
            unit: "x",
            at_least: false,
            goal: 2.0,
            vs_baseline: carry
                .recovery_p99_ms
                .zip(carry.recovery_alone_p99_ms)
                .map(|(during, alone)| format!("during {during:.1} ms, alone {alone:.1} ms")),
        },
    ]
}

/// Runs one scenario.
async fn run_one(env: &Env, name: &str, carry: &mut Carry, checks: &mut Vec<Check>) -> Result<Row> {
    match name {
        "baseline" => scenarios::baseline(env, carry, checks).await,
        "floor" => scenarios::floor(env, carry, checks).await,
        "e2e-floor" => scenarios::e2e_floor(env, carry, checks).await,
        "ingest" => scenarios::ingest(env, carry, checks).await,
        "e2e" => scenarios::delivery(env, Kind::EndToEnd, carry, checks).await,
        "e2e-half" => scenarios::delivery(env, Kind::HalfRate, carry, checks).await,
        "retries" => scenarios::delivery(env, Kind::Retries, carry, checks).await,
        "fan-in" => scenarios::delivery(env, Kind::FanIn, carry, checks).await,
        "slow" => scenarios::delivery(env, Kind::Slow, carry, checks).await,
        "isolation" => scenarios::isolation(env, carry, checks).await,
        "recovery" => scenarios::recovery(env, carry, checks).await,
        other => Err(anyhow::anyhow!("unknown scenario {other}")),
    }
}

/// Runs `selected` scenarios (and, with `compare`, those of [`COMPARED`]
/// again on its side, each right after its own); Ok(false) when a
/// correctness check failed.
pub async fn run_all(
    env: &Env,
    compare: Option<&Compare>,
    selected: &[&str],
    out: &Path,
) -> Result<bool> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load_before = procs::loadavg();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let nats = nats_version(&env.nats_bin);
    println!(
        "webhookd bench ({}): {} cores, load average {load_before}; {}; webhookd {}{}",
        if env.quick { "quick" } else { "full" },
        nproc,
        nats,
        env.webhookd_bin.display(),
        args_text(&env.webhookd_args)
    );
    if let Some(c) = compare {
        println!(
            "A/B: {} again as <scenario>@{} with webhookd {}{}",
            COMPARED.join(", "),
            c.label,
            c.env.webhookd_bin.display(),
            args_text(&c.env.webhookd_args)
        );
    }
    println!(
        "N={} C={} body {} B, delivery concurrency {}; all traffic on 127.0.0.1",
        env.sizes.n,
        env.concurrency,
        scenarios::BODY_SIZE,
        env.delivery_concurrency
    );

    procs::remove_stale_dirs(&env.work_dir, "webhookd-data-");
    let mut carry = Carry::default();
    let mut checks: Vec<Check> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    // The other side's figures go to a carry of their own: the targets are
    // this side's.
    let mut compared_carry = Carry::default();
    for name in selected {
        let mut sides: Vec<(&Env, Option<&str>)> = vec![(env, None)];
        if let Some(c) = compare.filter(|_| COMPARED.contains(name)) {
            sides.push((&c.env, Some(c.label.as_str())));
        }
        for (side_env, label) in sides {
            let full_name = match label {
                Some(l) => format!("{name}@{l}"),
                None => name.to_string(),
            };
            let t = Instant::now();
            eprintln!("bench: {full_name} ...");
            let mut side_checks = Vec::new();
            let side_carry = if label.is_some() {
                compared_carry.take_references(&carry);
                &mut compared_carry
            } else {
                &mut carry
            };
            let result = run_one(side_env, name, side_carry, &mut side_checks).await;
            if let Some(l) = label {
                for c in &mut side_checks {
                    c.scenario = format!("{}@{l}", c.scenario);
                }
            }
            checks.extend(side_checks);
            match result {
                Ok(mut row) => {
                    row.name = full_name.clone();
                    eprintln!(
                        "bench: {full_name} done in {:.1}s: {} {}",
                        t.elapsed().as_secs_f64(),
                        fmt_opt(row.rate, 0),
                        row.rate_unit
                    );
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("bench: {full_name} failed: {e:#}");
                    checks.push(Check {
                        scenario: full_name,
                        name: "scenario ran".into(),
                        ok: false,
                        detail: format!("{e:#}"),
                    });
                }
            }
        }
    }

    let load_after = procs::loadavg();
    println!();
    print_header();
    for r in &rows {
        print_row(r);
    }
    print_memory("memory", &carry, env);
    if let Some(c) = compare {
        print_memory(&format!("memory@{}", c.label), &compared_carry, env);
    }

    println!();
    println!("CPU seconds while loading and delivering (ms per webhook in brackets):");
    for r in &rows {
        let parts: Vec<String> = r
            .cpu
            .iter()
            .map(|(name, s)| format!("{name} {s:.2} ({:.3})", s * 1000.0 / r.n.max(1) as f64))
            .collect();
        println!("  {:<13} {}", r.name, parts.join(", "));
    }

    let compared = compare
        .zip(compared_carry.isolation_p99_ms)
        .map(|(c, p)| (c.label.as_str(), p));
    let targets = targets(&carry, compared);
    println!();
    if env.quick {
        println!("targets: not evaluated in a quick run (small N, debug build); see `just bench`");
    } else {
        println!("targets (2 cores shared with the load generator):");
        let width = targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &targets {
            let cmp = if t.at_least { ">=" } else { "<=" };
            println!(
                "  {:<width$} {:>10} / {cmp} {:<8} {:<4} {}",
                t.name,
                format!("{} {}", fmt_opt(t.measured, t.decimals()), t.unit),
                format!("{}", t.goal),
                match t.met() {
                    Some(true) => "met",
                    Some(false) => "MISS",
                    None => "-",
                },
                t.vs_baseline.clone().unwrap_or_default()
            );
        }
    }

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    println!();
    println!(
        "correctness: {} checks, {} failed; load average before {load_before}, after {load_after}; {:.0}s",
        checks.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    for c in &failed {
        println!("  FAILED {} / {}: {}", c.scenario, c.name, c.detail);
    }

    let mut scenarios_json = serde_json::Map::new();
    for r in &rows {
        scenarios_json.insert(
            r.name.clone(),
            json!({
                "n": r.n, "c": r.c, "rate": r.rate, "rate_unit": r.rate_unit,
                "latency_of": r.lat_kind,
                "p50_ms": r.p50, "p95_ms": r.p95, "p99_ms": r.p99,
                "errors": r.errors, "lost": r.lost, "duplicates": r.dups,
                "note": r.note, "details": r.json,
                "cpu_s": r.cpu.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            }),
        );
    }
    let targets_json: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "measured": t.measured, "unit": t.unit,
                "goal": t.goal, "at_least": t.at_least, "met": t.met(),
                "vs_baseline": t.vs_baseline,
            })
        })
        .collect();
    let checks_json: Vec<Value> = checks
        .iter()
        .map(|c| json!({"scenario": c.scenario, "check": c.name, "ok": c.ok, "detail": c.detail}))
        .collect();
    let doc = json!({
        "mode": if env.quick { "quick" } else { "full" },
        "started_at_unix": started_at,
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": {
            "cores": nproc,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "nats_server": nats,
        },
        "settings": {
            "sizes": {
                "n": env.sizes.n,
                "half_rate_n": env.sizes.half_n,
                "retries_n": env.sizes.retries_n,
                "fan_in_subscriptions": env.sizes.fanin_subs,
                "slow_n": env.sizes.slow_n,
                "isolation_n": env.sizes.iso_n,
                "isolation_hang_n": env.sizes.iso_hang_n,
                "recovery_n": env.sizes.rec_n,
                "recovery_live_n": env.sizes.rec_live_n,
                "max_load_s": env.sizes.max_load.as_secs_f64(),
                "max_wait_s": env.sizes.max_wait.as_secs_f64(),
                "idle_wait_s": env.sizes.idle_wait.as_secs_f64(),
            },
            "concurrency": env.concurrency,
            "delivery_concurrency": env.delivery_concurrency,
            "body_size": scenarios::BODY_SIZE,
            "webhookd_bin": env.webhookd_bin,
            "webhookd_args": env.webhookd_args,
            "compare": compare.map(|c| json!({
                "label": c.label,
                "scenarios": COMPARED,
                "webhookd_bin": c.env.webhookd_bin,
                "webhookd_args": c.env.webhookd_args,
            })),
            "nats_server_bin": env.nats_bin,
        },
        "scenarios": scenarios_json,
        "memory_mib": memory_json(&carry),
        "compared_memory_mib": compare.map(|c| json!({
            "label": c.label,
            "memory_mib": memory_json(&compared_carry),
        })),
        "targets": targets_json,
        "checks": checks_json,
        "passed": failed.is_empty(),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("results: {}", out.display());
    Ok(failed.is_empty())
}

/// The memory line of one side (`label`: `memory`, or `memory@<label>` for
/// the compared side), if its e2e ran: webhookd, its nats-server, and the
/// service (their sum; under load the sum of the two peaks, which may come
/// at different times: a conservative upper bound).
fn print_memory(label: &str, carry: &Carry, env: &Env) {
    if carry.load_rss_kib.is_none() {
        return;
    }
    println!(
        "{label:<13} webhookd peak {} MiB under e2e load, {} MiB idle {:.0}s later; \
         nats-server peak {} MiB, idle {} MiB; service (sum) peak {} MiB, idle {} MiB; \
         baseline server peak {} MiB",
        fmt_opt(mib(carry.load_rss_kib), 1),
        fmt_opt(mib(carry.idle_rss_kib), 1),
        env.sizes.idle_wait.as_secs_f64(),
        fmt_opt(mib(carry.nats_load_rss_kib), 1),
        fmt_opt(mib(carry.nats_idle_rss_kib), 1),
        fmt_opt(mib(carry.service_load_rss_kib()), 1),
        fmt_opt(mib(carry.service_idle_rss_kib()), 1),
        fmt_opt(mib(carry.baseline_rss_kib), 1),
    );
}

/// One side's memory figures for the results file, MiB. The service's are
/// sums: webhookd's + its nats-server's (under load the sum of the two
/// peaks, a conservative upper bound).
fn memory_json(carry: &Carry) -> Value {
    json!({
        "webhookd_peak_under_load": mib(carry.load_rss_kib),
        "webhookd_idle": mib(carry.idle_rss_kib),
        "nats_server_peak_under_load": mib(carry.nats_load_rss_kib),
        "nats_server_idle": mib(carry.nats_idle_rss_kib),
        "service_peak_under_load": mib(carry.service_load_rss_kib()),
        "service_idle": mib(carry.service_idle_rss_kib()),
        "baseline_peak": mib(carry.baseline_rss_kib),
    })
}

/// ` (args: ...)`, or nothing without extra arguments.
fn args_text(args: &[String]) -> String {
    if args.is_empty() {
        String::new()
    } else {
        format!(" (args: {})", args.join(" "))
    }
}
