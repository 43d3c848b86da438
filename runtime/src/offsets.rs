//! Which offsets may be committed. Records of a partition finish out of order (batches run
//! concurrently, calls return when they return), but a committed offset promises that every
//! record below it is finished: its output acknowledged by the broker, or its dead letter. The
//! tracker keeps, per partition, the offsets still open in consumption order and reports the
//! highest offset below which nothing is open.
//!
//! The tracker also says when a record's permit of `max-pending` returns: when its offset is
//! behind the committable point, not when it alone is finished. So the records consumed and not
//! yet committable, over all partitions, never exceed `max-pending`, and neither does what a
//! crash can make the group read again (plus what finished since the last commit).
//!
//! A partition read anew (assigned again, or rewound) starts a new *epoch*: what was open before
//! is forgotten, and a record of an old epoch that finishes later releases its permit but moves
//! nothing.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
struct Partition {
    /// The source's generation of the assignment these offsets were read under.
    generation: u64,
    epoch: u64,
    /// Offsets consumed and not yet committable, ascending, with whether each is finished.
    open: VecDeque<(i64, bool)>,
}

/// What finishing a record allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Records now behind the committable point, or forgotten: their permits return.
    pub released: usize,
    /// Every record up to and including this offset is finished: the offset after it may be
    /// committed.
    pub store: Option<i64>,
}

/// Open offsets of every partition this consumer holds records of.
///
/// Records come in runs of one partition (a fetch answers per partition), so the partition used
/// last is tried before the map: most records cost a comparison, not two hash lookups.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Vec<Slot>,
    index: HashMap<String, HashMap<i32, usize>>,
    last: usize,
    last_epoch: u64,
}

#[derive(Debug)]
struct Slot {
    topic: String,
    partition: i32,
    offsets: Partition,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of a partition, if any of its records was consumed.
    fn find(&mut self, topic: &str, partition: i32) -> Option<usize> {
        if let Some(s) = self.partitions.get(self.last)
            && s.partition == partition
            && s.topic == topic
        {
            return Some(self.last);
        }
        let i = *self.index.get(topic)?.get(&partition)?;
        self.last = i;
        Some(i)
    }

    /// The slot of a partition, made when its first record is consumed.
    fn slot(&mut self, topic: &str, partition: i32) -> &mut Partition {
        let i = match self.find(topic, partition) {
            Some(i) => i,
            None => {
                let i = self.partitions.len();
                self.partitions.push(Slot {
                    topic: topic.to_owned(),
                    partition,
                    offsets: Partition::default(),
                });
                self.index
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(partition, i);
                self.last = i;
                i
            }
        };
        &mut self.partitions[i].offsets
    }

    /// Notes that `offset` was consumed under the source's `generation`; returns the epoch to
    /// finish it with, and how many permits return because records were forgotten.
    ///
    /// Offsets of one partition and generation arrive ascending. A new generation, or an offset
    /// at or below the last one seen (the partition rewound to its committed position), starts
    /// a new epoch: finished records still open are released now, unfinished ones when they
    /// finish.
    pub fn consumed(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        generation: u64,
    ) -> (u64, usize) {
        let next_epoch = self.last_epoch + 1;
        let p = self.slot(topic, partition);
        let mut released = 0;
        let rewound = p.open.back().is_some_and(|&(last, _)| last >= offset);
        let renewed = p.epoch == 0 || p.generation != generation || rewound;
        if renewed {
            released = p.open.iter().filter(|&&(_, done)| done).count();
            p.open.clear();
            p.epoch = next_epoch;
            p.generation = generation;
        }
        p.open.push_back((offset, false));
        let epoch = p.epoch;
        if renewed {
            self.last_epoch = next_epoch;
        }
        (epoch, released)
    }

