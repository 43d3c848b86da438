//! What the source and the sink share about Kafka: a client context that turns librdkafka's
//! logs and errors into `tracing` events without flooding (a broker that is down reports the
//! same failure every few milliseconds), and the start-up check that the brokers answer and the
//! topics exist.

pub mod headers;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// The same message is logged again only after this long.
const REPEAT_AFTER: Duration = Duration::from_secs(10);
/// Distinct messages remembered at once; the memory is cleared when it is full.
const REMEMBERED: usize = 64;

/// The librdkafka client context of every consumer and producer of the runtime.
#[derive(Debug, Default)]
pub struct KafkaContext {
    logged: Mutex<HashMap<String, Instant>>,
}

impl KafkaContext {
    /// Whether `message` was not logged within the last [`REPEAT_AFTER`].
    fn fresh(&self, message: &str) -> bool {
        let Ok(mut logged) = self.logged.lock() else {
            return true;
        };
        let now = Instant::now();
        if let Some(at) = logged.get_mut(message) {
            if now.duration_since(*at) < REPEAT_AFTER {
                return false;
            }
            *at = now;
            return true;
        }
        if logged.len() >= REMEMBERED {
            logged.clear();
        }
        logged.insert(message.to_owned(), now);
        true
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.fresh(message) {
                    tracing::warn!(target: "librdkafka", facility, "{message}");
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The client retries by itself; a failure that lasts is reported by whoever waits on it.
        if self.fresh(reason) {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
    }
}

/// A Kafka client that can tell whether a topic exists.
pub(crate) trait MetadataClient {
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, KafkaError>;
}

/// Whether `metadata` shows `topic` as existing, readable and with partitions.
pub(crate) fn has_topic(metadata: &rdkafka::metadata::Metadata, topic: &str) -> bool {
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// Fetches metadata of `topics` on a blocking thread (librdkafka's call blocks) and returns
/// the client with the topics that do not exist.
///
/// # Errors
/// The client's error when the brokers do not answer within `timeout`.
pub(crate) async fn missing_topics<C>(
    client: C,
    topics: Vec<String>,
    timeout: Duration,
) -> Result<(C, Vec<String>), KafkaError>
where
    C: MetadataClient + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for topic in topics {
            if !client.topic_exists(&topic, timeout)? {
                missing.push(topic);
            }
        }
        Ok((client, missing))
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Why Kafka would refuse `name` as a topic name (its rules: 1 to 249 characters of ASCII
/// letters, digits, `.`, `_` and `-`, and neither `.` nor `..`), or `None` if it is valid.
pub(crate) fn invalid_topic_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 249 {
        Some("is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("is not a topic name")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("holds characters other than ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert_eq!(invalid_topic_name("fraud-scores_v2.eu"), None);
        for bad in ["", ".", "..", "a b", "scores/eu", "émoi", &"x".repeat(250)] {
            assert!(invalid_topic_name(bad).is_some(), "{bad:?}");
        }
        assert_eq!(invalid_topic_name(&"x".repeat(249)), None);
    }

    #[test]
    fn repeated_messages_are_suppressed_even_when_they_alternate() {
        let context = KafkaContext::default();
        assert!(context.fresh("1/1 brokers are down"));
        assert!(context.fresh("0/1 brokers are down"));
        assert!(!context.fresh("1/1 brokers are down"));
        assert!(!context.fresh("0/1 brokers are down"));
        assert!(context.fresh("connection refused"));
    }
}
