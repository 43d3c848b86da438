//! Which partitions this member owns, since when, and whether the reader wants them paused.
//!
//! A partition gets a new *generation* each time it is assigned. Every consumed record carries
//! the generation it was read under; its offset may be stored only while that generation still
//! owns the partition. So work that finishes after its partition was revoked (or revoked and
//! assigned again, perhaps at a higher committed offset) can never store an offset: the new
//! owner reads those records again, and the committed offset never moves backwards.
//!
//! Each owned partition also keeps its *rewind point*: the offset its first record under the
//! current generation had, moved on by every transaction committed for it. In exactly-once
//! mode an aborted transaction is undone by seeking each owned partition back there.
//!
//! librdkafka keeps a partition's pause flag across a revoke and a new assignment, and a
//! partition assigned while the reader is paused must not be fetched either: the reader's wish
//! is re-applied to every assignment here, in the rebalance callback, before any record of the
//! new assignment can be returned.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;

use crate::kafka::KafkaContext;

/// Generations are counted from 1; 0 means "not owned".
pub const NOT_OWNED: u64 = 0;

/// One partition this member owns.
#[derive(Debug, Clone, Copy)]
struct Owned {
    generation: u64,
    /// Where reading must start again to redo everything not committed under this generation.
    rewind_to: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    /// topic → partition → the current assignment.
    owned: HashMap<String, HashMap<i32, Owned>>,
    last_generation: u64,
    paused: bool,
    /// Assignments seen, for the logs and tests.
    assignments: u64,
}

/// Shared by the consumer's rebalance callbacks and the source's calls.
#[derive(Debug, Default)]
pub(super) struct Ownership {
    state: Mutex<State>,
}

