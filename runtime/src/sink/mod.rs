//! The Kafka sink: produces output records and dead letters, and hands back a future per record
//! that resolves when the broker has acknowledged it. The pipeline counts a record as finished
//! only once all of its acknowledgements are in.
//!
//! In exactly-once mode the producer is transactional: the pipeline opens a transaction before
//! it sends, and commits it with the input offsets it covers ([`Sink::commit`]) or aborts it.

mod dead_letter;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::config::{Delivery, KafkaSettings, defaults};
use crate::contract::{InputRecord, OutputRecord};
use crate::failure::Failure;
use crate::kafka::headers::{self, RawHeader};
use crate::kafka::{KafkaContext, MetadataClient, has_topic, missing_topics};
pub use dead_letter::Form;

/// The header naming the plugin (by content digest) that made an output or refused an input.
pub const PLUGIN_DIGEST_HEADER: &str = "plugin-digest";

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE: usize = 1_000_000;

/// How long to wait before retrying a transactional call librdkafka calls retriable (a commit
/// still in progress, a coordinator moving).
const TRANSACTION_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How long to wait before retrying when librdkafka's send queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// A record's headers followed by the runtime's own.
fn build_headers<'h>(
    headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    extra: &[(&str, &[u8])],
) -> OwnedHeaders {
    let mut built = headers::Builder::with_capacity(headers.len() + extra.len());
    for (k, v) in headers {
        built.add(k, v);
    }
    for (k, v) in extra {
        built.add(k.as_bytes(), Some(v));
    }
    built.build()
}

/// Why a record could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot reach the Kafka brokers at {brokers} within {timeout:?}: {source}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
    #[error("output topic {topic:?} does not exist on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot produce to {topic:?}: {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the broker did not acknowledge a record for {topic:?}: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot start transactions as {id:?}: {source}")]
    InitTransactions {
        id: String,
        #[source]
        source: KafkaError,
    },
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The transaction must be aborted and its records read again; the producer goes on.
    #[error("the transaction must be aborted: {0}")]
    Abortable(#[source] KafkaError),
    /// The producer cannot go on: another instance took over its transactional id (fenced), or
    /// the brokers refused transactions for good.
    #[error("the transactional producer cannot go on: {0}")]
    Fatal(#[source] KafkaError),
    /// Another producer with the same transactional id took over.
    #[error("another instance took over this one's transactional id (fenced): {0}")]
    Fenced(#[source] KafkaError),
    /// The abort itself failed: the brokers are gone, or (a broker that closes the connection
    /// rather than say so) another instance fenced this one.
    #[error(
        "cannot abort the transaction (the brokers unreachable, or another instance with the same transactional id fenced this one): {0}"
    )]
    AbortFailed(#[source] KafkaError),
}

impl TransactionError {
    fn of(error: KafkaError) -> Self {
        // librdkafka calls some fencings abortable; aborting then waits for a coordinator that
        // no longer answers this producer.
        match &error {
            _ if is_fencing(&error) => Self::Fenced(error),
            KafkaError::Transaction(e) if e.is_fatal() => Self::Fatal(error),
            _ => Self::Abortable(error),
        }
    }
}

/// Whether `error` says another producer with the same transactional id took over. (An
/// `INVALID_PRODUCER_EPOCH` alone can also mean the broker timed the transaction out, which an
/// abort mends; librdkafka marks it fatal when it is a fencing.)
fn is_fencing(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::ProducerFenced | C::Fenced)
    )
}

/// Calls `step` until it succeeds, fails in a way a retry cannot mend, or `until` passes.
fn retrying(
    until: std::time::Instant,
    step: impl Fn(Duration) -> Result<(), KafkaError>,
) -> Result<(), TransactionError> {
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match step(left) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && !left.is_zero() => {
                tracing::debug!(error = %e, "transaction step failed; retrying");
                std::thread::sleep(TRANSACTION_RETRY_BACKOFF.min(left));
            }
            Err(error) => return Err(TransactionError::of(error)),
        }
    }
}

