//! Heap allocations per record on the pass-through path: the whole runtime (consumer, reader,
//! plugin, delivery, offsets) against librdkafka's in-process mock cluster, with a counting
//! global allocator. Two runs of different lengths; the difference of their counts over the
//! difference of their records is what one more record costs, start-up excluded. Printed, and
//! held under a bound so that a change that allocates per record more than today fails here.
//!
//! librdkafka's own buffers come from C `malloc` and are not counted: this counts the runtime's
//! allocations, the ones its design decides.

#![allow(unsafe_code, reason = "a counting global allocator wraps the system's")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use streaminfer::config::{self, Mode};
use tokio::sync::oneshot;

mod common;

/// Allocations a record may cost at most: 7.0 were measured when this bound was set (key,
/// value and headers out of librdkafka, the plugin's output, the batch's share of its
/// vectors); 9.0 before offsets were stored once per partition per acknowledgement drain.
const PER_RECORD_AT_MOST: f64 = 9.0;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's own threads (producing the input, reading the output), whose
    /// allocations are not the runtime's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if !UNCOUNTED.try_with(Cell::get).unwrap_or(true) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as the caller promised for this call.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as the caller promised for this call.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as the caller promised for this call.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller promised for this call.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const DEAD_LETTERS: &str = "dead";

fn passthrough_plugin() -> std::path::PathBuf {
    common::plugin(
        "PASSTHROUGH_PLUGIN",
        "passthrough_plugin.wasm",
        "passthrough-plugin",
    )
}

/// A mock cluster whose input holds `records` transactions over 4 partitions.
async fn cluster(records: u64) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    UNCOUNTED.set(true);
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [(INPUT, 4), (OUTPUT, 4), (DEAD_LETTERS, 1)] {
        cluster
            .create_topic(topic, partitions, 1)
            .expect("topic created");
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends: Vec<_> = (0..records)
        .map(|id| {
            let key = id.to_string();
            let value = common::transaction(id, 406.0, |i| f64::from(i) / 100.0, 149.62);
            producer
                .send_result(FutureRecord::to(INPUT).key(&key).payload(&value))
                .map_err(|(e, _)| e)
                .expect("input queued")
        })
        .collect();
    for sent in sends {
        sent.await
            .expect("delivery reported")
            .map_err(|(e, _)| e)
            .expect("input produced");
    }
    UNCOUNTED.set(false);
    cluster
}

fn settings(brokers: &str) -> config::Settings {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
        [kafka]
        brokers = "{brokers}"
        group-id = "allocations"
        input-topic = "{INPUT}"
        output-topic = "{OUTPUT}"
        dead-letter-topic = "{DEAD_LETTERS}"
        [kafka.consumer]
        "auto.offset.reset" = "earliest"
        "session.timeout.ms" = "6000"
        [model]
        path = "{}"
        name = "fraud"
        version = 1
        [pipeline]
        shutdown-timeout = "10s"
        [metrics]
        listen = "127.0.0.1:0"
        "#,
        manifest.join("../models/fraud/fraud.onnx").display()
    );
    config::from_str(
        &text,
        Path::new("allocations.toml"),
        Mode::Stream,
        &passthrough_plugin(),
        &[],
    )
    .expect("valid config")
}

/// How many records the output topic holds, read by a consumer whose allocations are not
/// counted.
fn outputs(brokers: &str) -> i64 {
    UNCOUNTED.set(true);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "counter")
        .create()
        .expect("counter");
    let mut total = 0;
    for p in 0..4 {
        let (low, high) = consumer
            .fetch_watermarks(OUTPUT, p, Duration::from_secs(5))
            .expect("watermarks");
        total += high - low;
    }
    drop(consumer);
    UNCOUNTED.set(false);
    total
}

/// Runs the runtime on `records` records until all are out; returns the runtime's allocations.
async fn allocations_for(records: u64) -> u64 {
    let cluster = cluster(records).await;
    let brokers = cluster.bootstrap_servers();
    let (stop, stopped) = oneshot::channel::<()>();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let running = tokio::spawn(streaminfer::run(settings(&brokers), async move {
        let _ = stopped.await;
    }));
    let b = brokers.clone();
    let done = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while outputs(&b) < records as i64 {
            assert!(
                Instant::now() < deadline,
                "the outputs did not all come out"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    done.await.expect("outputs counted");
    let _ = stop.send(());
    running
        .await
        .expect("the run does not panic")
        .expect("the run succeeds");
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_record_on_the_passthrough_path() {
    let (short, long) = (2_000, 22_000);
    let few = allocations_for(short).await;
    let many = allocations_for(long).await;
    let per_record = many.saturating_sub(few) as f64 / (long - short) as f64;
    println!(
        "ALLOCATIONS passthrough: {per_record:.1} per record ({few} for {short} records, {many} for {long}, start-up included)"
    );
    assert!(
        per_record <= PER_RECORD_AT_MOST,
        "{per_record:.1} allocations per record, more than {PER_RECORD_AT_MOST}"
    );
}
