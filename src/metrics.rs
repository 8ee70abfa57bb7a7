//! Prometheus metrics (prometheus-client, OpenMetrics text at `/metrics`).
//!
//! Counters and histograms move as work happens; gauges that mirror other
//! parts (consumer pending counts, writer queue) are read at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::records::Outcome;

/// Label of ingest answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// HTTP status code.
    pub status: u16,
}

/// Label of delivery attempts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `success`, `failed_attempt` or `failure`.
    pub outcome: &'static str,
}

/// Label of purged rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// The table rows were removed from.
    pub table: &'static str,
}

/// Label of circuit counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabel {
    /// `open` or `half_open`.
    pub state: &'static str,
}

/// Label of build info.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

/// Every metric webhookd exports.
pub struct Metrics {
    registry: Registry,
    /// Ingest answers by status code.
    pub ingest_requests: Family<StatusLabel, Counter>,
    /// Webhooks stored in JetStream (202, not filtered, not duplicate).
    pub webhooks_accepted: Counter,
    /// Webhooks answered 202 but not queued (event type not subscribed).
    pub webhooks_filtered: Counter,
    /// Delivery attempts by outcome.
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Duration of delivery attempts, seconds.
    pub delivery_duration: Histogram,
    /// Retries scheduled (NAK with delay).
    pub retries_scheduled: Counter,
    /// Attempts logged but not sent because the subscription's circuit was
    /// open (not counted in `deliveries`).
    pub attempts_not_sent: Counter,
    /// Webhooks given up (last attempt failed, target refused, subscription gone).
    pub webhooks_given_up: Counter,
    /// Consumer messages not yet delivered (scrape time).
    pub consumer_pending: Gauge,
    /// Consumer messages delivered, not yet acknowledged (scrape time).
    pub consumer_ack_pending: Gauge,
    /// Writes waiting for the attempt writer (scrape time).
    pub writer_queue_depth: Gauge,
    /// Rows in the writer's last transaction (scrape time).
    pub writer_batch_size: Gauge,
    /// Rows removed by the retention purge.
    pub purged_rows: Family<TableLabel, Counter>,
    /// Subscriptions whose circuit is open or half-open (scrape time).
    pub circuits: Family<CircuitLabel, Gauge>,
    /// Subscriptions disabled (scrape time).
    pub subscriptions_disabled: Gauge,
    /// Subscriptions held below their cap by the throttle (scrape time).
    pub subscriptions_throttled: Gauge,

    /// Ingest requests plus attempts, for telling when webhookd is idle.
    activity: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("webhookd");
        let m = Metrics {
            ingest_requests: Family::default(),
            webhooks_accepted: Counter::default(),
            webhooks_filtered: Counter::default(),
            deliveries: Family::default(),
            delivery_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            retries_scheduled: Counter::default(),
            attempts_not_sent: Counter::default(),
            webhooks_given_up: Counter::default(),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            writer_queue_depth: Gauge::default(),
            writer_batch_size: Gauge::default(),
            purged_rows: Family::default(),
            circuits: Family::default(),
            subscriptions_disabled: Gauge::default(),
            subscriptions_throttled: Gauge::default(),
            activity: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ingest_requests",
            "Ingest requests by HTTP status",
            m.ingest_requests.clone(),
        );
        registry.register(
            "webhooks_accepted",
            "Webhooks stored in JetStream",
            m.webhooks_accepted.clone(),
        );
        registry.register(
            "webhooks_filtered",
            "Webhooks not queued because their event type is not subscribed",
            m.webhooks_filtered.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Duration of delivery attempts",
            m.delivery_duration.clone(),
        );
        registry.register(
            "retries_scheduled",
            "Retries scheduled with a NAK delay",
            m.retries_scheduled.clone(),
        );
        registry.register(
            "attempts_not_sent",
            "Attempts logged as not sent because the subscription's circuit was open",
            m.attempts_not_sent.clone(),
        );
        registry.register(
            "webhooks_given_up",
            "Webhooks whose delivery was abandoned",
            m.webhooks_given_up.clone(),
        );
        registry.register(
            "consumer_pending",
            "Messages of the delivery consumer not yet delivered",
            m.consumer_pending.clone(),
        );
        registry.register(
            "consumer_ack_pending",
            "Messages delivered to workers and not yet acknowledged (includes retry delays)",
            m.consumer_ack_pending.clone(),
        );
        registry.register(
            "writer_queue_depth",
            "Writes waiting for the attempt writer",
            m.writer_queue_depth.clone(),
        );
        registry.register(
            "writer_batch_size",
            "Rows in the attempt writer's last transaction",
            m.writer_batch_size.clone(),
        );
        for table in ["delivery_attempts", "webhooks"] {
            // Present (at 0) before the first purge removes anything.
            m.purged_rows.get_or_create(&TableLabel { table }).inc_by(0);
        }
        registry.register(
            "purged_rows",
            "Rows removed by the retention purge",
            m.purged_rows.clone(),
        );
        for state in ["open", "half_open"] {
            m.circuits.get_or_create(&CircuitLabel { state }).set(0);
        }
        registry.register(
            "circuits",
            "Subscriptions whose circuit breaker is open or half-open",
            m.circuits.clone(),
        );
        registry.register(
            "subscriptions_disabled",
            "Subscriptions disabled (410 Gone, sustained failure, or by hand)",
            m.subscriptions_disabled.clone(),
        );
        registry.register(
            "subscriptions_throttled",
            "Subscriptions held below their concurrency cap after 429/502/503/504",
            m.subscriptions_throttled.clone(),
        );
        let build: Family<BuildLabel, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "webhookd version", build);
        Metrics { registry, ..m }
    }

    /// Work done so far (ingest requests and attempts); unchanged between
    /// two reads means webhookd was idle in between.
    pub fn activity(&self) -> u64 {
        self.activity.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one attempt.
    pub fn record_attempt(&self, outcome: Outcome, seconds: f64) {
        self.activity
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.deliveries
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        self.delivery_duration.observe(seconds);
    }

    /// Counts one ingest answer.
    pub fn record_ingest(&self, status: u16) {
        self.activity
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ingest_requests
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
