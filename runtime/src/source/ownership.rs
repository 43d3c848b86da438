//! Which partitions this member owns, since when, and whether the reader wants them paused.
//!
//! A partition gets a new *generation* each time it is assigned. Every consumed record carries
//! the generation it was read under; its offset may be stored only while that generation still
//! owns the partition. So work that finishes after its partition was revoked (or revoked and
//! assigned again, perhaps at a higher committed offset) can never store an offset: the new
//! owner reads those records again, and the committed offset never moves backwards.
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

#[derive(Debug, Default)]
struct State {
    /// topic → partition → generation of the current assignment.
    owned: HashMap<String, HashMap<i32, u64>>,
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

    /// The generation under which `partition` is owned now, or [`NOT_OWNED`].
    pub(super) fn generation(&self, topic: &str, partition: i32) -> u64 {
        self.lock()
            .owned
            .get(topic)
            .and_then(|ps| ps.get(&partition))
            .copied()
            .unwrap_or(NOT_OWNED)
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
        let owned = generation != NOT_OWNED
            && state.owned.get(topic).and_then(|ps| ps.get(&partition)) == Some(&generation);
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
            state
                .owned
                .entry(topic.clone())
                .or_default()
                .insert(*partition, generation);
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
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.kafka.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error(error, reason);
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
        assert_eq!(o.generation("in", 0), NOT_OWNED);
        o.assign(&[p(0), p(1)], |_| {});
        let first = o.generation("in", 0);
        assert_ne!(first, NOT_OWNED);
        assert!(o.while_owned("in", 0, first, || {}));

        o.revoke(Some(&[p(0)]));
        let mut stored = false;
        assert!(!o.while_owned("in", 0, first, || stored = true));
        assert!(!stored, "a revoked partition stores nothing");
        assert!(
            o.while_owned("in", 1, o.generation("in", 1), || {}),
            "others stay owned"
        );

        o.assign(&[p(0)], |_| {});
        let second = o.generation("in", 0);
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
    fn a_failed_rebalance_owns_nothing() {
        let o = Ownership::default();
        o.assign(&[p(0)], |_| {});
        o.revoke(None);
        assert_eq!(o.generation("in", 0), NOT_OWNED);
    }
}
