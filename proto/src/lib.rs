//! Wire definitions of the model-server gRPC APIs streaminfer speaks: TensorFlow Serving's and
//! KServe v2's (the Open Inference Protocol), as far as it uses them.
//!
//! The `.proto` files under `proto/` declare the same packages, message names, field names and
//! field numbers as the public API, restricted to what we send and read: a server built from
//! the official definitions understands our requests, and fields we leave out are skipped when
//! its responses are decoded. This crate holds nothing but the generated code, so that a change
//! elsewhere in the workspace never re-runs protobuf code generation.
//!
//! - [`tensorflow`]: `TensorProto`, `TensorShapeProto`, `DataType`, and the `TensorInfo` /
//!   `SignatureDef` pair that model metadata reports.
//! - [`tensorflow::serving`]: `ModelSpec`, `PredictRequest`/`PredictResponse`, the model
//!   metadata messages, and the `PredictionService` client and server
//!   (`/tensorflow.serving.PredictionService/Predict` and `.../GetModelMetadata`).
//! - [`inference`]: the KServe v2 (Open Inference Protocol) `GRPCInferenceService`: `ModelInfer`,
//!   `ModelMetadata`, `ServerReady`, `ModelReady`.
//!
//! Every message implements [`prost::Name`], so a `SignatureDefMap` found in a metadata
//! response's `google.protobuf.Any` unpacks with [`prost_types::Any::to_msg`].

/// Package `tensorflow`: tensors, their element types and shapes, and signature descriptions.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    /// Package `tensorflow.serving`: the model server's request and response messages and the
    /// `PredictionService` gRPC client and server.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// Package `inference`: the KServe v2 / Open Inference Protocol messages and the
/// `GRPCInferenceService` client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// The key of `GetModelMetadataResponse.metadata` (and the value of
/// `GetModelMetadataRequest.metadata_field`) under which a server reports signatures.
pub const SIGNATURE_DEF_FIELD: &str = "signature_def";

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message;

    use super::tensorflow::serving::{
        GetModelMetadataResponse, ModelSpec, PredictRequest, SignatureDefMap, model_spec,
    };
    use super::tensorflow::{DataType, SignatureDef, TensorInfo, TensorProto, TensorShapeProto};
    use super::tensorflow::{tensor_info, tensor_shape_proto};

    fn shape(dims: &[i64]) -> TensorShapeProto {
        TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }
    }

    #[test]
    fn predict_request_round_trips() {
        let tensor = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape(&[1, 3])),
            float_val: vec![0.5, -1.25, 3.0],
            ..Default::default()
        };
        let request = PredictRequest {
            model_spec: Some(ModelSpec {
                name: "fraud".to_owned(),
                version_choice: Some(model_spec::VersionChoice::Version(7)),
                signature_name: "serving_default".to_owned(),
            }),
            inputs: HashMap::from([("features".to_owned(), tensor)]),
            output_filter: vec!["fraud_probability".to_owned()],
        };

        let bytes = request.encode_to_vec();
        let decoded = PredictRequest::decode(bytes.as_slice()).expect("valid encoding");
        assert_eq!(decoded, request);
        let features = &decoded.inputs["features"];
        assert_eq!(features.dtype(), DataType::DtFloat);
        assert_eq!(features.float_val, [0.5, -1.25, 3.0]);
    }

    #[test]
    fn model_spec_version_is_an_int64_value_message() {
        // Field 2 (length-delimited) holding an Int64Value whose field 1 is 7.
        let spec = ModelSpec {
            name: String::new(),
            version_choice: Some(model_spec::VersionChoice::Version(7)),
            signature_name: String::new(),
        };
        assert_eq!(spec.encode_to_vec(), [0x12, 0x02, 0x08, 0x07]);
    }

    #[test]
    fn signature_def_map_unpacks_from_any() {
        let input = TensorInfo {
            encoding: Some(tensor_info::Encoding::Name(
                "serving_default_features:0".to_owned(),
            )),
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape(&[-1, 30])),
        };
        let signature = SignatureDef {
            inputs: HashMap::from([("features".to_owned(), input)]),
            outputs: HashMap::new(),
            method_name: "tensorflow/serving/predict".to_owned(),
        };
        let map = SignatureDefMap {
            signature_def: HashMap::from([("serving_default".to_owned(), signature)]),
        };

        let any = prost_types::Any::from_msg(&map).expect("encodable");
        assert_eq!(
            any.type_url,
            "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        );
        let response = GetModelMetadataResponse {
            model_spec: None,
            metadata: HashMap::from([(super::SIGNATURE_DEF_FIELD.to_owned(), any)]),
        };
        let response = GetModelMetadataResponse::decode(response.encode_to_vec().as_slice())
            .expect("valid encoding");

        let unpacked: SignatureDefMap = response.metadata[super::SIGNATURE_DEF_FIELD]
            .to_msg()
            .expect("a SignatureDefMap");
        assert_eq!(unpacked, map);
        let features = &unpacked.signature_def["serving_default"].inputs["features"];
        assert_eq!(features.dtype(), DataType::DtFloat);
    }
}
