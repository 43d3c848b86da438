//! The model client against the embedded fraud model (ONNX, in process).

use std::path::Path;

use streaminfer::config::{self, Mode};
use streaminfer::contract::{InferenceRequest, Tensor, TensorData};
use streaminfer::inference::Inference;

#[tokio::test]
async fn each_call_s_latency_is_recorded() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let settings = config::load(
        &repo.join("config/fraud.toml"),
        Mode::Offline,
        Path::new("unused.wasm"),
        &[],
        std::iter::empty(),
    )
    .expect("config/fraud.toml is valid");
    let inference = Inference::connect(&settings.model)
        .await
        .expect("the embedded model loads");
    assert_eq!(inference.latency().p99, None, "no call yet");
    let request = InferenceRequest {
        inputs: vec![Tensor {
            name: "features".into(),
            shape: vec![1, 30],
            data: TensorData::F32(vec![0.1; 30]),
        }],
        signature: None,
        output_filter: Vec::new(),
    };
    let (answers, calls) = inference.infer_all(&[&request, &request]).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert!(calls >= 1);
    let latency = inference.latency();
    assert!(
        latency
            .p99
            .is_some_and(|p99| p99 > std::time::Duration::ZERO),
        "{latency:?}"
    );
}
