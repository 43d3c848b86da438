//! `plugin-bench`: what the WebAssembly boundary, the model call and the wire format cost, in
//! figures, for `bench/run.py` (B3 and the micro-benchmarks of `BENCHMARKS.md`).
//!
//! Every figure comes from the same generated fraud transactions, side by side in one run:
//! - the fraud plugin's `prepare` + `complete` linked natively (the SDK's glue called directly,
//!   its declared fields read by the host's reader, as the pool does) against the same source
//!   built as a component and run by the runtime's plugin pool;
//! - natively, per record: the host's field reader and the fraud plugin's `prepare` (tensor,
//!   state: `json_typed`) against what a plugin did before contract 0.2 (parse into a `Map`,
//!   read the 30 features, parse again for the id in `complete`: `json_map`);
//! - the embedded model on a stacked batch (stack, ONNX, split), as the pipeline calls it;
//! - a batch's tensor to and from TensorFlow's wire format.
//!
//! Each case runs `--rounds` times over all records; the best round is reported (the least
//! disturbed by other work on a shared machine), with the median beside it. Outputs are checked
//! (one verdict per record, ids intact), not just timed.
//!
//! ```text
//! plugin-bench --wasm target/wasm32-wasip2/plugin/fraud_plugin.wasm [--config config/fraud.toml]
//!              [--records 100000] [--batch 256] [--rounds 5] [--json]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use streaminfer::config::{self, Mode};
use streaminfer::contract::{self, Completion, Decision, ModelCall, Origin};
use streaminfer::inference::{Inference, from_proto, to_proto};
use streaminfer::plugin::{FieldReader, PluginHost, PluginPool};
use streaminfer_sdk as sdk;

const FEATURES: usize = 30;

struct Args {
    wasm: PathBuf,
    config: PathBuf,
    records: usize,
    batch: usize,
    rounds: usize,
    json: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        wasm: PathBuf::from("target/wasm32-wasip2/plugin/fraud_plugin.wasm"),
        config: PathBuf::from("config/fraud.toml"),
        records: 100_000,
        batch: 256,
        rounds: 5,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--wasm" => args.wasm = value()?.into(),
            "--config" => args.config = value()?.into(),
            "--records" => args.records = value()?.parse().context("--records")?,
            "--batch" => args.batch = value()?.parse().context("--batch")?,
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--json" => args.json = true,
            other => bail!(
                "unknown argument {other:?}; usage: plugin-bench [--wasm PATH] [--config PATH] \
                 [--records N] [--batch N] [--rounds N] [--json]"
            ),
        }
    }
    ensure!(
        args.records > 0 && args.batch > 0 && args.rounds > 0,
        "--records, --batch and --rounds must be positive"
    );
    Ok(args)
}

/// Transactions in the fraud schema, from a fixed seed: full-precision floats as a JSON encoder
/// writes them, the fields in the data set's order.
fn transactions(count: usize) -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: deterministic and good enough for test data.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..count)
        .map(|i| {
            let mut txn = serde_json::Map::new();
            txn.insert("id".into(), (i as i64 + 1).into());
            txn.insert("Time".into(), (next() * 172_792.0).floor().into());
            for v in 1..=28 {
                txn.insert(format!("V{v}"), ((next() - 0.5) * 6.0).into());
            }
            txn.insert(
                "Amount".into(),
                ((next() * 500.0 * 100.0).round() / 100.0).into(),
            );
            txn.insert("Class".into(), 0.into());
            serde_json::to_vec(&txn).expect("a map of numbers serializes")
        })
        .collect()
}

/// Timings of one case, one per round.
struct Rounds(Vec<Duration>);

impl Rounds {
    fn best(&self) -> Duration {
        self.0.iter().copied().min().unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }
}

fn per_second(items: usize, time: Duration) -> f64 {
    items as f64 / time.as_secs_f64().max(1e-9)
}

fn nanos_each(items: usize, time: Duration) -> f64 {
    time.as_secs_f64() * 1e9 / items.max(1) as f64
}

fn response(rows: usize) -> contract::InferenceResponse {
    contract::InferenceResponse {
        model: contract::ModelInfo {
            name: "fraud".into(),
            version: Some("1".into()),
        },
        outputs: vec![contract::Tensor {
            name: "fraud_probability".into(),
            shape: vec![rows as i64, 1],
            data: contract::TensorData::F32(vec![0.25; rows]),
        }],
    }
}

fn sdk_response() -> sdk::Response {
    sdk::Response {
        model: sdk::ModelInfo {
            name: "fraud".into(),
            version: Some("1".into()),
        },
        outputs: vec![sdk::Tensor::f32("fraud_probability", [1, 1], [0.25]).expect("1x1 holds 1")],
    }
}

