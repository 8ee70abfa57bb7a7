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
//!
//! `docs/architecture.md` in the repository describes the data flow of one
//! webhook, the queue and storage design, and the guarantees.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cache;
pub mod config;
pub mod delivery;
pub mod health;
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
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::cache::SubscriptionCache;
use crate::config::{Config, ConfigError};
use crate::delivery::client::{ClientError, Sender};
use crate::delivery::{Deliverer, InFlight};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::queue::embedded::EmbeddedNats;
use crate::queue::{embedded, Queue, QueueError, QueueSettings};
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
    /// The listener's address could not be read.
    #[error("reading the listen address: {0}")]
    ListenAddress(#[source] std::io::Error),
    /// The outbound HTTP client could not be built.
    #[error(transparent)]
    HttpClient(#[from] ClientError),
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
    let policy = Arc::new(target_policy(&config)?);
    let local = check_listen_address(&config, &listener)?;
    let sender = Sender::new(
        config.connect_timeout,
        config.delivery_timeout,
        // Idle connections kept per receiver: as many as one subscription
        // may use at once, so a busy one does not reconnect after a burst.
        config
            .delivery_concurrency
            .min(config.subscription_concurrency),
        policy.clone(),
    )?;
    let (store, writer, writer_thread) = open_store(&config).await?;
    let (embedded, nats_url) = start_nats(&config).await?;
    let queue = match open_queue(&config, &nats_url).await {
        Ok(q) => q,
        Err(e) => {
            if let Some(nats) = embedded {
                nats.stop().await;
            }
            return Err(e);
        }
    };

    let stop = CancellationToken::new();
    let parts = Parts {
        store: store.clone(),
        writer,
        queue: queue.clone(),
        sender,
        policy,
    };
    let (state, deliverer) = wire(&config, parts, &stop);
    // Before the first request: a webhook accepted just before a crash is
    // known to the status API from the start.
    deliverer.restore_pending_rows().await;
    let metrics = state.metrics.clone();
    let background = Background::spawn(&config, deliverer, store, metrics, &stop);
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
        tracing::info!("shutdown started: ingest answers 503 from now on");
    });
    tracing::info!(%local, nats = %nats_url, "webhookd listening");

    let limits = server::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        ..server::Limits::default()
    };
    server::serve(listener, state, limits, stop, config.shutdown_timeout).await;
    tracing::info!("shutting down: HTTP closed, waiting for deliveries");
    background
        .finish(writer_thread, config.shutdown_timeout)
        .await;
    queue.flush().await;
    drop(queue);
    if let Some(nats) = embedded {
        nats.stop().await;
    }
    tracing::info!("webhookd stopped");
    Ok(())
}

/// What startup opened, for [`wire`].
struct Parts {
    store: Store,
    writer: Writer,
    queue: Queue,
    sender: Sender,
    policy: Arc<TargetPolicy>,
}

