//! Configuration: one struct, read from flags and `WEBHOOKD_*` environment
//! variables (and `NATS_URL`), validated once at startup.
//!
//! Nothing else in the crate reads the environment: every part takes what it
//! needs from [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Everything webhookd can be told at startup. Defaults run a complete
/// service on loopback with nothing set.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webhookd",
    version,
    about = "Reliable webhook delivery on NATS JetStream and SQLite"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "WEBHOOKD_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Directory for the SQLite file and the embedded nats-server's store.
    #[arg(long, env = "WEBHOOKD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// SQLite file; defaults to `<data-dir>/webhookd.db`.
    #[arg(long, env = "WEBHOOKD_DATABASE")]
    pub database: Option<PathBuf>,

    /// External NATS server or cluster (comma-separated URLs). Unset: webhookd
    /// runs its own `nats-server -js` child process on loopback.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// nats-server binary used in embedded mode (a name on PATH or a path).
    #[arg(long, env = "WEBHOOKD_NATS_SERVER_BIN", default_value = "nats-server")]
    pub nats_server_bin: PathBuf,

    /// Soft memory limit of the embedded nats-server's Go runtime (its
    /// GOMEMLIMIT; units B, KiB, MiB, GiB): past it the server collects
    /// garbage more often instead of growing. 0 leaves nats-server at Go's
    /// default (no limit, or GOMEMLIMIT from the environment).
    #[arg(long, env = "WEBHOOKD_NATS_MEMORY_LIMIT", default_value = "64MiB", value_parser = parse_bytes)]
    pub nats_memory_limit: usize,

    /// Delays before each retry, comma-separated, with units ms, s, m or h.
    /// The number of entries is the number of retries.
    #[arg(
        long,
        env = "WEBHOOKD_RETRY_SCHEDULE",
        default_value = "10s,30s,1m,5m,15m"
    )]
    pub retry_schedule: RetrySchedule,

    /// Total time allowed for one delivery attempt.
    #[arg(long, env = "WEBHOOKD_DELIVERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,

    /// Time allowed to open the TCP (and TLS) connection of an attempt.
    #[arg(long, env = "WEBHOOKD_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Delivery attempts in flight at once.
    #[arg(long, env = "WEBHOOKD_DELIVERY_CONCURRENCY", default_value_t = 256)]
    pub delivery_concurrency: usize,

    /// Attempts one subscription may have in flight at most. While other
    /// subscriptions have work waiting, its fair share of the delivery
    /// concurrency can be lower. 128 by default: half the 256 workers, the
    /// most the fair share gives a lone subscription anyway.
    #[arg(long, env = "WEBHOOKD_SUBSCRIPTION_CONCURRENCY", default_value_t = 128)]
    pub subscription_concurrency: usize,

    /// Consecutive failed attempts (timeouts, connection errors, 5xx, 408,
    /// 429) that open a subscription's circuit; 0 never opens it.
    #[arg(long, env = "WEBHOOKD_CIRCUIT_FAILURES", default_value_t = 5)]
    pub circuit_failures: u32,

    /// How long an open circuit waits before its first probe; doubles each
    /// time a probe fails.
    #[arg(long, env = "WEBHOOKD_CIRCUIT_COOLDOWN", default_value = "30s", value_parser = parse_duration)]
    pub circuit_cooldown: Duration,

    /// Longest cool-down of an open circuit.
    #[arg(long, env = "WEBHOOKD_CIRCUIT_COOLDOWN_MAX", default_value = "5m", value_parser = parse_duration)]
    pub circuit_cooldown_max: Duration,

    /// No successful delivery for this long disables the subscription
    /// (0: never).
    #[arg(long, env = "WEBHOOKD_DISABLE_AFTER", default_value = "24h", value_parser = parse_duration)]
    pub disable_after: Duration,

    /// Random spread of each retry delay, as a fraction: 0.2 is ±20%
    /// (0: exact delays).
    #[arg(long, env = "WEBHOOKD_RETRY_JITTER", default_value_t = 0.2)]
    pub retry_jitter: f64,

    /// How a webhook waits while its subscription is at its limit: `park`
    /// (in memory, with in-progress acks) or `nak` (a short NAK delay each
    /// time). Kept to measure the two against each other; `park` won.
    #[arg(long, env = "WEBHOOKD_SCHEDULER_WAIT", value_enum, default_value_t = WaitMode::Park, hide = true)]
    pub scheduler_wait: WaitMode,

    /// Redeliveries (POST /webhooks/{id}/redeliver, POST
    /// /subscriptions/{id}/recover) taken from their queue per second at
    /// most, so a large recovery never crowds out live webhooks.
    #[arg(long, env = "WEBHOOKD_REDELIVERY_RATE", default_value_t = 500)]
    pub redelivery_rate: u32,

    /// Messages the consumer may hold unacknowledged, including those waiting
    /// for a retry delay; bounds the work JetStream hands out.
    #[arg(long, env = "WEBHOOKD_MAX_ACK_PENDING", default_value_t = 50_000)]
    pub max_ack_pending: i64,

    /// Age at which attempt logs, webhook records and queued payloads are purged.
    #[arg(long, env = "WEBHOOKD_RETENTION", default_value = "72h", value_parser = parse_duration)]
    pub retention: Duration,

    /// How often the retention purge runs.
    #[arg(long, env = "WEBHOOKD_PURGE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub purge_interval: Duration,

    /// Largest ingest or API request body (units B, KiB, MiB).
    #[arg(long, env = "WEBHOOKD_MAX_BODY", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_body: usize,

    /// Size cap of the JetStream stream; when full, ingest answers 503.
    #[arg(long, env = "WEBHOOKD_STREAM_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub stream_max_bytes: usize,

    /// Stream replicas (3 on a 3-node NATS cluster).
    #[arg(long, env = "WEBHOOKD_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Window in which JetStream drops a repeated webhook id (Idempotency-Key).
    #[arg(long, env = "WEBHOOKD_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub duplicate_window: Duration,

    /// How long ingest waits for JetStream to store a webhook before answering 503.
    #[arg(long, env = "WEBHOOKD_PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// Time open requests and in-flight deliveries get to finish on shutdown.
    #[arg(long, env = "WEBHOOKD_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// HTTP connections open at once; more clients wait in the listen backlog.
    #[arg(long, env = "WEBHOOKD_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Time a client gets to send its request headers (slow clients are cut off).
    #[arg(long, env = "WEBHOOKD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Subscriptions kept in the in-memory cache.
    #[arg(long, env = "WEBHOOKD_CACHE_CAPACITY", default_value_t = 10_000)]
    pub cache_capacity: usize,

    /// How long a cached subscription is trusted before it is read again.
    #[arg(long, env = "WEBHOOKD_CACHE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// SQLite connections in the read pool.
    #[arg(long, env = "WEBHOOKD_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,

    /// Bearer token required by management endpoints (everything except
    /// ingest, /healthz and /readyz). Never logged.
    #[arg(long, env = "WEBHOOKD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// CIDRs exempt from the SSRF guard, comma-separated (e.g. `127.0.0.0/8`).
    #[arg(long, env = "WEBHOOKD_ALLOW_TARGETS")]
    pub allow_targets: Option<String>,

    /// Allow listening on a non-loopback address without an API token.
    #[arg(long, env = "WEBHOOKD_INSECURE_NO_AUTH", default_value_t = false)]
    pub insecure_no_auth: bool,

    /// Log format.
    #[arg(long, env = "WEBHOOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing-subscriber EnvFilter syntax, e.g. `info,webhookd=debug`).
    #[arg(long, env = "WEBHOOKD_LOG", default_value = "info")]
    pub log: String,

    /// Print the effective configuration (secrets hidden), check it, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// How a webhook waits for its subscription's turn (see `--scheduler-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitMode {
    /// Parked in memory with in-progress acks; overflow paced by the lane.
    Park,
    /// NAKed with a short delay every time, nothing parked.
    Nak,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A startup configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The option at fault, as spelled on the command line.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Config {
    /// A configuration with every default plus whatever `WEBHOOKD_*`
    /// variables are set (clap reads them); tests start from it.
    pub fn defaults() -> Self {
        Config::parse_from(["webhookd"])
    }

    /// The SQLite file in use.
    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("webhookd.db"))
    }

    /// How long JetStream waits for an ack before handing a message out again.
    /// Kept well above the delivery timeout, so a message still being sent is
    /// never redelivered.
    pub fn ack_wait(&self) -> Duration {
        (self.delivery_timeout * 2 + Duration::from_secs(10)).max(Duration::from_secs(30))
    }

    /// The effective settings as `name = value` lines, secrets hidden: what
    /// `--check-config` prints.
    pub fn describe(&self) -> String {
        let d = format_duration;
        let hidden = |s: &Option<String>| s.as_ref().map_or("(unset)", |_| "(set, hidden)");
        let lines = [
            ("listen", self.listen.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("database", self.database_path().display().to_string()),
            (
                "nats_url",
                self.nats_url
                    .clone()
                    .unwrap_or_else(|| "(embedded nats-server)".into()),
            ),
            (
                "nats_server_bin",
                self.nats_server_bin.display().to_string(),
            ),
            ("nats_memory_limit", self.nats_memory_limit.to_string()),
            ("retry_schedule", self.retry_schedule.to_string()),
            ("delivery_timeout", d(self.delivery_timeout)),
            ("connect_timeout", d(self.connect_timeout)),
            (
                "delivery_concurrency",
                self.delivery_concurrency.to_string(),
            ),
            (
                "subscription_concurrency",
                self.subscription_concurrency.to_string(),
            ),
            ("redelivery_rate", format!("{}/s", self.redelivery_rate)),
            ("circuit_failures", self.circuit_failures.to_string()),
            ("circuit_cooldown", d(self.circuit_cooldown)),
            ("circuit_cooldown_max", d(self.circuit_cooldown_max)),
            ("disable_after", d(self.disable_after)),
            ("retry_jitter", self.retry_jitter.to_string()),
            ("max_ack_pending", self.max_ack_pending.to_string()),
            ("ack_wait", d(self.ack_wait())),
            ("retention", d(self.retention)),
            ("purge_interval", d(self.purge_interval)),
            ("max_body", self.max_body.to_string()),
            ("stream_max_bytes", self.stream_max_bytes.to_string()),
            ("stream_replicas", self.stream_replicas.to_string()),
            ("duplicate_window", d(self.duplicate_window)),
            ("publish_timeout", d(self.publish_timeout)),
            ("shutdown_timeout", d(self.shutdown_timeout)),
            ("max_connections", self.max_connections.to_string()),
            ("header_read_timeout", d(self.header_read_timeout)),
            ("cache_capacity", self.cache_capacity.to_string()),
            ("cache_ttl", d(self.cache_ttl)),
            ("db_pool_size", self.db_pool_size.to_string()),
            ("api_token", hidden(&self.api_token).to_string()),
            (
                "allow_targets",
                self.allow_targets
                    .clone()
                    .unwrap_or_else(|| "(none)".into()),
            ),
            ("insecure_no_auth", self.insecure_no_auth.to_string()),
            (
                "log_format",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("log", self.log.clone()),
        ];
        lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    /// Checks what clap cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_string(),
            })
        };
        if self.delivery_timeout.is_zero() {
            return err("--delivery-timeout", "must be greater than zero");
        }
        if self.connect_timeout.is_zero() {
            return err("--connect-timeout", "must be greater than zero");
        }
        if self.delivery_concurrency == 0 || self.delivery_concurrency > 10_000 {
            return err("--delivery-concurrency", "must be between 1 and 10000");
        }
        if self.redelivery_rate == 0 {
            return err("--redelivery-rate", "must be at least 1 per second");
        }
        if self.subscription_concurrency == 0 {
            return err("--subscription-concurrency", "must be at least 1");
        }
        if self.circuit_cooldown.is_zero() || self.circuit_cooldown_max < self.circuit_cooldown {
            return err(
                "--circuit-cooldown",
                "must be greater than zero and at most --circuit-cooldown-max",
            );
        }
        if !(0.0..=0.5).contains(&self.retry_jitter) {
            return err("--retry-jitter", "must be between 0 and 0.5");
        }
        if self.max_ack_pending < self.delivery_concurrency as i64 {
            return err(
                "--max-ack-pending",
                "must be at least --delivery-concurrency",
            );
        }
        if self.retention < Duration::from_secs(1) {
            return err("--retention", "must be at least 1s");
        }
        if self.purge_interval.is_zero() {
            return err("--purge-interval", "must be greater than zero");
        }
        if self.max_body < 16 {
            return err("--max-body", "must be at least 16 bytes");
        }
        if self.stream_replicas == 0 || self.stream_replicas > 5 {
            return err("--stream-replicas", "must be between 1 and 5");
        }
        if self.duplicate_window.is_zero() || self.duplicate_window > self.retention {
            return err(
                "--duplicate-window",
                "must be greater than zero and at most the retention",
            );
        }
        if self.publish_timeout.is_zero() {
            return err("--publish-timeout", "must be greater than zero");
        }
        if self.max_connections == 0 {
            return err("--max-connections", "must be at least 1");
        }
        if self.header_read_timeout.is_zero() {
            return err("--header-read-timeout", "must be greater than zero");
        }
        if self.cache_capacity == 0 {
            return err("--cache-capacity", "must be at least 1");
        }
        if self.db_pool_size == 0 {
            return err("--db-pool-size", "must be at least 1");
        }
        if let Some(token) = &self.api_token {
            if token.len() < 16 {
                return err("--api-token", "must be at least 16 characters");
            }
        }
        if let Some(url) = &self.nats_url {
            if url.trim().is_empty() {
                return err("--nats-url", "must not be empty when set");
            }
        }
        Ok(())
    }
}