/// Checks a batch of verdicts: one record each, the id of the transaction it answers.
fn check_verdicts<'a>(
    first_id: usize,
    values: impl Iterator<Item = Option<&'a [u8]>>,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for (i, value) in values.enumerate() {
        let value = value.context("a verdict without a value")?;
        let verdict: serde_json::Value = serde_json::from_slice(value)?;
        ensure!(
            verdict["id"] == (first_id + i + 1) as u64,
            "verdict {i} of a batch is for id {}, expected {}",
            verdict["id"],
            first_id + i + 1
        );
        n += 1;
    }
    Ok(n)
}

/// The transactions as the SDK's records, keyed and numbered by position.
fn sdk_records(values: &[Vec<u8>]) -> Vec<sdk::Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| sdk::Record {
            topic: "transactions".into(),
            partition: 0,
            offset: i as i64,
            timestamp: None,
            key: Some(i.to_string().into_bytes()),
            value: Some(v.clone()),
            headers: Vec::new(),
            fields: Ok(Vec::new()),
        })
        .collect()
}

/// The host's reader of the fields a plugin declares, as the runtime builds it.
fn host_reader(declared: &[sdk::Field]) -> anyhow::Result<FieldReader> {
    let specs: Vec<contract::FieldSpec> = declared
        .iter()
        .map(|f| contract::FieldSpec {
            name: f.name.clone(),
            kind: match f.kind {
                sdk::FieldKind::Number => contract::FieldKind::Number,
                sdk::FieldKind::Integer => contract::FieldKind::Integer,
                sdk::FieldKind::Text => contract::FieldKind::Text,
                sdk::FieldKind::Boolean => contract::FieldKind::Boolean,
                sdk::FieldKind::Json => contract::FieldKind::Json,
            },
        })
        .collect();
    FieldReader::new(&specs).map_err(anyhow::Error::msg)
}

/// A record's fields read by the host's reader, in the SDK's types: what the component is
/// handed, here without the boundary.
fn host_fields(reader: &FieldReader, value: Option<&[u8]>) -> Result<Vec<sdk::FieldValue>, String> {
    let values = reader.read(value)?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            contract::FieldValue::Absent => sdk::FieldValue::Absent,
            contract::FieldValue::Number(n) => sdk::FieldValue::Number(n),
            contract::FieldValue::Integer(n) => sdk::FieldValue::Integer(n),
            contract::FieldValue::Text(t) => sdk::FieldValue::Text(t),
            contract::FieldValue::Boolean(b) => sdk::FieldValue::Boolean(b),
            contract::FieldValue::Json(j) => sdk::FieldValue::Json(j),
            contract::FieldValue::Mismatch(m) => sdk::FieldValue::Mismatch(m),
        })
        .collect())
}

fn fraud() -> anyhow::Result<fraud_plugin::Fraud> {
    let config = sdk::Config::new([("threshold", "0.5")]);
    <fraud_plugin::Fraud as sdk::Plugin>::configure(&config).map_err(anyhow::Error::msg)
}

