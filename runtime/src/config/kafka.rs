//! The `[kafka]` section: brokers, topics, the group, the delivery mode and its cadence, and
//! the librdkafka properties passed through under the guards.

use std::path::Path;
use std::time::Duration;

use super::guards::{CONSUMER_GUARDS, CONSUMER_GUARDS_EXACTLY_ONCE, PRODUCER_GUARDS};
use super::reader::Section;
use super::{Guard, Passthrough, defaults};

#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    /// How long to wait for the broker at start-up before refusing to start.
    pub startup_timeout: Duration,
    /// Passed to librdkafka's consumer as they are.
    pub consumer: Passthrough,
    /// Passed to librdkafka's producer as they are.
    pub producer: Passthrough,
    pub delivery: Delivery,
}

/// What a record's outputs may become downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every record's outputs at least once: offsets are stored behind acknowledged outputs and
    /// committed every `commit_interval`.
    AtLeastOnce { commit_interval: Duration },
    /// Every record's outputs exactly once for `read_committed` readers: outputs, dead letters
    /// and the input offsets are written in one transaction per `interval`.
    ExactlyOnce {
        interval: Duration,
        transactional_id: String,
    },
}

impl Default for Delivery {
    fn default() -> Self {
        Self::AtLeastOnce {
            commit_interval: defaults::COMMIT_INTERVAL,
        }
    }
}

impl Delivery {
    pub fn is_exactly_once(&self) -> bool {
        matches!(self, Self::ExactlyOnce { .. })
    }
}

pub(super) fn read_kafka(mut s: Section<'_>, config_dir: &Path) -> KafkaSettings {
    let brokers = s.string("brokers");
    let group_id = s.string("group-id");
    let input_topic = s.string("input-topic");
    let output_topic = s.string("output-topic");
    let dead_letter_topic = s.string("dead-letter-topic");
    if !dead_letter_topic.is_empty() && dead_letter_topic == input_topic {
        s.problem("dead-letter-topic", "must differ from input-topic");
    }
    if !output_topic.is_empty() && output_topic == input_topic {
        s.problem("output-topic", "must differ from input-topic");
    }
    let startup_timeout = s.duration("startup-timeout", defaults::STARTUP_TIMEOUT);
    let delivery = read_delivery(&mut s, &group_id);
    let consumer_guards = match delivery {
        Delivery::AtLeastOnce { .. } => CONSUMER_GUARDS,
        Delivery::ExactlyOnce { .. } => CONSUMER_GUARDS_EXACTLY_ONCE,
    };
    let consumer = passthrough(&mut s, "consumer", consumer_guards, config_dir);
    let producer = passthrough(&mut s, "producer", PRODUCER_GUARDS, config_dir);
    KafkaSettings {
        brokers,
        group_id,
        input_topic,
        output_topic,
        dead_letter_topic,
        startup_timeout,
        consumer,
        producer,
        delivery,
    }
}

/// `delivery`, with `commit-interval` in at-least-once mode, `transaction-interval` and
/// `transactional-id` in exactly-once mode.
fn read_delivery(s: &mut Section<'_>, group_id: &str) -> Delivery {
    let id = s.optional_string("transactional-id");
    match s.optional_string("delivery").as_deref() {
        None | Some("at-least-once") => {
            let interval = s.optional_string("transaction-interval");
            for (key, given) in [("transaction-interval", interval), ("transactional-id", id)] {
                if given.is_some() {
                    s.problem(key, "applies only with delivery = \"exactly-once\"");
                }
            }
            let commit_interval = s.duration("commit-interval", defaults::COMMIT_INTERVAL);
            if commit_interval < Duration::from_millis(1) {
                s.problem("commit-interval", "must be at least 1ms");
            }
            Delivery::AtLeastOnce { commit_interval }
        }
        Some("exactly-once") => {
            if s.optional_string("commit-interval").is_some() {
                s.problem(
                    "commit-interval",
                    "applies only with delivery = \"at-least-once\" (transactions commit the offsets: see transaction-interval)",
                );
            }
            let interval = s.duration("transaction-interval", defaults::TRANSACTION_INTERVAL);
            let transactional_id = match id {
                Some(id) if id.trim().is_empty() => {
                    s.problem("transactional-id", "must not be empty");
                    id
                }
                Some(id) => id,
                None => format!("{group_id}-{}-{}", host_name(), std::process::id()),
            };
            Delivery::ExactlyOnce {
                interval,
                transactional_id,
            }
        }
        Some(other) => {
            s.problem(
                "delivery",
                format!("expected \"at-least-once\" or \"exactly-once\", found {other:?}"),
            );
            Delivery::default()
        }
    }
}

/// This machine's name (a pod's name in Kubernetes), so that instances in one group get
/// distinct transactional ids by default.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn passthrough(s: &mut Section<'_>, key: &str, guards: &[Guard], dir: &Path) -> Passthrough {
    Passthrough(s.section(key).string_map(guards, dir))
}