/// The delays before each retry, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// Delays, one per retry.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// All delays together: how long a webhook may wait for its retries.
    pub fn span(&self) -> Duration {
        self.0.iter().sum()
    }

    /// The longest delay; a receiver's Retry-After is capped at it.
    pub fn max_delay(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(RetrySchedule(Vec::new()));
        }
        let delays = s
            .split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("at most 50 retries".to_string());
        }
        Ok(RetrySchedule(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `500ms`, `10s`, `1m`, `72h` (a whole number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 500ms, 10s, 1m or 72h"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// The shortest exact form of a duration in the units [`parse_duration`] reads.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms > 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Config {
    /// The circuit breaker's and throttle's settings.
    pub fn health_settings(&self) -> crate::health::HealthSettings {
        crate::health::HealthSettings {
            cap: self.subscription_concurrency,
            failures: self.circuit_failures,
            cooldown: self.circuit_cooldown,
            cooldown_max: self.circuit_cooldown_max,
            disable_after: self.disable_after,
        }
    }
}

/// Parses `512`, `64KiB`, `1MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn schedule_round_trips() {
        let s: RetrySchedule = "10s,30s,1m,5m,15m".parse().unwrap();
        assert_eq!(s.delays().len(), 5);
        assert_eq!(s.max_delay(), Duration::from_secs(900));
        assert_eq!(s.to_string(), "10s,30s,1m,5m,15m");
        let fast: RetrySchedule = "5ms, 20ms".parse().unwrap();
        assert_eq!(fast.to_string(), "5ms,20ms");
        assert!("10s,,1m".parse::<RetrySchedule>().is_err());
    }

    #[test]
    fn bytes_parse() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("1TB").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.database_path(), PathBuf::from("./data/webhookd.db"));
        assert!(c.ack_wait() > c.delivery_timeout);
    }

    #[test]
    fn validation_names_the_option() {
        let mut c = Config::defaults();
        c.delivery_concurrency = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "--delivery-concurrency");
        assert!(e.to_string().contains("--delivery-concurrency"));
    }
}
