//! Calls the model server. One [`Inference`] per process, shared by every batch in flight:
//!
//! - [`batch`]: requests of a pipeline batch that agree on all but their leading dimension are
//!   stacked into one call and the response is split back, row by row;
//! - [`retry`] and [`breaker`]: a failed call that may succeed later (unavailable, overloaded,
//!   too slow) is retried with backoff and jitter within a budget; when calls keep failing the
//!   breaker holds every call back until a probe succeeds, so records wait instead of being
//!   dead-lettered and the pipeline's bounds pause consumption;
//! - [`limit`]: an adaptive bound on calls in flight;
//! - [`tfserving`]: the wire protocol, with a deadline per call and a small pool of HTTP/2
//!   connections.
//!
//! At start-up the backend checks that the server answers and serves the configured model and
//! signature, so that a typo in the config stops the runtime instead of dead-lettering records.

mod batch;
mod breaker;
mod channels;
mod describe;
mod error;
mod kserve;
mod limit;
mod onnx;
mod retry;
#[cfg(test)]
pub(crate) mod scripted;
mod stats;
mod tensor;
mod tfserving;

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::config::{Backend as BackendSettings, ModelSettings, RetryPolicy};
use crate::contract::{InferenceRequest, InferenceResponse};
pub use breaker::Breaker;
pub(crate) use describe::dtype_name;
pub use describe::{ModelDescription, ModelTensor, mismatches};
pub use error::InferenceError;
use kserve::KServe;
use limit::{AdaptiveLimit, Outcome};
use onnx::OnnxModel;
pub use tensor::{TensorError, from_proto, to_proto};
use tfserving::TfServing;

/// The model client shared by the pipeline.
#[derive(Debug, Clone)]
pub struct Inference {
    inner: Arc<Inner>,
}

/// The model backends, behind one `predict`.
#[derive(Debug)]
enum Backend {
    TfServing(Box<TfServing>),
    KServe(Box<KServe>),
    Onnx(Arc<OnnxModel>),
    #[cfg(test)]
    Scripted(Arc<scripted::Scripted>),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::TfServing(_) => "tf-serving",
            Backend::KServe(_) => "kserve",
            Backend::Onnx(_) => "onnx",
            #[cfg(test)]
            Backend::Scripted(_) => "scripted",
        }
    }

    /// Asks the server whether it still serves the model, as at start-up.
    async fn probe(&self) -> Result<(), InferenceError> {
        match self {
            Backend::TfServing(server) => server.probe().await,
            Backend::KServe(server) => server.probe().await,
            Backend::Onnx(_) => Ok(()),
            #[cfg(test)]
            Backend::Scripted(_) => Ok(()),
        }
    }

    fn description(&self) -> &ModelDescription {
        match self {
            Backend::TfServing(server) => &server.description,
            Backend::KServe(server) => &server.description,
            Backend::Onnx(model) => &model.description,
            #[cfg(test)]
            Backend::Scripted(model) => &model.description,
        }
    }

    async fn predict(
        &self,
        request: &InferenceRequest,
    ) -> Result<InferenceResponse, InferenceError> {
        match self {
            Backend::TfServing(server) => server.predict(request).await,
            Backend::KServe(server) => server.predict(request).await,
            Backend::Onnx(model) => model.predict(request).await,
            #[cfg(test)]
            Backend::Scripted(model) => model.predict(request),
        }
    }
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    breaker: Breaker,
    retry: RetryPolicy,
    in_flight: AdaptiveLimit,
    max_batch_rows: usize,
    /// Tries by status, retries, latency, rows per call, reachability.
    stats: stats::CallStats,
    /// The model's name and its configured version, or `latest`.
    name: String,
    version: String,
}

impl Inference {
    /// Connects to the model server and checks the model.
    ///
    /// # Errors
    /// As [`TfServing::connect`]: a message naming the endpoint and what is wrong.
    pub async fn connect(settings: &ModelSettings) -> Result<Self, InferenceError> {
        let backend = match &settings.backend {
            BackendSettings::TfServing { endpoint } => {
                Backend::TfServing(Box::new(TfServing::connect(settings, endpoint).await?))
            }
            BackendSettings::KServe { endpoint } => {
                Backend::KServe(Box::new(KServe::connect(settings, endpoint).await?))
            }
            BackendSettings::Onnx { path } => {
                let (path, name, version) = (path.clone(), settings.name.clone(), settings.version);
                let loaded =
                    tokio::task::spawn_blocking(move || OnnxModel::load(&path, &name, version))
                        .await
                        .map_err(|e| {
                            InferenceError::Status(Status::internal(format!(
                                "loading the model panicked: {e}"
                            )))
                        })??;
                Backend::Onnx(Arc::new(loaded))
            }
        };
        Ok(Self::with_backend(backend, settings))
    }

    /// A client of `model`, with the breaker, limits and retries of `settings`.
    #[cfg(test)]
    pub(crate) fn scripted(model: Arc<scripted::Scripted>, settings: &ModelSettings) -> Self {
        Self::with_backend(Backend::Scripted(model), settings)
    }