impl SinkError {
    /// Whether the broker (or its client) refused this one record for good: too large, a
    /// topic that does not exist or may not be written, a record it calls invalid. Such a
    /// record's input is dead-lettered; any other failure (the brokers unreachable until
    /// `message.timeout.ms`) stops the run, since every record would fail alike.
    pub fn refused_for_good(&self) -> bool {
        use RDKafkaErrorCode as C;
        let (Self::Produce { source, .. } | Self::Delivery { source, .. }) = self else {
            return false;
        };
        matches!(
            source.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::MessageBatchTooLarge
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::PolicyViolation
                    | C::UnknownTopic
                    | C::UnknownPartition
                    | C::UnknownTopicOrPartition
            )
        )
    }
}

impl SinkError {
    /// Whether another producer with the same transactional id took over: nothing this one
    /// sends can commit any more.
    pub fn fenced(&self) -> bool {
        match self {
            Self::Produce { source, .. } | Self::Delivery { source, .. } => is_fencing(source),
            _ => false,
        }
    }
}

/// The producer of output records and dead letters.
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer<KafkaContext>,
    /// Shared with every pending record, which names its topic should delivery fail.
    output_topic: Arc<str>,
    dead_letter_topic: Arc<str>,
    /// The producer's `message.max.bytes`: dead letters are cut to fit it.
    max_message: usize,
    transactional: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("output_topic", &self.output_topic)
            .finish_non_exhaustive()
    }
}

impl MetadataClient for FutureProducer<KafkaContext> {
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
        let md = self.client().fetch_metadata(Some(topic), timeout)?;
        Ok(has_topic(&md, topic))
    }
}

/// A produced record awaiting its acknowledgement.
pub struct Pending {
    topic: Arc<str>,
    delivery: DeliveryFuture,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits for the broker's acknowledgement.
    ///
    /// # Errors
    /// [`SinkError::Delivery`] when librdkafka gave up on the record (after its own retries).
    pub async fn acknowledged(self) -> Result<(), SinkError> {
        match self.delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((source, _))) => Err(SinkError::Delivery {
                topic: self.topic.to_string(),
                source,
            }),
            Err(_) => Err(SinkError::Delivery {
                topic: self.topic.to_string(),
                source: KafkaError::Canceled,
            }),
        }
    }
}