impl Ownership {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the state whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation under which `partition` is owned now, or [`NOT_OWNED`], for a record at
    /// `offset` just read from it: the first such record sets the partition's rewind point.
    pub(super) fn generation(&self, topic: &str, partition: i32, offset: i64) -> u64 {
        let mut state = self.lock();
        match state
            .owned
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(&partition))
        {
            Some(owned) => {
                owned.rewind_to.get_or_insert(offset);
                owned.generation
            }
            None => NOT_OWNED,
        }
    }

    /// Whether every partition in `positions` (topic, partition, generation) is still owned under
    /// that generation; if so, `then` runs holding the state, so that no revocation can come
    /// between the check and what it does.
    pub(super) fn all_owned<'a, T>(
        &self,
        mut positions: impl Iterator<Item = (&'a str, i32, u64)>,
        then: impl FnOnce() -> T,
    ) -> Option<T> {
        let state = self.lock();
        positions
            .all(|(topic, partition, generation)| state.is_owned(topic, partition, generation))
            .then(then)
    }

    /// A transaction committed everything below `next` in `partition`: a rewind goes no further
    /// back, if the partition is still owned under `generation`.
    pub(super) fn committed(&self, topic: &str, partition: i32, generation: u64, next: i64) {
        let mut state = self.lock();
        if let Some(owned) = state
            .owned
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(&partition))
            && owned.generation == generation
        {
            owned.rewind_to = Some(next);
        }
    }

    /// Where each owned partition that has been read must be read again from, to redo what no
    /// transaction committed; `seek` moves the consumer there, under the lock so that no
    /// rebalance comes between. Stops at the first partition `seek` fails on.
    pub(super) fn rewind<E>(
        &self,
        mut seek: impl FnMut(&str, i32, i64) -> Result<(), E>,
    ) -> Result<usize, E> {
        let state = self.lock();
        let mut sought = 0;
        for (topic, partitions) in &state.owned {
            for (partition, owned) in partitions {
                if let Some(offset) = owned.rewind_to {
                    seek(topic, *partition, offset)?;
                    sought += 1;
                }
            }
        }
        Ok(sought)
    }

    /// Runs `store` if `partition` is still owned under `generation`, holding the state so that
    /// no rebalance can come between the check and the store. Returns whether it ran.
    pub(super) fn while_owned(
        &self,
        topic: &str,
        partition: i32,
        generation: u64,
        store: impl FnOnce(),
    ) -> bool {
        let state = self.lock();
        let owned = state.is_owned(topic, partition, generation);
        if owned {
            store();
        }
        owned
    }

    /// Records the reader's wish and applies it with `apply` to the current assignment, under
    /// the lock so that a concurrent assignment sees the same wish.
    pub(super) fn set_paused(&self, paused: bool, apply: impl FnOnce()) {
        let mut state = self.lock();
        state.paused = paused;
        apply();
    }

    pub(super) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Where a rewind of `partition` would read from now: the last transaction's end, or the
    /// first record read under the current assignment; `None` when not owned or nothing read.
    pub(super) fn rewind_point(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .owned
            .get(topic)
            .and_then(|ps| ps.get(&partition))
            .and_then(|o| o.rewind_to)
    }

    /// Whether `partition` is owned now, under any assignment.
    pub(super) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.lock()
            .owned
            .get(topic)
            .is_some_and(|ps| ps.contains_key(&partition))
    }

    /// How many partitions are owned now.
    pub(super) fn owned_count(&self) -> usize {
        self.lock().owned.values().map(HashMap::len).sum()
    }

    /// How many assignments this member has had.
    pub(super) fn assignments(&self) -> u64 {
        self.lock().assignments
    }

    /// Gives every partition in `assigned` a new generation; returns whether the reader wants
    /// them paused. The caller applies that while `hold` runs under the lock.
    fn assign(&self, assigned: &[(String, i32)], hold: impl FnOnce(bool)) {
        let mut state = self.lock();
        state.assignments += 1;
        for (topic, partition) in assigned {
            state.last_generation += 1;
            let generation = state.last_generation;
            state.owned.entry(topic.clone()).or_default().insert(
                *partition,
                Owned {
                    generation,
                    rewind_to: None,
                },
            );
        }
        hold(state.paused);
    }

    /// Forgets `revoked`; `None` revokes everything.
    fn revoke(&self, revoked: Option<&[(String, i32)]>) {
        let mut state = self.lock();
        match revoked {
            None => state.owned.clear(),
            Some(revoked) => {
                for (topic, partition) in revoked {
                    if let Some(ps) = state.owned.get_mut(topic) {
                        ps.remove(partition);
                    }
                }
            }
        }
    }
}

