//! The pipeline: records from the [`Source`] in batches, through the plugin and the model, to
//! the [`Sink`], with offsets stored only behind finished records.
//!
//! Three loops cooperate:
//! - the reader pulls records, one permit of `max-pending` each, and cuts batches at
//!   `batch-size` records or after `linger`;
//! - up to `max-batches-in-flight` batches are processed concurrently (prepare, model calls,
//!   complete), and their outcomes are produced in consumption order;
//! - each record's acknowledgements are awaited; when all are in, the record is finished, its
//!   permit returns, and the offset tracker may advance the partition's stored offset.
//!
//! Nothing is unbounded: the permits cap records in memory, the bounded channel caps batches
//! waiting, the model client caps calls in flight. Shutdown stops the reader, lets every batch
//! in flight finish and be acknowledged (within `shutdown-timeout`), then commits.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::config::PipelineSettings;
use crate::contract::{Completion, Decision, InputRecord, Origin, OutputRecord};
use crate::failure::{Failure, Fault};
use crate::inference::Inference;
use crate::metrics::{Counters, Summary, millis};
use crate::offsets::OffsetTracker;
use crate::plugin::{PluginError, PluginPool};
use crate::sink::{PLUGIN_DIGEST_HEADER, Pending, Sink, SinkError};
use crate::source::Source;

/// How often the counters are logged.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long the reader may be unable to hand on records before it pauses the partitions.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Why the pipeline stopped before its shutdown was asked for, or could not finish it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("shutdown did not finish within {0:?}; unfinished records will be read again")]
    ShutdownTimeout(Duration),
}

/// One input record and what became of it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) record: InputRecord,
    pub(crate) result: Result<Vec<OutputRecord>, Failure>,
    /// The plugin that handled the record.
    pub(crate) plugin_digest: Arc<str>,
}

/// A record's place in its partition, to finish it once acknowledged, and when the reader took
/// it from the consumer.
struct Position {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    arrived: Instant,
}

/// Records cut by the reader, each with the moment it was taken from the consumer (for the
/// runtime's own latency figures).
#[derive(Debug, Default)]
struct Batch {
    records: Vec<InputRecord>,
    arrived: Vec<Instant>,
}

impl Batch {
    fn with_capacity(size: usize) -> Self {
        Self {
            records: Vec::with_capacity(size),
            arrived: Vec::with_capacity(size),
        }
    }

