//! webhookd: reliable webhook delivery for small VMs.
//!
//! A sender POSTs a webhook to `/ingest/{subscription_id}`; webhookd answers
//! 202 once it is durable in NATS JetStream, delivers it to the
//! subscription's target URL with retries, and logs every attempt in SQLite.
//!
//! Where everything lives:
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the one `Config` struct (flags and `WEBHOOKD_*` variables) |
//! | [`api`] | HTTP routes and handlers (hyper 1, no framework), JSON errors |
//! | [`server`] | accept loop, connection limits, graceful HTTP shutdown |
//! | [`queue`] | JetStream stream and consumer, publishing; [`queue::embedded`] runs nats-server |
//! | [`delivery`] | workers, outbound HTTP ([`delivery::client`]), the retry decision |
//! | [`signing`] | the [`signing::Secret`] newtype: inbound checks, outbound signatures, masking |
//! | [`store`] | SQLite: migrations, subscriptions, attempt records, the batched [`store::writer`] |
//! | [`cache`] | subscription cache in front of the store |
//! | [`ssrf`] | which target addresses deliveries may reach |
//! | [`purge`] | retention purge of old logs |
//! | [`metrics`] | Prometheus metrics |
//! | [`ids`] | id newtypes |
//!
//! [`run`] wires them together; `main.rs` only parses flags, binds and
//! calls it, so tests run the whole service in-process on port 0.

pub mod api;
pub mod cache;
pub mod config;
pub mod delivery;
pub mod ids;
pub mod metrics;
pub mod purge;
pub mod queue;
pub mod server;
pub mod signing;
pub mod ssrf;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::cache::SubscriptionCache;
use crate::config::{Config, ConfigError};
use crate::delivery::{client::Sender, Deliverer, InFlight};
use crate::metrics::Metrics;
use crate::queue::embedded::EmbeddedNats;
use crate::queue::{Queue, QueueError, QueueSettings};
use crate::ssrf::TargetPolicy;
use crate::store::writer::Writer;
use crate::store::{Store, StoreError};

/// Room for NATS headers on top of the largest body.
const HEADER_ROOM: usize = 4096;

/// Why webhookd could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// SQLite could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS could not be started or reached.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Anything else at startup.
    #[error("{0}")]
    Startup(String),
}

