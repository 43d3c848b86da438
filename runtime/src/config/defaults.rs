//! Every default of the configuration, in one place.

use std::time::Duration;

pub const MODEL_TIMEOUT: Duration = Duration::from_secs(2);
pub const MODEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const MODEL_MIN_IN_FLIGHT: usize = 1;
pub const MODEL_MAX_IN_FLIGHT: usize = 32;
pub const MODEL_CONNECTIONS: usize = 1;
pub const MODEL_MAX_BATCH_SIZE: usize = 128;
pub const RETRY_ATTEMPTS: usize = 5;
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
pub const BREAKER_FAILURES: usize = 5;
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);
pub const PLUGIN_MEMORY_LIMIT: u64 = 64 << 20;
pub const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many plugin instances when `plugin.workers` is not set.
pub const PLUGIN_WORKERS_AUTO_AT_MOST: usize = 8;

/// Plugin instances when `plugin.workers` is not set: one per core this process may run on
/// (its CPU affinity and cgroup quota count) but one, which the record path itself needs
/// (the consumer, the producer and librdkafka's threads take about a core at full rate);
/// at least one, at most [`PLUGIN_WORKERS_AUTO_AT_MOST`].
pub fn plugin_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores
        .saturating_sub(1)
        .clamp(1, PLUGIN_WORKERS_AUTO_AT_MOST)
}
pub const PLUGIN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Where compiled plugins are kept: `$XDG_CACHE_HOME/streaminfer/plugins`, else
/// `$HOME/.cache/streaminfer/plugins`; `None` when neither variable is set.
pub fn plugin_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| std::path::PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("streaminfer").join("plugins"))
}
/// Output records one input may make (a plugin that emits more dead-letters the input).
pub const PLUGIN_MAX_OUTPUTS: usize = 64;
/// Bytes of output (keys, values, headers) one input may make.
pub const PLUGIN_MAX_OUTPUT_BYTES: u64 = 1 << 20;
pub const BATCH_SIZE: usize = 256;
pub const LINGER: Duration = Duration::from_millis(5);
pub const MAX_PENDING: usize = 10_000;
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Where `/metrics`, `/healthz` and `/readyz` are served when streaming (`metrics.listen`).
/// Loopback: a container or a pod sets `0.0.0.0:9898` so that the kubelet and Prometheus
/// reach it.
pub const METRICS_LISTEN: &str = "127.0.0.1:9898";
/// How often the model server is asked whether it serves the model, for readiness.
pub const MODEL_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the offsets of finished records are committed in at-least-once mode
/// (librdkafka's `auto.commit.interval.ms` would be 5 s). A crash reads again what finished
/// since the last commit, at most this much throughput, besides what was in flight. Measured on
/// tansu by `bench/commit_interval.py` (docs/delivery.md): a commit of six partitions costs the
/// broker about 0.6 ms of CPU, so 200 ms costs it 0.3% of a core per member, where 5 s would let
/// a crash at 60,000 records/s re-read 300,000 records instead of 12,000.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long one transaction collects outputs in exactly-once mode (Kafka Streams: 100 ms).
pub const TRANSACTION_INTERVAL: Duration = Duration::from_millis(100);
/// librdkafka's `transaction.timeout.ms` in exactly-once mode unless `[kafka.producer]`
/// sets it (librdkafka: 60 s): how long the transaction of an instance that died stays open,
/// holding back `read_committed` readers of the output, unless a restart with the same
/// `transactional-id` aborts it at once.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// librdkafka consumer properties the runtime sets unless `[kafka.consumer]` overrides them.
/// - `fetch.wait.max.ms` 50 (librdkafka: 500): how long the broker may hold a fetch that
///   finds too little data. A broker that holds every fetch that long (tansu does) puts
///   that wait under every record's latency; 50 ms costs an idle consumer 20 small requests
///   a second.
/// - `queued.max.messages.kbytes` 16 MiB (librdkafka: 64 MiB): the prefetch queue, which
///   `pipeline.max-pending` does not bound; it was most of the memory a backlog took, and a
///   quarter of it still holds some 20,000 records of a few hundred bytes (BENCHMARKS.md, B7).
/// - `fetch.queue.backoff.ms` 10 (librdkafka: 1000): how long the consumer waits to fetch
///   again once that queue is full. With the smaller queue and the default wait the
///   pipeline starved between fetches (B2 41k records/s instead of 65k).
/// - `statistics.interval.ms` 5000 (librdkafka: off): the per-partition committed offset and
///   lag that `/metrics` reports come from these statistics.
/// - `auto.offset.reset` `earliest` (librdkafka: `latest`): where a partition with no committed
///   offset, or one the broker no longer holds, starts. With `latest` the records still on the
///   broker past a lost or expired commit would be skipped, never processed nor dead-lettered.
pub const CONSUMER: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "50"),
    ("statistics.interval.ms", "5000"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.queue.backoff.ms", "10"),
];
