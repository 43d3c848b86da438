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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{MINIMAL, parse, problems};
    use super::super::*;

    #[test]
    fn runtime_owned_kafka_properties_are_refused() {
        let text = format!("{MINIMAL}\n[kafka.consumer]\n\"enable.auto.offset.store\" = true\n");
        let found = problems(parse(&text, &[]).expect_err("invalid"));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("kafka.consumer.\"enable.auto.offset.store\""),
            "{found:?}"
        );
    }

    #[test]
    fn settings_that_weaken_the_guarantee_are_refused_with_the_reason() {
        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = false\n\
             \"auto.commit.interval.ms\" = 0\n\
             [kafka.producer]\nacks = \"1\"\n\"enable.idempotence\" = false\n\
             \"request.required.acks\" = 0\n"
        );
        let found = problems(parse(&text, &[]).expect_err("invalid"));
        assert_eq!(found.len(), 5, "{found:?}");
        let about = |key: &str| {
            found
                .iter()
                .find(|p| p.starts_with(key))
                .unwrap_or_else(|| panic!("no problem for {key}: {found:?}"))
                .clone()
        };
        assert!(
            about("kafka.consumer.\"enable.auto.commit\"").contains("committed only at shutdown")
        );
        // The commit cadence is the runtime's setting (librdkafka takes 0 for auto-commit off).
        let interval = about("kafka.consumer.\"auto.commit.interval.ms\"");
        assert!(
            interval.contains("set by the runtime") && interval.contains("kafka.commit-interval"),
            "{interval}"
        );
        let acks = about("kafka.producer.acks");
        assert!(
            acks.contains("\"1\"") && acks.contains("can be lost") && acks.contains("all"),
            "{acks}"
        );
        assert!(about("kafka.producer.\"enable.idempotence\"").contains("duplicate"));
        assert!(about("kafka.producer.\"request.required.acks\"").contains("can be lost"));

        // The values that keep the guarantee are fine, in any case.
        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = true\n\
             [kafka.producer]\nacks = \"ALL\"\n\"enable.idempotence\" = true\n"
        );
        assert!(parse(&text, &[]).is_ok());
    }

    #[test]
    fn the_commit_interval_belongs_to_at_least_once_mode() {
        let s = parse(MINIMAL, &["kafka.commit-interval=\"250ms\""]).expect("valid");
        assert_eq!(
            s.kafka.delivery,
            Delivery::AtLeastOnce {
                commit_interval: Duration::from_millis(250)
            }
        );
        let found = problems(
            parse(
                MINIMAL,
                &[
                    "kafka.delivery=\"exactly-once\"",
                    "kafka.commit-interval=\"1s\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("kafka.commit-interval") && found[0].contains("at-least-once"),
            "{found:?}"
        );
        // Below a millisecond librdkafka would get 0, which it reads as "never commit".
        let found =
            problems(parse(MINIMAL, &["kafka.commit-interval=\"500us\""]).expect_err("invalid"));
        assert!(found[0].contains("at least 1ms"), "{found:?}");
    }

    #[test]
    fn delivery_is_at_least_once_unless_exactly_once_is_asked_for() {
        let s = parse(MINIMAL, &[]).expect("valid");
        assert_eq!(s.kafka.delivery, Delivery::default());
        let s = parse(
            MINIMAL,
            &[
                "kafka.delivery=\"exactly-once\"",
                "kafka.transaction-interval=\"250ms\"",
                "kafka.transactional-id=\"scorer-3\"",
            ],
        )
        .expect("valid");
        assert_eq!(
            s.kafka.delivery,
            Delivery::ExactlyOnce {
                interval: Duration::from_millis(250),
                transactional_id: "scorer-3".into()
            }
        );
        let s = parse(MINIMAL, &["kafka.delivery=\"exactly-once\""]).expect("valid");
        let Delivery::ExactlyOnce {
            interval,
            transactional_id,
        } = s.kafka.delivery
        else {
            panic!("exactly-once asked for");
        };
        assert_eq!(interval, defaults::TRANSACTION_INTERVAL);
        assert!(
            transactional_id.starts_with("g-")
                && transactional_id.ends_with(&std::process::id().to_string()),
            "by default the group, the host and the process: {transactional_id}"
        );
    }

    #[test]
    fn exactly_once_settings_are_checked_together() {
        let found = problems(
            parse(
                MINIMAL,
                &[
                    "kafka.transaction-interval=\"1s\"",
                    "kafka.transactional-id=\"x\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().all(|p| p.contains("only with delivery")),
            "{found:?}"
        );
        let found =
            problems(parse(MINIMAL, &["kafka.delivery=\"at-most-once\""]).expect_err("invalid"));
        assert!(
            found.len() == 1 && found[0].contains("\"exactly-once\""),
            "{found:?}"
        );

        let text = format!(
            "{MINIMAL}\n[kafka.consumer]\n\"enable.auto.commit\" = true\n\
             \"isolation.level\" = \"read_uncommitted\"\n\
             [kafka.producer]\n\"transactional.id\" = \"mine\"\n"
        );
        let found = problems(
            parse(
                &text,
                &[
                    "kafka.delivery=\"exactly-once\"",
                    "kafka.transaction-interval=\"0s\"",
                ],
            )
            .expect_err("invalid"),
        );
        assert_eq!(found.len(), 4, "{found:?}");
        for (key, says) in [
            ("kafka.transaction-interval", "longer than zero"),
            (
                "kafka.consumer.\"enable.auto.commit\"",
                "set by the runtime",
            ),
            ("kafka.consumer.\"isolation.level\"", "aborted upstream"),
            ("kafka.producer.\"transactional.id\"", "set by the runtime"),
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key) && p.contains(says)),
                "{key}: {found:?}"
            );
        }
    }
}
