//! The plugin host against the real fraud plugin, compiled to a WebAssembly component.
//! `scripts/test.sh` builds it first and passes its path in `FRAUD_PLUGIN`; without it these
//! tests fail and say how to build it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streaminfer::config::{OutputLimits, PluginSettings};
use streaminfer::contract::{
    Completion, Decision, Header, InferenceResponse, InputRecord, ModelCall, ModelInfo, Origin,
    Tensor, TensorData,
};
use streaminfer::plugin::{LoadedPlugin, PluginError, PluginHost, PluginPool};

mod common;

use common::fraud_plugin;

fn settings(path: PathBuf, plugin_settings: &[(&str, &str)]) -> PluginSettings {
    PluginSettings {
        path,
        memory_limit: 64 << 20,
        call_timeout: Duration::from_secs(1),
        workers: 1,
        reload: None,
        settings: plugin_settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        outputs: OutputLimits::default(),
        cache_dir: None,
    }
}

fn load(plugin_settings: &[(&str, &str)]) -> Result<Arc<LoadedPlugin>, PluginError> {
    PluginHost::new()?.load(&settings(fraud_plugin(), plugin_settings))
}

fn transaction(id: u64) -> String {
    common::transaction(id, 406.0, |i| f64::from(i) / 100.0, 149.62)
}

fn record(offset: i64, value: &[u8]) -> InputRecord {
    InputRecord {
        topic: "transactions".into(),
        partition: 2,
        offset,
        timestamp: Some(1_700_000_000_000),
        key: Some(offset.to_string().into_bytes()),
        value: Some(value.to_vec()),
        headers: vec![Header {
            key: "trace".into(),
            value: b"abc".to_vec(),
        }],
        fields: streaminfer::contract::NO_FIELDS,
    }
}

fn response(probability: f32) -> InferenceResponse {
    InferenceResponse {
        model: ModelInfo {
            name: "fraud".into(),
            version: Some("1".into()),
        },
        outputs: vec![Tensor {
            name: "fraud_probability".into(),
            shape: vec![1, 1],
            data: TensorData::F32(vec![probability]),
        }],
    }
}

/// What the host hands `complete`: each record's origin and the state `prepare` kept, with a
/// response.
async fn completions(
    pool: &PluginPool,
    answers: Vec<(InputRecord, InferenceResponse)>,
) -> Vec<Completion> {
    let (records, responses): (Vec<_>, Vec<_>) = answers.into_iter().unzip();
    let (records, decisions) = pool.prepare(records).await.expect("plugin runs");
    records
        .iter()
        .zip(decisions)
        .zip(responses)
        .map(|((record, decision), response)| {
            let Ok(Decision::Infer(ModelCall { state, .. })) = decision else {
                panic!("expected a model call, got {decision:?}");
            };
            Completion {
                origin: Origin::of(record),
                state,
                response,
            }
        })
        .collect()
}

#[tokio::test]
async fn prepare_builds_the_feature_tensor_and_isolates_a_poison_record() {
    let pool = PluginPool::start(load(&[("threshold", "0.5")]).expect("loads"), 1).expect("starts");
    let batch = vec![
        record(10, transaction(1).as_bytes()),
        record(11, b"not json at all"),
        record(12, transaction(3).as_bytes()),
    ];
    let (records, decisions) = pool.prepare(batch).await.expect("plugin runs");
    assert_eq!(records.len(), 3);
    assert_eq!(decisions.len(), 3);

    for i in [0, 2] {
        let Ok(Decision::Infer(ModelCall { request, state })) = &decisions[i] else {
            panic!(
                "record {i}: expected an inference request, got {:?}",
                decisions[i]
            );
        };
        assert!(state.len() <= 2, "the state is the id alone: {state:?}");
        assert_eq!(request.inputs.len(), 1);
        let features = &request.inputs[0];
        assert_eq!(features.name, "features");
        assert_eq!(features.shape, [1, 30]);
        let TensorData::F32(values) = &features.data else {
            panic!("features are not f32")
        };
        assert_eq!(values[0], 406.0, "Time comes first");
        assert_eq!(values[1], 0.01, "then V1");
        assert_eq!(values[28], 0.28, "V28");
        assert_eq!(values[29], 149.62, "Amount comes last");
    }
    let failure = decisions[1].as_ref().expect_err("poison record fails");
    assert_eq!(failure.reason.code(), "invalid-record");
    assert_eq!(failure.fault().as_str(), "record");
    pool.shutdown();
}

