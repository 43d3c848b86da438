//! A TensorFlow Serving server on 127.0.0.1 whose answers claim more than they hold: one
//! `float_val` with a shape of 2^36 elements (TensorFlow lets one value stand for a whole
//! shape). The client refuses such an answer as malformed, naming the bound, instead of
//! allocating 256 GiB; an honest answer in the same form still fills its shape.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use prost::Message;
use streaminfer::config::{self, Mode};
use streaminfer::contract::{InferenceRequest, Tensor, TensorData};
use streaminfer::inference::{Inference, InferenceError, TensorError};
use streaminfer_proto::SIGNATURE_DEF_FIELD;
use streaminfer_proto::tensorflow::serving::prediction_service_server::{
    PredictionService, PredictionServiceServer,
};
use streaminfer_proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelMetadataResponse, PredictRequest, PredictResponse,
    SignatureDefMap,
};
use streaminfer_proto::tensorflow::tensor_shape_proto::Dim;
use streaminfer_proto::tensorflow::{
    DataType, SignatureDef, TensorInfo, TensorProto, TensorShapeProto,
};
use tonic::{Request, Response, Status};

const OUTPUT: &str = "fraud_probability";

fn shape(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// Answers every call with one value and the shape `answer` says; describes its output as
/// `[?, 1]` or, with `describes` false, not at all.
struct Liar {
    describes: bool,
    answer: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl PredictionService for Liar {
    async fn predict(
        &self,
        _request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let output = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape(&[self.answer.load(Ordering::Relaxed), 1])),
            float_val: vec![0.5],
            ..Default::default()
        };
        Ok(Response::new(PredictResponse {
            outputs: [(OUTPUT.to_owned(), output)].into(),
            ..Default::default()
        }))
    }

    async fn get_model_metadata(
        &self,
        _request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let info = |dims: &[i64]| TensorInfo {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape(dims)),
            ..Default::default()
        };
        let mut metadata = std::collections::HashMap::new();
        if self.describes {
            let signature = SignatureDef {
                inputs: [("features".to_owned(), info(&[-1, 30]))].into(),
                outputs: [(OUTPUT.to_owned(), info(&[-1, 1]))].into(),
                method_name: "tensorflow/serving/predict".into(),
            };
            let map = SignatureDefMap {
                signature_def: [("serving_default".to_owned(), signature)].into(),
            };
            metadata.insert(
                SIGNATURE_DEF_FIELD.to_owned(),
                prost_types::Any {
                    type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
                    value: map.encode_to_vec(),
                },
            );
        }
        Ok(Response::new(GetModelMetadataResponse {
            metadata,
            ..Default::default()
        }))
    }
}

/// Starts the server and connects a client to it; the answer's first dimension is settable.
async fn serve(describes: bool) -> (Inference, Arc<AtomicI64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let port = listener.local_addr().expect("bound").port();
    let answer = Arc::new(AtomicI64::new(2));
    let liar = Liar {
        describes,
        answer: answer.clone(),
    };
    let service = PredictionServiceServer::new(liar);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let text = format!(
        "[model]\nbackend = \"tf-serving\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
         name = \"fraud\"\ntimeout = \"5s\"\n"
    );
    let settings = config::from_str(
        &text,
        Path::new("liar.toml"),
        Mode::Offline,
        Path::new("unused.wasm"),
        &[],
    )
    .expect("the test's config is valid");
    let inference = Inference::connect(&settings.model)
        .await
        .expect("the server answers its metadata");
    (inference, answer)
}

/// Two rows of 30 features.
fn two_rows() -> InferenceRequest {
    InferenceRequest {
        inputs: vec![Tensor {
            name: "features".into(),
            shape: vec![2, 30],
            data: TensorData::F32(vec![0.1; 60]),
        }],
        signature: None,
        output_filter: Vec::new(),
    }
}

async fn answer(inference: &Inference) -> Result<Tensor, InferenceError> {
    let (mut answers, _) = inference.infer_all(&[&two_rows()]).await;
    let response = answers.pop().expect("one answer")?;
    Ok(response.outputs.into_iter().next().expect("one output"))
}

fn refused_above(result: Result<Tensor, InferenceError>, bound: u64) {
    match result {
        Err(InferenceError::Response(TensorError::TooLarge { elements, most, .. })) => {
            assert_eq!(elements, 1 << 36);
            assert_eq!(most, bound);
        }
        other => panic!("expected a refusal of 2^36 elements above {bound}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_holds_at_most_the_rows_asked_times_the_declared_shape() {
    let (inference, answer_rows) = serve(true).await;
    // Honest: one value standing for the two rows asked.
    let honest = answer(&inference).await.expect("an honest answer decodes");
    assert_eq!(honest.shape, [2, 1]);
    assert_eq!(honest.data, TensorData::F32(vec![0.5; 2]));
    answer_rows.store(1 << 36, Ordering::Relaxed);
    refused_above(answer(&inference).await, 2);
    // The failure is the record's (a dead letter), the server stays usable.
    answer_rows.store(2, Ordering::Relaxed);
    assert!(answer(&inference).await.is_ok());
}

#[tokio::test]
async fn an_undescribed_output_holds_at_most_what_an_answer_can_carry() {
    let (inference, answer_rows) = serve(false).await;
    answer_rows.store(1 << 36, Ordering::Relaxed);
    // tonic's decoding limit, 4 MiB: no answer carries more elements than bytes.
    refused_above(answer(&inference).await, 4 << 20);
}
