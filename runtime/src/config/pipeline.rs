//! The `[pipeline]` section: batches, order, what may be in flight, and the drain's deadline.

use std::time::Duration;

use super::reader::Section;
use super::{Delivery, defaults};

/// Which outputs keep the order of their inputs (`pipeline.order`). In every mode the committed
/// offset of a partition only passes records that are finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// A partition's outputs come in its order; batches of other partitions may pass a slow
    /// one. Each partition's records go to one plugin instance.
    #[default]
    Partition,
    /// The outputs of one key come in its order; others may pass them, and a partition's
    /// records are spread over the plugin instances by key. Records without a key keep their
    /// partition's order among themselves.
    Key,
    /// No order: a batch's outputs are produced as soon as it is processed (records within one
    /// batch keep theirs).
    Unordered,
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Records handed to the plugin in one call.
    pub batch_size: usize,
    /// Which outputs keep the order of their inputs.
    pub order: Order,
    /// How long a partial batch may wait for more records while earlier batches are processed.
    pub linger: Duration,
    /// Records consumed but not yet finished; consumption pauses at this bound.
    pub max_pending: usize,
    /// Batches being processed at once.
    pub max_batches_in_flight: usize,
    /// How long shutdown may take to drain in-flight records.
    pub shutdown_timeout: Duration,
}

pub(super) fn read_pipeline(mut s: Section<'_>, delivery: &Delivery) -> PipelineSettings {
    let order = s.one_of(
        "order",
        &[
            ("partition", Order::Partition),
            ("key", Order::Key),
            ("none", Order::Unordered),
        ],
        Order::Partition,
    );
    if order != Order::Partition && matches!(delivery, Delivery::ExactlyOnce { .. }) {
        // A transaction commits each partition's offset after its last record in it, so the
        // records of a partition must enter it in their order.
        s.problem(
            "order",
            "exactly-once delivery needs \"partition\": a transaction commits each partition's input offset up to its last record, so a partition's records must reach it in order",
        );
    }
    let batch_size = s.count("batch-size", defaults::BATCH_SIZE, 65_536);
    let max_pending = s.count("max-pending", defaults::MAX_PENDING, 10_000_000);
    if max_pending < batch_size {
        s.problem(
            "max-pending",
            format!("must be at least batch-size ({batch_size}), found {max_pending}"),
        );
    }
    PipelineSettings {
        batch_size,
        order,
        linger: s.duration("linger", defaults::LINGER),
        max_pending,
        max_batches_in_flight: s.count(
            "max-batches-in-flight",
            defaults::MAX_BATCHES_IN_FLIGHT,
            1024,
        ),
        shutdown_timeout: s.duration("shutdown-timeout", defaults::SHUTDOWN_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, parse, problems};
    use super::super::*;

    #[test]
    fn order_is_by_partition_unless_told_and_exactly_once_needs_it() {
        assert_eq!(
            parse(MINIMAL, &[]).expect("valid").pipeline.order,
            Order::Partition
        );
        for (word, order) in [("key", Order::Key), ("none", Order::Unordered)] {
            let given = format!("pipeline.order=\"{word}\"");
            let s = parse(MINIMAL, &[given.as_str()]).expect("valid at least once");
            assert_eq!(s.pipeline.order, order);
            let found = problems(
                parse(
                    MINIMAL,
                    &[given.as_str(), "kafka.delivery=\"exactly-once\""],
                )
                .expect_err("not with exactly-once"),
            );
            assert!(
                found.len() == 1
                    && found[0].contains("pipeline.order")
                    && found[0].contains("exactly-once delivery needs \"partition\""),
                "{found:?}"
            );
        }
        let found = problems(parse(MINIMAL, &["pipeline.order=\"offset\""]).expect_err("bad"));
        assert!(
            found.len() == 1 && found[0].contains(r#"expected "partition", "key" or "none""#),
            "{found:?}"
        );
    }
}
