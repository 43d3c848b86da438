//! Processing a batch: the plugin's `prepare`, the model calls it asks for, its `complete`, and
//! for every record one [`Outcome`]: the outputs to produce or the failure to dead-letter.

use std::sync::Arc;

use tokio::time::Instant;

use super::PipelineError;
use super::reader::Held;
use crate::contract::{Completion, Decision, InputRecord, Origin, OutputRecord};
use crate::failure::{Failure, Reason};
use crate::inference::Inference;
use crate::kafka::headers::RawHeader;
use crate::metrics::Counters;
use crate::plugin::{Current, PluginPool};
use crate::sink::Form;
use crate::source::Consumed;

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
pub(super) struct Taken {
    pub(super) arrived: Instant,
    pub(super) generation: u64,
    /// The offset tracker's epoch, set when the batch is registered.
    pub(super) epoch: u64,
    pub(super) exact_headers: Option<Vec<RawHeader>>,
    pub(super) refused: Option<Failure>,
    /// How much of the record its dead letter carries.
    pub(super) form: Form,
}

/// Records cut by the reader, each with what the pipeline keeps of it: two vectors, because
/// the plugin takes the records as one.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) records: Vec<InputRecord>,
    pub(super) taken: Vec<Taken>,
    /// Counts the batch among those the reader waits for before it cuts one early; let go when
    /// the batch is processed.
    pub(super) held: Option<Held>,
}

impl Batch {
    pub(super) fn with_capacity(size: usize) -> Self {
        Self {
            records: Vec::with_capacity(size),
            taken: Vec::with_capacity(size),
            held: None,
        }
    }

    pub(super) fn push(&mut self, consumed: Consumed, now: Instant) {
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

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What processing a batch needs, shared by the batches in flight.
pub(crate) struct Stages {
    /// The plugin in use; a reload swaps it while batches in flight finish on the old one.
    plugin: Arc<Current>,
    pub(crate) inference: Inference,
    pub(crate) counters: Arc<Counters>,
}

impl Stages {
    pub(crate) fn new(plugin: PluginPool, inference: Inference) -> Self {
        Self {
            plugin: Arc::new(Current::new(plugin)),
            inference,
            counters: Arc::new(Counters::default()),
        }
    }

    /// The plugin new batches use.
    pub(crate) fn plugin(&self) -> Arc<PluginPool> {
        self.plugin.get()
    }

    /// The slot a reload swaps the plugin in.
    pub(crate) fn current(&self) -> &Arc<Current> {
        &self.plugin
    }

    /// The plugin in use, once nothing else holds it (at shutdown).
    pub(super) fn into_plugin(self) -> Option<Arc<PluginPool>> {
        Arc::try_unwrap(self.plugin).ok().map(Current::into_inner)
    }
}

/// Processes a batch: records the source refused become their dead letters' outcomes in place,
/// the others go through the plugin and the model. One pair per record, in order.
pub(super) async fn process_batch(
    stages: Arc<Stages>,
    batch: Batch,
) -> Result<Vec<(Outcome, Taken)>, PipelineError> {
    // Held until the batch's outcomes are made, then the reader may cut the next one early.
    let Batch {
        records,
        taken,
        held: _held,
    } = batch;
    if taken.iter().all(|t| t.refused.is_none()) {
        let outcomes = process(stages, records).await?;
        return Ok(outcomes.into_iter().zip(taken).collect());
    }
    let digest = stages.plugin().digest().clone();
    let mut done: Vec<Option<(Outcome, Taken)>> = Vec::with_capacity(taken.len());
    let mut accepted = Vec::with_capacity(records.len());
    let mut accepted_taken = Vec::with_capacity(records.len());
    for (record, mut t) in records.into_iter().zip(taken) {
        match t.refused.take() {
            Some(failure) => {
                let outcome = Outcome {
                    record,
                    result: Err(failure),
                    plugin_digest: digest.clone(),
                };
                done.push(Some((outcome, t)));
            }
            None => {
                accepted.push(record);
                accepted_taken.push((done.len(), t));
                done.push(None);
            }
        }
    }
    let processed = process(stages, accepted).await?;
    for (outcome, (at, t)) in processed.into_iter().zip(accepted_taken) {
        done[at] = Some((outcome, t));
    }
    Ok(done.into_iter().flatten().collect())
}

/// Runs one batch through the plugin and the model. Records keep their order.
pub(crate) async fn process(
    stages: Arc<Stages>,
    records: Vec<InputRecord>,
) -> Result<Vec<Outcome>, PipelineError> {
    // The same plugin prepares and completes the batch, even if a reload happens meanwhile.
    let plugin = stages.plugin();
    let digest = plugin.digest().clone();
    let (records, decisions) = plugin.prepare(records).await?;
    let mut outcomes = Vec::with_capacity(records.len());
    // The records that wait for the model, by their place in `outcomes`, with their calls.
    let mut calls = Vec::new();
    for (record, decision) in records.into_iter().zip(decisions) {
        let result = match decision {
            Ok(Decision::Infer(call)) => {
                calls.push((outcomes.len(), call));
                Err(Failure::new(
                    Reason::PluginContract,
                    "the plugin returned no result for this record",
                ))
            }
            Ok(Decision::Emit(outputs)) => Ok(outputs),
            Ok(Decision::Skip) => Ok(Vec::new()),
            Err(failure) => Err(failure),
        };
        outcomes.push(Outcome {
            record,
            result,
            plugin_digest: digest.clone(),
        });
    }
    if calls.is_empty() {
        return Ok(outcomes);
    }

    let requests: Vec<&_> = calls.iter().map(|(_, call)| &call.request).collect();
    let (responses, made) = stages.inference.infer_all(&requests).await;
    let failures = responses.iter().filter(|r| r.is_err()).count() as u64;
    stages.counters.model_calls(made as u64, failures);

    // The plugin gets each record's state, key and position back with the response; the record
    // itself stays here, for its dead letter should `complete` refuse it.
    let mut completions = Vec::with_capacity(calls.len());
    let mut completing = Vec::with_capacity(calls.len());
    for ((at, call), response) in calls.into_iter().zip(responses) {
        match response {
            Ok(response) => {
                completions.push(Completion {
                    origin: Origin::of(&outcomes[at].record),
                    state: call.state,
                    response,
                });
                completing.push(at);
            }
            Err(error) => outcomes[at].result = Err(error.failure()),
        }
    }
    if !completions.is_empty() {
        let outputs = plugin.complete(completions).await?;
        for (at, output) in completing.into_iter().zip(outputs) {
            outcomes[at].result = output;
        }
    }
    Ok(outcomes)
}
