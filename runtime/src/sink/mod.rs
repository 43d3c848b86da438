//! The Kafka sink: produces output records and dead letters, each with a token of the
//! pipeline's; the broker's acknowledgements come back with those tokens through [`Acks`]. The
//! pipeline counts a record as finished only once all of its acknowledgements are in.
//!
//! In exactly-once mode the producer is transactional: the pipeline opens a transaction before
//! it sends, and commits it with the input offsets it covers ([`Sink::commit`]) or aborts it.

mod acks;
mod dead_letter;
mod error;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::config::{Delivery, KafkaSettings, defaults};
use crate::contract::{InputRecord, OutputRecord};
use crate::failure::Failure;
use crate::kafka::headers::{self, RawHeader};
use crate::kafka::{MetadataClient, has_topic, missing_topics};
pub use acks::{Ack, Acks, SinkContext};
pub use dead_letter::Form;
use error::retrying;
pub use error::{SinkError, TransactionError};

/// The header naming the plugin (by content digest) that made an output or refused an input.
pub const PLUGIN_DIGEST_HEADER: &str = "plugin-digest";

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE: usize = 1_000_000;

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

/// Whether the producer took a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Sent {
    Queued,
    /// librdkafka's queue is full (`queue.buffering.max.messages`/`kbytes`): send it again once
    /// acknowledgements have made room.
    Full,
}

/// The producer of output records and dead letters.
#[derive(Clone)]
pub struct Sink {
    producer: Arc<ThreadedProducer<SinkContext>>,
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

impl MetadataClient for ThreadedProducer<SinkContext> {
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
        let md = self.client().fetch_metadata(Some(topic), timeout)?;
        Ok(has_topic(&md, topic))
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
            Delivery::AtLeastOnce { .. } => None,
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
        let producer: ThreadedProducer<SinkContext> = config
            .create_with_context(SinkContext::default())
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
        let producer = Arc::new(producer);
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
    /// failed, the group rebalanced, the offsets were not taken in time),
    /// [`TransactionError::Undecided`] when the commit itself did not finish within `timeout`,
    /// [`TransactionError::Fatal`] when the producer was fenced.
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
        // A commit still retriable when the time is up is undecided, not abortable: librdkafka
        // holds it in its committing state, where an abort is refused.
        retrying(until, |left| self.producer.commit_transaction(left)).map_err(|e| match e {
            TransactionError::Abortable(source) if error::is_retriable(&source) => {
                TransactionError::Undecided(timeout)
            }
            other => other,
        })
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

    /// Where the producer's acknowledgements come in.
    pub fn acks(&self) -> &Arc<Acks> {
        &self.producer.context().acks
    }

    /// Enqueues one output record with `token`; its topic is the plugin's choice or the output
    /// topic.
    ///
    /// # Errors
    /// [`SinkError::Produce`] when librdkafka refuses the record (too large, unknown topic).
    pub fn send(
        &self,
        record: &OutputRecord,
        extra: &[(&str, &[u8])],
        token: usize,
    ) -> Result<Sent, SinkError> {
        let topic = record.topic.as_deref().unwrap_or(&self.output_topic);
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
            token,
        )
    }

    /// Enqueues the dead letter of `input` with `token`: its key, value and headers as consumed
    /// (`exact` headers when the record's own could not hold them byte for byte), plus the
    /// reason and where it came from, cut to fit the size limit as [`Form`] says.
    ///
    /// # Errors
    /// As [`Sink::send`].
    pub fn send_dead_letter(
        &self,
        input: &InputRecord,
        exact: Option<&[RawHeader]>,
        failure: &Failure,
        plugin_digest: &str,
        form: Form,
        token: usize,
    ) -> Result<Sent, SinkError> {
        let letter =
            dead_letter::shape(input, exact, failure, plugin_digest, self.max_message, form);
        let notes: Vec<(&str, &[u8])> = letter
            .notes
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let headers = build_headers(letter.headers.iter().copied(), &notes);
        self.enqueue(
            &self.dead_letter_topic,
            letter.key,
            letter.value,
            headers,
            token,
        )
    }

    fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: OwnedHeaders,
        token: usize,
    ) -> Result<Sent, SinkError> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, token).headers(headers);
        record.key = key;
        record.payload = value;
        match self.producer.send(record) {
            Ok(()) => Ok(Sent::Queued),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(Sent::Full),
            Err((source, _)) => Err(SinkError::Produce {
                topic: topic.to_owned(),
                source,
            }),
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
