//! What exactly-once mode remembers: the open transaction's window (which records, hence which
//! input offsets, it covers, and when it is due), the records the broker refused, and whether
//! the producer holds a transaction open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::failure::Failure;
use crate::sink::Form;

/// Records the broker refused inside a transaction, by (topic, partition, offset): each time
/// one is read again it is dead-lettered in the form given, until a commit covers it.
pub(super) type Refusals = HashMap<(Arc<str>, i32, i64), (Failure, Form)>;

/// Exactly-once mode's state, kept across the sessions an abort separates.
#[derive(Debug)]
pub(super) struct Ledger {
    pub(super) window: Window,
    /// Whether the producer has a transaction open: begun, and neither committed nor aborted.
    pub(super) in_producer: bool,
    refusals: Refusals,
    /// Aborts since the last commit.
    pub(super) aborts_in_a_row: u32,
}

impl Ledger {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            window: Window::new(interval),
            in_producer: false,
            refusals: Refusals::new(),
            aborts_in_a_row: 0,
        }
    }

    /// A transaction covering `covered` committed: the refusals it passed are settled.
    pub(super) fn committed(&mut self, covered: &[Covered]) {
        self.in_producer = false;
        self.aborts_in_a_row = 0;
        self.refusals.retain(|(topic, partition, offset), _| {
            !covered
                .iter()
                .any(|c| c.topic == *topic && c.partition == *partition && *offset < c.next)
        });
    }

    /// Remembers a record the broker refused, to dead-letter it when it is read again.
    pub(super) fn refuse(
        &mut self,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        why: (Failure, Form),
    ) {
        self.refusals.insert((topic, partition, offset), why);
    }

    /// Forgets the refusals in partitions this member no longer `owns`: it will not read
    /// those records again, and their next owner learns of a refusal by its own abort.
    pub(super) fn keep_refusals_of(&mut self, owns: impl Fn(&str, i32) -> bool) {
        if !self.refusals.is_empty() {
            self.refusals
                .retain(|(topic, partition, _), _| owns(topic, *partition));
        }
    }

    /// How a record read again must be dead-lettered, if the broker refused it before.
    pub(super) fn refused(
        &self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
    ) -> Option<(Failure, Form)> {
        if self.refusals.is_empty() {
            return None;
        }
        self.refusals
            .get(&(topic.clone(), partition, offset))
            .cloned()
    }
}

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
    /// One entry per (topic, partition, generation): a partition read under two assignments in
    /// one window (revoked and given back) has two, and the older one fails the ownership check,
    /// so that window is never committed. A list, not a map: an instance owns a few partitions,
    /// and finding one in a short list costs a record less than hashing its key (and cloning
    /// the topic's name into it).
    covered: Vec<Covered>,
    records: usize,
}

impl Window {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            opened: None,
            covered: Vec::new(),
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
        let same = |c: &&mut Covered| {
            c.partition == partition && c.generation == generation && c.topic == *topic
        };
        match self.covered.iter_mut().find(same) {
            Some(c) => c.next = c.next.max(next),
            None => self.covered.push(Covered {
                topic: topic.clone(),
                partition,
                generation,
                next,
            }),
        }
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
        std::mem::take(&mut self.covered)
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
    fn a_partition_read_under_two_assignments_keeps_both() {
        let mut w = Window::new(Duration::from_millis(100));
        w.open(Instant::now());
        let t = topic();
        w.add(&t, 0, 50, 1);
        w.add(&t, 0, 20, 2);
        w.add(&t, 0, 40, 1);
        let mut covered = w.close();
        covered.sort_by_key(|c| c.generation);
        assert_eq!(
            covered
                .iter()
                .map(|c| (c.generation, c.next))
                .collect::<Vec<_>>(),
            [(1, 51), (2, 21)],
            "the ownership check then refuses generation 1"
        );
    }

    #[test]
    fn a_commit_settles_the_refusals_it_passed() {
        let mut t = Ledger::new(Duration::from_millis(100));
        let why = || {
            (
                Failure::new(crate::failure::Reason::OutputRefused, "too large"),
                Form::Full,
            )
        };
        t.refuse(topic(), 0, 5, why());
        t.refuse(topic(), 0, 9, why());
        t.refuse(topic(), 1, 5, why());
        t.in_producer = true;
        t.aborts_in_a_row = 3;
        t.committed(&[Covered {
            topic: topic(),
            partition: 0,
            generation: 1,
            next: 6,
        }]);
        assert!(!t.in_producer);
        assert_eq!(t.aborts_in_a_row, 0);
        assert!(
            t.refused(&topic(), 0, 5).is_none(),
            "committed as a dead letter"
        );
        assert!(t.refused(&topic(), 0, 9).is_some(), "not reached yet");
        assert!(t.refused(&topic(), 1, 5).is_some(), "another partition");
        assert!(t.refused(&topic(), 1, 5).is_some(), "kept when read again");
    }

    #[test]
    fn refusals_in_partitions_that_moved_away_are_forgotten() {
        let mut t = Ledger::new(Duration::from_millis(100));
        let why = || {
            (
                Failure::new(crate::failure::Reason::OutputRefused, "too large"),
                Form::Full,
            )
        };
        t.refuse(topic(), 0, 5, why());
        t.refuse(topic(), 1, 5, why());
        t.keep_refusals_of(|topic, partition| topic == "in" && partition == 0);
        assert!(t.refused(&topic(), 0, 5).is_some(), "still owned");
        assert!(t.refused(&topic(), 1, 5).is_none(), "moved away");
    }
}
