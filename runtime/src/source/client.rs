//! The consumer's librdkafka properties.

use rdkafka::ClientConfig;

use crate::config::{Delivery, KafkaSettings};

/// The consumer's librdkafka properties: the runtime's own, then its defaults, then what
/// `[kafka.consumer]` sets (which wins over the defaults; owned keys are refused by the config).
pub(super) fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    match &settings.delivery {
        Delivery::AtLeastOnce { commit_interval } => {
            // Whole milliseconds, never 0: librdkafka reads 0 as "auto-commit off".
            let ms = commit_interval.as_millis().max(1);
            config.set("auto.commit.interval.ms", ms.to_string());
        }
        // Transactions commit the offsets; librdkafka never does.
        Delivery::ExactlyOnce { .. } => {
            config.set("enable.auto.commit", "false");
        }
    }
    for (k, v) in crate::config::defaults::CONSUMER {
        config.set(*k, *v);
    }
    for (k, v) in &settings.consumer.0 {
        config.set(k, v);
    }
    config
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
        assert_eq!(
            defaulted.get("auto.commit.interval.ms"),
            Some("200"),
            "kafka.commit-interval's default"
        );

        settings.consumer = Passthrough(vec![("fetch.wait.max.ms".into(), "500".into())]);
        let overridden = consumer_config(&settings);
        assert_eq!(overridden.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(overridden.get("queued.max.messages.kbytes"), Some("16384"));
    }
}