impl Sink {
    /// Creates an idempotent producer (transactional in exactly-once mode, fencing any earlier
    /// producer with its transactional id) and checks that the output and dead-letter topics
    /// exist.
    ///
    /// # Errors
    /// [`SinkError`] naming the brokers, the missing topic or the transactional id.
    pub async fn connect(settings: &KafkaSettings) -> Result<Self, SinkError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let transactional_id = match &settings.delivery {
            Delivery::AtLeastOnce => None,
            Delivery::ExactlyOnce {
                transactional_id, ..
            } => {
                config
                    .set("transactional.id", transactional_id)
                    .set("transaction.timeout.ms", defaults::TRANSACTION_TIMEOUT_MS);
                Some(transactional_id.clone())
            }
        };
        for (k, v) in &settings.producer.0 {
            config.set(k, v);
        }
        let producer: FutureProducer<KafkaContext> = config
            .create_with_context(KafkaContext::default())
            .map_err(SinkError::Create)?;
        let topics = vec![
            settings.output_topic.clone(),
            settings.dead_letter_topic.clone(),
        ];
        let timeout = settings.startup_timeout;
        let (producer, missing) =
            missing_topics(producer, topics, timeout)
                .await
                .map_err(|source| SinkError::Unreachable {
                    brokers: settings.brokers.clone(),
                    timeout,
                    source,
                })?;
        if let Some(topic) = missing.into_iter().next() {
            return Err(SinkError::NoTopic {
                topic,
                brokers: settings.brokers.clone(),
            });
        }
        let max_message = settings
            .producer
            .0
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE);
        if let Some(id) = &transactional_id {
            let starting = producer.clone();
            tokio::task::spawn_blocking(move || starting.init_transactions(timeout))
                .await
                .unwrap_or(Err(KafkaError::Canceled))
                .map_err(|source| SinkError::InitTransactions {
                    id: id.clone(),
                    source,
                })?;
            tracing::info!(transactional_id = %id, "transactions ready");
        }
        Ok(Self {
            producer,
            output_topic: settings.output_topic.as_str().into(),
            dead_letter_topic: settings.dead_letter_topic.as_str().into(),
            max_message,
            transactional: transactional_id.is_some(),
        })
    }

    /// Whether records are produced in transactions (exactly-once mode).
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Opens a transaction; every record sent until [`Sink::commit`] or [`Sink::abort`]
    /// belongs to it.
    ///
    /// # Errors
    /// [`TransactionError`] when the producer is in no state to open one.
    pub fn begin(&self) -> Result<(), TransactionError> {
        self.producer
            .begin_transaction()
            .map_err(TransactionError::of)
    }

    /// Adds the input `offsets` (the next offset to read, per partition) to the open transaction
    /// and commits it, retrying what may be retried until `timeout`. Blocks.
    ///
    /// # Errors
    /// [`TransactionError::Abortable`] when the transaction must be aborted (a record in it
    /// failed, the group rebalanced, the time ran out), [`TransactionError::Fatal`] when the
    /// producer was fenced.
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), TransactionError> {
        let until = std::time::Instant::now() + timeout;
        if offsets.count() > 0 {
            retrying(until, |left| {
                self.producer
                    .send_offsets_to_transaction(offsets, group, left)
            })?;
        }
        retrying(until, |left| self.producer.commit_transaction(left))
    }

    /// Aborts the open transaction: its records are never shown to `read_committed` readers.
    /// Blocks for up to `timeout`.
    ///
    /// # Errors
    /// [`TransactionError`] when the abort itself fails; the producer cannot go on then.
    pub fn abort(&self, timeout: Duration) -> Result<(), TransactionError> {
        let until = std::time::Instant::now() + timeout;
        retrying(until, |left| self.producer.abort_transaction(left)).map_err(|e| match e {
            TransactionError::Abortable(source) => TransactionError::AbortFailed(source),
            fatal => fatal,
        })
    }

    /// Enqueues one output record; its topic is the plugin's choice or the output topic.
    ///
    /// # Errors
    /// [`SinkError::Produce`] when librdkafka refuses the record (too large, unknown topic).
    pub async fn send(
        &self,
        record: &OutputRecord,
        extra: &[(&str, &[u8])],
    ) -> Result<Pending, SinkError> {
        let topic = match record.topic.as_deref() {
            None => self.output_topic.clone(),
            Some(named) if *named == *self.output_topic => self.output_topic.clone(),
            Some(named) => Arc::from(named),
        };
        let headers = record
            .headers
            .iter()
            .map(|h| (h.key.as_bytes(), Some(h.value.as_slice())));
        let headers = build_headers(headers, extra);
        self.enqueue(
            topic,
            record.key.as_deref(),
            record.value.as_deref(),
            headers,
        )
        .await
    }

    /// Enqueues the dead letter of `input`: its key, value and headers as consumed (`exact`
    /// headers when the record's own could not hold them byte for byte), plus the reason and
    /// where it came from, cut to fit the size limit as [`Form`] says.
    ///
    /// # Errors
    /// As [`Sink::send`].
    pub async fn send_dead_letter(
        &self,
        input: &InputRecord,
        exact: Option<&[RawHeader]>,
        failure: &Failure,
        plugin_digest: &str,
        form: Form,
    ) -> Result<Pending, SinkError> {
        let letter =
            dead_letter::shape(input, exact, failure, plugin_digest, self.max_message, form);
        let notes: Vec<(&str, &[u8])> = letter
            .notes
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let headers = build_headers(letter.headers.iter().copied(), &notes);
        self.enqueue(
            self.dead_letter_topic.clone(),
            letter.key,
            letter.value,
            headers,
        )
        .await
    }

    async fn enqueue(
        &self,
        topic: Arc<str>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<Pending, SinkError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(Pending { topic, delivery }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((source, _)) => {
                    return Err(SinkError::Produce {
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// Waits until every enqueued record is acknowledged or `timeout` passes.
    ///
    /// # Errors
    /// [`SinkError::Delivery`] when records were still unacknowledged at the timeout.
    pub fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.producer
            .flush(timeout)
            .map_err(|source| SinkError::Delivery {
                topic: self.output_topic.to_string(),
                source,
            })
    }
}