/// The fraud plugin linked into this binary, through the same glue its component exports.
fn native(values: &[Vec<u8>], batch: usize, rounds: usize) -> anyhow::Result<(Rounds, Rounds)> {
    let plugin = fraud()?;
    let reader = host_reader(&<fraud_plugin::Fraud as sdk::Plugin>::fields(&plugin))?;
    let mut records = sdk_records(values);
    let total = records.len();
    let (mut prepare, mut complete) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (mut p, mut c) = (Duration::ZERO, Duration::ZERO);
        let mut verdicts = 0;
        for (n, chunk) in records.chunks_mut(batch).enumerate() {
            // Timed as the pool's prepare is: the host reads the fields, the plugin decides.
            let started = Instant::now();
            for r in chunk.iter_mut() {
                r.fields = host_fields(&reader, r.value.as_deref());
            }
            let decisions = sdk::export::prepare_batch(&plugin, chunk);
            for r in chunk.iter_mut() {
                r.fields = Ok(Vec::new());
            }
            p += started.elapsed();
            let completions = chunk
                .iter()
                .zip(decisions)
                .map(|(record, decision)| match decision {
                    Ok(sdk::export::Decision::Infer(call)) => Ok(sdk::export::Completion {
                        origin: sdk::Origin {
                            topic: record.topic.clone(),
                            partition: record.partition,
                            offset: record.offset,
                            timestamp: record.timestamp,
                            key: record.key.clone(),
                        },
                        state: call.state,
                        response: sdk_response(),
                    }),
                    other => bail!("expected a model call, got {other:?}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let started = Instant::now();
            let outputs = sdk::export::complete_batch(&plugin, completions);
            c += started.elapsed();
            let values = outputs
                .iter()
                .map(|o| o.as_ref().ok().and_then(|o| o.first()?.value.as_deref()));
            verdicts += check_verdicts(n * batch, values)?;
        }
        ensure!(verdicts == total, "native: {verdicts} verdicts");
        prepare.push(p);
        complete.push(c);
    }
    Ok((Rounds(prepare), Rounds(complete)))
}

/// The component, run by the runtime's plugin pool exactly as the pipeline runs it.
async fn wasm(
    values: &[Vec<u8>],
    settings: &config::PluginSettings,
    batch: usize,
    rounds: usize,
) -> anyhow::Result<(Rounds, Rounds)> {
    let host = PluginHost::new()?;
    let pool = PluginPool::start(host.load(settings)?, 1)?;
    let topic: Arc<str> = "transactions".into();
    let records: Vec<contract::InputRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| contract::InputRecord {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            timestamp: None,
            key: Some(i.to_string().into_bytes()),
            value: Some(v.clone()),
            headers: Vec::new(),
            fields: streaminfer::contract::NO_FIELDS,
        })
        .collect();
    let (mut prepare, mut complete) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (mut p, mut c) = (Duration::ZERO, Duration::ZERO);
        let mut verdicts = 0;
        for (n, chunk) in records.chunks(batch).enumerate() {
            let chunk = chunk.to_vec();
            let started = Instant::now();
            let (chunk, decisions) = pool.prepare(chunk).await?;
            p += started.elapsed();
            let completions = chunk
                .iter()
                .zip(decisions)
                .map(|(record, decision)| match decision {
                    Ok(Decision::Infer(ModelCall { state, .. })) => Ok(Completion {
                        origin: Origin::of(record),
                        state,
                        response: response(1),
                    }),
                    Ok(other) => bail!("expected a model call, got {other:?}"),
                    Err(failure) => bail!("record refused: {}", failure.message),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let started = Instant::now();
            let outputs = pool.complete(completions).await?;
            c += started.elapsed();
            let values = outputs
                .iter()
                .map(|o| o.as_ref().ok().and_then(|o| o.first()?.value.as_deref()));
            verdicts += check_verdicts(n * batch, values)?;
        }
        ensure!(verdicts == records.len(), "wasm: {verdicts} verdicts");
        prepare.push(p);
        complete.push(c);
    }
    pool.shutdown();
    Ok((Rounds(prepare), Rounds(complete)))
}

/// Natively, per record: the fraud plugin's `prepare` (typed parse, tensor, state) against the
/// reading the plugin did before contract 0.2 (a `Map`, its 30 features, a second parse for the
/// id). The records are built before the clock starts.
fn json_parse(values: &[Vec<u8>], rounds: usize) -> anyhow::Result<(Rounds, Rounds)> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: i64,
    }
    let (mut typed, mut map) = (Vec::new(), Vec::new());
    let plugin = fraud()?;
    let reader = host_reader(&<fraud_plugin::Fraud as sdk::Plugin>::fields(&plugin))?;
    let mut records = sdk_records(values);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut sum = 0i64;
        for record in &mut records {
            record.fields = host_fields(&reader, record.value.as_deref());
            if let Ok(sdk::Decision::Infer(_, id)) = sdk::Plugin::prepare(&plugin, record) {
                sum += id;
            }
        }
        typed.push(started.elapsed());
        let started = Instant::now();
        let mut sum_map = 0i64;
        for value in values {
            let txn: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)?;
            std::hint::black_box(features_of(&txn));
            sum_map += serde_json::from_slice::<Id>(value)?.id;
        }
        map.push(started.elapsed());
        ensure!(sum == sum_map, "typed and map parses disagree on the ids");
    }
    Ok((Rounds(typed), Rounds(map)))
}

/// The fraud model's features of a transaction read into a `Map`; a missing one is 0.
fn features_of(txn: &serde_json::Map<String, serde_json::Value>) -> Vec<f32> {
    fraud_plugin::FEATURES
        .iter()
        .map(|f| {
            txn.get(*f)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0) as f32
        })
        .collect()
}

