//! The Kafka source: a consumer-group member that reads the input topic and stores offsets only
//! when the pipeline says every record below them is finished (`enable.auto.offset.store=false`;
//! the stored offsets are committed in the background and once more at shutdown).
//!
//! Rebalances are followed explicitly ([`ownership`]): an offset is stored only for a partition
//! this member still owns under the assignment its record was read in, and the reader's pause
//! applies to partitions assigned while it lasts.

mod client;
mod lag;
mod ownership;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Timestamp;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};

use crate::config::KafkaSettings;
use crate::contract::{Header, InputRecord};
use crate::failure::{Failure, Reason};
use crate::kafka::headers::{self, RawHeader};
use crate::kafka::{KafkaContext, MetadataClient, has_topic, missing_topics};
use client::consumer_config;
pub use lag::PartitionLag;
pub use ownership::NOT_OWNED;
use ownership::{Ownership, SourceContext};

/// Why the source could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot reach the Kafka brokers at {brokers} within {timeout:?}: {source}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
    #[error("input topic {topic:?} does not exist on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot subscribe to {topic:?}: {source}")]
    Subscribe {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot commit offsets: {0}")]
    Commit(#[source] KafkaError),
    /// librdkafka gave the consumer up (a static member fenced by another with its
    /// `group.instance.id`, say): it owns no partition and never will again.
    #[error("the Kafka consumer failed for good ({code}): {reason}")]
    Fatal {
        code: RDKafkaErrorCode,
        reason: String,
    },
}

/// A record as consumed, with what the pipeline needs besides the plugin's view of it.
#[derive(Debug)]
pub struct Consumed {
    pub record: InputRecord,
    /// The assignment its partition was read under (see [`ownership`]).
    pub generation: u64,
    /// The headers byte for byte, when the record's own cannot say them exactly (a null value
    /// reaches the plugin as empty); its dead letter is written from these.
    pub exact_headers: Option<Vec<RawHeader>>,
    /// Why the record cannot go to the plugin at all; it is dead-lettered as it is.
    pub refused: Option<Failure>,
}

/// The consumer of the input topic.
pub struct Source {
    consumer: StreamConsumer<SourceContext>,
    ownership: Arc<Ownership>,
    lags: Arc<lag::Lags>,
    /// Exactly-once: offsets are committed by transactions.
    transactional: bool,
    topic: String,
    /// The topic's name as records carry it: shared, so that no record allocates it.
    shared_topic: Arc<str>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Creates the consumer, checks that the brokers answer and the input topic exists, and
    /// subscribes.
    ///
    /// # Errors
    /// [`SourceError`] naming the brokers or the topic.
    pub async fn connect(settings: &KafkaSettings) -> Result<Self, SourceError> {
        let config = consumer_config(settings);
        let ownership = Arc::new(Ownership::default());
        let lags = Arc::new(lag::Lags::default());
        let context = SourceContext {
            kafka: KafkaContext::default(),
            ownership: ownership.clone(),
            lags: lags.clone(),
        };
        let consumer: StreamConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(SourceError::Create)?;
        let topic = settings.input_topic.clone();
        let timeout = settings.startup_timeout;
        let (consumer, missing) = missing_topics(consumer, vec![topic.clone()], timeout)
            .await
            .map_err(|source| SourceError::Unreachable {
                brokers: settings.brokers.clone(),
                timeout,
                source,
            })?;
        if !missing.is_empty() {
            return Err(SourceError::NoTopic {
                topic,
                brokers: settings.brokers.clone(),
            });
        }
        consumer
            .subscribe(&[topic.as_str()])
            .map_err(|source| SourceError::Subscribe {
                topic: topic.clone(),
                source,
            })?;
        Ok(Self {
            consumer,
            ownership,
            lags,
            transactional: settings.delivery.is_exactly_once(),
            shared_topic: Arc::from(topic.as_str()),
            topic,
        })
    }

    /// Waits for the next record. Transient consumer errors are logged and skipped: librdkafka
    /// reconnects by itself.
    ///
    /// # Errors
    /// [`SourceError::Fatal`] once librdkafka has raised a fatal error: the consumer is
    /// unusable, and a run that went on would idle for ever owning nothing.
    pub async fn next(&self) -> Result<Consumed, SourceError> {
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    // Rebalance callbacks run inside `recv`, before any record of a new
                    // assignment is returned: the generation read now is the record's own.
                    let generation = self.ownership.generation(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    );
                    return Ok(to_record(&message, &self.shared_topic, generation));
                }
                Err(error) => {
                    // librdkafka hands the consumer a fatal error as an ordinary one with the
                    // code `_FATAL`; the client keeps the original code and reason.
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        return Err(SourceError::Fatal { code, reason });
                    }
                    tracing::warn!(topic = %self.topic, %error, "consumer error");
                }
            }
        }
    }

    /// Whether this member owns `partition` of `topic` now, under any assignment.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.ownership.owns(topic, partition)
    }

    /// Marks every record of the partition up to and including `offset` as finished, for the
    /// next commit, if the partition is still owned under the `generation` its records were
    /// read in. Otherwise nothing is stored: its current owner reads those records again.
    pub fn finished_up_to(&self, topic: &str, partition: i32, offset: i64, generation: u64) {
        let owned = self
            .ownership
            .while_owned(topic, partition, generation, || {
                if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                    tracing::debug!(topic, partition, offset, %error, "offset not stored");
                }
            });
        if !owned {
            tracing::debug!(
                topic,
                partition,
                offset,
                "partition no longer owned: offset not stored"
            );
        }
    }

    /// The consumer group's metadata for a transaction committing the input `positions`
    /// (topic, partition, generation), if every one of those partitions is still owned under
    /// its generation. Checked and taken under one lock, so the metadata names the generation
    /// of the group the records were read in: should a rebalance follow, the broker refuses
    /// the transaction's offsets.
    pub fn group_metadata_while_owned<'a>(
        &self,
        positions: impl Iterator<Item = (&'a str, i32, u64)>,
    ) -> Option<ConsumerGroupMetadata> {
        self.ownership
            .all_owned(positions, || self.consumer.group_metadata())
            .flatten()
    }

    /// A transaction committed everything below `next` in `partition` (read under
    /// `generation`): an abort rewinds no further back.
    pub fn committed_in_transaction(
        &self,
        topic: &str,
        partition: i32,
        generation: u64,
        next: i64,
    ) {
        self.ownership.committed(topic, partition, generation, next);
    }

    /// Moves every owned partition that has been read back to where no committed transaction
    /// covers it, so that what an aborted transaction held is read again. Blocks for up to
    /// `timeout` per partition. Returns how many partitions were moved.
    ///
    /// # Errors
    /// The first partition that could not be moved: reading on would skip its records.
    pub fn rewind(&self, timeout: Duration) -> Result<usize, KafkaError> {
        self.ownership.rewind(|topic, partition, offset| {
            self.consumer
                .seek(topic, partition, rdkafka::Offset::Offset(offset), timeout)
        })
    }

    /// Stops fetching from every assigned partition, and from any assigned until
    /// [`Source::resume`]; polling goes on.
    pub fn pause(&self) {
        self.ownership
            .set_paused(true, || self.apply_to_assignment(true));
    }

    /// Fetches again from every assigned partition.
    pub fn resume(&self) {
        self.ownership
            .set_paused(false, || self.apply_to_assignment(false));
        tracing::info!("consumption resumed");
    }

    /// Whether the reader asked for the partitions to be paused.
    pub fn is_paused(&self) -> bool {
        self.ownership.is_paused()
    }

    /// How many partitions this member owns now.
    pub fn owned_partitions(&self) -> usize {
        self.ownership.owned_count()
    }

    /// Each fetched partition's committed offset and end, as librdkafka's last statistics say;
    /// in exactly-once mode the committed offset is where this member's transactions left the
    /// partition (the statistics see only the consumer's own commits).
    pub fn lags(&self) -> Vec<PartitionLag> {
        let mut lags = self.lags.current();
        if self.transactional {
            for lag in &mut lags {
                if let Some(next) = self.ownership.rewind_point(&lag.topic, lag.partition) {
                    lag.committed = next;
                }
            }
        }
        lags
    }

    /// How many assignments this member has had since it started.
    pub fn assignments(&self) -> u64 {
        self.ownership.assignments()
    }

    fn apply_to_assignment(&self, paused: bool) {
        let applied = self.consumer.assignment().and_then(|assigned| {
            if paused {
                self.consumer.pause(&assigned)
            } else {
                self.consumer.resume(&assigned)
            }
        });
        if let Err(error) = applied {
            tracing::warn!(%error, paused, "cannot pause or resume the assigned partitions");
        }
    }

    /// Records waiting in the assigned partitions beyond what this member has read, summed:
    /// from its position, or the committed offset where it has read nothing yet (a partition
    /// paused since its assignment), to the high watermark. Asks the brokers, so it blocks for
    /// up to `timeout` per question. `None` when nothing is assigned or the brokers do not
    /// answer.
    pub fn waiting(&self, timeout: Duration) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        let mut unread = rdkafka::TopicPartitionList::new();
        for e in positions.elements() {
            if !matches!(e.offset(), rdkafka::Offset::Offset(_)) {
                unread.add_partition(e.topic(), e.partition());
            }
        }
        let committed = if unread.count() == 0 {
            unread
        } else {
            self.consumer.committed_offsets(unread, timeout).ok()?
        };
        let mut waiting = 0;
        for e in positions.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .ok()?;
            let from = match e.offset() {
                rdkafka::Offset::Offset(at) => at,
                _ => match committed
                    .find_partition(e.topic(), e.partition())
                    .map(|c| c.offset())
                {
                    Some(rdkafka::Offset::Offset(at)) => at,
                    _ => low,
                },
            };
            waiting += (high - from).max(0);
        }
        (positions.count() > 0).then_some(waiting)
    }

    /// Commits the stored offsets now, waiting for the broker's answer.
    ///
    /// # Errors
    /// [`SourceError::Commit`].
    pub fn commit(&self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(SourceError::Commit(e)),
        }
    }

    /// Leaves the group.
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

