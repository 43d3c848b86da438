//! Exactly-once mode: records' outputs and dead letters go into one transaction per
//! `transaction-interval`, committed with the input offsets they cover. The transaction opens
//! when the first record of a window is produced, collects every record whose outputs (or dead
//! letter) went into it, and is due for commit `transaction-interval` later. Committing sends,
//! per input partition, the offset after the last record in it; records are produced in
//! consumption order, so every record below that offset (under the same assignment) is in this
//! transaction or an earlier one.
//!
//! Whatever cannot commit (a record in it refused, a rebalance, an error the broker calls
//! abortable) is aborted, everything in flight is forgotten, and each owned partition is read
//! again from where the last committed transaction left it (see `source::ownership`), so no
//! record's outputs are committed twice or never.

mod ledger;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::PipelineError;
use super::outlet::Outlet;
use super::process::{Outcome, Taken};
use super::produce::{Delivery, Gate, Settled};
use crate::contract::InputRecord;
use crate::failure::Failure;
use crate::metrics::Counters;
use crate::sink::{Form, Sink, SinkError, TransactionError};
use crate::source::Source;
use ledger::{Covered, Ledger};

/// How long the acknowledgements of a transaction that cannot commit are awaited before it is
/// aborted.
const HARVEST_AT_MOST: Duration = Duration::from_secs(5);
/// How long a transaction's commit may take: less than the `transaction.timeout.ms` the
/// runtime sets, after which the broker aborts it anyway. Offsets not taken by then abort the
/// transaction; a commit request whose outcome is still unknown stops the run (undecided).
const TRANSACTION_AT_MOST: Duration = Duration::from_secs(8);
/// Aborts in a row, with no commit between, after which the run stops: something refuses every
/// transaction.
const ABORTS_AT_MOST: u32 = 10;
/// How long an abort may take before the run stops.
const ABORT_AT_MOST: Duration = Duration::from_secs(10);
/// How long moving one partition back after an abort may take.
const SEEK_AT_MOST: Duration = Duration::from_secs(10);

/// How a transaction's commit ended.
#[derive(Debug)]
enum Committed {
    Done(Vec<Covered>),
    /// A partition in it is no longer owned under the assignment its records were read in.
    Stale,
    Failed(TransactionError),
}

/// A commit's outcome, taken from its thread and not yet acted on.
#[derive(Debug)]
pub(super) struct Ended(Result<Committed, tokio::task::JoinError>);

/// Why a transaction cannot commit: something to tell the log, or the producer's own error.
#[derive(Debug)]
pub(super) enum Cause {
    Said(String),
    Sink(SinkError),
}

impl From<SinkError> for Cause {
    fn from(error: SinkError) -> Self {
        Self::Sink(error)
    }
}

/// The exactly-once controller, kept across the sessions an abort separates.
#[derive(Debug)]
pub(super) struct Transactions {
    ledger: Ledger,
    /// A commit running on a blocking thread.
    committing: Option<tokio::task::JoinHandle<Committed>>,
    sink: Sink,
    source: Arc<Source>,
    counters: Arc<Counters>,
}

impl Gate for Transactions {
    fn open(&self) -> bool {
        self.committing.is_none()
    }

    fn entering(&mut self, record: &InputRecord, generation: u64) -> Result<(), PipelineError> {
        let window = &mut self.ledger.window;
        if !window.is_open() {
            self.sink.begin()?;
            self.ledger.in_producer = true;
            window.open(Instant::now());
        }
        window.add(&record.topic, record.partition, record.offset, generation);
        Ok(())
    }
}