/// The embedded model on stacked batches, as the pipeline calls it.
async fn model(
    settings: &config::ModelSettings,
    values: &[Vec<u8>],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<Rounds> {
    let inference = Inference::connect(settings).await?;
    let requests: Vec<contract::InferenceRequest> = values
        .iter()
        .map(|v| {
            let txn: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(v).expect("generated JSON");
            let features = features_of(&txn);
            contract::InferenceRequest {
                inputs: vec![contract::Tensor {
                    name: "features".into(),
                    shape: vec![1, FEATURES as i64],
                    data: contract::TensorData::F32(features),
                }],
                signature: None,
                output_filter: vec!["fraud_probability".into()],
            }
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for chunk in requests.chunks(batch) {
            let refs: Vec<&contract::InferenceRequest> = chunk.iter().collect();
            let (answers, _) = inference.infer_all(&refs).await;
            for answer in answers {
                answer.context("the embedded model failed")?;
            }
        }
        times.push(started.elapsed());
    }
    Ok(Rounds(times))
}

/// A batch's features to TensorFlow's `TensorProto` bytes and back.
fn wire(batch: usize, rounds: usize) -> anyhow::Result<(Rounds, Rounds)> {
    use prost::Message;
    let tensor = contract::Tensor {
        name: "features".into(),
        shape: vec![batch as i64, FEATURES as i64],
        data: contract::TensorData::F32((0..batch * FEATURES).map(|i| i as f32).collect()),
    };
    const CALLS: usize = 2_000;
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let mut bytes = Vec::new();
        for _ in 0..CALLS {
            bytes = to_proto(&tensor)?.encode_to_vec();
        }
        encode.push(started.elapsed() / CALLS as u32);
        let started = Instant::now();
        for _ in 0..CALLS {
            let proto = streaminfer_proto::tensorflow::TensorProto::decode(bytes.as_slice())?;
            let back = from_proto("features", &proto, (batch * FEATURES) as u64)?;
            ensure!(back == tensor, "the tensor does not survive the round trip");
        }
        decode.push(started.elapsed() / CALLS as u32);
    }
    Ok((Rounds(encode), Rounds(decode)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let settings = config::load(
        &args.config,
        Mode::Offline,
        &args.wasm,
        &[],
        std::iter::empty(),
    )
    .with_context(|| format!("reading {}", args.config.display()))?;
    let values = transactions(args.records);
    let n = values.len();

    let (native_prepare, native_complete) = native(&values, args.batch, args.rounds)?;
    let (wasm_prepare, wasm_complete) =
        wasm(&values, &settings.plugin, args.batch, args.rounds).await?;
    let (typed, map) = json_parse(&values, args.rounds)?;
    let model = model(&settings.model, &values, args.batch, args.rounds).await?;
    let (encode, decode) = wire(args.batch, args.rounds)?;

    let native_total = native_prepare.best() + native_complete.best();
    let wasm_total = wasm_prepare.best() + wasm_complete.best();
    let batches = n.div_ceil(args.batch);
    let mut figures: BTreeMap<&str, f64> = BTreeMap::new();
    figures.insert("records", n as f64);
    figures.insert("batch", args.batch as f64);
    figures.insert("native_records_per_s", per_second(n, native_total));
    figures.insert("wasm_records_per_s", per_second(n, wasm_total));
    figures.insert(
        "wasm_over_native",
        native_total.as_secs_f64() / wasm_total.as_secs_f64().max(1e-9),
    );
    for (name, rounds) in [
        ("native_prepare_ns_per_record", &native_prepare),
        ("native_complete_ns_per_record", &native_complete),
        ("wasm_prepare_ns_per_record", &wasm_prepare),
        ("wasm_complete_ns_per_record", &wasm_complete),
    ] {
        figures.insert(name, nanos_each(n, rounds.best()));
    }
    for (name, rounds) in [
        ("wasm_prepare_us_per_batch", &wasm_prepare),
        ("wasm_complete_us_per_batch", &wasm_complete),
    ] {
        figures.insert(name, nanos_each(batches, rounds.best()) / 1e3);
    }
    figures.insert(
        "wasm_median_records_per_s",
        per_second(n, wasm_prepare.median() + wasm_complete.median()),
    );
    figures.insert(
        "native_median_records_per_s",
        per_second(n, native_prepare.median() + native_complete.median()),
    );
    figures.insert("json_typed_ns_per_record", nanos_each(n, typed.best()));
    figures.insert("json_map_ns_per_record", nanos_each(n, map.best()));
    figures.insert("model_rows_per_s", per_second(n, model.best()));
    figures.insert(
        "model_us_per_batch",
        nanos_each(batches, model.best()) / 1e3,
    );
    figures.insert(
        "tensor_encode_us_per_batch",
        encode.best().as_secs_f64() * 1e6,
    );
    figures.insert(
        "tensor_decode_us_per_batch",
        decode.best().as_secs_f64() * 1e6,
    );

    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "plugin-bench: {n} fraud transactions, batches of {}, best of {} rounds",
            args.batch, args.rounds
        );
        for (name, value) in &figures {
            println!("  {name:<32} {value:>14.2}");
        }
    }
    Ok(())
}
