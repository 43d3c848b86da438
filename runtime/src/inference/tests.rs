//! The model client's call path against a scripted backend: stacking, retries within the
//! budget, refusals asked again one by one, and the breaker holding calls while the server fails.

use std::path::Path;

use tonic::Code;

use super::scripted::Scripted;
use super::*;
use crate::config::{self, Mode};
use crate::contract::{Tensor, TensorData};

/// The `[model]` section with `extra` keys, for an embedded model (never loaded here).
fn settings(extra: &str) -> ModelSettings {
    let text = format!("[model]\npath = \"m.onnx\"\nretry-backoff = \"1ms\"\n{extra}\n");
    config::from_str(
        &text,
        Path::new("inference-test.toml"),
        Mode::Offline,
        Path::new("p.wasm"),
        &[],
    )
    .expect("valid test config")
    .model
}

/// A client of a model that scores each row of two with its second element.
fn client(extra: &str) -> (Inference, Arc<Scripted>) {
    let model = Scripted::new("score", 2, 1);
    (Inference::scripted(model.clone(), &settings(extra)), model)
}

/// One row, scored `score`.
fn request(score: f32) -> InferenceRequest {
    InferenceRequest {
        inputs: vec![Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: TensorData::F32(vec![0.0, score]),
        }],
        signature: None,
        output_filter: Vec::new(),
    }
}

/// Each answer's single score, or the gRPC code it failed with.
fn scores(answers: &[Result<InferenceResponse, InferenceError>]) -> Vec<Result<f32, Code>> {
    answers
        .iter()
        .map(|a| match a {
            Ok(r) => match &r.outputs[..] {
                [
                    Tensor {
                        data: TensorData::F32(v),
                        shape,
                        ..
                    },
                ] if v.len() == 1 && shape == &[1, 1] => Ok(v[0]),
                other => panic!("expected one score, got {other:?}"),
            },
            Err(InferenceError::Status(s)) => Err(s.code()),
            Err(other) => panic!("expected a status, got {other}"),
        })
        .collect()
}

async fn answer(client: &Inference, rows: &[f32]) -> (Vec<Result<f32, Code>>, usize) {
    let requests: Vec<InferenceRequest> = rows.iter().map(|&s| request(s)).collect();
    let refs: Vec<&InferenceRequest> = requests.iter().collect();
    let (answers, calls) = client.infer_all(&refs).await;
    (scores(&answers), calls)
}

#[tokio::test]
async fn requests_are_stacked_up_to_the_batch_size_and_each_gets_its_own_row() {
    let (client, model) = client("max-batch-size = 2");
    let (scores, calls) = answer(&client, &[0.1, 0.2, 0.3, 0.4, 0.5]).await;
    assert_eq!(scores, [Ok(0.1), Ok(0.2), Ok(0.3), Ok(0.4), Ok(0.5)]);
    assert_eq!((calls, model.calls()), (3, 3), "rows 2 + 2 + 1");
}

#[tokio::test]
async fn a_call_that_may_succeed_later_is_tried_again_within_the_budget() {
    let (client, model) = client("retry-attempts = 3");
    model.failing([Status::unavailable("busy"), Status::unavailable("busy")]);
    let (scores, _) = answer(&client, &[0.7]).await;
    assert_eq!(scores, [Ok(0.7)]);
    assert_eq!(model.calls(), 3, "two failures, then the answer");
}

#[tokio::test]
async fn a_call_failing_past_its_budget_returns_the_failure() {
    let (client, model) = client("retry-attempts = 2");
    model.failing((0..3).map(|_| Status::unavailable("down")));
    let (scores, _) = answer(&client, &[0.7]).await;
    assert_eq!(scores, [Err(Code::Unavailable)]);
    assert_eq!(
        model.calls(),
        2,
        "tried as often as the budget allows, no more"
    );
}

#[tokio::test]
async fn a_refused_stack_is_asked_again_one_request_at_a_time_without_retries() {
    let (client, model) = client("retry-attempts = 5");
    // The stack is refused; the first request alone is refused too, the others answered.
    model.failing([
        Status::invalid_argument("bad row"),
        Status::invalid_argument("bad row"),
    ]);
    let (scores, calls) = answer(&client, &[0.1, 0.2, 0.3]).await;
    assert_eq!(
        scores,
        [Err(Code::InvalidArgument), Ok(0.2), Ok(0.3)],
        "only the refused request fails"
    );
    assert_eq!(calls, 1, "one call planned");
    assert_eq!(
        model.calls(),
        4,
        "the stack, then each alone; a refusal is never retried"
    );
}

#[tokio::test]
async fn the_breaker_holds_calls_while_the_server_fails_and_lets_one_through_after_its_cooldown() {
    let (client, model) =
        client("retry-attempts = 1\nbreaker-failures = 2\nbreaker-cooldown = \"100ms\"");
    model.failing([Status::unavailable("down"), Status::unavailable("down")]);
    let (first, _) = answer(&client, &[0.1]).await;
    assert_eq!(first, [Err(Code::Unavailable)], "one try in the budget");
    assert!(
        !client.is_holding(),
        "one failure does not open the breaker"
    );
    let started = std::time::Instant::now();
    // The second failure opens the breaker: the call waits for the server, keeping its budget.
    let (second, _) = answer(&client, &[0.2]).await;
    assert_eq!(second, [Ok(0.2)]);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "answered after {:?}, before the cooldown",
        started.elapsed()
    );
    assert!(!client.is_holding(), "the probe's answer closes it");
    assert_eq!(model.calls(), 3);
}
