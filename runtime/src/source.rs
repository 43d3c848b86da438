//! The Kafka source: a consumer-group member that reads the input topic and stores offsets only
//! when the pipeline says every record below them is finished (`enable.auto.offset.store=false`;
//! the stored offsets are committed in the background and once more at shutdown).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Timestamp};

use crate::config::KafkaSettings;
use crate::contract::{Header, InputRecord};
use crate::kafka::{KafkaContext, MetadataClient, has_topic, missing_topics};

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
}

/// The consumer of the input topic.
pub struct Source {
    consumer: StreamConsumer<KafkaContext>,
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
        let consumer: StreamConsumer<KafkaContext> = config
            .create_with_context(KafkaContext::default())
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
            shared_topic: Arc::from(topic.as_str()),
            topic,
        })
    }

    /// Waits for the next record. Transient consumer errors are logged and skipped: librdkafka
    /// reconnects by itself.
    pub async fn next(&self) -> InputRecord {
        loop {
            match self.consumer.recv().await {
                Ok(message) => return to_record(&message, &self.shared_topic),
                Err(error) => tracing::warn!(topic = %self.topic, %error, "consumer error"),
            }
        }
    }

    /// Marks every record of the partition up to and including `offset` as finished, for the
    /// next commit. A partition this member no longer holds cannot be stored; its records will
    /// be read again by its new owner.
    pub fn finished_up_to(&self, topic: &str, partition: i32, offset: i64) {
        if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
            tracing::debug!(topic, partition, offset, %error, "offset not stored");
        }
    }

    /// Stops fetching from every assigned partition; polling goes on.
    pub fn pause(&self) {
        match self.consumer.assignment() {
            Ok(assigned) => {
                if let Err(error) = self.consumer.pause(&assigned) {
                    tracing::warn!(%error, "cannot pause partitions");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the assignment to pause it"),
        }
    }

    /// Fetches again from every assigned partition.
    pub fn resume(&self) {
        match self.consumer.assignment() {
            Ok(assigned) => match self.consumer.resume(&assigned) {
                Ok(()) => tracing::info!("consumption resumed"),
                Err(error) => tracing::warn!(%error, "cannot resume partitions"),
            },
            Err(error) => tracing::warn!(%error, "cannot read the assignment to resume it"),
        }
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

/// The consumer's librdkafka properties: the runtime's own, then its defaults, then what
/// `[kafka.consumer]` sets (which wins over the defaults; owned keys are refused by the config).
fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in crate::config::defaults::CONSUMER {
        config.set(*k, *v);
    }
    for (k, v) in &settings.consumer.0 {
        config.set(k, v);
    }
    config
}

impl MetadataClient for StreamConsumer<KafkaContext> {
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
        let md = self.fetch_metadata(Some(topic), timeout)?;
        Ok(has_topic(&md, topic))
    }
}

fn to_record(message: &BorrowedMessage<'_>, topic: &Arc<str>) -> InputRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_owned(),
                    value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let timestamp = match message.timestamp() {
        Timestamp::NotAvailable => None,
        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
    };
    InputRecord {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Passthrough;

    #[test]
    fn consumer_defaults_apply_unless_the_config_sets_them() {
        let mut settings = KafkaSettings::default();
        let defaulted = consumer_config(&settings);
        for (key, value) in crate::config::defaults::CONSUMER {
            assert_eq!(defaulted.get(key), Some(*value), "{key}");
        }
        assert_eq!(defaulted.get("enable.auto.offset.store"), Some("false"));

        settings.consumer = Passthrough(vec![("fetch.wait.max.ms".into(), "500".into())]);
        let overridden = consumer_config(&settings);
        assert_eq!(overridden.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(overridden.get("queued.max.messages.kbytes"), Some("16384"));
    }
}