impl MetadataClient for StreamConsumer<SourceContext> {
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
        let md = self.fetch_metadata(Some(topic), timeout)?;
        Ok(has_topic(&md, topic))
    }
}

fn to_record(message: &BorrowedMessage<'_>, topic: &Arc<str>, generation: u64) -> Consumed {
    let raw = headers::read(message);
    let (headers, exact_headers, refused) = contract_headers(raw);
    let timestamp = match message.timestamp() {
        Timestamp::NotAvailable => None,
        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
    };
    let record = InputRecord {
        topic: if message.topic() == &**topic {
            topic.clone()
        } else {
            Arc::from(message.topic())
        },
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        fields: crate::contract::NO_FIELDS,
    };
    Consumed {
        record,
        generation,
        exact_headers,
        refused,
    }
}

/// The headers as the plugin contract has them (text keys, byte values), with the raw ones
/// kept when that loses something, and the reason the record is refused when a key is not
/// text.
fn contract_headers(raw: Vec<RawHeader>) -> (Vec<Header>, Option<Vec<RawHeader>>, Option<Failure>) {
    let exact = raw
        .iter()
        .all(|h| h.value.is_some() && std::str::from_utf8(&h.key).is_ok());
    if exact {
        let headers = raw
            .into_iter()
            .map(|h| Header {
                key: String::from_utf8(h.key).unwrap_or_default(),
                value: h.value.unwrap_or_default(),
            })
            .collect();
        return (headers, None, None);
    }
    let refused = raw
        .iter()
        .position(|h| std::str::from_utf8(&h.key).is_err())
        .map(|i| {
            Failure::new(
                Reason::InvalidHeader,
                format!(
                    "header {i}'s key is not UTF-8 ({}); the plugin contract takes text keys",
                    escape(&raw[i].key)
                ),
            )
        });
    let headers = raw
        .iter()
        .map(|h| Header {
            key: String::from_utf8_lossy(&h.key).into_owned(),
            value: h.value.clone().unwrap_or_default(),
        })
        .collect();
    (headers, Some(raw), refused)
}

