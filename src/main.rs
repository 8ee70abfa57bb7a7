//! The `webhookd` binary: parse flags, set up logging, bind, run until
//! SIGINT or SIGTERM.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use webhookd::config::{Config, LogFormat};

fn main() -> ExitCode {
    let config = Config::parse();
    // Dropped when main returns, after the runtime: flushes the last lines.
    let _log = init_logging(&config);
    if let Err(e) = config.validate() {
        eprintln!("webhookd: {e}");
        return ExitCode::from(2);
    }
    if config.check_config {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    // async-nats (ring) and reqwest (aws-lc-rs) both bring a rustls provider;
    // pick one so a TLS NATS connection does not panic.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("webhookd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "webhookd: cannot listen on {}: {e}{}",
                    config.listen,
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        " (another process uses this port: stop it, or set --listen / WEBHOOKD_LISTEN)"
                    } else {
                        ""
                    }
                );
                return ExitCode::FAILURE;
            }
        };
        match webhookd::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "webhookd stopped with an error");
                eprintln!("webhookd: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Lines that may wait for the log thread before a worker waits for it:
/// none is dropped, and a worker only waits when stderr is that far behind
/// (about a second of attempts at full speed). The queue's slots are
/// allocated up front: tracing-appender's default of 128,000 took 5 MiB.
const LOG_BUFFERED_LINES: usize = 4096;

/// Sets up logging: the `--log` filter, text or JSON, to stderr through a
/// thread of its own that writes in batches (one `write` for all lines
/// queued meanwhile) so no worker thread waits on stderr. The guard flushes
/// what is queued when dropped: keep it until the process ends.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "webhookd: invalid --log filter `{}` ({e}); using `info`",
            config.log
        );
        EnvFilter::new("info")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_BUFFERED_LINES)
        .thread_name("webhookd-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            // Without signal handlers, Ctrl-C still ends the process.
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