    fn push(&mut self, record: InputRecord) {
        self.records.push(record);
        self.arrived.push(Instant::now());
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
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

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
        }
    }

    /// What batches are processed with; the plugin reload swaps the plugin in it.
    pub(crate) fn stages(&self) -> Arc<Stages> {
        self.stages.clone()
    }

    /// Runs until `shutdown` resolves, then drains and commits.
    ///
    /// # Errors
    /// [`PipelineError`] when a plugin instance cannot be rebuilt, the broker refuses or loses
    /// records, or draining takes longer than `shutdown-timeout`. Offsets of finished records are
    /// committed in every case, so a restart reads the unfinished ones again.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<Summary, PipelineError> {
        let (stop, stopped) = watch::channel(false);
        let (batches_tx, batches) = mpsc::channel(2);
        let permits = Arc::new(Semaphore::new(self.settings.max_pending));
        let reader = tokio::spawn(read(
            self.source.clone(),
            batches_tx,
            permits.clone(),
            self.stages.counters.clone(),
            self.settings.clone(),
            stopped,
        ));
        let result = self.drive(batches, &permits, &stop, shutdown).await;
        let _ = stop.send(true);
        reader.abort();
        let flushed = self.sink.flush(self.settings.shutdown_timeout);
        if let Err(error) = self.source.commit() {
            tracing::error!(%error, "final offset commit failed; the next run reads those records again");
        }
        self.source.close();
        let summary = self.stages.counters.summary();
        match Arc::try_unwrap(self.stages) {
            Ok(stages) => match Arc::try_unwrap(stages.plugin()) {
                Ok(pool) => pool.shutdown(),
                Err(_) => tracing::debug!("plugin workers still referenced at shutdown"),
            },
            Err(_) => tracing::debug!("plugin workers still referenced at shutdown"),
        }
        result?;
        flushed?;
        Ok(summary)
    }

    async fn drive(
        &self,
        mut batches: mpsc::Receiver<Batch>,
        permits: &Semaphore,
        stop: &watch::Sender<bool>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), PipelineError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tracker = OffsetTracker::new();
        let mut processing = FuturesOrdered::new();
        let mut acks = FuturesUnordered::new();
        let mut input_open = true;
        let mut drain_deadline: Option<Instant> = None;
        let mut report = tokio::time::interval(REPORT_EVERY);
        report.tick().await;
        loop {
            if !input_open && processing.is_empty() && acks.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                () = &mut shutdown, if drain_deadline.is_none() => {
                    tracing::info!(open = tracker.open(), "shutting down: draining records in flight");
                    drain_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
                    let _ = stop.send(true);
                }
                () = sleep_until(drain_deadline) => {
                    return Err(PipelineError::ShutdownTimeout(self.settings.shutdown_timeout));
                }
                Some(acked) = acks.next() => {
                    let Position { topic, partition, offset, arrived } = acked?;
                    self.stages.counters.acknowledged_after(arrived.elapsed());
                    permits.add_permits(1);
                    if let Some(last) = tracker.finished(&topic, partition, offset) {
                        self.source.finished_up_to(&topic, partition, last);
                    }
                }
                Some(processed) = processing.next() => {
                    let (outcomes, arrived): (Vec<Outcome>, Vec<Instant>) = processed?;
                    for (outcome, arrived) in outcomes.into_iter().zip(arrived) {
                        acks.push(self.produce(outcome, arrived).await?);
                    }
                }
                batch = batches.recv(), if input_open && processing.len() < self.settings.max_batches_in_flight => {
                    match batch {
                        Some(Batch { records, arrived }) => {
                            for r in &records {
                                tracker.consumed(&r.topic, r.partition, r.offset);
                            }
                            let stages = self.stages.clone();
                            processing.push_back(async move {
                                process(stages, records).await.map(|outcomes| (outcomes, arrived))
                            });
                        }
                        None => input_open = false,
                    }
                }
                _ = report.tick() => {
                    let s = self.stages.counters.summary();
                    tracing::info!(
                        consumed = s.consumed, produced = s.produced, dead_lettered = s.dead_lettered,
                        skipped = s.skipped, model_calls = s.model_calls, model_failures = s.model_failures,
                        open = tracker.open(),
                        produce_p50_ms = millis(s.to_produce.p50), produce_p99_ms = millis(s.to_produce.p99),
                        ack_p99_ms = millis(s.to_acknowledge.p99),
                        model_concurrency = self.stages.inference.concurrency(),
                        model_holding = self.stages.inference.is_holding(), "progress"
                    );
                }
            }
        }
    }

    /// Enqueues a record's outputs (or its dead letter) and returns the wait for their
    /// acknowledgements.
    async fn produce(
        &self,
        outcome: Outcome,
        arrived: Instant,
    ) -> Result<impl Future<Output = Result<Position, SinkError>> + use<>, SinkError> {
        let Outcome {
            record,
            result,
            plugin_digest,
        } = outcome;
        let digest_header = [(PLUGIN_DIGEST_HEADER, plugin_digest.as_bytes())];
        let counters = &self.stages.counters;
        let mut pending: Vec<Pending> = Vec::new();
        let result = match result {
            Ok(outputs) if outputs.is_empty() => {
                counters.skipped();
                Ok(())
            }
            Ok(outputs) => {
                pending.reserve(outputs.len());
                let mut refused = Ok(());
                for output in &outputs {
                    match self.sink.send(output, &digest_header).await {
                        Ok(p) => pending.push(p),
                        // The broker client refuses this record (too large, a topic the plugin
                        // named that does not exist): the input is dead-lettered with the reason;
                        // outputs already sent stay sent (at-least-once).
                        Err(SinkError::Produce { topic, source }) => {
                            refused = Err(Failure::new(
                                "output-refused",
                                Fault::Plugin,
                                format!("an output record for {topic:?} was refused: {source}"),
                            ));
                            break;
                        }
                        Err(other) => return Err(other),
                    }
                }
                counters.produced(pending.len() as u64);
                refused
            }
            Err(failure) => Err(failure),
        };
        match result {
            Ok(()) => {}
            Err(failure) => {
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    reason = failure.reason, fault = %failure.fault, error = %failure.message,
                    "record sent to the dead-letter topic"
                );
                pending.push(
                    self.sink
                        .send_dead_letter(&record, &failure, &plugin_digest)
                        .await?,
                );
                counters.dead_lettered();
            }
        }
        counters.produced_after(arrived.elapsed());
        let position = Position {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            arrived,
        };
        Ok(async move {
            for p in pending {
                p.acknowledged().await?;
            }
            Ok(position)
        })
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads records into batches until told to stop; sends the partial batch before leaving.
///
/// Each record takes one permit of `max-pending`. When no permit is free, or the next stage
/// takes no batch, for longer than [`PAUSE_AFTER`], the assigned partitions are paused and the
/// consumer keeps polling: a consumer that stops polling is thrown out of its group after
/// `max.poll.interval.ms`, which would turn a slow model into a rebalance storm. Should a record
/// still arrive while paused (a partition assigned meanwhile), it is taken on credit and the
/// next permits pay for it, so the count stays exact.
async fn read(
    source: Arc<Source>,
    batches: mpsc::Sender<Batch>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    settings: PipelineSettings,
    mut stopped: watch::Receiver<bool>,
) {
    let size = settings.batch_size;
    let mut batch = Batch::with_capacity(size);
    let mut full: Option<Batch> = None;
    let mut flush_at: Option<Instant> = None;
    let mut permit = None;
    let mut debt = 0usize;
    let mut stalled_since: Option<Instant> = None;
    let mut paused = false;
    loop {
        let can_take = permit.is_some() && full.is_none();
        if can_take {
            stalled_since = None;
            if paused {
                source.resume();
                paused = false;
            }
        } else if stalled_since.is_none() {
            stalled_since = Some(Instant::now());
        }
        let pause_at = stalled_since.filter(|_| !paused).map(|t| t + PAUSE_AFTER);
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            slot = batches.reserve(), if full.is_some() => match (slot, full.take()) {
                (Ok(slot), Some(records)) => slot.send(records),
                _ => return,
            },
            () = sleep_until(flush_at), if full.is_none() => {
                flush_at = None;
                full = Some(std::mem::replace(&mut batch, Batch::with_capacity(size)));
            }
            acquired = permits.clone().acquire_owned(), if permit.is_none() => match acquired {
                // The permit returns when a record is finished, not when this one drops.
                Ok(p) if debt > 0 => {
                    p.forget();
                    debt -= 1;
                }
                Ok(p) => permit = Some(p),
                Err(_) => break,
            },
            () = sleep_until(pause_at) => {
                tracing::info!("pipeline is full: pausing consumption");
                source.pause();
                paused = true;
            }
            record = source.next(), if can_take || paused => {
                match permit.take() {
                    Some(p) if can_take => p.forget(),
                    other => {
                        permit = other;
                        debt += 1;
                        source.pause();
                    }
                }
                counters.consumed(1);
                batch.push(record);
                if batch.len() == 1 {
                    flush_at = Some(Instant::now() + settings.linger);
                }
                if batch.len() >= size && full.is_none() {
                    flush_at = None;
                    full = Some(std::mem::replace(&mut batch, Batch::with_capacity(size)));
                }
            }
        }
    }
    if paused {
        source.resume();
    }
    for records in [full, Some(batch)].into_iter().flatten() {
        if !records.is_empty() && batches.send(records).await.is_err() {
            return;
        }
    }
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
                    "plugin-contract",
                    Fault::Plugin,
                    "the plugin returned no result for this record",
                ))
            }),
        })
        .collect())
}
