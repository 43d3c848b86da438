//! The loop that moves records: batches from the reader into processing, processed records
//! into [`Delivery`], acknowledgements into the offset tracker, and, in exactly-once mode,
//! transactions begun, committed and rewound. The two delivery modes differ only in their
//! [`Commit`]; each arm of the loop is one call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::input::Input;
use super::outlet::Outlet;
use super::process::{Batch, Stages, Taken, process_batch};
use super::produce::{Delivery, Gate, Position, Settled};
use super::progress::{Progress, REPORT_EVERY};
use super::sequence::{Marks, Sequencer};
use super::transaction::{Cause, Ended, Transactions};
use super::{PipelineError, sleep_until};
use crate::config::PipelineSettings;
use crate::contract::InputRecord;
use crate::offsets::OffsetTracker;
use crate::sink::SinkError;
use crate::source::{Source, SourceError};

/// How long to wait before sending again when librdkafka's queue was full and no
/// acknowledgement has made room meanwhile.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(5);

/// How finished records advance the commit point: offsets stored behind them (at-least-once),
/// or transactions that commit them with their outputs (exactly-once).
pub(super) enum Commit<'a, I = Source> {
    AtLeastOnce(&'a I),
    ExactlyOnce(&'a mut Transactions),
}

impl<I: Input> Gate for Commit<'_, I> {
    fn open(&self) -> bool {
        match self {
            Self::AtLeastOnce(_) => true,
            Self::ExactlyOnce(tx) => tx.open(),
        }
    }

    fn entering(&mut self, record: &InputRecord, generation: u64) -> Result<(), PipelineError> {
        match self {
            Self::AtLeastOnce(_) => Ok(()),
            Self::ExactlyOnce(tx) => tx.entering(record, generation),
        }
    }
}