/// The shared state of the HTTP handlers and of the delivery workers: one
/// cache, one writer, one set of metrics, one in-flight set for both.
fn wire(
    config: &Config,
    parts: Parts,
    stop: &CancellationToken,
) -> (Arc<AppState>, Arc<Deliverer>) {
    let Parts {
        store,
        writer,
        queue,
        sender,
        policy,
    } = parts;
    let metrics = Arc::new(Metrics::new());
    let cache = SubscriptionCache::new(store.clone(), config.cache_capacity, config.cache_ttl);
    let in_flight = InFlight::default();
    let health = Health::new(config.health_settings());
    let state = Arc::new(AppState {
        store: store.clone(),
        cache: cache.clone(),
        queue: queue.clone(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        in_flight: in_flight.clone(),
        health: health.clone(),
        policy,
        max_body: effective_max_body(config.max_body, queue.max_payload()),
        api_token: config.api_token.clone(),
        draining: stop.clone(),
        retention: config.retention,
    });
    let parts = delivery::Parts {
        queue,
        cache,
        writer,
        sender,
        store,
        metrics,
        in_flight,
        health,
    };
    let settings = delivery::Settings {
        schedule: config.retry_schedule.clone(),
        jitter: config.retry_jitter,
        slots: config.delivery_concurrency,
        ack_wait: config.ack_wait(),
        nak_only: config.scheduler_wait == config::WaitMode::Nak,
        redelivery_rate: config.redelivery_rate,
    };
    let deliverer = Arc::new(Deliverer::new(parts, settings));
    (state, deliverer)
}

/// The SSRF policy of delivery targets: everything public, plus the
/// configured exceptions.
fn target_policy(config: &Config) -> Result<TargetPolicy, ConfigError> {
    match &config.allow_targets {
        Some(list) => TargetPolicy::parse_allow_list(list).map_err(|e| ConfigError {
            field: "--allow-targets",
            message: e.to_string(),
        }),
        None => Ok(TargetPolicy::allow_all_public()),
    }
}

/// Refuses to serve the management API beyond loopback without a token,
/// unless the operator said so; returns the address listened on.
fn check_listen_address(
    config: &Config,
    listener: &TcpListener,
) -> Result<std::net::SocketAddr, RunError> {
    let local = listener.local_addr().map_err(RunError::ListenAddress)?;
    if local.ip().is_loopback() || config.api_token.is_some() {
        return Ok(local);
    }
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
    Ok(local)
}

/// Opens (and migrates) SQLite off the async threads and starts the
/// batched writer.
async fn open_store(config: &Config) -> Result<(Store, Writer, JoinHandle<()>), StoreError> {
    let db_path = config.database_path();
    let pool_size = config.db_pool_size;
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path, pool_size)).await??;
    let (writer, writer_thread) = Writer::start(store.path())?;
    Ok((store, writer, writer_thread))
}

/// The NATS URL to use: the configured one, or that of a nats-server child
/// started here (returned too, so it can be stopped last).
async fn start_nats(config: &Config) -> Result<(Option<EmbeddedNats>, String), QueueError> {
    if let Some(url) = &config.nats_url {
        return Ok((None, url.clone()));
    }
    let nats = EmbeddedNats::start(embedded::Settings {
        bin: &config.nats_server_bin,
        data_dir: &config.data_dir,
        max_payload: config.max_body + HEADER_ROOM,
        memory_limit: config.nats_memory_limit,
    })
    .await?;
    let url = nats.url().to_string();
    Ok((Some(nats), url))
}

/// The tasks that run beside the HTTP server, in the order they stop.
struct Background {
    workers: tokio::task::JoinHandle<()>,
    purge: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Starts the delivery workers, the purge and the idle-memory trim.
    fn spawn(
        config: &Config,
        deliverer: Arc<Deliverer>,
        store: Store,
        metrics: Arc<Metrics>,
        stop: &CancellationToken,
    ) -> Background {
        let workers = tokio::spawn(deliverer.run(stop.clone(), config.shutdown_timeout));
        tokio::spawn(trim_when_idle(metrics.clone(), stop.clone()));
        let purge = tokio::spawn(purge::run(
            store,
            config.retention,
            config.purge_interval,
            metrics,
            stop.clone(),
        ));
        Background { workers, purge }
    }

    /// Waits for the workers and the purge, then for the writer thread to
    /// drain its queue (bounded: a connection still open past the deadline
    /// holds a writer clone).
    async fn finish(self, writer_thread: JoinHandle<()>, deadline: std::time::Duration) {
        if let Err(e) = self.workers.await {
            tracing::error!(error = %e, "delivery workers ended abnormally");
        }
        let _ = self.purge.await;
        let joined = tokio::time::timeout(
            deadline,
            tokio::task::spawn_blocking(move || writer_thread.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("attempt writer still busy at the shutdown deadline");
        }
    }
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
    queue.consumer(queue::Source::Live).await?;
    queue.consumer(queue::Source::Redeliveries).await?;
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
