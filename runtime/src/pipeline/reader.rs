//! The reader: takes records from the source as `max-pending` allows, cuts them into batches,
//! and pauses the source while the pipeline cannot take more.
//!
//! Two small types hold its state, each tested on its own:
//! - [`Admission`]: one permit of `max-pending` per record, the pause after the pipeline has
//!   been full for a while, and the credit a record read while paused takes;
//! - [`Batcher`]: the batch being filled, cut at `batch-size` records, after `linger`, or at once
//!   when the consumer holds no more records and no batch is being processed ([`Busy`]), and a
//!   cut batch waiting for the next stage to take it.
//!
//! The early cut sizes batches to the load: a batch holds what arrived while the one before it
//! was processed. At low and middle rates a record waits for no linger; at full rate the
//! batches are full anyway, and `linger` still bounds a partial batch's wait while others are
//! processed (a slow model server).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::process::Batch;
use super::sleep_until;
use crate::config::PipelineSettings;
use crate::metrics::Counters;
use crate::source::{Consumed, Source, SourceError};

/// How long the reader may be unable to hand on records before it pauses the partitions.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Whether a record may be taken, and whether the source should be paused.
///
/// Permits are taken from the semaphore in bulk (all that are free) and forgotten at once: they
/// return when their records are committable, through `add_permits`, never by being dropped.
#[derive(Debug, Default)]
struct Admission {
    /// Permits taken and not yet used: the records that may be read now.
    credit: usize,
    /// Records taken without a permit (read while paused); the next permits pay for them.
    debt: usize,
    /// Since when records could not be taken.
    stalled_since: Option<Instant>,
    paused: bool,
}

/// What the reader should do to the source after [`Admission::update`].
#[derive(Debug, PartialEq, Eq)]
enum Change {
    None,
    Resume,
}

impl Admission {
    /// `n` permits arrived (already forgotten): they pay the debt first, then wait for records.
    fn granted(&mut self, n: usize) {
        let paid = n.min(self.debt);
        self.debt -= paid;
        self.credit += n - paid;
    }

    /// Takes every free permit without waiting.
    fn top_up(&mut self, permits: &Semaphore) {
        let free = permits.available_permits();
        if free == 0 {
            return;
        }
        let n = u32::try_from(free).unwrap_or(u32::MAX);
        if let Ok(taken) = permits.try_acquire_many(n) {
            taken.forget();
            self.granted(n as usize);
        }
    }

    fn wants_permit(&self) -> bool {
        self.credit == 0
    }

    /// Given whether the next stage can take a record, returns whether the source is to be
    /// resumed, and when it should be paused should nothing change.
    fn update(&mut self, stage_free: bool, now: Instant) -> (Change, Option<Instant>) {
        if self.credit > 0 && stage_free {
            self.stalled_since = None;
            if self.paused {
                self.paused = false;
                return (Change::Resume, None);
            }
            return (Change::None, None);
        }
        let since = *self.stalled_since.get_or_insert(now);
        let pause_at = (!self.paused).then_some(since + PAUSE_AFTER);
        (Change::None, pause_at)
    }

    fn can_take(&self, stage_free: bool) -> bool {
        self.credit > 0 && stage_free
    }

    fn paused(&mut self) {
        self.paused = true;
    }

    fn is_paused(&self) -> bool {
        self.paused
    }

    /// A record was read: it takes the permit, or, if there is none (read while paused, from a
    /// partition that was being fetched already), goes on credit. Returns whether it went on
    /// credit, in which case the source must be paused again.
    fn take(&mut self) -> bool {
        if self.credit > 0 {
            self.credit -= 1;
            false
        } else {
            self.debt += 1;
            true
        }
    }
}

/// The batches cut and not yet processed (waiting for the next stage, or in it): when there are
/// none, the reader cuts a partial batch without waiting for `linger`.
#[derive(Debug, Default)]
pub(super) struct Busy {
    batches: AtomicUsize,
    idle: Notify,
}