    fn with_backend(backend: Backend, settings: &ModelSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
                retry: settings.retry,
                in_flight: AdaptiveLimit::new(settings.min_in_flight, settings.max_in_flight),
                max_batch_rows: settings.max_batch_size,
                stats: stats::CallStats::default(),
                name: settings.name.clone(),
                version: settings
                    .version
                    .map_or_else(|| "latest".to_owned(), |v| v.to_string()),
            }),
        }
    }

    /// The model's inputs and outputs, as the backend described them at start-up.
    pub fn description(&self) -> &ModelDescription {
        self.inner.backend.description()
    }

    /// How long the backend has taken to answer calls, since the start.
    pub fn latency(&self) -> crate::metrics::Quantiles {
        self.inner.stats.latency.quantiles()
    }

    pub(crate) fn stats(&self) -> &stats::CallStats {
        &self.inner.stats
    }

    /// `onnx`, `tf-serving` or `kserve`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The model version configured, or `latest`.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// `closed`, `open` or `half-open`.
    pub fn breaker_state(&self) -> &'static str {
        self.inner.breaker.state()
    }

    /// Asks the server whether it serves the model; the answer is kept for [`Inference::reachable`].
    pub async fn probe(&self) -> bool {
        let answered = match self.inner.backend.probe().await {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "model readiness probe failed");
                false
            }
        };
        self.inner.stats.probed(answered);
        answered
    }

    /// Whether the server answered the last probe.
    pub fn reachable(&self) -> bool {
        self.inner.stats.reachable()
    }

    /// Model calls allowed in flight right now (adaptive, see [`limit`]).
    pub fn concurrency(&self) -> usize {
        self.inner.in_flight.current()
    }

    /// Whether the breaker is holding calls back because the server keeps failing.
    pub fn is_holding(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Answers every request, in order: stacked into as few calls as the batching rules allow,
    /// the calls made concurrently. Returns the answers and the number of calls made.
    pub async fn infer_all(
        &self,
        requests: &[&InferenceRequest],
    ) -> (Vec<Result<InferenceResponse, InferenceError>>, usize) {
        let plan = batch::plan(requests, self.inner.max_batch_rows);
        let calls = plan.len();
        let answers =
            futures::future::join_all(plan.iter().map(|group| self.answer_group(requests, group)))
                .await;
        let mut results: Vec<Option<Result<InferenceResponse, InferenceError>>> =
            requests.iter().map(|_| None).collect();
        for (group, answer) in plan.iter().zip(answers) {
            for (&i, result) in group.iter().zip(answer) {
                results[i] = Some(result);
            }
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(InferenceError::Status(Status::internal(
                        "request left out of the plan",
                    )))
                })
            })
            .collect();
        (results, calls)
    }

    /// One call for a group of requests; a stacked response that cannot be split is answered by
    /// calling for each request alone.
    async fn answer_group(
        &self,
        requests: &[&InferenceRequest],
        group: &[usize],
    ) -> Vec<Result<InferenceResponse, InferenceError>> {
        if let [single] = group {
            return vec![self.call(requests[*single]).await];
        }
        let stacked = batch::stack(requests, group);
        let rows = batch::rows_of(requests, group);
        match self.call(&stacked).await {
            Ok(response) => match batch::split(response, &rows) {
                Ok(parts) => parts.into_iter().map(Ok).collect(),
                Err(message) => {
                    tracing::debug!(%message, "stacked response cannot be split; calling one by one");
                    futures::future::join_all(group.iter().map(|&i| self.call(requests[i]))).await
                }
            },
            // One record's bad input fails the whole stack: find it by calling one by one.
            Err(error) if !error.is_retryable() => {
                tracing::debug!(%error, rows = group.len(), "stacked call refused; calling one by one");
                futures::future::join_all(group.iter().map(|&i| self.call(requests[i]))).await
            }
            Err(error) => group.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// One call with retries: waits while the breaker holds calls, retries what may succeed
    /// later within the retry budget, gives up at once on what will not.
    async fn call(&self, request: &InferenceRequest) -> Result<InferenceResponse, InferenceError> {
        let inner = &self.inner;
        let mut failures = 0;
        loop {
            // Settled below on every outcome; dropped unsettled (a failure that says nothing
            // about the server, or a cancelled call) it hands a probe on to the next call.
            let ticket = inner.breaker.ready().await;
            let slot = inner.in_flight.acquire().await;
            let started = std::time::Instant::now();
            let result = inner.backend.predict(request).await;
            inner.stats.latency.record(started.elapsed());
            inner.stats.tried(result.as_ref().map(drop));
            inner
                .stats
                .rows
                .record(batch::rows(request).unwrap_or(1) as u64);
            slot.finish(match &result {
                Ok(_) => Outcome::Answered(Duration::ZERO),
                Err(e) if e.is_overload() => Outcome::Overloaded,
                Err(e) if e.server_answered() => Outcome::Answered(Duration::ZERO),
                Err(_) => Outcome::Ignored,
            });
            match result {
                Ok(response) => {
                    ticket.succeeded();
                    return Ok(response);
                }
                Err(error) if error.is_retryable() => {
                    if ticket.failed() {
                        // The server is down: the call waits for it and keeps its budget.
                        inner.stats.retried();
                        continue;
                    }
                    failures += 1;
                    if failures >= inner.retry.attempts {
                        return Err(error);
                    }
                    tracing::debug!(%error, failures, "model call failed; retrying");
                    inner.stats.retried();
                    tokio::time::sleep(inner.retry.backoff(failures)).await;
                }
                Err(error) => {
                    if error.server_answered() {
                        ticket.succeeded();
                    }
                    return Err(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
