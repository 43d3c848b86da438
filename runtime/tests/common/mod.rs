//! What the integration tests share: where the compiled plugins are, fraud records, and a
//! mock cluster holding them.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

/// A plugin component built by `scripts/test.sh`: the path in the environment variable `var`,
/// else `target/wasm32-wasip2/plugin/<file>`. Fails the test, saying how to build it, when it
/// is missing.
pub(crate) fn plugin(var: &str, file: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/plugin")
                .join(file)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {package} --target wasm32-wasip2 --profile plugin`",
        path.display()
    );
    path
}

/// The fraud plugin.
#[allow(dead_code, reason = "not every test crate uses every helper")]
pub(crate) fn fraud_plugin() -> PathBuf {
    plugin("FRAUD_PLUGIN", "fraud_plugin.wasm", "fraud-plugin")
}

/// A card transaction as the fraud plugin reads it: `id`, `Time`, `V1`..`V28` from `v(i)`, and
/// `Amount`.
#[allow(dead_code, reason = "not every test crate uses every helper")]
pub(crate) fn transaction(id: u64, time: f64, v: impl Fn(u32) -> f64, amount: f64) -> String {
    let mut fields = vec![format!("\"id\": {id}"), format!("\"Time\": {time:?}")];
    fields.extend((1..=28).map(|i| format!("\"V{i}\": {}", v(i))));
    fields.push(format!("\"Amount\": {amount}"));
    format!("{{{}}}", fields.join(", "))
}

/// A librdkafka mock cluster with `topics` (name, partitions) and `records` transactions in
/// `input`: transaction `id`, keyed by it, in partition `id % partitions`.
#[allow(dead_code, reason = "not every test crate uses every helper")]
pub(crate) async fn mock_cluster(
    topics: &[(&str, i32)],
    input: &str,
    records: u64,
) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in topics {
        cluster
            .create_topic(topic, *partitions, 1)
            .expect("topic created");
    }
    let partitions = topics
        .iter()
        .find(|(topic, _)| *topic == input)
        .map(|(_, n)| *n)
        .expect("the input is among the topics");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .expect("producer");
    for id in 0..records {
        let key = id.to_string();
        let value = transaction(id, 406.0, |i| f64::from(i) / 100.0, 149.62);
        let partition = i32::try_from(id % u64::from(partitions.unsigned_abs())).expect("small");
        producer
            .send(
                FutureRecord::to(input)
                    .key(&key)
                    .payload(&value)
                    .partition(partition),
                Duration::from_secs(10),
            )
            .await
            .expect("input produced");
    }
    cluster
}