impl<I: Input> Commit<'_, I> {
    fn is_committing(&self) -> bool {
        matches!(self, Self::ExactlyOnce(tx) if tx.is_committing())
    }

    fn is_open(&self) -> bool {
        matches!(self, Self::ExactlyOnce(tx) if tx.is_open())
    }

    /// When the open transaction is to be committed; never outside one.
    fn due(&self, idle: bool) -> Option<Instant> {
        match self {
            Self::AtLeastOnce(_) => None,
            Self::ExactlyOnce(tx) => tx.due(idle),
        }
    }

    fn start_commit(&mut self) {
        if let Self::ExactlyOnce(tx) = self {
            tx.start_commit();
        }
    }

    /// Resolves when a running commit ends; never if none runs. Safe to cancel.
    async fn commit_ended(&mut self) -> Ended {
        match self {
            Self::AtLeastOnce(_) => std::future::pending().await,
            Self::ExactlyOnce(tx) => tx.commit_ended().await,
        }
    }

    /// Acts on a commit that ended (see [`Transactions::commit_handled`]).
    async fn commit_handled(
        &mut self,
        ended: Ended,
        delivery: &mut Delivery<impl Outlet>,
    ) -> Result<(), PipelineError> {
        match self {
            Self::AtLeastOnce(_) => Ok(()),
            Self::ExactlyOnce(tx) => tx.commit_handled(ended, delivery).await,
        }
    }

    /// Marks the records of a batch that the broker refused in an aborted transaction, to be
    /// dead-lettered now rather than refused again.
    fn mark_refused(&self, batch: &mut Batch) {
        let Self::ExactlyOnce(tx) = self else {
            return;
        };
        for (r, t) in batch.records.iter().zip(&mut batch.taken) {
            if let Some((failure, form)) = tx.refused(r) {
                t.refused = Some(failure);
                t.form = form;
            }
        }
    }

    /// The error a producer failure ends the session with: the run's end outside a
    /// transaction; in one, the transaction cannot commit (the producer purges what it holds),
    /// so it is aborted and the run goes on unless the abort fails too. The records `settled`
    /// beside the failure are not settled now; those the broker refused are remembered first,
    /// so that they are dead-lettered when read again (a purge acknowledged in the same drain
    /// as a refusal would otherwise hide it).
    async fn failed(
        &mut self,
        delivery: &mut Delivery<impl Outlet>,
        settled: &mut Vec<Settled>,
        error: SinkError,
    ) -> PipelineError {
        match self {
            Self::AtLeastOnce(_) => error.into(),
            Self::ExactlyOnce(tx) => {
                for s in settled.drain(..) {
                    if let Settled::Refused(again) = s {
                        tx.refuse(*again);
                    }
                }
                tx.rewinding(delivery, Cause::Sink(error)).await
            }
        }
    }

    /// Moves the commit point behind the settled records, and returns the permits their
    /// offsets free. A record refused in a transaction ends the session.
    async fn settle(
        &mut self,
        settled: &mut Vec<Settled>,
        tracker: &mut OffsetTracker,
        permits: &Semaphore,
        delivery: &mut Delivery<impl Outlet>,
    ) -> Result<(), PipelineError> {
        let mut released = 0;
        let mut refused = None;
        // One store per partition for the whole drain, not one per record: a store looks the
        // topic up in librdkafka and takes its locks.
        let mut stores: Vec<Position> = Vec::new();
        for s in settled.drain(..) {
            match s {
                Settled::Finished(position) => {
                    let finished = tracker.finished(
                        &position.topic,
                        position.partition,
                        position.offset,
                        position.epoch,
                    );
                    released += finished.released;
                    if let (Self::AtLeastOnce(_), Some(last)) = (&*self, finished.store) {
                        note_store(&mut stores, position, last);
                    }
                }
                Settled::Refused(again) => {
                    if let Self::ExactlyOnce(tx) = self {
                        let why = tx.refuse(*again);
                        refused.get_or_insert(why);
                    }
                }
            }
        }
        if let Self::AtLeastOnce(source) = &*self {
            for p in stores {
                source.finished_up_to(&p.topic, p.partition, p.offset, p.generation);
            }
        }
        permits.add_permits(released);
        match (refused, self) {
            (Some(why), Self::ExactlyOnce(tx)) => {
                Err(tx.rewinding(delivery, Cause::Said(why)).await)
            }
            _ => Ok(()),
        }
    }
}

/// What one session's loop works with.
pub(super) struct Drive<'a, I = Source> {
    pub(super) source: &'a Arc<I>,
    pub(super) stages: &'a Arc<Stages>,
    pub(super) settings: &'a PipelineSettings,
    pub(super) batches: mpsc::Receiver<Batch>,
    /// The consumer's fatal error, from the reader; `None` once the reader left without one.
    pub(super) consumer_failed: Option<oneshot::Receiver<SourceError>>,
    pub(super) permits: &'a Semaphore,
    pub(super) stop: &'a watch::Sender<bool>,
}

