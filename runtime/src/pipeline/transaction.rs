//! Exactly-once mode: the open transaction. It opens when the first record of a window is
//! produced, collects every record whose outputs (or dead letter) went into it, and is due for
//! commit `transaction-interval` later. Committing sends, per input partition, the offset after
//! the last record in it; records are produced in consumption order, so every record below that
//! offset (under the same assignment) is in this transaction or an earlier one.
//!
//! Whatever cannot commit is aborted, and the pipeline reads the uncommitted records again from
//! each partition's rewind point (see `source::ownership`), so no record's outputs are committed
//! twice or never.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

/// One input partition's share of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Covered {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// The assignment its records were read under.
    pub(super) generation: u64,
    /// The offset after the last record in the transaction: where the group resumes.
    pub(super) next: i64,
}

/// The transaction being filled.
#[derive(Debug)]
pub(super) struct Window {
    interval: Duration,
    opened: Option<Instant>,
    covered: HashMap<(Arc<str>, i32), Covered>,
    records: usize,
}

impl Window {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            opened: None,
            covered: HashMap::new(),
            records: 0,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// The producer opened the transaction.
    pub(super) fn open(&mut self, now: Instant) {
        self.opened = Some(now);
    }

    /// A record's outputs are going into the transaction.
    pub(super) fn add(&mut self, topic: &Arc<str>, partition: i32, offset: i64, generation: u64) {
        self.records += 1;
        let next = offset + 1;
        self.covered
            .entry((topic.clone(), partition))
            .and_modify(|c| {
                // A partition reassigned within the window: the newer assignment's records are
                // the ones the group resumes after; the commit is refused anyway, as the older
                // generation is no longer owned.
                if generation > c.generation || (generation == c.generation && next > c.next) {
                    c.generation = generation;
                    c.next = next;
                }
            })
            .or_insert_with(|| Covered {
                topic: topic.clone(),
                partition,
                generation,
                next,
            });
    }

    /// When the open transaction is to be committed.
    pub(super) fn due(&self) -> Option<Instant> {
        self.opened.map(|at| at + self.interval)
    }

    /// Records in the open transaction.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// Closes the window: what it covered, for the commit. The next record opens a new one.
    pub(super) fn close(&mut self) -> Vec<Covered> {
        self.opened = None;
        self.records = 0;
        self.covered.drain().map(|(_, c)| c).collect()
    }
}

/// The consumed offsets a transaction commits.
pub(super) fn offsets(covered: &[Covered]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(covered.len());
    for c in covered {
        // Cannot fail: the offset is a plain one.
        let _ = list.add_partition_offset(&c.topic, c.partition, Offset::Offset(c.next));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Arc<str> {
        Arc::from("in")
    }

    #[test]
    fn a_window_commits_the_offset_after_each_partitions_last_record() {
        let start = Instant::now();
        let mut w = Window::new(Duration::from_millis(100));
        assert!(!w.is_open());
        assert_eq!(w.due(), None);
        w.open(start);
        assert_eq!(w.due(), Some(start + Duration::from_millis(100)));
        let t = topic();
        for offset in [10, 11, 12] {
            w.add(&t, 0, offset, 1);
        }
        w.add(&t, 1, 7, 1);
        assert_eq!(w.records(), 4);
        let mut covered = w.close();
        covered.sort_by_key(|c| c.partition);
        assert_eq!(
            covered
                .iter()
                .map(|c| (c.partition, c.next))
                .collect::<Vec<_>>(),
            [(0, 13), (1, 8)]
        );
        assert!(!w.is_open());
        assert_eq!(w.records(), 0);
        assert!(w.close().is_empty(), "closing empties the window");
        let list = offsets(&covered);
        assert_eq!(
            list.find_partition("in", 0).map(|e| e.offset()),
            Some(Offset::Offset(13))
        );
    }

    #[test]
    fn a_newer_assignment_wins_within_a_window() {
        let mut w = Window::new(Duration::from_millis(100));
        w.open(Instant::now());
        let t = topic();
        w.add(&t, 0, 50, 1);
        w.add(&t, 0, 20, 2);
        w.add(&t, 0, 40, 1);
        let covered = w.close();
        assert_eq!(covered.len(), 1);
        assert_eq!((covered[0].generation, covered[0].next), (2, 21));
    }
}