/// Bytes as text, with what is not printable ASCII written `\xNN`; at most 64 bytes shown.
fn escape(bytes: &[u8]) -> String {
    let mut shown: String = bytes
        .iter()
        .take(64)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > 64 {
        shown.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    format!("\"{shown}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: &[u8], value: Option<&[u8]>) -> RawHeader {
        RawHeader {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn text_keys_with_values_reach_the_plugin_as_they_are() {
        let (headers, exact, refused) =
            contract_headers(vec![raw(b"a", Some(&[0, 255])), raw(b"a", Some(b""))]);
        assert_eq!(headers.len(), 2, "duplicates kept");
        assert_eq!(headers[0].value, [0, 255]);
        assert!(exact.is_none() && refused.is_none());
    }

    #[test]
    fn a_null_value_is_empty_for_the_plugin_and_kept_for_the_dead_letter() {
        let (headers, exact, refused) = contract_headers(vec![raw(b"n", None)]);
        assert_eq!(headers[0].value, b"");
        assert_eq!(exact, Some(vec![raw(b"n", None)]));
        assert!(refused.is_none());
    }

    #[test]
    fn a_key_that_is_not_text_refuses_the_record_naming_the_header() {
        let original = vec![raw(b"ok", Some(b"1")), raw(&[0xff, b'x'], Some(b"2"))];
        let (_, exact, refused) = contract_headers(original.clone());
        let refused = refused.expect("refused");
        assert_eq!(refused.reason, Reason::InvalidHeader);
        assert!(
            refused.message.contains("header 1") && refused.message.contains("\\xffx"),
            "{}",
            refused.message
        );
        assert_eq!(
            exact,
            Some(original),
            "the dead letter gets the bytes as they came"
        );
    }
}
