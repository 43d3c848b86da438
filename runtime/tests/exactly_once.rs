//! Exactly-once mode's abort paths, against librdkafka's in-process mock cluster, which can fail
//! chosen requests. The whole runtime runs: the real fraud plugin, the embedded ONNX model, a
//! transactional producer and a consumer group. The commit path is proven against a real
//! broker by the end-to-end suite (`tests/e2e/test_exactly_once.py`).
//!
//! The mock cluster keeps the records of aborted transactions visible to every reader, and
//! does not store the offsets a transaction commits; so these tests check what the runtime
//! does on each failure (abort, read again, dead-letter, stop), not what a `read_committed`
//! reader would see.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use streaminfer::config::{self, Mode};
use streaminfer::metrics::Summary;
use streaminfer::pipeline::PipelineError;
use streaminfer::sink::TransactionError;
use tokio::sync::oneshot;

const INPUT: &str = "transactions";
const OUTPUT: &str = "scores";
const DEAD_LETTERS: &str = "dead-letters";
const RECORDS: u64 = 600;

mod common;

use common::fraud_plugin;

/// A mock cluster with the three topics, `RECORDS` transactions in the input.
async fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    common::mock_cluster(
        &[(INPUT, 2), (OUTPUT, 2), (DEAD_LETTERS, 1)],
        INPUT,
        RECORDS,
    )
    .await
}

fn settings(brokers: &str) -> config::Settings {
    settings_with(brokers, "50ms")
}

fn settings_with(brokers: &str, transaction_interval: &str) -> config::Settings {
    settings_for(brokers, transaction_interval, &fraud_plugin(), "")
}

/// The settings of a run of `plugin` on the mock cluster; `plugin_keys` go in `[plugin]`.
fn settings_for(
    brokers: &str,
    transaction_interval: &str,
    plugin: &Path,
    plugin_keys: &str,
) -> config::Settings {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
        [kafka]
        brokers = "{brokers}"
        group-id = "scorer"
        input-topic = "{INPUT}"
        output-topic = "{OUTPUT}"
        dead-letter-topic = "{DEAD_LETTERS}"
        delivery = "exactly-once"
        transaction-interval = "{transaction_interval}"
        transactional-id = "scorer-0"
        [kafka.consumer]
        "auto.offset.reset" = "earliest"
        "session.timeout.ms" = "6000"
        [model]
        path = "{}"
        name = "fraud"
        version = 1
        [pipeline]
        batch-size = 32
        max-pending = 64
        shutdown-timeout = "10s"
        [metrics]
        listen = "127.0.0.1:0"
        [plugin]
        {plugin_keys}
        "#,
        manifest.join("../models/fraud/fraud.onnx").display()
    );
    config::from_str(
        &text,
        Path::new("exactly-once.toml"),
        Mode::Stream,
        plugin,
        &[],
    )
    .expect("valid config")
}

/// Every record of `topic` so far: (key, value, dead-letter reason).
fn read_all(brokers: &str, topic: &str, partitions: i32) -> Vec<(String, String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assigned");
    let mut records = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                let reason = m.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == "dead-letter-reason")
                        .map(|h| text(h.value))
                });
                records.push((text(m.key()), text(m.payload()), reason));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    records
}

/// Whether every input id is in the output or the dead-letter topic.
fn everything_came_out(brokers: &str) -> bool {
    let mut ids: HashSet<u64> = scored(&read_all(brokers, OUTPUT, 2)).into_keys().collect();
    for (key, _, _) in read_all(brokers, DEAD_LETTERS, 1) {
        ids.insert(key.parse().expect("a dead letter's key is the id"));
    }
    ids.len() as u64 == RECORDS
}