impl Transactions {
    pub(super) fn new(
        interval: Duration,
        sink: Sink,
        source: Arc<Source>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            ledger: Ledger::new(interval),
            committing: None,
            sink,
            source,
            counters,
        }
    }

    /// Whether a commit is running.
    pub(super) fn is_committing(&self) -> bool {
        self.committing.is_some()
    }

    /// Whether a transaction collects records.
    pub(super) fn is_open(&self) -> bool {
        self.ledger.window.is_open()
    }

    /// When the open transaction is to be committed: now if nothing more is to come.
    pub(super) fn due(&self, idle: bool) -> Option<Instant> {
        let due = self.ledger.window.due();
        if idle && due.is_some() {
            return Some(Instant::now());
        }
        due
    }

    /// How a record read again must be dead-lettered, if the broker refused it before.
    pub(super) fn refused(&self, record: &InputRecord) -> Option<(Failure, Form)> {
        self.ledger
            .refused(&record.topic, record.partition, record.offset)
    }

    /// Starts committing the open transaction, on a blocking thread, if every partition in it
    /// is still owned under the assignment its records were read in.
    pub(super) fn start_commit(&mut self) {
        tracing::trace!(
            records = self.ledger.window.records(),
            "committing the transaction"
        );
        let covered = self.ledger.window.close();
        let sink = self.sink.clone();
        let source = self.source.clone();
        self.committing = Some(tokio::task::spawn_blocking(move || {
            let positions = covered
                .iter()
                .map(|c| (&*c.topic, c.partition, c.generation));
            let Some(group) = source.group_metadata_while_owned(positions) else {
                return Committed::Stale;
            };
            match sink.commit(&ledger::offsets(&covered), &group, TRANSACTION_AT_MOST) {
                Ok(()) => Committed::Done(covered),
                Err(e) => Committed::Failed(e),
            }
        }));
    }

    /// Resolves when the commit running ends; never if none runs. Safe to cancel (a `select!`
    /// branch): the commit's outcome is taken only once it is in, and handed out at once, so
    /// that [`Transactions::commit_handled`] acts on it outside the race.
    pub(super) async fn commit_ended(&mut self) -> Ended {
        let Some(committing) = self.committing.as_mut() else {
            return std::future::pending().await;
        };
        let committed = committing.await;
        self.committing = None;
        Ended(committed)
    }

    /// Acts on a commit that ended: a commit that did not go through ends the session,
    /// with [`PipelineError::Rewind`] when an abort mends it.
    pub(super) async fn commit_handled(
        &mut self,
        Ended(committed): Ended,
        delivery: &mut Delivery<impl Outlet>,
    ) -> Result<(), PipelineError> {
        match committed {
            Ok(Committed::Done(covered)) => {
                self.committed(&covered);
                Ok(())
            }
            Ok(Committed::Stale) => Err(PipelineError::Rewind("partitions were revoked".into())),
            Ok(Committed::Failed(TransactionError::Abortable(e))) => {
                Err(self.rewinding(delivery, Cause::Said(e.to_string())).await)
            }
            Ok(Committed::Failed(fatal)) => Err(fatal.into()),
            Err(e) => Err(PipelineError::TaskEnded {
                task: "commit",
                cause: e.to_string(),
            }),
        }
    }

    /// A transaction committed: its offsets are where aborts rewind to from now on.
    fn committed(&mut self, covered: &[Covered]) {
        self.counters.committed();
        for c in covered {
            self.source
                .committed_in_transaction(&c.topic, c.partition, c.generation, c.next);
        }
        self.ledger.committed(covered);
        let source = &self.source;
        self.ledger
            .keep_refusals_of(|topic, partition| source.owns(topic, partition));
    }

    /// The error that ends a session whose transaction cannot commit because of `cause`: the
    /// run stops if another instance fenced this one (said by `cause` or by an acknowledgement
    /// already in), otherwise the transaction is aborted and its records read again. The
    /// records the broker refused among those acknowledgements are remembered, to be
    /// dead-lettered when read again rather than refused again.
    pub(super) async fn rewinding(
        &mut self,
        delivery: &mut Delivery<impl Outlet>,
        cause: Cause,
    ) -> PipelineError {
        let mut fenced = None;
        let why = match cause {
            Cause::Sink(error) if error.fenced() => {
                fenced = Some(error);
                String::new()
            }
            Cause::Sink(error) => error.to_string(),
            Cause::Said(why) => why,
        };
        // Every acknowledgement of the transaction comes in soon: the broker client purges what
        // it has not sent once the transaction cannot commit. Waiting for them all (within a
        // bound) finds every refused record, not only those whose refusal came first.
        let mut settled = Vec::new();
        let harvest = async {
            while delivery.is_awaiting() {
                delivery.arrived().await;
                if let Err(error) = delivery.acknowledge(&mut settled)
                    && error.fenced()
                {
                    fenced.get_or_insert(error);
                }
                for s in settled.drain(..) {
                    if let Settled::Refused(again) = s {
                        self.refuse(*again);
                    }
                }
            }
        };
        if tokio::time::timeout(HARVEST_AT_MOST, harvest)
            .await
            .is_err()
        {
            tracing::debug!("acknowledgements still missing when the transaction was aborted");
        }
        delivery.forget();
        match fenced {
            Some(error) => PipelineError::Fenced(Box::new(error)),
            None => PipelineError::Rewind(why),
        }
    }

    /// Remembers a record the broker refused inside a transaction, to dead-letter it when it is
    /// read again after the abort; returns why, for the log.
    pub(super) fn refuse(&mut self, (outcome, taken): (Outcome, Taken)) -> String {
        let r = outcome.record;
        match outcome.result {
            Err(failure) => {
                let why = format!("{}: {}", failure.reason, failure.message);
                self.ledger
                    .refuse(r.topic, r.partition, r.offset, (failure, taken.form));
                why
            }
            Ok(_) => "a record was refused".to_owned(),
        }
    }

    /// Ends an aborted session's transaction: waits for a commit still running (one that went
    /// through moves the rewind points on), aborts what the producer holds, and moves every
    /// owned partition back to where the last committed transaction left it. The reader is
    /// stopped, so nothing read before the move can be taken after it.
    pub(super) async fn rewind(&mut self, why: String) -> Result<(), PipelineError> {
        self.settle_commit(Instant::now() + TRANSACTION_AT_MOST * 2)
            .await?;
        self.ledger.aborts_in_a_row += 1;
        if self.ledger.aborts_in_a_row > ABORTS_AT_MOST {
            return Err(PipelineError::Aborting {
                aborts: self.ledger.aborts_in_a_row,
                why,
            });
        }
        self.counters.aborted();
        tracing::warn!(reason = %why, "aborting the transaction; its records are read again");
        self.ledger.window.close();
        let abort = std::mem::replace(&mut self.ledger.in_producer, false);
        let sink = self.sink.clone();
        let source = self.source.clone();
        let rewound = tokio::task::spawn_blocking(move || {
            if abort {
                sink.abort(ABORT_AT_MOST)?;
            }
            let partitions = source.rewind(SEEK_AT_MOST).map_err(PipelineError::Seek)?;
            if source.is_paused() {
                source.resume();
            }
            Ok::<_, PipelineError>(partitions)
        })
        .await
        .map_err(|e| PipelineError::TaskEnded {
            task: "rewind",
            cause: e.to_string(),
        })??;
        tracing::info!(partitions = rewound, "partitions rewound");
        let source = &self.source;
        self.ledger
            .keep_refusals_of(|topic, partition| source.owns(topic, partition));
        Ok(())
    }

    /// Waits, until `until`, for a commit the ended session left running; records what it
    /// committed.
    async fn settle_commit(&mut self, until: Instant) -> Result<(), PipelineError> {
        let Some(committing) = self.committing.take() else {
            return Ok(());
        };
        match tokio::time::timeout_at(until, committing).await {
            Ok(Ok(Committed::Done(covered))) => {
                self.committed(&covered);
                Ok(())
            }
            // The transaction is still open in the producer: the abort ends it.
            Ok(Ok(Committed::Stale | Committed::Failed(TransactionError::Abortable(_)))) => Ok(()),
            Ok(Ok(Committed::Failed(fatal))) => Err(fatal.into()),
            Ok(Err(e)) => Err(PipelineError::TaskEnded {
                task: "commit",
                cause: e.to_string(),
            }),
            Err(_) => Err(PipelineError::TaskEnded {
                task: "commit",
                cause: "the transaction's commit did not finish".into(),
            }),
        }
    }

    /// After a failed run: waits for a commit still running, then aborts the open transaction
    /// if there is one, waiting `wait` at most for each.
    pub(super) async fn abandon(&mut self, wait: Duration) {
        if let Err(error) = self.settle_commit(Instant::now() + wait).await {
            tracing::warn!(%error, "the last commit did not settle");
            return;
        }
        if !std::mem::replace(&mut self.ledger.in_producer, false) {
            return;
        }
        let sink = self.sink.clone();
        let aborting = tokio::task::spawn_blocking(move || sink.abort(wait));
        match tokio::time::timeout(wait, aborting).await {
            Ok(Ok(Ok(()))) => tracing::info!("open transaction aborted"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the open transaction was not aborted"),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                "the open transaction was not aborted; the broker aborts it after transaction.timeout.ms"
            ),
        }
    }
}
