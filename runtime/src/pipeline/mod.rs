//! The pipeline: records from the [`Source`] in batches, through the plugin and the model, to
//! the [`Sink`], with offsets stored only behind finished records.
//!
//! Three loops cooperate:
//! - the [`reader`] pulls records, one permit of `max-pending` each, and cuts batches at
//!   `batch-size` records or after `linger`;
//! - up to `max-batches-in-flight` batches are processed concurrently (prepare, model calls,
//!   complete), and each batch's outcomes are produced once no earlier batch holds a record
//!   they must follow ([`sequence`], `pipeline.order`);
//! - [`produce`] sends each record's outputs with a token of its own; the broker's
//!   acknowledgements come back in bulk with those tokens, and when all of a record's are in it
//!   is finished, and the offset tracker may advance the partition's stored offset. A record's permit returns
//!   when its offset is behind that point, so `max-pending` bounds what a crash can make the
//!   group read again.
//!
//! [`drive`] runs the loop; the two delivery modes differ only in its `Commit`. In exactly-once
//! mode ([`transaction`]) the records' outputs and dead letters go into one
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

mod drive;
mod input;
mod outlet;
mod process;
mod produce;
mod progress;
mod reader;
mod sequence;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::PipelineSettings;
use crate::inference::Inference;
use crate::metrics::Summary;
use crate::plugin::{PluginError, PluginPool};
use crate::sink::{Sink, SinkError, TransactionError};
use crate::source::{Source, SourceError};
use drive::{Commit, Drive};
pub(crate) use process::{Outcome, Stages, process};
use produce::Delivery;
use transaction::Transactions;

/// How long the consumer may take to close once the offsets are committed.
const CLOSE_AT_MOST: Duration = Duration::from_secs(2);
/// The final commit's least wait, even when the drain used the whole deadline.
const COMMIT_AT_LEAST: Duration = Duration::from_secs(2);

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
    #[error(
        "shutdown ended with the last transaction aborted ({0}); its records will be read again"
    )]
    AbortedInDrain(String),
    #[error("{aborts} transactions aborted in a row, the last because: {why}")]
    Aborting { aborts: u32, why: String },
    #[error("cannot move the input back after an abort: {0}")]
    Seek(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Source(Box<SourceError>),
}

/// The assembled pipeline, ready to run.
pub struct Pipeline {
    source: Arc<Source>,
    sink: Sink,
    stages: Arc<Stages>,
    settings: PipelineSettings,
    /// In exactly-once mode, how long a transaction collects records.
    transaction_interval: Option<Duration>,
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
            transaction_interval: None,
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
        let counters = self.stages.counters.clone();
        let mut delivery = Delivery::new(
            self.sink.clone(),
            counters.clone(),
            self.transaction_interval.is_some(),
        );
        let mut transactions = self.transaction_interval.map(|interval| {
            Transactions::new(interval, self.sink.clone(), self.source.clone(), counters)
        });
        let result = loop {
            let mut commit = match transactions.as_mut() {
                Some(tx) => Commit::ExactlyOnce(tx),
                None => Commit::AtLeastOnce(&*self.source),
            };
            let result = self
                .session(shutdown.as_mut(), &mut deadline, &mut delivery, &mut commit)
                .await;
            match (result, transactions.as_mut()) {
                (Err(PipelineError::Rewind(why)), Some(tx)) => {
                    let draining = deadline.is_some();
                    if let Err(e) = tx.rewind(why.clone()).await {
                        break Err(e);
                    }
                    // Draining: what the aborted transaction held is read again at the next
                    // start; the drain did not finish, as one past its deadline.
                    if draining {
                        break Err(PipelineError::AbortedInDrain(why));
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
                // again. A fenced producer's transaction is aborted by the one that fenced it;
                // an undecided commit is the broker's to finish, and refuses an abort.
                let cannot_abort = matches!(
                    result,
                    Err(PipelineError::Fenced(_)
                        | PipelineError::Transaction(
                            TransactionError::Fatal(_)
                                | TransactionError::Fenced(_)
                                | TransactionError::AbortFailed(_)
                                | TransactionError::Undecided(_)
                        ))
                );
                if !cannot_abort {
                    let wait = until
                        .saturating_duration_since(Instant::now())
                        .max(COMMIT_AT_LEAST);
                    tx.abandon(wait).await;
                }
                Ok(())
            }
            _ => self
                .sink
                .flush(until.saturating_duration_since(Instant::now())),
        };
        self.final_commit(until).await;
        drop(transactions);
        release(self.source, CLOSE_AT_MOST);
        let summary = self.stages.counters.summary();
        // Nothing else holds the stages now (the reload watcher and the metrics hold them
        // weakly): the plugin's threads finish what they hold and are joined.
        let pool = Arc::try_unwrap(self.stages)
            .ok()
            .and_then(Stages::into_plugin)
            .map(Arc::try_unwrap);
        match pool {
            Some(Ok(pool)) => pool.shutdown(),
            _ => tracing::warn!("plugin workers still referenced at shutdown"),
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
        delivery: &mut Delivery,
        commit: &mut Commit<'_>,
    ) -> Result<(), PipelineError> {
        let (stop, stopped) = watch::channel(false);
        let (batches_tx, batches) = mpsc::channel(2);
        let (failed_tx, consumer_failed) = oneshot::channel();
        let permits = Arc::new(Semaphore::new(self.settings.max_pending));
        let reader = tokio::spawn(reader::read(
            self.source.clone(),
            batches_tx,
            permits.clone(),
            self.stages.counters.clone(),
            self.settings.clone(),
            stopped,
            failed_tx,
        ));
        let drive = Drive {
            source: &self.source,
            stages: &self.stages,
            settings: &self.settings,
            batches,
            consumer_failed: Some(consumer_failed),
            permits: &permits,
            stop: &stop,
        };
        let result = drive.run(shutdown, deadline, delivery, commit).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_read_from_either_payload() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7)), "a panic");
    }
}
