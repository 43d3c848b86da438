//! The pipeline: records from the [`Source`] in batches, through the plugin and the model, to
//! the [`Sink`], with offsets stored only behind finished records.
//!
//! Three loops cooperate:
//! - the [`reader`] pulls records, one permit of `max-pending` each, and cuts batches at
//!   `batch-size` records or after `linger`;
//! - up to `max-batches-in-flight` batches are processed concurrently (prepare, model calls,
//!   complete), and their outcomes are produced in consumption order;
//! - each record's acknowledgements are awaited; when all are in, the record is finished, and
//!   the offset tracker may advance the partition's stored offset. A record's permit returns
//!   when its offset is behind that point, so `max-pending` bounds what a crash can make the
//!   group read again.
//!
//! In exactly-once mode ([`transaction`]) the records' outputs and dead letters go into one
//! transaction per `transaction-interval`, committed with the input offsets they cover; offsets
//! are never stored. A transaction that cannot commit (a record in it refused, a rebalance, an
//! error the broker calls abortable) is aborted, everything in flight is dropped, and each owned
//! partition is read again from where the last committed transaction left it.
//!
//! Nothing is unbounded: the permits cap records in memory, the bounded channel caps batches
//! waiting, the model client caps calls in flight. No step waits outside the loop's `select!`:
//! a full producer queue, a signal and the drain deadline are all seen. Shutdown stops the
//! reader, lets every batch in flight finish and be acknowledged, flushes the producer and
//! commits, all within `shutdown-timeout`.

mod reader;
mod transaction;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::config::PipelineSettings;
use crate::contract::{Completion, Decision, InputRecord, Origin, OutputRecord};
use crate::failure::{Failure, Reason};
use crate::inference::Inference;
use crate::kafka::headers::RawHeader;
use crate::metrics::{Counters, Summary, millis};
use crate::offsets::OffsetTracker;
use crate::plugin::{PluginError, PluginPool};
use crate::sink::{Form, PLUGIN_DIGEST_HEADER, Pending, Sink, SinkError, TransactionError};
use crate::source::{Consumed, Source};
use transaction::{Committed, Committing, Transactions};

/// How often the counters are logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Dead letters logged one by one per second at most; the rest are counted in the next line
/// logged (`unlogged`) and in the progress line.
const DEAD_LETTERS_LOGGED_PER_SECOND: u32 = 10;
/// How long nothing may be consumed, with nothing in flight and the reader not pausing, before
/// the brokers are asked whether records wait (and a stall is reported if they do).
const STALL_AFTER: Duration = Duration::from_secs(30);

/// How long the consumer may take to close once the offsets are committed.
const CLOSE_AT_MOST: Duration = Duration::from_secs(2);
/// The final commit's least wait, even when the drain used the whole deadline.
const COMMIT_AT_LEAST: Duration = Duration::from_secs(2);
/// How long the acknowledgements of a transaction that cannot commit are awaited before it is
/// aborted.
const HARVEST_AT_MOST: Duration = Duration::from_secs(5);
/// How long a transaction's commit may take before it is aborted: less than the
/// `transaction.timeout.ms` the runtime sets, after which the broker aborts it anyway.
const TRANSACTION_AT_MOST: Duration = Duration::from_secs(8);
/// Aborts in a row, with no commit between, after which the run stops: something refuses every
/// transaction.
const ABORTS_AT_MOST: u32 = 10;
/// How long an abort may take before the run stops.
const ABORT_AT_MOST: Duration = Duration::from_secs(10);
/// How long moving one partition back after an abort may take.
const SEEK_AT_MOST: Duration = Duration::from_secs(10);