#[tokio::test]
async fn complete_scores_against_the_configured_threshold() {
    let pool = PluginPool::start(load(&[("threshold", "0.8")]).expect("loads"), 1).expect("starts");
    let completions = completions(
        &pool,
        vec![
            (record(5, transaction(41).as_bytes()), response(0.81)),
            (record(6, transaction(42).as_bytes()), response(0.79)),
        ],
    )
    .await;
    let origins: Vec<Origin> = completions.iter().map(|c| c.origin.clone()).collect();
    let outputs = pool.complete(completions).await.expect("plugin runs");
    assert_eq!(outputs.len(), 2);
    let expected = [(41, true, 0.81f32), (42, false, 0.79f32)];
    for ((id, flagged, p), (origin, output)) in expected.iter().zip(origins.iter().zip(&outputs)) {
        let outputs = output.as_ref().expect("scored");
        assert_eq!(outputs.len(), 1);
        let out = &outputs[0];
        assert_eq!(out.key, origin.key, "keyed by the input key");
        assert_eq!(out.topic, None, "goes to the configured output topic");
        let value: serde_json::Value =
            serde_json::from_slice(out.value.as_deref().expect("has a value")).expect("JSON");
        assert_eq!(value["id"], *id);
        assert_eq!(value["is_fraud"], *flagged);
        assert_eq!(value["fraud_probability"].as_f64(), Some(f64::from(*p)));
        assert_eq!(value["model_name"], "fraud");
        assert_eq!(value["model_version"], "1");
        let header = |k: &str| {
            out.headers
                .iter()
                .find(|h| h.key == k)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        };
        assert_eq!(header("source-topic").as_deref(), Some("transactions"));
        assert_eq!(header("source-partition").as_deref(), Some("2"));
        assert_eq!(header("source-offset"), Some(origin.offset.to_string()));
    }
    pool.shutdown();
}

#[tokio::test]
async fn a_response_without_the_expected_output_is_dead_lettered() {
    let pool = PluginPool::start(load(&[]).expect("loads"), 1).expect("starts");
    let mut bad = response(0.5);
    bad.outputs[0].name = "something_else".into();
    let answers = vec![(record(1, transaction(1).as_bytes()), bad)];
    let outputs = pool
        .complete(completions(&pool, answers).await)
        .await
        .expect("plugin runs");
    let failure = outputs[0].as_ref().expect_err("cannot score");
    assert_eq!(failure.reason.code(), "invalid-response");
    assert!(
        failure.message.contains("fraud_probability"),
        "{}",
        failure.message
    );
    pool.shutdown();
}

#[test]
fn invalid_plugin_settings_stop_start_up_with_the_key() {
    let plugin = load(&[("threshold", "very")]).expect("compiles");
    let err = PluginPool::start(plugin, 1).expect_err("refused");
    let message = err.to_string();
    assert!(matches!(err, PluginError::Configure { .. }), "{message}");
    assert!(
        message.contains("threshold") && message.contains("very"),
        "{message}"
    );
}

#[test]
fn files_that_are_not_plugins_are_refused_with_their_path() {
    let dir = std::env::temp_dir().join(format!("plugin-host-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let host = PluginHost::new().expect("engine");

    let missing = dir.join("missing.wasm");
    let err = host
        .load(&settings(missing.clone(), &[]))
        .expect_err("missing file");
    assert!(matches!(err, PluginError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.wasm"), "{err}");

    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").expect("write");
    let err = host.load(&settings(garbage, &[])).expect_err("not wasm");
    assert!(matches!(err, PluginError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("garbage.wasm"), "{err}");

    // A valid but empty component: it exports nothing of the contract.
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]).expect("write");
    let err = host.load(&settings(empty, &[])).expect_err("no contract");
    assert!(matches!(err, PluginError::Contract { .. }), "{err}");
    assert!(err.to_string().contains("streaminfer:plugin"), "{err}");

    // A component built for contract 0.2: told to rebuild, not just that 0.3 is missing.
    let older = dir.join("older.wasm");
    let component = wat::parse_str(
        r#"(component
            (instance $handler)
            (export "streaminfer:plugin/handler@0.2.0" (instance $handler)))"#,
    )
    .expect("valid component text");
    std::fs::write(&older, component).expect("write");
    let err = host
        .load(&settings(older, &[]))
        .expect_err("older contract");
    assert!(matches!(err, PluginError::Contract { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("built for version 0.2.0 of the contract, this runtime speaks 0.3.0")
            && message.contains("rebuild it against the current SDK"),
        "{message}"
    );

    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_fraud_plugin_declares_what_it_sends_and_reads() {
    use streaminfer::contract::Dtype;
    let pool = PluginPool::start(load(&[]).expect("loads"), 1).expect("starts");
    let required = pool.requirements();
    assert_eq!(required.inputs.len(), 1);
    assert_eq!(required.inputs[0].name, "features");
    assert_eq!(required.inputs[0].dtype, Dtype::F32);
    assert_eq!(required.inputs[0].shape, [-1, 30]);
    assert_eq!(required.outputs, ["fraud_probability"]);
    pool.shutdown();
}
