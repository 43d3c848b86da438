//! The loop run whole in at-least-once mode, with the fraud plugin, a scripted model and a
//! scripted sink and consumer: what reaches the sink, what is stored, and how a run ends.

use std::path::PathBuf;
use std::sync::Mutex;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tonic::Status;

use super::super::outlet::scripted::Scripted;
use super::*;
use crate::config::{self, Mode};
use crate::inference::Inference;
use crate::inference::scripted::Scripted as ScriptedModel;
use crate::metrics::Counters;
use crate::plugin::{PluginHost, PluginPool};
use crate::sink::Ack;
use crate::source::Consumed;

/// The consumer's half: notes every store, as (partition, last finished offset).
#[derive(Debug, Default)]
struct Stores(Mutex<Vec<(i32, i64)>>);

impl Stores {
    fn taken(&self) -> Vec<(i32, i64)> {
        self.0.lock().expect("stores").clone()
    }

    /// The last offset stored for `partition`.
    fn last(&self, partition: i32) -> Option<i64> {
        self.taken()
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .max()
    }
}

impl Input for Stores {
    fn finished_up_to(&self, _: &str, partition: i32, offset: i64, _: u64) {
        self.0.lock().expect("stores").push((partition, offset));
    }

    fn is_paused(&self) -> bool {
        false
    }

    fn waiting(&self, _: Duration) -> Option<i64> {
        None
    }

    fn assignments(&self) -> u64 {
        1
    }
}