impl State {
    fn is_owned(&self, topic: &str, partition: i32, generation: u64) -> bool {
        generation != NOT_OWNED
            && self
                .owned
                .get(topic)
                .and_then(|ps| ps.get(&partition))
                .is_some_and(|o| o.generation == generation)
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The consumer's context: librdkafka's logs as the other clients have them, plus the
/// rebalance handling above.
#[derive(Debug)]
pub(crate) struct SourceContext {
    pub(super) kafka: KafkaContext,
    pub(super) ownership: std::sync::Arc<Ownership>,
    pub(super) lags: std::sync::Arc<super::lag::Lags>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.kafka.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error(error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.lags.update(statistics);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Before librdkafka unassigns (and commits what is stored): from here on, nothing
        // finished later may store an offset for these partitions.
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            tracing::info!(partitions = ?revoked, "partitions revoked");
            self.ownership.revoke(Some(&revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions(list);
                self.ownership.assign(&assigned, |paused| {
                    let applied = if paused {
                        consumer.pause(list)
                    } else {
                        consumer.resume(list)
                    };
                    if let Err(error) = applied {
                        tracing::warn!(%error, paused, "cannot apply the reader's pause to new partitions");
                    }
                    tracing::info!(partitions = ?assigned, paused, "partitions assigned");
                });
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                // The assignment is lost with the error: own nothing until the next one.
                self.ownership.revoke(None);
                tracing::warn!(%error, "rebalance failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32) -> (String, i32) {
        ("in".to_owned(), partition)
    }

    #[test]
    fn a_reassigned_partition_gets_a_new_generation_and_the_old_one_cannot_store() {
        let o = Ownership::default();
        assert_eq!(o.generation("in", 0, 0), NOT_OWNED);
        o.assign(&[p(0), p(1)], |_| {});
        let first = o.generation("in", 0, 0);
        assert_ne!(first, NOT_OWNED);
        assert!(o.while_owned("in", 0, first, || {}));

        o.revoke(Some(&[p(0)]));
        let mut stored = false;
        assert!(!o.while_owned("in", 0, first, || stored = true));
        assert!(!stored, "a revoked partition stores nothing");
        assert!(
            o.while_owned("in", 1, o.generation("in", 1, 0), || {}),
            "others stay owned"
        );

        o.assign(&[p(0)], |_| {});
        let second = o.generation("in", 0, 0);
        assert!(second > first);
        assert!(
            !o.while_owned("in", 0, first, || {}),
            "the old generation stays stale"
        );
        assert!(o.while_owned("in", 0, second, || {}));
        assert!(!o.while_owned("in", 0, NOT_OWNED, || {}));
    }

    #[test]
    fn a_new_assignment_learns_the_readers_pause() {
        let o = Ownership::default();
        o.set_paused(true, || {});
        let mut told = None;
        o.assign(&[p(3)], |paused| told = Some(paused));
        assert_eq!(told, Some(true));
        o.set_paused(false, || {});
        o.assign(&[p(4)], |paused| told = Some(paused));
        assert_eq!(told, Some(false));
        assert_eq!(o.assignments(), 2);
    }

    #[test]
    fn a_rewind_goes_back_to_the_first_record_read_or_the_last_commit() {
        let o = Ownership::default();
        o.assign(&[p(0), p(1), p(2)], |_| {});
        let g0 = o.generation("in", 0, 40);
        o.generation("in", 0, 41);
        let g1 = o.generation("in", 1, 7);
        o.committed("in", 1, g1, 9);
        o.committed("in", 0, g0 + 100, 99);
        let mut sought = Vec::new();
        let n = o
            .rewind(|t, p, at| {
                sought.push((t.to_owned(), p, at));
                Ok::<_, ()>(())
            })
            .expect("no seek fails");
        sought.sort();
        assert_eq!(n, 2, "partition 2 has had nothing read");
        assert_eq!(
            sought,
            [("in".to_owned(), 0, 40), ("in".to_owned(), 1, 9)],
            "a commit under another generation moves nothing"
        );
        o.revoke(Some(&[p(1)]));
        o.assign(&[p(1)], |_| {});
        let mut sought = Vec::new();
        o.rewind(|_, p, at| {
            sought.push((p, at));
            Ok::<_, ()>(())
        })
        .expect("no seek fails");
        assert_eq!(sought, [(0, 40)], "a reassigned partition starts afresh");
    }

    #[test]
    fn all_owned_runs_only_when_every_generation_is_current() {
        let o = Ownership::default();
        o.assign(&[p(0), p(1)], |_| {});
        let g0 = o.generation("in", 0, 0);
        let g1 = o.generation("in", 1, 0);
        let both = [("in", 0, g0), ("in", 1, g1)];
        assert_eq!(o.all_owned(both.into_iter(), || 5), Some(5));
        o.revoke(Some(&[p(1)]));
        o.assign(&[p(1)], |_| {});
        assert_eq!(o.all_owned(both.into_iter(), || 5), None);
    }

    #[test]
    fn a_failed_rebalance_owns_nothing() {
        let o = Ownership::default();
        o.assign(&[p(0)], |_| {});
        o.revoke(None);
        assert_eq!(o.generation("in", 0, 0), NOT_OWNED);
    }
}