/// How many outputs name each input id.
fn scored(outputs: &[(String, String, Option<String>)]) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for (_, value, _) in outputs {
        let json: serde_json::Value = serde_json::from_str(value).expect("output is JSON");
        let id = json["id"].as_u64().expect("output has an id");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Runs the runtime until every input id is in the output or dead-letter topic (or the wait
/// ends), then stops it and returns its result.
async fn run_until_done(
    brokers: String,
    settings: config::Settings,
) -> Result<Summary, streaminfer::RunError> {
    run_with(brokers, settings, |_| {}).await
}

/// As [`run_until_done`], calling `meanwhile` on a blocking thread once the first outputs are
/// out.
async fn run_with(
    brokers: String,
    settings: config::Settings,
    meanwhile: impl FnOnce(&str) + Send + 'static,
) -> Result<Summary, streaminfer::RunError> {
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(streaminfer::run(settings, async move {
        let _ = stopped.await;
    }));
    let b = brokers.clone();
    let started = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while read_all(&b, OUTPUT, 2).is_empty() && Instant::now() < deadline {}
        meanwhile(&b);
    });
    started.await.expect("meanwhile");
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && !running.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = brokers.clone();
        let done = tokio::task::spawn_blocking(move || everything_came_out(&b))
            .await
            .expect("read");
        if done {
            break;
        }
    }
    let _ = stop.send(());
    running.await.expect("the run does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_commit_refused_for_a_stale_generation_aborts_and_reads_again() {
    let cluster = cluster().await;
    let brokers = cluster.bootstrap_servers();
    // The broker says the group moved on: the transaction must be aborted, twice.
    cluster.request_errors(
        RDKafkaApiKey::TxnOffsetCommit,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        ],
    );
    let summary = run_until_done(brokers.clone(), settings(&brokers))
        .await
        .expect("the run goes on after aborts");
    assert!(summary.aborted >= 2, "{summary:?}");
    assert!(summary.transactions >= 1, "{summary:?}");
    let seen = scored(&read_all(&brokers, OUTPUT, 2));
    assert_eq!(seen.len() as u64, RECORDS, "every record scored");
    // The mock shows aborted records too: records of the aborted transactions appear again,
    // the others once.
    let again = seen.values().filter(|n| **n > 1).count();
    assert!(
        again > 0,
        "the aborted transactions' records were produced again"
    );
    assert!(
        summary.consumed >= RECORDS + again as u64,
        "records produced again were read again: {summary:?}, {again} repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_refused_inside_a_transaction_abort_it_and_are_dead_lettered_when_read_again() {
    let cluster = cluster().await;
    let brokers = cluster.bootstrap_servers();
    // One produce request refused for good: its records fail delivery inside the transaction.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let summary = run_until_done(brokers.clone(), settings(&brokers))
        .await
        .expect("the run goes on");
    assert!(summary.aborted >= 1, "{summary:?}");
    let letters = read_all(&brokers, DEAD_LETTERS, 1);
    assert!(
        !letters.is_empty(),
        "the refused records were dead-lettered"
    );
    for (_, _, reason) in &letters {
        assert_eq!(reason.as_deref(), Some("output-refused"));
    }
    assert!(
        everything_came_out(&brokers),
        "every record scored or dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_transaction_aborts_it_and_reads_its_records_again() {
    let cluster = cluster().await;
    let brokers = cluster.bootstrap_servers();
    // A second member joins the group, takes partitions for a while, and leaves without
    // committing: the runtime's open transaction (held open 3 s) holds records of revoked
    // partitions.
    let summary = run_with(brokers.clone(), settings_with(&brokers, "3s"), |brokers| {
        let intruder: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "scorer")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("intruder");
        intruder.subscribe(&[INPUT]).expect("subscribed");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let _ = intruder.poll(Duration::from_millis(100));
        }
        intruder.unsubscribe();
    })
    .await
    .expect("the run goes on after the rebalance");
    assert!(
        summary.aborted >= 1,
        "the open transaction was aborted: {summary:?}"
    );
    assert!(
        everything_came_out(&brokers),
        "every record scored after the rebalance"
    );
}

