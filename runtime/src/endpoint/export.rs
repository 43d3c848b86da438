//! The Prometheus exposition: one collector that reads, at each scrape, the counters the parts
//! keep for themselves (pipeline, model client, plugin host, consumer statistics) and writes them
//! with `prometheus-client`'s encoder. Names follow Prometheus's conventions: the `streaminfer_`
//! prefix, `_total` on counters, base units (`_seconds`) on histograms.
//!
//! `docs/operations.md` lists every metric; the Grafana dashboard's test checks that each one it
//! queries is written here.

use std::fmt::Error;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::health::{Health, Parts};
use crate::metrics::Exported;
use crate::plugin::Export;

/// The registry `/metrics` encodes: everything comes from `health`'s view of the runtime.
pub fn registry(health: Arc<Health>) -> Registry {
    let mut registry = Registry::with_prefix("streaminfer");
    registry.register_collector(Box::new(Exporter { health }));
    registry
}

#[derive(Debug)]
struct Exporter {
    health: Arc<Health>,
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), Error> {
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        e.encode_descriptor("build", "The runtime's version.", None, MetricType::Info)?
            .encode_info(&version)?;
        let ready = u64::from(self.health.readiness().is_ok());
        gauge(&mut e, "ready", "1 when /readyz answers ready.", ready)?;
        if let Some(parts) = self.health.parts() {
            pipeline(&mut e, &parts)?;
            model(&mut e, &parts)?;
            plugin(&mut e, &parts)?;
            kafka(&mut e, &parts)?;
        }
        Ok(())
    }
}

fn pipeline(e: &mut DescriptorEncoder<'_>, parts: &Parts) -> Result<(), Error> {
    let c = &parts.stages.counters;
    let s = c.summary();
    counter(
        e,
        "records_consumed",
        "Records read from the input topic.",
        s.consumed,
    )?;
    counter(
        e,
        "records_produced",
        "Output records handed to the producer.",
        s.produced,
    )?;
    counter(
        e,
        "records_skipped",
        "Input records the plugin chose to produce nothing for.",
        s.skipped,
    )?;
    counters(
        e,
        "records_dead_lettered",
        "Input records sent to the dead-letter topic, by reason and whose fault.",
        c.dead_lettered_by()
            .map(|(r, n)| ([("reason", r.code()), ("fault", r.fault().as_str())], n)),
    )?;
    gauge(
        e,
        "records_in_flight",
        "Records consumed and not yet finished.",
        c.in_flight(),
    )?;
    histograms(
        e,
        "record_latency",
        "From taking a record from the consumer to handing its outputs to the producer \
         (stage=produced) or to the broker's acknowledgement of them (stage=acknowledged).",
        Some(&Unit::Seconds),
        [
            ([("stage", "produced")], c.to_produce.exported()),
            ([("stage", "acknowledged")], c.to_acknowledge.exported()),
        ],
    )?;
    histograms(
        e,
        "batch_records",
        "Records per batch handed to the plugin.",
        None,
        [(NO_LABELS, c.batch_records.exported())],
    )?;
    counter(
        e,
        "transactions_committed",
        "Transactions committed (exactly-once).",
        s.transactions,
    )?;
    counter(
        e,
        "transactions_aborted",
        "Transactions aborted, their records read again (exactly-once).",
        s.aborted,
    )
}

fn model(e: &mut DescriptorEncoder<'_>, parts: &Parts) -> Result<(), Error> {
    let model = &parts.stages.inference;
    let stats = model.stats();
    let backend = model.backend();
    e.encode_descriptor(
        "model",
        "The model served, as configured.",
        None,
        MetricType::Info,
    )?
    .encode_info(&[
        ("backend", backend),
        ("model", model.name()),
        ("version", model.version()),
    ])?;
    counters(
        e,
        "model_calls",
        "Tries of model calls, by how they ended: ok, a gRPC status, invalid_request or invalid_response.",
        stats
            .tries()
            .map(|(status, n)| ([("backend", backend), ("status", status)], n)),
    )?;
    counters(
        e,
        "model_retries",
        "Tries made again after a failure that may pass, or after waiting for the breaker.",
        [([("backend", backend)], stats.retries())],
    )?;
    histograms(
        e,
        "model_call_duration",
        "How long the model took to answer one try of a call.",
        Some(&Unit::Seconds),
        [([("backend", backend)], stats.latency.exported())],
    )?;
    histograms(
        e,
        "model_call_rows",
        "Rows per try of a model call (requests stacked into one call count each row).",
        None,
        [([("backend", backend)], stats.rows.exported())],
    )?;
    gauges(
        e,
        "model_concurrency_limit",
        "Model calls allowed in flight now (adaptive).",
        [([("backend", backend)], model.concurrency() as u64)],
    )?;
    let state = model.breaker_state();
    gauges(
        e,
        "model_breaker_state",
        "1 for the circuit breaker's current state: closed, open (calls held back) or half-open (one probe out).",
        ["closed", "open", "half-open"]
            .map(|s| ([("backend", backend), ("state", s)], u64::from(s == state))),
    )?;
    gauges(
        e,
        "model_reachable",
        "1 when the model server answered the last readiness probe.",
        [([("backend", backend)], u64::from(model.reachable()))],
    )
}