/// The fraud plugin built by `scripts/test.sh`: `FRAUD_PLUGIN`, else where that build puts it.
fn fraud_plugin() -> PathBuf {
    let path = std::env::var_os("FRAUD_PLUGIN").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/plugin/fraud_plugin.wasm")
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p fraud-plugin --target wasm32-wasip2 --profile plugin`",
        path.display()
    );
    path
}

/// The settings of a run with batches of 8 and one model try per call.
fn settings(shutdown_timeout: &str) -> config::Settings {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fraud/fraud.onnx");
    let text = format!(
        r#"
[model]
path = "{}"
name = "fraud"
retry-attempts = 1
[plugin]
workers = 1
[pipeline]
batch-size = 8
shutdown-timeout = "{shutdown_timeout}"
"#,
        model.display()
    );
    config::from_str(
        &text,
        std::path::Path::new("drive-test.toml"),
        Mode::Offline,
        &fraud_plugin(),
        &[],
    )
    .expect("valid test config")
}

/// The score the scripted model gives the transaction at `offset`: its `V1`.
fn score(offset: i64) -> f64 {
    (offset % 100) as f64 / 100.0
}

/// A fraud transaction at `offset` of `partition`, its id the offset.
fn record(partition: i32, offset: i64) -> Consumed {
    let mut fields = vec![format!("\"id\": {offset}"), "\"Time\": 1.0".to_owned()];
    fields.push(format!("\"V1\": {}", score(offset)));
    fields.extend((2..=28).map(|i| format!("\"V{i}\": 0.5")));
    fields.push("\"Amount\": 10.0".to_owned());
    Consumed {
        record: InputRecord {
            topic: Arc::from("in"),
            partition,
            offset,
            timestamp: None,
            key: Some(offset.to_string().into_bytes()),
            value: Some(format!("{{{}}}", fields.join(", ")).into_bytes()),
            headers: Vec::new(),
            fields: crate::contract::NO_FIELDS,
        },
        generation: 1,
        exact_headers: None,
        refused: None,
    }
}

fn batch(records: impl IntoIterator<Item = (i32, i64)>) -> Batch {
    let mut batch = Batch::default();
    for (partition, offset) in records {
        batch.push(record(partition, offset), Instant::now());
    }
    batch
}

/// A run of the loop over `batches`, in at-least-once mode.
struct Run {
    settings: config::Settings,
    model: Arc<ScriptedModel>,
    stages: Arc<Stages>,
    stores: Arc<Stores>,
    permits: Semaphore,
}

impl Run {
    fn new(shutdown_timeout: &str) -> Self {
        let settings = settings(shutdown_timeout);
        let host = PluginHost::new().expect("plugin host");
        let plugin = host.load(&settings.plugin).expect("fraud plugin loads");
        let pool = PluginPool::start(plugin, 1).expect("plugin pool");
        // Rows of 30 features, `V1` (column 1) is the score.
        let model = ScriptedModel::new("fraud_probability", 30, 1);
        let inference = Inference::scripted(model.clone(), &settings.model);
        Self {
            stages: Arc::new(Stages::new(pool, inference)),
            settings,
            model,
            stores: Arc::default(),
            permits: Semaphore::new(0),
        }
    }

    /// Drives `batches` through to `broker` until the loop ends: the input ends when the
    /// channel's sender is gone, and `shutdown` asks for the drain.
    async fn drive(
        &self,
        batches: mpsc::Receiver<Batch>,
        broker: Scripted,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), PipelineError> {
        let (stop, _stopped) = watch::channel(false);
        let drive = Drive {
            source: &self.stores,
            stages: &self.stages,
            settings: &self.settings.pipeline,
            batches,
            consumer_failed: None,
            permits: &self.permits,
            stop: &stop,
        };
        let mut delivery = Delivery::new(broker, Arc::new(Counters::default()), false);
        let mut commit = Commit::AtLeastOnce(&*self.stores);
        let mut deadline = None;
        let shutdown = std::pin::pin!(shutdown);
        drive
            .run(shutdown, &mut deadline, &mut delivery, &mut commit)
            .await
    }
}

/// A channel already holding `batches`, and closed unless `open`.
fn input(batches: Vec<Batch>, open: bool) -> (mpsc::Receiver<Batch>, Option<mpsc::Sender<Batch>>) {
    let (tx, rx) = mpsc::channel(batches.len().max(1));
    for b in batches {
        tx.try_send(b).expect("room for every batch");
    }
    (rx, open.then_some(tx))
}

/// Each output's verdict as (id, score).
fn verdicts(log: &[(usize, String)]) -> Vec<(i64, f64)> {
    log.iter()
        .filter(|(_, v)| !v.starts_with("dead letter"))
        .map(|(_, v)| {
            let verdict: serde_json::Value = serde_json::from_str(v).expect("a JSON verdict");
            (
                verdict["id"].as_i64().expect("an id"),
                verdict["fraud_probability"].as_f64().expect("a score"),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_record_gets_its_own_rows_answer_in_partition_order_and_is_stored() {
    let run = Run::new("5s");
    // Two partitions interleaved across three batches.
    let batches = (0..3)
        .map(|b| batch((0..8).map(move |i| (i % 2, i64::from(b * 8 + i)))))
        .collect();
    let (batches, _) = input(batches, false);
    let broker = Scripted::acknowledging(None);
    let log = broker.log.clone();
    run.drive(batches, broker, std::future::pending())
        .await
        .expect("the run ends when its input does");
    let verdicts = verdicts(&log.lock().expect("log"));
    assert_eq!(verdicts.len(), 24, "one verdict per record");
    for (id, scored) in &verdicts {
        assert!(
            (scored - score(*id)).abs() < 1e-6,
            "record {id} got {scored}, not its own row's {}",
            score(*id)
        );
    }
    for partition in 0..2 {
        let ids: Vec<i64> = verdicts
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| (id % 2) as i32 == partition)
            .collect();
        assert!(
            ids.is_sorted(),
            "partition {partition} out of order: {ids:?}"
        );
        assert_eq!(run.stores.last(partition), Some(22 + i64::from(partition)));
    }
    assert_eq!(run.model.calls(), 3, "one call per batch of 8");
    assert_eq!(run.permits.available_permits(), 24, "every permit returns");
}

#[tokio::test]
async fn nothing_is_stored_past_a_record_whose_acknowledgement_is_missing() {
    let run = Run::new("5s");
    let (batches, _) = input(vec![batch((0..8).map(|o| (0, o)))], false);
    let broker = Scripted::default();
    let (log, acks) = (broker.log.clone(), broker.acks.clone());
    let stores = run.stores.clone();
    let acknowledge = async move {
        while log.lock().expect("log").len() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tokens: Vec<usize> = log.lock().expect("log").iter().map(|(t, _)| *t).collect();
        // Every record but the first, last to first.
        for &token in tokens[1..].iter().rev() {
            acks.push(Ack { token, error: None });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stores.taken(), [], "record 0 still waits: nothing stored");
        acks.push(Ack {
            token: tokens[0],
            error: None,
        });
    };
    let (ran, ()) = tokio::join!(
        run.drive(batches, broker, std::future::pending()),
        acknowledge
    );
    ran.expect("the run ends when its input does");
    assert_eq!(
        run.stores.taken(),
        [(0, 7)],
        "stored once, behind all eight"
    );
    assert_eq!(run.permits.available_permits(), 8);
}

#[tokio::test]
async fn records_whose_model_call_fails_are_dead_lettered_and_stored_behind() {
    let run = Run::new("5s");
    run.model
        .failing([Status::unavailable("the server is down")]);
    let batches = vec![
        batch((0..8).map(|o| (0, o))),
        batch((8..16).map(|o| (0, o))),
    ];
    let (batches, _) = input(batches, false);
    let broker = Scripted::acknowledging(None);
    let log = broker.log.clone();
    run.drive(batches, broker, std::future::pending())
        .await
        .expect("a failed model call does not end the run");
    let log = log.lock().expect("log");
    let dead: Vec<&str> = log.iter().take(8).map(|(_, v)| v.as_str()).collect();
    assert_eq!(dead, ["dead letter Full model-unavailable"; 8]);
    let ids: Vec<i64> = verdicts(&log).iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (8..16).collect::<Vec<_>>());
    assert_eq!(run.stores.last(0), Some(15));
}

#[tokio::test]
async fn a_delivery_failure_ends_the_run_with_nothing_stored_past_it() {
    let run = Run::new("5s");
    let (batches, _) = input(vec![batch((0..8).map(|o| (0, o)))], false);
    let broker = Scripted::acknowledging(Some(KafkaError::MessageProduction(
        RDKafkaErrorCode::MessageTimedOut,
    )));
    let ran = run.drive(batches, broker, std::future::pending()).await;
    assert!(
        matches!(ran, Err(PipelineError::Sink(_))),
        "expected the sink's error, got {ran:?}"
    );
    assert_eq!(run.stores.taken(), [], "record 0 never finished");
}

#[tokio::test]
async fn a_drain_whose_acknowledgements_never_come_ends_at_the_shutdown_timeout() {
    let run = Run::new("300ms");
    let (batches, _input) = input(vec![batch((0..8).map(|o| (0, o)))], true);
    let broker = Scripted::default();
    let log = broker.log.clone();
    let asked = async move {
        while log.lock().expect("log").len() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let started = Instant::now();
    let ran = run.drive(batches, broker, asked).await;
    assert!(
        matches!(ran, Err(PipelineError::ShutdownTimeout(t)) if t == Duration::from_millis(300)),
        "expected the drain to time out, got {ran:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(run.stores.taken(), []);
}