/// Runs the runtime with no stop asked for, until it stops by itself (within 60 s).
async fn run_until_it_stops(settings: config::Settings) -> Result<Summary, streaminfer::RunError> {
    let (_stop, stopped) = oneshot::channel::<()>();
    let run = streaminfer::run(settings, async move {
        let _ = stopped.await;
    });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops by itself")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_stops_the_run_with_the_reason() {
    let cluster = cluster().await;
    let brokers = cluster.bootstrap_servers();
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let result = run_until_it_stops(settings(&brokers)).await;
    let error = result
        .expect_err("a fenced producer cannot go on")
        .to_string();
    assert!(error.contains("fenced"), "{error}");
}

/// A commit whose outcome never comes back (the coordinator answers "still loading" until the
/// commit's time is up) leaves librdkafka committing, where an abort is refused: the run stops
/// with the reason that the transaction is undecided, rather than try an abort that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_does_not_finish_stops_the_run_undecided() {
    let cluster = cluster().await;
    let brokers = cluster.bootstrap_servers();
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 1000],
    );
    let result = run_until_it_stops(settings(&brokers)).await;
    let error = result.expect_err("an undecided commit stops the run");
    assert!(
        matches!(
            error,
            streaminfer::RunError::Pipeline(PipelineError::Transaction(
                TransactionError::Undecided(_)
            ))
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("may still go through"),
        "{error}"
    );
}

/// Defect 1 of the third delivery review: a record whose first output is enqueued and whose
/// second is refused on enqueue (over `message.max.bytes`) must not let a commit take its
/// offset with only the first output inside. With transactions due every millisecond and
/// thousands of records before it, a commit is always due when the refusal comes; the record
/// must still end in the dead-letter topic, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_second_output_is_refused_on_enqueue_is_dead_lettered_not_committed() {
    const BEFORE: u64 = 3_000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [(INPUT, 1), (OUTPUT, 2), (DEAD_LETTERS, 1)] {
        cluster
            .create_topic(topic, partitions, 1)
            .expect("topic created");
    }
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = (0..=BEFORE).map(|id| {
        let value = if id == BEFORE {
            "small-then-huge"
        } else {
            "ok"
        };
        let producer = &producer;
        async move {
            let key = id.to_string();
            producer
                .send(
                    FutureRecord::to(INPUT)
                        .key(&key)
                        .payload(value)
                        .partition(0),
                    Duration::from_secs(30),
                )
                .await
                .expect("input produced");
        }
    });
    futures::future::join_all(sends).await;
    let hostile = common::plugin("HOSTILE_PLUGIN", "hostile_plugin.wasm", "hostile-plugin");
    let settings = settings_for(&brokers, "1ms", &hostile, r#"max-output-bytes = "4MiB""#);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(streaminfer::run(settings, async move {
        let _ = stopped.await;
    }));
    let b = brokers.clone();
    let letters = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let letters = read_all(&b, DEAD_LETTERS, 1);
            if !letters.is_empty() || Instant::now() > deadline {
                return letters;
            }
        }
    })
    .await
    .expect("read");
    let _ = stop.send(());
    let summary = running
        .await
        .expect("the run does not panic")
        .expect("the run goes on after the abort");
    assert_eq!(
        letters
            .iter()
            .map(|(key, _, reason)| (key.as_str(), reason.as_deref()))
            .collect::<Vec<_>>(),
        [(BEFORE.to_string().as_str(), Some("output-refused"))],
        "the record is dead-lettered, once, for its refused output: {summary:?}"
    );
    assert!(
        summary.aborted >= 1,
        "its transaction was aborted: {summary:?}"
    );
    let outputs = read_all(&brokers, OUTPUT, 2);
    assert!(
        outputs.iter().filter(|(_, v, _)| v == "ok").count() as u64 >= BEFORE,
        "every record before it was scored"
    );
}