fn plugin(e: &mut DescriptorEncoder<'_>, parts: &Parts) -> Result<(), Error> {
    let pool = parts.stages.plugin();
    let stats = pool.stats();
    let path = pool.path().display().to_string();
    e.encode_descriptor(
        "plugin",
        "The plugin serving new batches.",
        None,
        MetricType::Info,
    )?
    .encode_info(&[("path", path.as_str()), ("digest", &**pool.digest())])?;
    histograms(
        e,
        "plugin_call_duration",
        "How long one call of a plugin export took (a batch, or one record when a batch is retried record by record).",
        Some(&Unit::Seconds),
        Export::ALL.map(|x| ([("export", x.name())], stats.call_times(x).exported())),
    )?;
    counters(
        e,
        "plugin_faults",
        "Plugin calls that trapped, ran out of time or memory, or miscounted, and results the host refused, by the reason their records get; scope=batch: a batch call, whose records are then asked one by one; scope=record: one record alone (dead-lettered for it).",
        stats
            .faults()
            .map(|(scope, r, n)| ([("scope", scope.name()), ("reason", r.code())], n)),
    )?;
    counter(
        e,
        "plugin_instance_rebuilds",
        "Plugin instances thrown away and built afresh after a failed call.",
        stats.rebuilds(),
    )?;
    let (replaced, refused) = stats.reloads();
    counters(
        e,
        "plugin_reloads",
        "Plugin reloads, by result: replaced, or refused (the old plugin kept serving).",
        [
            ([("result", "replaced")], replaced),
            ([("result", "refused")], refused),
        ],
    )
}

fn kafka(e: &mut DescriptorEncoder<'_>, parts: &Parts) -> Result<(), Error> {
    gauge(
        e,
        "kafka_assigned_partitions",
        "Input partitions this member owns.",
        parts.source.owned_partitions() as u64,
    )?;
    let lags = parts.source.lags();
    let labels = |l: &crate::source::PartitionLag| {
        [
            ("topic", l.topic.clone()),
            ("partition", l.partition.to_string()),
        ]
    };
    gauges(
        e,
        "kafka_committed_offset",
        "The group's committed offset per assigned partition (exactly-once: where this member's last transaction left it); -1 before the first commit.",
        lags.iter().map(|l| (labels(l), l.committed)),
    )?;
    gauges(
        e,
        "kafka_consumer_lag",
        "Records between the committed offset and the end of each assigned partition (the last stable offset for read_committed); -1 when unknown.",
        lags.iter().map(|l| (labels(l), l.lag())),
    )
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), Error> {
    counters(e, name, help, [(NO_LABELS, value)])
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), Error> {
    gauges(e, name, help, [(NO_LABELS, value)])
}

fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), Error> {
    family(
        e,
        name,
        help,
        None,
        MetricType::Counter,
        values,
        |mut m, value| m.encode_counter::<NoLabelSet, _, u64>(&value, None),
    )
}

fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result<(), Error> {
    family(
        e,
        name,
        help,
        None,
        MetricType::Gauge,
        values,
        |mut m, value| m.encode_gauge(&value),
    )
}

/// One metric family: a sample for each set of labels, each written by `sample`.
fn family<L: EncodeLabelSet, V>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    values: impl IntoIterator<Item = (L, V)>,
    mut sample: impl FnMut(MetricEncoder<'_>, V) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in values {
        sample(m.encode_family(&labels)?, value)?;
    }
    Ok(())
}

/// No labels, for a family of one.
const NO_LABELS: [(&str, &str); 0] = [];

/// Histograms, in `unit` (none for counts).
fn histograms<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, Exported)>,
) -> Result<(), Error> {
    family(
        e,
        name,
        help,
        unit,
        MetricType::Histogram,
        values,
        |mut m, h| m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None),
    )
}