impl Busy {
    fn hold(self: &Arc<Self>) -> Held {
        self.batches.fetch_add(1, Ordering::AcqRel);
        Held(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.batches.load(Ordering::Acquire) == 0
    }

    /// Resolves once the last batch held is let go (at once if that happened since the last
    /// wait).
    async fn idle(&self) {
        self.idle.notified().await;
    }
}

/// A cut batch's place in [`Busy`], let go when the batch is dropped: processed, or abandoned
/// with its session.
#[derive(Debug)]
pub(super) struct Held(Arc<Busy>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.batches.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// The batch being filled and the one cut and waiting for the next stage.
#[derive(Debug)]
struct Batcher {
    size: usize,
    linger: Duration,
    busy: Arc<Busy>,
    filling: Batch,
    /// When the batch being filled is cut even if not full.
    flush_at: Option<Instant>,
    cut: Option<Batch>,
}

impl Batcher {
    fn new(size: usize, linger: Duration, busy: Arc<Busy>) -> Self {
        Self {
            size,
            linger,
            busy,
            filling: Batch::with_capacity(size),
            flush_at: None,
            cut: None,
        }
    }

    /// Whether a cut batch waits for the next stage (no record may be added meanwhile).
    fn blocked(&self) -> bool {
        self.cut.is_some()
    }

    /// When the filling batch is due, if it is not already waiting to be cut.
    fn flush_at(&self) -> Option<Instant> {
        self.flush_at.filter(|_| self.cut.is_none())
    }

    fn push(&mut self, consumed: Consumed, now: Instant) {
        self.filling.push(consumed, now);
        if self.filling.len() == 1 {
            self.flush_at = Some(now + self.linger);
        }
        if self.filling.len() >= self.size {
            self.cut_now();
        }
    }

    /// Cuts the filling batch (linger expired, or it is full).
    fn cut_now(&mut self) {
        if self.cut.is_none() && !self.filling.is_empty() {
            self.flush_at = None;
            let mut batch = std::mem::replace(&mut self.filling, Batch::with_capacity(self.size));
            batch.held = Some(self.busy.hold());
            self.cut = Some(batch);
        }
    }

    /// Cuts the filling batch if no batch is cut and unprocessed; call when the consumer holds
    /// no more records.
    fn cut_if_idle(&mut self) {
        if self.busy.is_idle() {
            self.cut_now();
        }
    }

    /// Whether a partial batch waits for the next stage to become idle.
    fn waits_for_idle(&self) -> bool {
        self.cut.is_none() && !self.filling.is_empty()
    }

    fn take_cut(&mut self) -> Option<Batch> {
        self.cut.take()
    }

    /// What is left at the end, in order.
    fn finish(self) -> impl Iterator<Item = Batch> {
        [self.cut, Some(self.filling)]
            .into_iter()
            .flatten()
            .filter(|b| !b.is_empty())
    }
}

/// Reads records into batches until told to stop; sends the partial batch before leaving.
/// A consumer that fails for good is reported on `failed`, and the reader leaves at once.
///
/// When no permit is free, or the next stage takes no batch, for longer than [`PAUSE_AFTER`],
/// the assigned partitions are paused and the consumer keeps polling: a consumer that stops
/// polling is thrown out of its group after `max.poll.interval.ms`, which would turn a slow
/// model into a rebalance storm.
pub(super) async fn read(
    source: Arc<Source>,
    batches: mpsc::Sender<Batch>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    settings: PipelineSettings,
    mut stopped: watch::Receiver<bool>,
    failed: oneshot::Sender<SourceError>,
) {
    let mut admission = Admission::default();
    let busy = Arc::new(Busy::default());
    let mut batcher = Batcher::new(settings.batch_size, settings.linger, busy.clone());
    loop {
        if admission.wants_permit() {
            admission.top_up(&permits);
        }
        let now = Instant::now();
        let stage_free = !batcher.blocked();
        let (change, pause_at) = admission.update(stage_free, now);
        if change == Change::Resume {
            source.resume();
        }
        // What librdkafka holds already is taken without a turn of the loop below per record:
        // one clock reading and one count for the run.
        let mut drained = 0;
        while admission.can_take(!batcher.blocked()) {
            let consumed = match source.next().now_or_never() {
                None => break,
                Some(Ok(consumed)) => consumed,
                Some(Err(error)) => {
                    let _ = failed.send(error);
                    return;
                }
            };
            admission.take();
            batcher.push(consumed, now);
            drained += 1;
        }
        if drained > 0 {
            counters.consumed(drained);
            continue;
        }
        batcher.cut_if_idle();
        let stage_free = !batcher.blocked();
        let can_take = admission.can_take(stage_free);
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            slot = batches.reserve(), if batcher.blocked() => match (slot, batcher.take_cut()) {
                (Ok(slot), Some(batch)) => slot.send(batch),
                _ => return,
            },
            () = sleep_until(batcher.flush_at()), if stage_free => batcher.cut_now(),
            () = busy.idle(), if batcher.waits_for_idle() => batcher.cut_if_idle(),
            acquired = permits.acquire(), if admission.wants_permit() => match acquired {
                Ok(p) => {
                    p.forget();
                    admission.granted(1);
                }
                Err(_) => break,
            },
            () = sleep_until(pause_at) => {
                tracing::info!("pipeline is full: pausing consumption");
                source.pause();
                admission.paused();
            }
            consumed = source.next(), if can_take || admission.is_paused() => {
                let consumed = match consumed {
                    Ok(consumed) => consumed,
                    Err(error) => {
                        let _ = failed.send(error);
                        return;
                    }
                };
                if admission.take() {
                    source.pause();
                }
                counters.consumed(1);
                batcher.push(consumed, Instant::now());
            }
        }
    }
    if admission.is_paused() {
        source.resume();
    }
    for batch in batcher.finish() {
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::InputRecord;

    fn consumed(offset: i64) -> Consumed {
        Consumed {
            record: InputRecord {
                topic: Arc::from("in"),
                partition: 0,
                offset,
                timestamp: None,
                key: None,
                value: None,
                headers: Vec::new(),
                fields: crate::contract::NO_FIELDS,
            },
            generation: 1,
            exact_headers: None,
            refused: None,
        }
    }

    fn offsets(batch: &Batch) -> Vec<i64> {
        batch.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_batch_is_cut_when_full_and_nothing_is_added_until_it_is_taken() {
        let now = Instant::now();
        let mut b = Batcher::new(2, Duration::from_millis(5), Arc::default());
        b.push(consumed(0), now);
        assert!(!b.blocked());
        assert_eq!(b.flush_at(), Some(now + Duration::from_millis(5)));
        b.push(consumed(1), now);
        assert!(b.blocked());
        assert_eq!(b.flush_at(), None, "a waiting batch has no linger");
        assert_eq!(offsets(&b.take_cut().expect("cut")), [0, 1]);
        assert!(!b.blocked());
    }

    #[test]
    fn linger_cuts_a_partial_batch_and_the_end_keeps_order() {
        let now = Instant::now();
        let mut b = Batcher::new(10, Duration::from_millis(5), Arc::default());
        b.cut_now();
        assert!(!b.blocked(), "nothing to cut");
        b.push(consumed(0), now);
        b.cut_now();
        b.push(consumed(1), now);
        let rest: Vec<_> = b.finish().map(|batch| offsets(&batch)).collect();
        assert_eq!(rest, [vec![0], vec![1]]);
    }

    #[test]
    fn a_partial_batch_is_cut_early_only_while_no_batch_is_unprocessed() {
        let busy = Arc::new(Busy::default());
        let now = Instant::now();
        let mut b = Batcher::new(10, Duration::from_millis(5), busy.clone());
        b.push(consumed(0), now);
        assert!(b.waits_for_idle());
        b.cut_if_idle();
        let first = b.take_cut().expect("nothing in process: cut at once");
        assert!(!busy.is_idle(), "a cut batch counts until it is dropped");

        b.push(consumed(1), now);
        b.cut_if_idle();
        assert!(
            !b.blocked(),
            "the first batch is unprocessed: the second fills on"
        );
        assert_eq!(
            b.flush_at(),
            Some(now + Duration::from_millis(5)),
            "linger still bounds it"
        );
        drop(first);
        assert!(busy.is_idle());
        assert!(
            busy.idle().now_or_never().is_some(),
            "letting the last one go wakes the reader"
        );
        b.cut_if_idle();
        assert_eq!(offsets(&b.take_cut().expect("idle: cut")), [1]);
        assert!(!b.waits_for_idle(), "nothing left to cut");
    }

    #[test]
    fn a_record_read_while_paused_goes_on_credit_and_the_next_permit_pays() {
        let permits = Semaphore::new(2);
        let mut a = Admission::default();
        let now = Instant::now();
        assert_eq!(a.update(true, now), (Change::None, Some(now + PAUSE_AFTER)));
        a.paused();
        assert_eq!(
            a.update(true, now).1,
            None,
            "already paused: no second pause"
        );
        assert!(a.take(), "no permit: taken on credit");
        a.top_up(&permits);
        assert_eq!(permits.available_permits(), 0, "every free permit is taken");
        assert!(!a.wants_permit(), "one paid the debt, one is left");
        assert_eq!(a.update(true, now), (Change::Resume, None));
        assert!(!a.take());
        assert!(a.wants_permit());
        assert_eq!(permits.available_permits(), 0, "used permits stay taken");
    }

    #[test]
    fn permits_are_taken_in_bulk_and_each_record_uses_one() {
        let permits = Semaphore::new(3);
        let mut a = Admission::default();
        a.top_up(&permits);
        assert_eq!(permits.available_permits(), 0);
        for _ in 0..3 {
            assert!(a.can_take(true));
            assert!(!a.take());
        }
        assert!(!a.can_take(true), "three permits, three records");
        permits.add_permits(1);
        a.top_up(&permits);
        assert!(a.can_take(true));
        assert!(!a.can_take(false), "never while the next stage is blocked");
    }

    #[test]
    fn a_blocked_stage_pauses_after_a_while_even_with_permits() {
        let permits = Semaphore::new(1);
        let mut a = Admission::default();
        a.top_up(&permits);
        let now = Instant::now();
        assert_eq!(a.update(true, now), (Change::None, None));
        assert_eq!(
            a.update(false, now),
            (Change::None, Some(now + PAUSE_AFTER))
        );
        let later = now + Duration::from_millis(100);
        assert_eq!(
            a.update(false, later).1,
            Some(now + PAUSE_AFTER),
            "since the first stall"
        );
    }
}
