//! Which offsets may be committed. Records of a partition finish out of order (batches run
//! concurrently, calls return when they return), but a committed offset promises that every
//! record below it is finished: its output acknowledged by the broker, or its dead letter. The
//! tracker keeps, per partition, the offsets still open in consumption order and reports the
//! highest offset below which nothing is open.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
struct Partition {
    /// Offsets consumed and not yet committable, ascending, with whether each is finished.
    open: VecDeque<(i64, bool)>,
}

/// Open offsets of every partition this consumer holds records of.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    topics: HashMap<String, HashMap<i32, Partition>>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that `offset` was consumed. Offsets of one partition arrive ascending; an offset
    /// at or below the last one seen means the partition was re-assigned and is being read
    /// again from its committed position, so what was open before is forgotten.
    pub fn consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        let partitions = match self.topics.get_mut(topic) {
            Some(p) => p,
            None => self.topics.entry(topic.to_owned()).or_default(),
        };
        let p = partitions.entry(partition).or_default();
        if p.open.back().is_some_and(|&(last, _)| last >= offset) {
            p.open.clear();
        }
        p.open.push_back((offset, false));
    }

    /// Notes that the record at `offset` is finished. Returns the offset of the last record of
    /// the contiguous finished run at the front of the partition, when that run grew: every
    /// record up to and including it is finished and the offset after it may be committed.
    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.topics.get_mut(topic)?.get_mut(&partition)?;
        // An offset the tracker no longer knows belongs to a partition that was re-assigned
        // meanwhile: it will be read and finished again, so it is ignored.
        let i = p.open.binary_search_by_key(&offset, |&(o, _)| o).ok()?;
        p.open[i].1 = true;
        let mut last = None;
        while let Some(&(o, true)) = p.open.front() {
            last = Some(o);
            p.open.pop_front();
        }
        last
    }

    /// Records consumed and not finished, over all partitions.
    pub fn open(&self) -> usize {
        self.topics
            .values()
            .flat_map(|ps| ps.values())
            .map(|p| p.open.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_a_contiguous_finished_prefix() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.consumed("in", 0, o);
        }
        assert_eq!(t.finished("in", 0, 12), None);
        assert_eq!(t.finished("in", 0, 11), None);
        assert_eq!(t.finished("in", 0, 10), Some(12));
        assert_eq!(t.finished("in", 0, 14), None);
        assert_eq!(t.finished("in", 0, 13), Some(14));
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_are_allowed() {
        let mut t = OffsetTracker::new();
        t.consumed("in", 0, 5);
        t.consumed("in", 1, 100);
        t.consumed("in", 0, 9); // a gap, e.g. a compacted or transactional marker offset
        assert_eq!(t.finished("in", 1, 100), Some(100));
        assert_eq!(t.finished("in", 0, 9), None);
        assert_eq!(t.finished("in", 0, 5), Some(9));
    }

    #[test]
    fn re_reading_a_partition_forgets_what_was_open() {
        let mut t = OffsetTracker::new();
        t.consumed("in", 0, 7);
        t.consumed("in", 0, 8);
        t.consumed("in", 0, 7); // re-assigned, read again from the committed offset
        assert_eq!(t.open(), 1);
        assert_eq!(t.finished("in", 0, 8), None, "stale offset is ignored");
        assert_eq!(t.finished("in", 0, 7), Some(7));
    }

    #[test]
    fn unknown_offsets_are_ignored() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.finished("in", 3, 1), None);
        t.consumed("in", 0, 1);
        assert_eq!(t.finished("in", 0, 2), None);
        assert_eq!(t.finished("other", 0, 1), None);
    }
}
