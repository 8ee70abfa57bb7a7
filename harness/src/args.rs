//! The command line the benchmark and the chaos suite share: they run as
//! `harness = false` bench targets, so `cargo bench` and `cargo test` call
//! them with arguments of their own, and both take the same options for
//! what to run and with which binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

/// The arguments to parse, or None when there is nothing to run.
///
/// `cargo bench` appends `--bench`, which is dropped; `cargo test
/// --all-targets` runs the target without a subcommand (or with test
/// filters): unless the first argument is one of `subcommands` (or help),
/// this prints `hint` and returns None.
pub fn subcommand_args(name: &str, subcommands: &[&str], hint: &str) -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let known = |a: &String| {
        subcommands.contains(&a.as_str()) || ["help", "--help", "-h"].contains(&a.as_str())
    };
    if args.get(1).is_some_and(known) {
        Some(args)
    } else {
        println!("{name}: nothing to run without a subcommand; {hint}");
        None
    }
}

/// The exit status of a run: 0 when it passed, 1 when a check failed or it
/// could not run (the error is printed).
pub fn exit_code(name: &str, result: Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Options of a suite's `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// The reduced run (CI, debug build): small N, fails on correctness
    /// only.
    #[arg(long)]
    pub quick: bool,
    /// Webhooks per scenario (overrides the defaults).
    #[arg(long)]
    pub n: Option<usize>,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// nats-server binary (else NATS_SERVER_BIN, .tools/bin, PATH,
    /// /usr/sbin).
    #[arg(long, env = "WEBHOOKD_NATS_SERVER_BIN")]
    pub nats_server_bin: Option<PathBuf>,
    /// webhookd binary (default: the one Cargo built for this profile).
    #[arg(long)]
    pub webhookd_bin: Option<PathBuf>,
}

impl SuiteArgs {
    /// The scenarios of `all` to run, in `all`'s order: those `--only`
    /// names, or all; an unknown name is an error.
    pub fn selected<'a>(&self, all: &[&'a str]) -> Result<Vec<&'a str>> {
        for name in &self.only {
            if !all.contains(&name.as_str()) {
                bail!("unknown scenario `{name}`; known: {}", all.join(", "));
            }
        }
        Ok(all
            .iter()
            .copied()
            .filter(|s| self.only.is_empty() || self.only.iter().any(|o| o == s))
            .collect())
    }

    /// `--webhookd-bin`, else `built` (the caller's
    /// `env!("CARGO_BIN_EXE_webhookd")`); it must exist.
    pub fn webhookd_bin(&self, built: &str) -> Result<PathBuf> {
        let bin = self
            .webhookd_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(built));
        if !bin.exists() {
            bail!(
                "webhookd binary {} not found (cargo build --release --bin webhookd)",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// The nats-server binary ([`crate::nats::find_binary`]).
    pub fn nats_bin(&self) -> PathBuf {
        crate::nats::find_binary(self.nats_server_bin.clone())
    }
}
