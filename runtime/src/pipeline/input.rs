//! What the loop asks of the consumer besides its records: the Kafka [`Source`], or a scripted
//! one in tests. The records themselves come from the reader as batches; the trait is what
//! drive and progress need beside them, so that the loop can be tested without a broker.

use std::time::Duration;

use crate::source::Source;

/// The consumer as the loop sees it.
pub(super) trait Input: Send + Sync + 'static {
    /// See [`Source::finished_up_to`].
    fn finished_up_to(&self, topic: &str, partition: i32, offset: i64, generation: u64);
    /// See [`Source::is_paused`].
    fn is_paused(&self) -> bool;
    /// See [`Source::waiting`].
    fn waiting(&self, timeout: Duration) -> Option<i64>;
    /// See [`Source::assignments`].
    fn assignments(&self) -> u64;
}

impl Input for Source {
    fn finished_up_to(&self, topic: &str, partition: i32, offset: i64, generation: u64) {
        Source::finished_up_to(self, topic, partition, offset, generation);
    }

    fn is_paused(&self) -> bool {
        Source::is_paused(self)
    }

    fn waiting(&self, timeout: Duration) -> Option<i64> {
        Source::waiting(self, timeout)
    }

    fn assignments(&self) -> u64 {
        Source::assignments(self)
    }
}