    /// Notes that the record at `offset`, consumed in `epoch`, is finished.
    pub fn finished(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> Finished {
        const FORGOTTEN: Finished = Finished {
            released: 1,
            store: None,
        };
        let Some(i) = self.find(topic, partition) else {
            return FORGOTTEN;
        };
        let p = &mut self.partitions[i].offsets;
        if p.epoch != epoch {
            return FORGOTTEN;
        }
        let Ok(i) = p.open.binary_search_by_key(&offset, |&(o, _)| o) else {
            return FORGOTTEN;
        };
        p.open[i].1 = true;
        let mut finished = Finished {
            released: 0,
            store: None,
        };
        while let Some(&(o, true)) = p.open.front() {
            finished.store = Some(o);
            finished.released += 1;
            p.open.pop_front();
        }
        finished
    }

    /// Records consumed and not yet behind the committable point, over all partitions.
    pub fn open(&self) -> usize {
        self.partitions.iter().map(|s| s.offsets.open.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1;

    fn store(f: Finished) -> Option<i64> {
        f.store
    }

    #[test]
    fn commits_only_a_contiguous_finished_prefix_and_releases_it() {
        let mut t = OffsetTracker::new();
        let mut epoch = 0;
        for o in 10..15 {
            epoch = t.consumed("in", 0, o, G).0;
        }
        assert_eq!(
            t.finished("in", 0, 12, epoch),
            Finished {
                released: 0,
                store: None
            }
        );
        assert_eq!(t.finished("in", 0, 11, epoch).released, 0, "held behind 10");
        assert_eq!(
            t.finished("in", 0, 10, epoch),
            Finished {
                released: 3,
                store: Some(12)
            }
        );
        assert_eq!(store(t.finished("in", 0, 14, epoch)), None);
        assert_eq!(
            t.finished("in", 0, 13, epoch),
            Finished {
                released: 2,
                store: Some(14)
            }
        );
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn partitions_are_independent_and_gaps_are_allowed() {
        let mut t = OffsetTracker::new();
        let e0 = t.consumed("in", 0, 5, G).0;
        let e1 = t.consumed("in", 1, 100, G).0;
        t.consumed("in", 0, 9, G); // a gap, e.g. a compacted or transactional marker offset
        assert_eq!(store(t.finished("in", 1, 100, e1)), Some(100));
        assert_eq!(store(t.finished("in", 0, 9, e0)), None);
        assert_eq!(store(t.finished("in", 0, 5, e0)), Some(9));
    }

    #[test]
    fn re_reading_a_partition_forgets_what_was_open() {
        let mut t = OffsetTracker::new();
        let old = t.consumed("in", 0, 7, G).0;
        t.consumed("in", 0, 8, G);
        assert_eq!(t.finished("in", 0, 8, old).released, 0);
        let (new, released) = t.consumed("in", 0, 7, G); // rewound to the committed offset
        assert_ne!(new, old);
        assert_eq!(
            released, 1,
            "8 was finished: its permit returns as it is forgotten"
        );
        assert_eq!(t.open(), 1);
        assert_eq!(
            t.finished("in", 0, 7, old),
            Finished {
                released: 1,
                store: None
            },
            "stale"
        );
        assert_eq!(
            t.finished("in", 0, 7, new),
            Finished {
                released: 1,
                store: Some(7)
            }
        );
    }

    /// Defect: a partition revoked with records in flight and assigned again at a higher
    /// committed offset (another member went on meanwhile) stored the stale, lower offset when
    /// the old records finished, moving the committed offset backwards.
    #[test]
    fn a_partition_assigned_again_higher_up_never_stores_an_offset_of_its_old_assignment() {
        let mut t = OffsetTracker::new();
        let old = t.consumed("in", 0, 100, 1).0;
        t.consumed("in", 0, 101, 1);
        // Revoked, someone else commits 500, assigned to us again: generation 2 from 500 on.
        let (new, released) = t.consumed("in", 0, 500, 2);
        assert_eq!(released, 0);
        assert_eq!(
            t.finished("in", 0, 100, old),
            Finished {
                released: 1,
                store: None
            }
        );
        assert_eq!(
            t.finished("in", 0, 101, old),
            Finished {
                released: 1,
                store: None
            }
        );
        assert_eq!(
            t.finished("in", 0, 500, new),
            Finished {
                released: 1,
                store: Some(500)
            }
        );
    }

    #[test]
    fn every_consumed_record_releases_exactly_one_permit() {
        // Offsets finish in a scrambled order across two rewinds and a new generation.
        let mut t = OffsetTracker::new();
        let mut taken = Vec::new();
        let mut released = 0;
        for (offset, generation) in [
            (1, 1),
            (2, 1),
            (3, 1),
            (2, 1),
            (3, 1),
            (4, 2),
            (5, 2),
            (5, 2),
        ] {
            let (epoch, r) = t.consumed("in", 0, offset, generation);
            released += r;
            taken.push((offset, epoch));
        }
        for i in [3, 0, 7, 5, 1, 6, 2, 4] {
            let (offset, epoch) = taken[i];
            released += t.finished("in", 0, offset, epoch).released;
        }
        assert_eq!(released, taken.len());
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn unknown_offsets_release_their_permit_and_store_nothing() {
        let mut t = OffsetTracker::new();
        assert_eq!(
            t.finished("in", 3, 1, 1),
            Finished {
                released: 1,
                store: None
            }
        );
        let e = t.consumed("in", 0, 1, G).0;
        assert_eq!(
            t.finished("in", 0, 2, e),
            Finished {
                released: 1,
                store: None
            }
        );
        assert_eq!(
            t.finished("other", 0, 1, e),
            Finished {
                released: 1,
                store: None
            }
        );
    }
}
