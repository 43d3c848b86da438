//! The KServe v2 backend (the Open Inference Protocol): `inference.GRPCInferenceService`, as
//! served by MLServer, Triton and KServe runtimes. Inputs go as little-endian
//! `raw_input_contents` or as typed `contents`, by `model.tensor-encoding`; answers are read
//! from whichever form the server chose (MLServer answers raw to a raw request, typed otherwise).

use streaminfer_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use streaminfer_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use streaminfer_proto::inference::model_infer_response::InferOutputTensor;
use streaminfer_proto::inference::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    ServerReadyRequest,
};
use tonic::transport::Channel;

use super::batch;
use super::channels::{Channels, startup_call};
use super::describe::{ANSWER_BYTES, ModelDescription, ModelTensor};
use super::error::InferenceError;
use super::tensor::{TensorError, data_len, element_count, from_le, le, within};
use crate::config::{ModelSettings, TensorEncoding};
use crate::contract::{Dtype, InferenceRequest, InferenceResponse, ModelInfo, Tensor, TensorData};

/// A client of one model on a KServe v2 server.
#[derive(Debug)]
pub(crate) struct KServe {
    /// The model's inputs and outputs, from `ModelMetadata` at start-up.
    pub(crate) description: ModelDescription,
    endpoint: String,
    channels: Channels,
    settings: ModelSettings,
    version: String,
}

impl KServe {
    /// Connects, and checks that the server and the model are ready.
    ///
    /// # Errors
    /// [`InferenceError::Endpoint`], [`InferenceError::Connect`] or
    /// [`InferenceError::Metadata`], each naming the endpoint.
    pub(crate) async fn connect(
        settings: &ModelSettings,
        endpoint: &str,
    ) -> Result<Self, InferenceError> {
        let channels = Channels::connect(settings, endpoint).await?;
        let mut backend = Self {
            description: ModelDescription::default(),
            endpoint: endpoint.to_owned(),
            channels,
            settings: settings.clone(),
            version: settings.version.map(|v| v.to_string()).unwrap_or_default(),
        };
        backend.description = backend.check_model().await?;
        Ok(backend)
    }

    fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(self.channels.next())
            .max_decoding_message_size(ANSWER_BYTES)
    }

    /// Whether the server still serves the model, asked as at start-up.
    pub(crate) async fn probe(&self) -> Result<(), InferenceError> {
        self.check_model().await.map(drop)
    }

    async fn check_model(&self) -> Result<ModelDescription, InferenceError> {
        let s = &self.settings;
        let what = if self.version.is_empty() {
            format!("model {:?}", s.name)
        } else {
            format!("model {:?} version {}", s.name, self.version)
        };
        let fail = |message: String| InferenceError::Metadata {
            endpoint: self.endpoint.clone(),
            what: what.clone(),
            message,
        };
        let mut client = self.client();
        let server = startup_call(
            &self.endpoint,
            s.connect_timeout,
            client.server_ready(ServerReadyRequest {}),
            fail,
        )
        .await?;
        if !server.ready {
            return Err(fail("the server says it is not ready".into()));
        }
        let ready = ModelReadyRequest {
            name: s.name.clone(),
            version: self.version.clone(),
        };
        if !startup_call(
            &self.endpoint,
            s.connect_timeout,
            client.model_ready(ready),
            fail,
        )
        .await?
        .ready
        {
            return Err(fail("the server says the model is not ready".into()));
        }
        let request = ModelMetadataRequest {
            name: s.name.clone(),
            version: self.version.clone(),
        };
        let metadata = startup_call(
            &self.endpoint,
            s.connect_timeout,
            client.model_metadata(request),
            fail,
        )
        .await?;
        let tensors =
            |ts: Vec<streaminfer_proto::inference::model_metadata_response::TensorMetadata>| {
                ts.into_iter()
                    .map(|t| ModelTensor {
                        name: t.name,
                        dtype: dtype(&t.datatype).ok_or(t.datatype),
                        // An empty shape means the server did not say.
                        shape: (!t.shape.is_empty()).then_some(t.shape),
                    })
                    .collect()
            };
        Ok(ModelDescription {
            inputs: tensors(metadata.inputs),
            outputs: tensors(metadata.outputs),
        })
    }

    /// One `ModelInfer` call with the configured deadline.
    ///
    /// # Errors
    /// [`InferenceError`] for a malformed request or response, a gRPC status or the deadline.
    pub(crate) async fn predict(
        &self,
        request: &InferenceRequest,
    ) -> Result<InferenceResponse, InferenceError> {
        let raw = self.settings.tensor_encoding == TensorEncoding::Raw;
        let mut infer = ModelInferRequest {
            model_name: self.settings.name.clone(),
            model_version: self.version.clone(),
            outputs: request
                .output_filter
                .iter()
                .map(|name| InferRequestedOutputTensor {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        for tensor in &request.inputs {
            let (datatype, contents, bytes) = encode(&tensor.data, raw);
            infer.inputs.push(InferInputTensor {
                name: tensor.name.clone(),
                datatype: datatype.to_owned(),
                shape: tensor.shape.clone(),
                contents,
                ..Default::default()
            });
            if let Some(bytes) = bytes {
                infer.raw_input_contents.push(bytes);
            }
        }
        let deadline = self.settings.timeout;
        let mut call = tonic::Request::new(infer);
        call.set_timeout(deadline);
        let response = tokio::time::timeout(deadline, self.client().model_infer(call))
            .await
            .map_err(|_| InferenceError::Deadline(deadline))?
            .map_err(InferenceError::Status)?
            .into_inner();
        let mut raw_outputs = response.raw_output_contents.into_iter();
        let rows = batch::rows(request);
        let mut outputs = response
            .outputs
            .into_iter()
            .map(|t| {
                let most = self.description.most_elements(&t.name, rows);
                decode(t, raw_outputs.next(), most)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(InferenceError::Response)?;
        outputs.sort_by(|a, b| a.name.cmp(&b.name));
        let model = ModelInfo {
            name: if response.model_name.is_empty() {
                self.settings.name.as_str().into()
            } else {
                response.model_name.into()
            },
            version: if response.model_version.is_empty() {
                (!self.version.is_empty()).then(|| self.version.as_str().into())
            } else {
                Some(response.model_version.into())
            },
        };
        Ok(InferenceResponse { model, outputs })
    }
}

fn dtype(datatype: &str) -> Option<Dtype> {
    Some(match datatype {
        "FP32" => Dtype::F32,
        "FP64" => Dtype::F64,
        "INT8" => Dtype::S8,
        "INT16" => Dtype::S16,
        "INT32" => Dtype::S32,
        "INT64" => Dtype::S64,
        "UINT8" => Dtype::U8,
        "UINT16" => Dtype::U16,
        "UINT32" => Dtype::U32,
        "UINT64" => Dtype::U64,
        "BOOL" => Dtype::Boolean,
        "BYTES" => Dtype::Bytes,
        _ => return None,
    })
}

/// The datatype, and either typed contents or raw bytes.
fn encode(
    data: &TensorData,
    raw: bool,
) -> (&'static str, Option<InferTensorContents>, Option<Vec<u8>>) {
    let typed = |c: InferTensorContents| (None::<Vec<u8>>, Some(c));
    let (datatype, (bytes, contents)) = match data {
        TensorData::F32(v) if raw => ("FP32", (Some(le(v, f32::to_le_bytes)), None)),
        TensorData::F32(v) => (
            "FP32",
            typed(InferTensorContents {
                fp32_contents: v.clone(),
                ..Default::default()
            }),
        ),
        TensorData::F64(v) if raw => ("FP64", (Some(le(v, f64::to_le_bytes)), None)),
        TensorData::F64(v) => (
            "FP64",
            typed(InferTensorContents {
                fp64_contents: v.clone(),
                ..Default::default()
            }),
        ),
        TensorData::S8(v) if raw => ("INT8", (Some(le(v, i8::to_le_bytes)), None)),
        TensorData::S8(v) => ("INT8", typed(ints(v.iter().map(|&x| i32::from(x))))),
        TensorData::S16(v) if raw => ("INT16", (Some(le(v, i16::to_le_bytes)), None)),
        TensorData::S16(v) => ("INT16", typed(ints(v.iter().map(|&x| i32::from(x))))),
        TensorData::S32(v) if raw => ("INT32", (Some(le(v, i32::to_le_bytes)), None)),
        TensorData::S32(v) => ("INT32", typed(ints(v.iter().copied()))),
        TensorData::S64(v) if raw => ("INT64", (Some(le(v, i64::to_le_bytes)), None)),
        TensorData::S64(v) => (
            "INT64",
            typed(InferTensorContents {
                int64_contents: v.clone(),
                ..Default::default()
            }),
        ),
        TensorData::U8(v) if raw => ("UINT8", (Some(v.clone()), None)),
        TensorData::U8(v) => ("UINT8", typed(uints(v.iter().map(|&x| u32::from(x))))),
        TensorData::U16(v) if raw => ("UINT16", (Some(le(v, u16::to_le_bytes)), None)),
        TensorData::U16(v) => ("UINT16", typed(uints(v.iter().map(|&x| u32::from(x))))),
        TensorData::U32(v) if raw => ("UINT32", (Some(le(v, u32::to_le_bytes)), None)),
        TensorData::U32(v) => ("UINT32", typed(uints(v.iter().copied()))),
        TensorData::U64(v) if raw => ("UINT64", (Some(le(v, u64::to_le_bytes)), None)),
        TensorData::U64(v) => (
            "UINT64",
            typed(InferTensorContents {
                uint64_contents: v.clone(),
                ..Default::default()
            }),
        ),
        TensorData::Boolean(v) if raw => (
            "BOOL",
            (Some(v.iter().map(|&b| u8::from(b)).collect()), None),
        ),
        TensorData::Boolean(v) => (
            "BOOL",
            typed(InferTensorContents {
                bool_contents: v.clone(),
                ..Default::default()
            }),
        ),
        // Raw BYTES elements are each prefixed with their length, 4 bytes little-endian.
        TensorData::Bytes(v) if raw => {
            let mut out = Vec::with_capacity(v.iter().map(|b| b.len() + 4).sum());
            for element in v {
                out.extend_from_slice(&(element.len() as u32).to_le_bytes());
                out.extend_from_slice(element);
            }
            ("BYTES", (Some(out), None))
        }
        TensorData::Bytes(v) => (
            "BYTES",
            typed(InferTensorContents {
                bytes_contents: v.clone(),
                ..Default::default()
            }),
        ),
    };
    (datatype, contents, bytes)
}

fn ints(values: impl Iterator<Item = i32>) -> InferTensorContents {
    InferTensorContents {
        int_contents: values.collect(),
        ..Default::default()
    }
}

fn uints(values: impl Iterator<Item = u32>) -> InferTensorContents {
    InferTensorContents {
        uint_contents: values.collect(),
        ..Default::default()
    }
}

/// Reads an output of at most `most` elements from its raw bytes when the server sent them,
/// else from typed contents.
fn decode(
    tensor: InferOutputTensor,
    raw: Option<Vec<u8>>,
    most: u64,
) -> Result<Tensor, TensorError> {
    let name = tensor.name;
    let expected = element_count(&name, &tensor.shape)?;
    within(&name, &tensor.shape, expected, most)?;
    let unsupported = || TensorError::UnsupportedDtype {
        name: name.clone(),
        dtype: tensor.datatype.clone(),
    };
    let dtype = dtype(&tensor.datatype).ok_or_else(unsupported)?;
    let c = tensor.contents.unwrap_or_default();
    let data = match (dtype, raw) {
        (Dtype::F32, Some(b)) => TensorData::F32(from_le(&b, f32::from_le_bytes)),
        (Dtype::F32, None) => TensorData::F32(c.fp32_contents),
        (Dtype::F64, Some(b)) => TensorData::F64(from_le(&b, f64::from_le_bytes)),
        (Dtype::F64, None) => TensorData::F64(c.fp64_contents),
        (Dtype::S8, Some(b)) => TensorData::S8(from_le(&b, i8::from_le_bytes)),
        (Dtype::S8, None) => TensorData::S8(c.int_contents.iter().map(|&x| x as i8).collect()),
        (Dtype::S16, Some(b)) => TensorData::S16(from_le(&b, i16::from_le_bytes)),
        (Dtype::S16, None) => TensorData::S16(c.int_contents.iter().map(|&x| x as i16).collect()),
        (Dtype::S32, Some(b)) => TensorData::S32(from_le(&b, i32::from_le_bytes)),
        (Dtype::S32, None) => TensorData::S32(c.int_contents),
        (Dtype::S64, Some(b)) => TensorData::S64(from_le(&b, i64::from_le_bytes)),
        (Dtype::S64, None) => TensorData::S64(c.int64_contents),
        (Dtype::U8, Some(b)) => TensorData::U8(b),
        (Dtype::U8, None) => TensorData::U8(c.uint_contents.iter().map(|&x| x as u8).collect()),
        (Dtype::U16, Some(b)) => TensorData::U16(from_le(&b, u16::from_le_bytes)),
        (Dtype::U16, None) => TensorData::U16(c.uint_contents.iter().map(|&x| x as u16).collect()),
        (Dtype::U32, Some(b)) => TensorData::U32(from_le(&b, u32::from_le_bytes)),
        (Dtype::U32, None) => TensorData::U32(c.uint_contents),
        (Dtype::U64, Some(b)) => TensorData::U64(from_le(&b, u64::from_le_bytes)),
        (Dtype::U64, None) => TensorData::U64(c.uint64_contents),
        (Dtype::Boolean, Some(b)) => TensorData::Boolean(b.iter().map(|&x| x != 0).collect()),
        (Dtype::Boolean, None) => TensorData::Boolean(c.bool_contents),
        (Dtype::Bytes, Some(b)) => TensorData::Bytes(split_bytes(&b).ok_or_else(unsupported)?),
        (Dtype::Bytes, None) => TensorData::Bytes(c.bytes_contents),
    };
    let found = data_len(&data);
    if expected != found as u64 {
        return Err(TensorError::ShapeMismatch {
            name,
            shape: tensor.shape,
            expected,
            found,
        });
    }
    Ok(Tensor {
        name,
        shape: tensor.shape,
        data,
    })
}

fn split_bytes(mut raw: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
        out.push(raw.get(4..4 + len)?.to_vec());
        raw = &raw[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(datatype: &str, shape: &[i64], contents: InferTensorContents) -> InferOutputTensor {
        InferOutputTensor {
            name: "y".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents: Some(contents),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_encodings_decode_to_the_same_tensor() {
        let cases = [
            TensorData::F32(vec![0.5, -1.0]),
            TensorData::F64(vec![1e-9, 2.0]),
            TensorData::S8(vec![-3, 4]),
            TensorData::S16(vec![-300, 400]),
            TensorData::S32(vec![i32::MIN, 7]),
            TensorData::S64(vec![i64::MAX, -1]),
            TensorData::U8(vec![0, 255]),
            TensorData::U16(vec![1, 65535]),
            TensorData::U32(vec![u32::MAX, 0]),
            TensorData::U64(vec![u64::MAX, 3]),
            TensorData::Boolean(vec![true, false]),
            TensorData::Bytes(vec![b"ab".to_vec(), Vec::new()]),
        ];
        for data in cases {
            for raw in [true, false] {
                let (datatype, contents, bytes) = encode(&data, raw);
                assert_eq!(bytes.is_some(), raw);
                let tensor = output(datatype, &[2], contents.unwrap_or_default());
                let decoded = decode(tensor, bytes, 2).expect("decodes");
                assert_eq!(decoded.data, data, "{datatype} raw={raw}");
            }
        }
    }

    #[test]
    fn an_answer_that_does_not_fill_its_shape_is_refused() {
        let short = output(
            "FP32",
            &[2, 1],
            InferTensorContents {
                fp32_contents: vec![0.5],
                ..Default::default()
            },
        );
        assert!(matches!(
            decode(short, None, 2),
            Err(TensorError::ShapeMismatch { .. })
        ));
        let unknown = output("FP16", &[1], InferTensorContents::default());
        assert!(matches!(
            decode(unknown, Some(vec![0, 0]), 1),
            Err(TensorError::UnsupportedDtype { .. })
        ));
        let lie = output(
            "FP32",
            &[1 << 36],
            InferTensorContents {
                fp32_contents: vec![0.5],
                ..Default::default()
            },
        );
        assert!(matches!(
            decode(lie, None, 500),
            Err(TensorError::TooLarge { most: 500, .. })
        ));
    }
}