/// Why the pipeline stopped before its shutdown was asked for, or could not finish it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("shutdown did not finish within {0:?}; unfinished records will be read again")]
    ShutdownTimeout(Duration),
    #[error("the {task} task ended unexpectedly: {cause}")]
    TaskEnded { task: &'static str, cause: String },
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    #[error("another instance took over this one's transactional id (fenced): {0}")]
    Fenced(#[source] Box<SinkError>),
    /// The open transaction must be aborted and its records read again. Handled inside
    /// [`Pipeline::run`], never returned by it.
    #[error("transaction aborted: {0}")]
    Rewind(String),
    #[error("{aborts} transactions aborted in a row, the last because: {why}")]
    Aborting { aborts: u32, why: String },
    #[error("cannot move the input back after an abort: {0}")]
    Seek(#[source] rdkafka::error::KafkaError),
}

/// One input record and what became of it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) record: InputRecord,
    pub(crate) result: Result<Vec<OutputRecord>, Failure>,
    /// The plugin that handled the record.
    pub(crate) plugin_digest: Arc<str>,
}

/// What the pipeline keeps of a record besides the record: when it was read, where it stands
/// in its partition's assignment, and what the source could not hand to the plugin.
#[derive(Debug)]
struct Taken {
    arrived: Instant,
    generation: u64,
    /// The offset tracker's epoch, set when the batch is registered.
    epoch: u64,
    exact_headers: Option<Vec<RawHeader>>,
    refused: Option<Failure>,
    /// How much of the record its dead letter carries.
    form: Form,
}

/// A record's place in its partition, to finish it once acknowledged, and when the reader took
/// it from the consumer.
struct Position {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    arrived: Instant,
    generation: u64,
    epoch: u64,
}

/// Records cut by the reader, each with what the pipeline keeps of it.
#[derive(Debug, Default)]
struct Batch {
    records: Vec<InputRecord>,
    taken: Vec<Taken>,
}

impl Batch {
    fn with_capacity(size: usize) -> Self {
        Self {
            records: Vec::with_capacity(size),
            taken: Vec::with_capacity(size),
        }
    }

    fn push(&mut self, consumed: Consumed, now: Instant) {
        let Consumed {
            record,
            generation,
            exact_headers,
            refused,
        } = consumed;
        self.records.push(record);
        self.taken.push(Taken {
            arrived: now,
            generation,
            epoch: 0,
            exact_headers,
            refused,
            form: Form::Full,
        });
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What processing a batch needs, shared by the batches in flight.
pub(crate) struct Stages {
    /// The plugin in use; a reload swaps it while batches in flight finish on the old one.
    plugin: RwLock<Arc<PluginPool>>,
    pub(crate) inference: Inference,
    pub(crate) counters: Arc<Counters>,
}

impl Stages {
    pub(crate) fn new(plugin: PluginPool, inference: Inference) -> Self {
        Self {
            plugin: RwLock::new(Arc::new(plugin)),
            inference,
            counters: Arc::new(Counters::default()),
        }
    }

    /// The plugin new batches use.
    pub(crate) fn plugin(&self) -> Arc<PluginPool> {
        // A poisoned lock still holds a valid Arc: the swap cannot panic half-way.
        self.plugin
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes `plugin` the one new batches use; returns the one it replaces.
    pub(crate) fn swap_plugin(&self, plugin: PluginPool) -> Arc<PluginPool> {
        let mut current = self
            .plugin
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(plugin))
    }
}

/// The assembled pipeline, ready to run.
pub struct Pipeline {
    source: Arc<Source>,
    sink: Sink,
    stages: Arc<Stages>,
    settings: PipelineSettings,
    /// In exactly-once mode, how long a transaction collects records.
    transaction_interval: Option<Duration>,
    /// Bounds the per-record dead-letter warnings, so that a flood of poison records cannot
    /// flood the log.
    dead_letter_log: Quota,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

type Processed = Result<(Vec<Outcome>, Vec<Taken>), PipelineError>;
/// What a record's acknowledgements say: it is finished, or the broker refused a record of it
/// for good and it must be produced again as a dead letter.
enum Acked {
    Finished(Position),
    Retry(Box<(Outcome, Taken)>),
}
type Acknowledging = Pin<Box<dyn Future<Output = Result<Acked, SinkError>> + Send>>;
type Enqueuing<'a> = Pin<Box<dyn Future<Output = Result<Acknowledging, SinkError>> + Send + 'a>>;

impl Pipeline {
    pub fn new(
        source: Source,
        sink: Sink,
        plugin: PluginPool,
        inference: Inference,
        settings: PipelineSettings,
    ) -> Self {
        let stages = Arc::new(Stages::new(plugin, inference));
        Self {
            source: Arc::new(source),
            sink,
            stages,
            settings,
            transaction_interval: None,
            dead_letter_log: Quota::new(DEAD_LETTERS_LOGGED_PER_SECOND),
        }
    }

    /// Produces in transactions of `interval` (the sink must be transactional).
    #[must_use]
    pub fn exactly_once(mut self, interval: Duration) -> Self {
        self.transaction_interval = Some(interval);
        self
    }

    /// What batches are processed with; the plugin reload swaps the plugin in it.
    pub(crate) fn stages(&self) -> Arc<Stages> {
        self.stages.clone()
    }

    /// The consumer, for health and metrics.
    pub(crate) fn source(&self) -> Arc<Source> {
        self.source.clone()
    }

    /// Runs until `shutdown` resolves, then drains, flushes and commits, all within
    /// `shutdown-timeout`.
    ///
    /// # Errors
    /// [`PipelineError`] when a plugin instance cannot be rebuilt, the broker refuses or loses
    /// records, the reader ends unexpectedly, or draining takes longer than `shutdown-timeout`.
    /// Offsets of finished records are committed in every case, so a restart reads the
    /// unfinished ones again.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Summary, PipelineError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut deadline = None;
        let mut transactions = self.transaction_interval.map(Transactions::new);
        let result = loop {
            let result = self
                .session(shutdown.as_mut(), &mut deadline, &mut transactions)
                .await;
            match (result, transactions.as_mut()) {
                (Err(PipelineError::Rewind(why)), Some(tx)) => {
                    if let Err(e) = self.rewind(tx, why).await {
                        break Err(e);
                    }
                    // Draining: what the aborted transaction held is read again at the next
                    // start.
                    if deadline.is_some() {
                        break Ok(());
                    }
                }
                (other, _) => break other,
            }
        };
        // The flush shares the shutdown's deadline; after a failure it gets the same time.
        let until = deadline.unwrap_or_else(|| Instant::now() + self.settings.shutdown_timeout);
        let flushed = match &mut transactions {
            Some(tx) if result.is_err() => {
                // Whatever the open transaction holds is never shown; a restart reads it
                // again. A fenced producer's transaction is aborted by the one that fenced it.
                let fenced = matches!(
                    result,
                    Err(PipelineError::Fenced(_)
                        | PipelineError::Transaction(
                            TransactionError::Fatal(_)
                                | TransactionError::Fenced(_)
                                | TransactionError::AbortFailed(_)
                        ))
                );
                if !fenced {
                    self.abandon_transaction(tx, until).await;
                }
                Ok(())
            }
            _ => self
                .sink
                .flush(until.saturating_duration_since(Instant::now())),
        };
        self.final_commit(until).await;
        release(self.source, CLOSE_AT_MOST);
        let summary = self.stages.counters.summary();
        // Nothing else holds the stages now (the reload watcher and the metrics hold them
        // weakly): the plugin's threads finish what they hold and are joined.
        match Arc::try_unwrap(self.stages) {
            Ok(stages) => match Arc::try_unwrap(
                stages
                    .plugin
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ) {
                Ok(pool) => pool.shutdown(),
                Err(_) => tracing::warn!("plugin workers still referenced at shutdown"),
            },
            Err(_) => tracing::warn!("plugin workers still referenced at shutdown"),
        }
        result?;
        flushed?;
        Ok(summary)
    }

    /// One reader and one drive, until the run ends or the open transaction must be aborted.
    async fn session(
        &self,
        shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
        deadline: &mut Option<Instant>,
        transactions: &mut Option<Transactions>,
    ) -> Result<(), PipelineError> {
        let (stop, stopped) = watch::channel(false);
        let (batches_tx, batches) = mpsc::channel(2);
        let permits = Arc::new(Semaphore::new(self.settings.max_pending));
        let reader = tokio::spawn(reader::read(
            self.source.clone(),
            batches_tx,
            permits.clone(),
            self.stages.counters.clone(),
            self.settings.clone(),
            stopped,
        ));
        let result = self
            .drive(batches, &permits, &stop, shutdown, deadline, transactions)
            .await;
        let _ = stop.send(true);
        // The reader leaves on its own when stopped, or is cancelled here; one that panicked
        // fails the run. Its share of the source goes with it.
        reader.abort();
        match (result, reader.await) {
            (Ok(()), Err(e)) if e.is_panic() => Err(PipelineError::TaskEnded {
                task: "reader",
                cause: panic_message(e.into_panic()),
            }),
            (result, _) => result,
        }
    }

    /// Ends an aborted session's transaction: waits for a commit still running (one that went
    /// through moves the rewind points on), aborts what the producer holds, and moves every
    /// owned partition back to where the last committed transaction left it. The reader is
    /// stopped, so nothing read before the move can be taken after it.
    async fn rewind(&self, tx: &mut Transactions, why: String) -> Result<(), PipelineError> {
        self.settle_commit(tx, Instant::now() + TRANSACTION_AT_MOST * 2)
            .await?;
        tx.aborts_in_a_row += 1;
        if tx.aborts_in_a_row > ABORTS_AT_MOST {
            return Err(PipelineError::Aborting {
                aborts: tx.aborts_in_a_row,
                why,
            });
        }
        self.stages.counters.aborted();
        tracing::warn!(reason = %why, "aborting the transaction; its records are read again");
        tx.window.close();
        let abort = std::mem::replace(&mut tx.in_producer, false);
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
        Ok(())
    }

    /// Waits, until `until`, for a commit the ended session left running; records what it
    /// committed.
    async fn settle_commit(
        &self,
        tx: &mut Transactions,
        until: Instant,
    ) -> Result<(), PipelineError> {
        let Some(committing) = tx.committing.take() else {
            return Ok(());
        };
        match tokio::time::timeout_at(until, committing).await {
            Ok(Ok(Committed::Done(covered))) => {
                self.transaction_committed(tx, &covered);
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

    /// A transaction committed: its offsets are where aborts rewind to from now on.
    fn transaction_committed(&self, tx: &mut Transactions, covered: &[transaction::Covered]) {
        self.stages.counters.committed();
        for c in covered {
            self.source
                .committed_in_transaction(&c.topic, c.partition, c.generation, c.next);
        }
        tx.committed(covered);
    }

    /// After a failed run: waits for a commit still running, then aborts the open transaction
    /// if there is one, waiting no longer than `until` (and at least [`COMMIT_AT_LEAST`]).
    async fn abandon_transaction(&self, tx: &mut Transactions, until: Instant) {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(COMMIT_AT_LEAST);
        if let Err(error) = self.settle_commit(tx, Instant::now() + wait).await {
            tracing::warn!(%error, "the last commit did not settle");
            return;
        }
        if !std::mem::replace(&mut tx.in_producer, false) {
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

    /// Commits what is stored and leaves the group, waiting no longer than `until` (and at
    /// least [`COMMIT_AT_LEAST`]): with the brokers gone, librdkafka would wait for them.
    async fn final_commit(&self, until: Instant) {
        let source = self.source.clone();
        let committing = tokio::task::spawn_blocking(move || {
            let committed = source.commit();
            source.close();
            committed
        });
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(COMMIT_AT_LEAST);
        match tokio::time::timeout(wait, committing).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::error!(%error, "final offset commit failed; the next run reads those records again");
            }
            Ok(Err(panicked)) => tracing::error!(error = %panicked, "final offset commit failed"),
            Err(_) => tracing::error!(
                waited = ?wait,
                "final offset commit did not finish; the next run reads the records since the last commit again"
            ),
        }
    }

    async fn drive(
        &self,
        mut batches: mpsc::Receiver<Batch>,
        permits: &Semaphore,
        stop: &watch::Sender<bool>,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
        drain_deadline: &mut Option<Instant>,
        transactions: &mut Option<Transactions>,
    ) -> Result<(), PipelineError> {
        let mut tracker = OffsetTracker::new();
        let exactly_once = transactions.is_some();
        let mut processing = FuturesOrdered::new();
        let mut ready: VecDeque<(Outcome, Taken)> = VecDeque::new();
        let mut enqueuing: Option<Enqueuing<'_>> = None;
        let mut acks = FuturesUnordered::new();
        let mut input_open = true;
        let mut watch = Watchdog::new(Instant::now());
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.tick().await;
        // Since the last progress line: when, consumed, produced.
        let summary = self.stages.counters.summary();
        let mut rates = (Instant::now(), summary.consumed, summary.produced);
        self.stages.counters.turned(0);
        loop {
            let committing = transactions
                .as_ref()
                .is_some_and(|t| t.committing.is_some());
            if enqueuing.is_none()
                && !committing
                && let Some((outcome, taken)) = ready.pop_front()
            {
                if let Some(tx) = transactions.as_mut() {
                    if !tx.window.is_open() {
                        self.sink.begin()?;
                        tx.in_producer = true;
                        tx.window.open(Instant::now());
                    }
                    let r = &outcome.record;
                    tx.window
                        .add(&r.topic, r.partition, r.offset, taken.generation);
                }
                enqueuing = Some(Box::pin(self.produce(outcome, taken)));
            }
            let idle =
                !input_open && processing.is_empty() && enqueuing.is_none() && acks.is_empty();
            let open = transactions.as_ref().is_some_and(|t| t.window.is_open());
            if idle && !open && !committing {
                return Ok(());
            }
            // With nothing more to come, the open transaction is due now.
            let due = match transactions.as_ref().map(|t| t.window.due()) {
                Some(Some(_)) if idle => Some(Instant::now()),
                Some(due) => due,
                None => None,
            };
            tokio::select! {
                biased;
                () = shutdown.as_mut(), if drain_deadline.is_none() => {
                    tracing::info!(open = tracker.open(), "shutting down: draining records in flight");
                    *drain_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
                    let _ = stop.send(true);
                }
                () = sleep_until(*drain_deadline) => {
                    return Err(PipelineError::ShutdownTimeout(self.settings.shutdown_timeout));
                }
                Some((tx, committed)) = commit_of(transactions) => {
                    tx.committing = None;
                    match committed {
                        Ok(Committed::Done(covered)) => self.transaction_committed(tx, &covered),
                        Ok(Committed::Stale) => {
                            return Err(PipelineError::Rewind("partitions were revoked".into()));
                        }
                        Ok(Committed::Failed(TransactionError::Abortable(e))) => {
                            return Err(rewinding(&mut acks, tx, e.to_string()).await);
                        }
                        Ok(Committed::Failed(fatal)) => return Err(fatal.into()),
                        Err(e) => {
                            return Err(PipelineError::TaskEnded { task: "commit", cause: e.to_string() });
                        }
                    }
                }
                () = sleep_until(due), if !committing && enqueuing.is_none() => {
                    if let Some(tx) = transactions.as_mut() {
                        tracing::trace!(records = tx.window.records(), "committing the transaction");
                        tx.committing = Some(self.commit(tx.window.close()));
                    }
                }
                Some(acked) = acks.next() => {
                    let acked = match (acked, transactions.as_mut()) {
                        // In a transaction, a record that failed makes the broker client purge
                        // the others: the transaction cannot commit; the run goes on unless the
                        // abort fails too (the brokers gone).
                        (Err(error), Some(tx)) => return Err(rewinding(&mut acks, tx, error).await),
                        (acked, _) => acked?,
                    };
                    let Position { topic, partition, offset, arrived, generation, epoch } = match acked {
                        Acked::Finished(position) => position,
                        Acked::Retry(again) if exactly_once => {
                            // The transaction cannot commit now; the record is dead-lettered
                            // when it is read again.
                            if let Some(tx) = transactions.as_mut() {
                                let why = refuse(tx, *again);
                                return Err(rewinding(&mut acks, tx, why).await);
                            }
                            continue;
                        }
                        Acked::Retry(again) => {
                            ready.push_front(*again);
                            continue;
                        }
                    };
                    self.stages.counters.acknowledged_after(arrived.elapsed());
                    let finished = tracker.finished(&topic, partition, offset, epoch);
                    permits.add_permits(finished.released);
                    if !exactly_once
                        && let Some(last) = finished.store
                    {
                        self.source.finished_up_to(&topic, partition, last, generation);
                    }
                }
                Some(enqueued) = maybe(&mut enqueuing) => {
                    enqueuing = None;
                    match (enqueued, transactions.as_mut()) {
                        (Ok(acknowledging), _) => acks.push(acknowledging),
                        // The producer refuses records while its transaction must be aborted.
                        (Err(error), Some(tx)) => return Err(rewinding(&mut acks, tx, error).await),
                        (Err(error), None) => return Err(error.into()),
                    }
                }
                Some(processed) = processing.next(), if ready.is_empty() => {
                    let (outcomes, taken): (Vec<Outcome>, Vec<Taken>) = processed?;
                    ready.extend(outcomes.into_iter().zip(taken));
                }
                batch = batches.recv(), if input_open && processing.len() < self.settings.max_batches_in_flight => {
                    match batch {
                        Some(Batch { records, mut taken }) => {
                            self.stages.counters.batch(records.len());
                            let mut released = 0;
                            for (r, t) in records.iter().zip(&mut taken) {
                                let (epoch, freed) = tracker.consumed(&r.topic, r.partition, r.offset, t.generation);
                                t.epoch = epoch;
                                released += freed;
                                if let Some(tx) = transactions.as_ref()
                                    && let Some((failure, form)) = tx.refused(&r.topic, r.partition, r.offset)
                                {
                                    t.refused = Some(failure);
                                    t.form = form;
                                }
                            }
                            permits.add_permits(released);
                            let stages = self.stages.clone();
                            processing.push_back(process_taken(stages, records, taken));
                        }
                        None => input_open = false,
                    }
                }
                _ = report.tick() => {
                    // The heartbeat /healthz reads, and the in-flight gauge: at this pace, not
                    // per turn, so that the hot path pays nothing for them.
                    self.stages.counters.turned(tracker.open());
                    let s = self.stages.counters.summary();
                    let now = Instant::now();
                    let seconds = now.duration_since(rates.0).as_secs_f64().max(1e-3);
                    let in_per_s = ((s.consumed - rates.1) as f64 / seconds).round();
                    let out_per_s = ((s.produced - rates.2) as f64 / seconds).round();
                    rates = (now, s.consumed, s.produced);
                    tracing::info!(
                        consumed = s.consumed, produced = s.produced, dead_lettered = s.dead_lettered,
                        in_per_s, out_per_s,
                        skipped = s.skipped, model_calls = s.model_calls, model_failures = s.model_failures,
                        open = tracker.open(),
                        produce_p50_ms = millis(s.to_produce.p50), produce_p99_ms = millis(s.to_produce.p99),
                        ack_p99_ms = millis(s.to_acknowledge.p99),
                        model_p99_ms = millis(self.stages.inference.latency().p99),
                        model_concurrency = self.stages.inference.concurrency(),
                        model_holding = self.stages.inference.is_holding(), "progress"
                    );
                    let idle = tracker.open() == 0 && !self.source.is_paused() && drain_deadline.is_none();
                    if let Some(idle_for) = watch.suspects(s.consumed, idle, Instant::now()) {
                        check_stall(self.source.clone(), idle_for);
                    }
                }
            }
        }
    }

    /// Commits the transaction covering `covered`, on a blocking thread, if every partition in
    /// it is still owned under the assignment its records were read in.
    fn commit(&self, covered: Vec<transaction::Covered>) -> Committing {
        let sink = self.sink.clone();
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || {
            let positions = covered
                .iter()
                .map(|c| (&*c.topic, c.partition, c.generation));
            let Some(group) = source.group_metadata_while_owned(positions) else {
                return Committed::Stale;
            };
            match sink.commit(&transaction::offsets(&covered), &group, TRANSACTION_AT_MOST) {
                Ok(()) => Committed::Done(covered),
                Err(e) => Committed::Failed(e),
            }
        })
    }

    /// Enqueues a record's outputs (or its dead letter) and returns the wait for their
    /// acknowledgements.
    async fn produce(&self, outcome: Outcome, taken: Taken) -> Result<Acknowledging, SinkError> {
        let Outcome {
            record,
            result,
            plugin_digest,
        } = outcome;
        let counters = &self.stages.counters;
        let mut pending: Vec<Pending> = Vec::new();
        let mut dead_letter = false;
        let result = match result {
            Ok(outputs) if outputs.is_empty() => {
                counters.skipped();
                Ok(())
            }
            Ok(outputs) => {
                let digest_header = [(PLUGIN_DIGEST_HEADER, plugin_digest.as_bytes())];
                pending.reserve(outputs.len());
                let mut refused = Ok(());
                for output in &outputs {
                    match self.sink.send(output, &digest_header).await {
                        Ok(p) => pending.push(p),
                        // The broker client refuses this record for good (too large, a topic
                        // the plugin named that does not exist): the input is dead-lettered
                        // with the reason; outputs already sent stay sent (at-least-once).
                        Err(error) if error.refused_for_good() => {
                            refused = Err(output_refused(&error));
                            break;
                        }
                        Err(other) => return Err(other),
                    }
                }
                counters.produced(pending.len() as u64);
                // In a transaction, outputs already sent would commit beside the dead letter:
                // the transaction is aborted instead, and the record dead-lettered alone when
                // it is read again.
                if refused.is_err() && self.transaction_interval.is_some() && !pending.is_empty() {
                    let outcome = Outcome {
                        record,
                        result: refused.map(|()| Vec::new()),
                        plugin_digest,
                    };
                    return Ok(Box::pin(std::future::ready(Ok(Acked::Retry(Box::new((
                        outcome, taken,
                    )))))));
                }
                refused
            }
            Err(failure) => Err(failure),
        };
        if let Err(failure) = &result
            && let Some(unlogged) = self.dead_letter_log.admit(Instant::now())
        {
            tracing::warn!(
                topic = %record.topic, partition = record.partition, offset = record.offset,
                reason = failure.reason.code(), fault = %failure.fault(), error = %failure.message,
                unlogged, "record sent to the dead-letter topic"
            );
        }
        if let Err(failure) = &result {
            dead_letter = true;
            let exact = taken.exact_headers.as_deref();
            let sent = match self
                .sink
                .send_dead_letter(&record, exact, failure, &plugin_digest, taken.form)
                .await
            {
                Err(error) if error.refused_for_good() && taken.form == Form::Full => {
                    tracing::warn!(%error, "dead letter refused: sending it without the input's data");
                    self.sink
                        .send_dead_letter(&record, exact, failure, &plugin_digest, Form::Minimal)
                        .await
                }
                other => other,
            };
            pending.push(sent?);
            counters.dead_lettered(failure.reason);
        }
        counters.produced_after(taken.arrived.elapsed());
        Ok(Box::pin(async move {
            for p in pending {
                if let Err(error) = p.acknowledged().await {
                    // Refused by the broker for good: an output's input goes to the dead-letter
                    // topic; a dead letter goes again with nothing of its input. Anything else
                    // (the brokers gone past `message.timeout.ms`) stops the run.
                    let retry =
                        error.refused_for_good() && (!dead_letter || taken.form == Form::Full);
                    if !retry {
                        return Err(error);
                    }
                    let failure = match result {
                        Err(failure) => failure,
                        Ok(()) => output_refused(&error),
                    };
                    tracing::warn!(%error, "the broker refused a record it had been given");
                    let form = if dead_letter {
                        Form::Minimal
                    } else {
                        Form::Full
                    };
                    let outcome = Outcome {
                        record,
                        result: Err(failure),
                        plugin_digest,
                    };
                    return Ok(Acked::Retry(Box::new((outcome, Taken { form, ..taken }))));
                }
            }
            Ok(Acked::Finished(Position {
                topic: record.topic,
                partition: record.partition,
                offset: record.offset,
                arrived: taken.arrived,
                generation: taken.generation,
                epoch: taken.epoch,
            }))
        }))
    }
}

/// Why a transaction cannot commit: something to tell the log, or the producer's own error.
enum Cause {
    Said(String),
    Sink(SinkError),
}

impl From<String> for Cause {
    fn from(said: String) -> Self {
        Self::Said(said)
    }
}

impl From<SinkError> for Cause {
    fn from(error: SinkError) -> Self {
        Self::Sink(error)
    }
}

/// The error that ends a session whose transaction cannot commit because of `cause`: the run
/// stops if another instance fenced this one (said by `cause` or by an acknowledgement already
/// in), otherwise the transaction is aborted and its records read again. The records the broker
/// refused among those acknowledgements are remembered, to be dead-lettered when read again
/// rather than refused again.
async fn rewinding(
    acks: &mut FuturesUnordered<Acknowledging>,
    tx: &mut Transactions,
    cause: impl Into<Cause>,
) -> PipelineError {
    let mut fenced = None;
    let why = match cause.into() {
        Cause::Sink(error) if error.fenced() => {
            fenced = Some(error);
            String::new()
        }
        Cause::Sink(error) => error.to_string(),
        Cause::Said(why) => why,
    };
    // Every acknowledgement of the transaction comes in soon: the broker client purges what it
    // has not sent once the transaction cannot commit. Waiting for them all (within a bound)
    // finds every refused record, not only those whose refusal came first.
    let harvest = async {
        while let Some(acked) = acks.next().await {
            match acked {
                Ok(Acked::Retry(again)) => {
                    refuse(tx, *again);
                }
                Err(error) if error.fenced() => {
                    fenced.get_or_insert(error);
                }
                _ => {}
            }
        }
    };
    if tokio::time::timeout(HARVEST_AT_MOST, harvest)
        .await
        .is_err()
    {
        tracing::debug!("acknowledgements still missing when the transaction was aborted");
    }
    match fenced {
        Some(error) => PipelineError::Fenced(Box::new(error)),
        None => PipelineError::Rewind(why),
    }
}

/// Remembers a record the broker refused inside a transaction, to dead-letter it when it is read
/// again after the abort; returns why, for the log.
fn refuse(tx: &mut Transactions, (outcome, taken): (Outcome, Taken)) -> String {
    let r = outcome.record;
    match outcome.result {
        Err(failure) => {
            let why = format!("{}: {}", failure.reason, failure.message);
            tx.refuse(r.topic, r.partition, r.offset, (failure, taken.form));
            why
        }
        Ok(_) => "a record was refused".to_owned(),
    }
}

/// Resolves when the commit in flight ends, with the state it belongs to; never without one.
async fn commit_of(
    transactions: &mut Option<Transactions>,
) -> Option<(&mut Transactions, Result<Committed, tokio::task::JoinError>)> {
    let Some(tx) = transactions.as_mut() else {
        return std::future::pending().await;
    };
    match tx.committing.as_mut() {
        Some(committing) => {
            let committed = committing.await;
            Some((tx, committed))
        }
        None => std::future::pending().await,
    }
}

/// Why an input is dead-lettered when the broker refuses one of its outputs.
fn output_refused(error: &SinkError) -> Failure {
    Failure::new(
        Reason::OutputRefused,
        format!("an output record was refused: {error}"),
    )
}

/// Drops the source on a thread of its own, waiting for it at most `wait`: librdkafka's
/// consumer close waits for the brokers, and with them gone the process must exit anyway (the
/// group was left and the offsets committed, or not, by then).
fn release(source: Arc<Source>, wait: Duration) {
    if Arc::strong_count(&source) > 1 {
        // Whoever else holds it closes it later, unbounded: the group waits a session timeout.
        tracing::warn!("the consumer is still referenced at shutdown; it leaves the group late");
    }
    let (done, closed) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(source);
            let _ = done.send(());
        });
    if spawned.is_ok() && closed.recv_timeout(wait).is_err() {
        tracing::warn!(waited = ?wait, "the consumer did not close in time; exiting without it");
    }
}

/// Resolves with the future's output if there is one; never otherwise.
async fn maybe<F: Future + Unpin>(future: &mut Option<F>) -> Option<F::Output> {
    match future {
        Some(f) => Some(f.await),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Asks the brokers whether records wait while nothing is consumed, and says so if they do; on a
/// blocking thread of its own, so the pipeline's loop never waits for the answer.
fn check_stall(source: Arc<Source>, idle: Duration) {
    tokio::task::spawn_blocking(move || match source.waiting(Duration::from_secs(5)) {
        Some(waiting) if waiting > 0 => tracing::warn!(
            waiting,
            idle_s = idle.as_secs(),
            assignments = source.assignments(),
            "no progress: records wait in the assigned partitions but none were consumed"
        ),
        _ => tracing::debug!(idle_s = idle.as_secs(), "idle: no records waiting"),
    });
}

/// At most `per_second` events a second let through; the others counted, and the count handed
/// to the next one let through.
#[derive(Debug)]
struct Quota {
    per_second: u32,
    /// The current second's start, events let through in it, and events held back since the
    /// last one let through.
    state: std::sync::Mutex<(Option<Instant>, u32, u64)>,
}

impl Quota {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: std::sync::Mutex::new((None, 0, 0)),
        }
    }

    /// `Some(held back since the last one)` when this event may be logged, `None` otherwise.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, passed, held) = &mut *state;
        if since.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            *since = Some(now);
            *passed = 0;
        }
        if *passed >= self.per_second {
            *held += 1;
            return None;
        }
        *passed += 1;
        Some(std::mem::take(held))
    }
}

/// Notices a stream that consumes nothing while it could: nothing in flight, the reader not
/// pausing, and no record consumed for [`STALL_AFTER`]. Whether records wait is then asked of
/// the brokers; this only says when to ask, at most once per [`STALL_AFTER`].
#[derive(Debug)]
struct Watchdog {
    consumed: u64,
    since: Instant,
    asked: Option<Instant>,
}

impl Watchdog {
    fn new(now: Instant) -> Self {
        Self {
            consumed: 0,
            since: now,
            asked: None,
        }
    }

    /// Given the consumed count and whether the pipeline is idle now: how long nothing has
    /// been consumed, when it is time to ask the brokers.
    fn suspects(&mut self, consumed: u64, idle: bool, now: Instant) -> Option<Duration> {
        if consumed != self.consumed || !idle {
            self.consumed = consumed;
            self.since = now;
            self.asked = None;
            return None;
        }
        let idle_for = now.duration_since(self.since);
        let due = idle_for >= STALL_AFTER
            && self
                .asked
                .is_none_or(|at| now.duration_since(at) >= STALL_AFTER);
        if due {
            self.asked = Some(now);
        }
        due.then_some(idle_for)
    }
}

/// Processes a batch: records the source refused become their dead letters' outcomes in place,
/// the others go through the plugin and the model.
async fn process_taken(
    stages: Arc<Stages>,
    records: Vec<InputRecord>,
    taken: Vec<Taken>,
) -> Processed {
    if taken.iter().all(|t| t.refused.is_none()) {
        return process(stages, records)
            .await
            .map(|outcomes| (outcomes, taken));
    }
    let digest = stages.plugin().digest().clone();
    let mut refused = Vec::new();
    let mut accepted = Vec::with_capacity(records.len());
    for (i, (record, t)) in records.into_iter().zip(&taken).enumerate() {
        match &t.refused {
            Some(failure) => refused.push((i, record, failure.clone())),
            None => accepted.push(record),
        }
    }
    let mut processed = process(stages, accepted).await?.into_iter();
    let mut refused = refused.into_iter().peekable();
    let mut outcomes = Vec::with_capacity(taken.len());
    for i in 0..taken.len() {
        let outcome = match refused.next_if(|(at, _, _)| *at == i) {
            Some((_, record, failure)) => Outcome {
                record,
                result: Err(failure),
                plugin_digest: digest.clone(),
            },
            None => match processed.next() {
                Some(outcome) => outcome,
                None => break,
            },
        };
        outcomes.push(outcome);
    }
    Ok((outcomes, taken))
}

/// Runs one batch through the plugin and the model. Records keep their order.
pub(crate) async fn process(
    stages: Arc<Stages>,
    records: Vec<InputRecord>,
) -> Result<Vec<Outcome>, PipelineError> {
    // The same plugin prepares and completes the batch, even if a reload happens meanwhile.
    let plugin = stages.plugin();
    let (records, decisions) = plugin.prepare(records).await?;
    let mut results: Vec<Option<Result<Vec<OutputRecord>, Failure>>> =
        Vec::with_capacity(records.len());
    let mut calls = Vec::new();
    for (i, decision) in decisions.into_iter().enumerate() {
        results.push(match decision {
            Ok(Decision::Infer(call)) => {
                calls.push((i, call));
                None
            }
            Ok(Decision::Emit(outputs)) => Some(Ok(outputs)),
            Ok(Decision::Skip) => Some(Ok(Vec::new())),
            Err(failure) => Some(Err(failure)),
        });
    }

    let requests: Vec<&_> = calls.iter().map(|(_, call)| &call.request).collect();
    let (responses, made) = stages.inference.infer_all(&requests).await;
    let failures = responses.iter().filter(|r| r.is_err()).count() as u64;
    stages.counters.model_calls(made as u64, failures);

    // The plugin gets each record's state, key and position back with the response; the record
    // itself stays here, for its dead letter should `complete` refuse it.
    let mut completions = Vec::with_capacity(calls.len());
    let mut completed_at = Vec::with_capacity(calls.len());
    for ((i, call), response) in calls.into_iter().zip(responses) {
        match response {
            Ok(response) => {
                completions.push(Completion {
                    origin: Origin::of(&records[i]),
                    state: call.state,
                    response,
                });
                completed_at.push(i);
            }
            Err(error) => results[i] = Some(Err(error.failure())),
        }
    }
    if !completions.is_empty() {
        let outputs = plugin.complete(completions).await?;
        for (i, output) in completed_at.into_iter().zip(outputs) {
            results[i] = Some(output);
        }
    }
    Ok(records
        .into_iter()
        .zip(results)
        .map(|(record, result)| Outcome {
            plugin_digest: plugin.digest().clone(),
            record,
            result: result.unwrap_or_else(|| {
                Err(Failure::new(
                    Reason::PluginContract,
                    "the plugin returned no result for this record",
                ))
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_asks_after_a_quiet_spell_and_then_once_per_spell() {
        let start = Instant::now();
        let mut w = Watchdog::new(start);
        assert_eq!(w.suspects(0, true, start + STALL_AFTER / 2), None);
        let due = start + STALL_AFTER;
        assert_eq!(w.suspects(0, true, due), Some(STALL_AFTER));
        assert_eq!(
            w.suspects(0, true, due + STALL_AFTER / 2),
            None,
            "asked already"
        );
        assert_eq!(
            w.suspects(0, true, due + STALL_AFTER),
            Some(STALL_AFTER * 2),
            "asked again a spell later"
        );
    }

    #[test]
    fn the_watchdog_forgets_the_spell_on_progress_or_work_in_flight() {
        let start = Instant::now();
        let mut w = Watchdog::new(start);
        let later = start + STALL_AFTER;
        assert_eq!(w.suspects(5, true, later), None, "records were consumed");
        assert_eq!(w.suspects(5, true, later + STALL_AFTER / 2), None);
        assert_eq!(
            w.suspects(5, false, later + STALL_AFTER),
            None,
            "work in flight"
        );
        assert_eq!(
            w.suspects(5, true, later + STALL_AFTER * 2),
            Some(STALL_AFTER)
        );
    }

    #[test]
    fn a_quota_lets_through_its_share_a_second_and_counts_the_rest() {
        let start = Instant::now();
        let quota = Quota::new(3);
        let first: Vec<Option<u64>> = (0..10).map(|_| quota.admit(start)).collect();
        assert_eq!(first[..3], [Some(0), Some(0), Some(0)]);
        assert!(first[3..].iter().all(Option::is_none));
        let next = start + Duration::from_secs(1);
        assert_eq!(
            quota.admit(next),
            Some(7),
            "the held back are told with the next one"
        );
        assert_eq!(quota.admit(next), Some(0));
    }

    #[test]
    fn a_panic_message_is_read_from_either_payload() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7)), "a panic");
    }
}
