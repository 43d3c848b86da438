//! A runtime for streaming model inference, extensible with WebAssembly.
//!
//! A record's path through the modules:
//!
//! ```text
//!  Kafka ──► source ──► pipeline ──► plugin.prepare ──► inference ──► plugin.complete ──► sink ──► Kafka
//!              ▲            │            (Wasm)       (ONNX or gRPC)      (Wasm)           │
//!              └─ offsets ◄─┴──────────────── acknowledged, or dead-lettered ◄────────────┘
//! ```
//!
//! - [`config`]: the TOML file and `key=value` overrides, read into typed [`config::Settings`].
//! - [`contract`]: the data types of the plugin contract (records, tensors, requests), shared by
//!   the pipeline, the model backends and the plugin host.
//! - [`source`]: the Kafka consumer; offsets are stored only when the pipeline allows.
//! - [`pipeline`]: batches records, runs them through the stages with every queue bounded, and
//!   finishes each record once its outputs are acknowledged.
//! - [`plugin`]: the WebAssembly host: the contract in `wit/`, sandbox limits, instance rebuilds.
//! - [`inference`]: the model: embedded ONNX, TensorFlow Serving or KServe v2, with batching,
//!   retries, a circuit breaker and an adaptive bound on calls in flight.
//! - [`sink`]: the Kafka producer for outputs and dead letters.
//! - [`kafka`]: what source and sink share: librdkafka's logs, start-up topic checks.
//! - [`offline`]: `check` and `replay`: records from a file through the plugin (and model).
//! - `reload`: swaps in a new plugin file while the stream runs.
//! - [`offsets`]: which offsets may be committed, given records finishing out of order.
//! - [`failure`]: why a record was dead-lettered, as its headers say.
//! - [`metrics`]: counters of what happened.
//! - [`endpoint`]: `/metrics`, `/healthz` and `/readyz`, read from the parts at each request.
//!
//! The modules form layers (`layers.rs` lists them, and its test fails on any import of a
//! module from the same layer or one above): no circle, nothing low that knows what is above.
//!
//! Delivery is at-least-once: an offset is committed only when every record below it has its
//! outputs acknowledged by the broker or its dead letter written. A record that the plugin or the
//! model cannot handle goes to the dead-letter topic with the reason; nothing is dropped.

pub mod config;
pub mod contract;
pub mod endpoint;
mod error;
pub mod failure;
pub mod inference;
pub mod kafka;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod offline;
pub mod offsets;
pub mod pipeline;
pub mod plugin;
mod reload;
pub mod scaffold;
pub mod sink;
pub mod source;
mod stable_hash;

use std::future::Future;
use std::sync::Arc;

use config::Settings;
pub use error::RunError;
use inference::Inference;
use metrics::Summary;
use pipeline::Pipeline;
use plugin::{PluginHost, PluginPool};
use sink::Sink;
use source::Source;

/// A task that ends with the run, however the run ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts every part, checking the plugin, the model server and the broker together so that
/// every problem is reported at once, then runs the pipeline until `shutdown` resolves.
///
/// # Errors
/// [`RunError::Startup`] listing every failed start-up check, or the pipeline's error.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Summary, RunError> {
    let health = Arc::new(endpoint::health::Health::default());
    // Served first, so that an orchestrator sees the process live while it starts.
    let endpoint = match settings.metrics {
        Some(m) => match endpoint::server::bind(m.listen, health.clone()).await {
            Ok(task) => Some(AbortOnDrop(task)),
            Err(e) if m.configured => return Err(RunError::Startup(vec![e])),
            Err(e) => {
                tracing::warn!(error = %e, "running without /metrics and health: set metrics.listen to a free address");
                None
            }
        },
        None => None,
    };
    let plugin_settings = settings.plugin.clone();
    let route = plugin::Route::for_order(settings.pipeline.order);
    let plugin = tokio::task::spawn_blocking(move || {
        let host = PluginHost::with_cache(plugin_settings.cache_dir.as_deref())?;
        let loaded = host.load(&plugin_settings)?;
        let pool = PluginPool::start(loaded, plugin_settings.workers)?.routed(route);
        Ok::<_, plugin::PluginError>((host, pool))
    });
    let (plugin, inference, sink, source) = tokio::join!(
        plugin,
        Inference::connect(&settings.model),
        Sink::connect(&settings.kafka),
        Source::connect(&settings.kafka),
    );
    let mut problems = Vec::new();
    let plugin = match plugin {
        Ok(Ok(started)) => Some(started),
        Ok(Err(e)) => {
            problems.push(e.to_string());
            None
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let inference = inference.map_err(|e| problems.push(e.to_string())).ok();
    let sink = sink.map_err(|e| problems.push(e.to_string())).ok();
    let source = source.map_err(|e| problems.push(e.to_string())).ok();
    // The source and the sink report an unreachable broker alike: say it once.
    problems.dedup();
    let (Some((host, plugin)), Some(inference), Some(sink), Some(source)) =
        (plugin, inference, sink, source)
    else {
        return Err(RunError::Startup(problems));
    };
    let disagreements = inference::mismatches(plugin.requirements(), inference.description());
    if !disagreements.is_empty() {
        let mut problems = vec![format!(
            "the plugin {} and the model {:?} disagree:",
            settings.plugin.path.display(),
            settings.model.name
        )];
        problems.extend(disagreements.into_iter().map(|d| format!("  {d}")));
        plugin.shutdown();
        return Err(RunError::Startup(problems));
    }
    tracing::info!(
        plugin = %settings.plugin.path.display(),
        input = %settings.kafka.input_topic,
        output = %settings.kafka.output_topic,
        model = %settings.model.name,
        workers = settings.plugin.workers,
        order = ?settings.pipeline.order,
        "running"
    );
    let mut pipeline = Pipeline::new(source, sink, plugin, inference, settings.pipeline);
    if let config::Delivery::ExactlyOnce { interval, .. } = settings.kafka.delivery {
        pipeline = pipeline.exactly_once(interval);
    }
    health.running(&pipeline.stages(), &pipeline.source());
    let _probe = endpoint.as_ref().map(|_| {
        AbortOnDrop(tokio::spawn(
            health
                .clone()
                .probe_model(config::defaults::MODEL_PROBE_INTERVAL),
        ))
    });
    let watcher = settings.plugin.reload.map(|interval| {
        let stages = pipeline.stages();
        tokio::spawn(reload::watch(
            Arc::new(host),
            settings.plugin.clone(),
            Arc::downgrade(stages.current()),
            stages.inference.description().clone(),
            interval,
        ))
    });
    let draining = health.clone();
    let summary = pipeline
        .run(async move {
            shutdown.await;
            draining.stopping();
        })
        .await;
    health.stopped();
    drop(endpoint);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let summary = summary?;
    Ok(summary)
}