impl<I: Input> Drive<'_, I> {
    /// Runs until the reader's batches are all delivered and committed (after a stop), or the
    /// session must end.
    pub(super) async fn run(
        mut self,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
        drain_deadline: &mut Option<Instant>,
        delivery: &mut Delivery<impl Outlet>,
        commit: &mut Commit<'_, I>,
    ) -> Result<(), PipelineError> {
        let mut tracker = OffsetTracker::new();
        let mut processing = Sequencer::new();
        let mut settled = Vec::new();
        let mut input_open = true;
        let mut progress = Progress::new(self.stages);
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.tick().await;
        self.stages.counters.turned(0);
        // Held apart from `delivery`, so that waiting for acknowledgements borrows nothing the
        // loop's arms change.
        let acks = delivery.acks();
        loop {
            match delivery.send(commit, &mut settled) {
                Ok(()) => {}
                Err(PipelineError::Sink(error)) => {
                    return Err(commit.failed(delivery, &mut settled, error).await);
                }
                Err(other) => return Err(other),
            }
            commit
                .settle(&mut settled, &mut tracker, self.permits, delivery)
                .await?;
            let idle = !input_open && processing.is_empty() && delivery.is_empty();
            if idle && !commit.is_open() && !commit.is_committing() {
                return Ok(());
            }
            let due = commit.due(idle);
            let may_commit = !commit.is_committing() && !delivery.is_sending();
            let full = delivery.is_full();
            let unsent = delivery.has_unsent();
            tokio::select! {
                biased;
                () = shutdown.as_mut(), if drain_deadline.is_none() => {
                    tracing::info!(open = tracker.open(), "shutting down: draining records in flight");
                    *drain_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
                    let _ = self.stop.send(true);
                }
                () = sleep_until(*drain_deadline) => {
                    return Err(PipelineError::ShutdownTimeout(self.settings.shutdown_timeout));
                }
                // Before the batches: the reader reports the failure before it closes them,
                // so a run never mistakes a dead consumer for the end of its input.
                error = reported(&mut self.consumer_failed) => {
                    return Err(PipelineError::Source(Box::new(error)));
                }
                // The outcome is handled in the arm, not in the branch's future: an abort
                // waits for acknowledgements, and a branch that loses the race is dropped,
                // which would forget a failed commit and begin the next transaction on a
                // producer that must abort first.
                ended = commit.commit_ended() => commit.commit_handled(ended, delivery).await?,
                () = sleep_until(due), if may_commit => commit.start_commit(),
                () = acks.arrived() => {
                    if let Err(error) = delivery.acknowledge(&mut settled) {
                        return Err(commit.failed(delivery, &mut settled, error).await);
                    }
                }
                () = tokio::time::sleep(QUEUE_FULL_RETRY), if full => {}
                Some(processed) = processing.next(), if !unsent => {
                    for (outcome, taken) in processed? {
                        delivery.push(outcome, taken);
                    }
                }
                batch = self.batches.recv(), if input_open && processing.len() < self.settings.max_batches_in_flight => {
                    match batch {
                        Some(mut batch) => {
                            self.stages.counters.batch(batch.len());
                            self.permits.add_permits(register(&mut tracker, &mut batch.taken, &batch.records));
                            commit.mark_refused(&mut batch);
                            let marks = Marks::of(self.settings.order, &batch.records);
                            processing.push(marks, process_batch(self.stages.clone(), batch));
                        }
                        None => input_open = false,
                    }
                }
                _ = report.tick() => {
                    progress.report(self.stages, self.source, tracker.open(), drain_deadline.is_some());
                }
            }
        }
    }
}

/// The error the reader reported on `failed`; pending for ever once it left without one.
async fn reported(failed: &mut Option<oneshot::Receiver<SourceError>>) -> SourceError {
    if let Some(receiver) = failed.as_mut() {
        if let Ok(error) = receiver.await {
            return error;
        }
        *failed = None;
    }
    std::future::pending().await
}

/// Notes that every record of `position`'s partition up to `last` may be stored, keeping one
/// entry per partition and assignment (a later store of the same one supersedes it).
fn note_store(stores: &mut Vec<Position>, mut position: Position, last: i64) {
    position.offset = last;
    match stores.iter_mut().find(|s| {
        s.partition == position.partition
            && s.generation == position.generation
            && s.epoch == position.epoch
            && s.topic == position.topic
    }) {
        Some(s) => s.offset = s.offset.max(last),
        None => stores.push(position),
    }
}

/// Registers a batch's records with the offset tracker; returns the permits freed by records
/// it forgot (a partition read again under a new assignment).
fn register(tracker: &mut OffsetTracker, taken: &mut [Taken], records: &[InputRecord]) -> usize {
    let mut released = 0;
    for (r, t) in records.iter().zip(taken) {
        let (epoch, freed) = tracker.consumed(&r.topic, r.partition, r.offset, t.generation);
        t.epoch = epoch;
        released += freed;
    }
    released
}

#[cfg(test)]
mod tests;