/// Runs webhookd on `listener` until `shutdown` completes, then shuts down
/// gracefully: ingest answers 503, open requests and in-flight deliveries get
/// the shutdown timeout to finish, the rest are NAKed for redelivery, the
/// attempt writer is flushed, and the embedded nats-server is stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let policy = Arc::new(match &config.allow_targets {
        Some(list) => TargetPolicy::parse_allow_list(list).map_err(|e| ConfigError {
            field: "--allow-targets",
            message: e.to_string(),
        })?,
        None => TargetPolicy::allow_all_public(),
    });
    let local = listener
        .local_addr()
        .map_err(|e| RunError::Startup(format!("reading the listen address: {e}")))?;
    if !local.ip().is_loopback() && config.api_token.is_none() {
        if !config.insecure_no_auth {
            return Err(ConfigError {
                field: "--api-token",
                message: format!(
                    "listening on non-loopback address {local} needs an API token \
                     (WEBHOOKD_API_TOKEN), or --insecure-no-auth to run without one"
                ),
            }
            .into());
        }
        tracing::warn!(%local, "management API open to the network without a token (--insecure-no-auth)");
    }

    let db_path = config.database_path();
    let pool_size = config.db_pool_size;
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path, pool_size))
        .await
        .map_err(|e| RunError::Startup(format!("opening the database: {e}")))??;
    let (writer, writer_thread) = Writer::start(store.path())?;

    let (embedded, nats_url) = match &config.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let nats = EmbeddedNats::start(
                &config.nats_server_bin,
                &config.data_dir,
                config.max_body + HEADER_ROOM,
            )
            .await?;
            let url = nats.url().to_string();
            (Some(nats), url)
        }
    };
    let queue = match open_queue(&config, &nats_url).await {
        Ok(q) => q,
        Err(e) => {
            if let Some(nats) = embedded {
                nats.stop().await;
            }
            return Err(e);
        }
    };

    let metrics = Arc::new(Metrics::new());
    let cache = SubscriptionCache::new(store.clone(), config.cache_capacity, config.cache_ttl);
    let sender = Sender::new(
        config.connect_timeout,
        config.delivery_timeout,
        config.delivery_concurrency.min(64),
        policy.clone(),
    )
    .map_err(|e| RunError::Startup(e.to_string()))?;
    let in_flight = InFlight::default();

    let stop = CancellationToken::new();
    let state = Arc::new(AppState {
        store: store.clone(),
        cache: cache.clone(),
        queue: queue.clone(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        in_flight: in_flight.clone(),
        policy,
        max_body: effective_max_body(config.max_body, queue.max_payload()),
        api_token: config.api_token.clone(),
        draining: stop.clone(),
    });
    let deliverer = Arc::new(Deliverer {
        queue: queue.clone(),
        cache,
        writer: writer.clone(),
        sender,
        schedule: config.retry_schedule.clone(),
        concurrency: config.delivery_concurrency,
        in_flight,
        metrics: metrics.clone(),
        store: store.clone(),
        logged: Default::default(),
    });
    drop(writer);

    let metrics_for_trim = metrics.clone();
    let workers = tokio::spawn(deliverer.run(stop.clone(), config.shutdown_timeout));
    let purge = tokio::spawn(purge::run(
        store,
        config.retention,
        config.purge_interval,
        metrics,
        stop.clone(),
    ));
    tokio::spawn(trim_when_idle(metrics_for_trim, stop.clone()));
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
        tracing::info!("shutdown started: ingest answers 503 from now on");
    });
    tracing::info!(%local, nats = %nats_url, "webhookd listening");

    server::serve(
        listener,
        state,
        server::Limits {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            ..server::Limits::default()
        },
        stop.clone(),
        config.shutdown_timeout,
    )
    .await;
    tracing::info!("shutting down: HTTP closed, waiting for deliveries");
    if let Err(e) = workers.await {
        tracing::error!(error = %e, "delivery workers ended abnormally");
    }
    let _ = purge.await;
    // Every Writer clone is gone now: the thread drains its queue and ends.
    // (Bounded: a connection still open past the deadline holds a clone.)
    let joined = tokio::time::timeout(
        config.shutdown_timeout,
        tokio::task::spawn_blocking(move || writer_thread.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("attempt writer still busy at the shutdown deadline");
    }
    queue.flush().await;
    drop(queue);
    if let Some(nats) = embedded {
        nats.stop().await;
    }
    tracing::info!("webhookd stopped");
    Ok(())
}

/// The body limit ingest can honour: a webhook must fit in one NATS message
/// with its headers. An external server with a smaller `max_payload` lowers
/// the limit (with a warning) rather than failing every large webhook.
fn effective_max_body(configured: usize, max_payload: usize) -> usize {
    let fits = max_payload.saturating_sub(HEADER_ROOM);
    if fits < configured {
        tracing::warn!(
            configured,
            max_payload,
            effective = fits,
            "--max-body exceeds what the NATS server accepts; larger bodies get 413 \
             (raise max_payload in nats-server.conf to lift this)"
        );
        fits
    } else {
        configured
    }
}

/// Connects to NATS and sets up the stream and consumer.
async fn open_queue(config: &Config, url: &str) -> Result<Queue, RunError> {
    let settings = QueueSettings {
        max_age: config.retention,
        max_bytes: config.stream_max_bytes as i64,
        replicas: config.stream_replicas,
        duplicate_window: config.duplicate_window,
        ack_wait: config.ack_wait(),
        max_ack_pending: config.max_ack_pending,
        publish_timeout: config.publish_timeout,
    };
    let queue = Queue::connect(url, settings, std::time::Duration::from_secs(30)).await?;
    queue.consumer().await?;
    Ok(queue)
}

/// Hands freed heap memory back to the operating system once webhookd has
/// been idle for a while: after a burst, glibc keeps freed arenas mapped,
/// and an idle webhookd on a small VM should not hold the burst's peak.
async fn trim_when_idle(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
    let mut last = metrics.activity();
    let mut trimmed = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = metrics.activity();
        if now != last {
            last = now;
            trimmed = false;
        } else if !trimmed {
            trimmed = true;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory of the allocator.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}
