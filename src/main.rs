//! The `webhookd` binary: parse flags, set up logging, bind, run until
//! SIGINT or SIGTERM.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use webhookd::config::{Config, LogFormat};

fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(&config);
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

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "webhookd: invalid --log filter `{}` ({e}); using `info`",
            config.log
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
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
