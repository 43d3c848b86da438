//! The TensorFlow Serving backend: `tensorflow.serving.PredictionService` over gRPC. One call
//! is one `Predict`; this module knows the wire messages and nothing of batching or retries.

use streaminfer_proto::SIGNATURE_DEF_FIELD;
use streaminfer_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use streaminfer_proto::tensorflow::serving::{
    GetModelMetadataRequest, ModelSpec, PredictRequest, SignatureDefMap, model_spec::VersionChoice,
};
use streaminfer_proto::tensorflow::{DataType, SignatureDef, TensorInfo};
use tonic::transport::Channel;

use super::batch;
use super::channels::{Channels, startup_call};
use super::describe::{ANSWER_BYTES, ModelDescription, ModelTensor};
use super::error::InferenceError;
use super::tensor::{TensorError, from_proto, to_proto};
use crate::config::ModelSettings;
use crate::contract::{Dtype, InferenceRequest, InferenceResponse, ModelInfo};

/// Clients of one model on one server, over `connections` HTTP/2 connections used in turn.
#[derive(Debug)]
pub(crate) struct TfServing {
    /// The served signature's inputs and outputs, read at start-up.
    pub(crate) description: ModelDescription,
    endpoint: String,
    channels: Channels,
    settings: ModelSettings,
}

impl TfServing {
    /// Opens the connections and checks that the server serves the configured model (and
    /// signature, when one is configured).
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
        };
        backend.description = backend.check_model().await?;
        Ok(backend)
    }

    fn client(&self) -> PredictionServiceClient<Channel> {
        PredictionServiceClient::new(self.channels.next()).max_decoding_message_size(ANSWER_BYTES)
    }

    fn model_spec(&self, signature: Option<&str>) -> ModelSpec {
        ModelSpec {
            name: self.settings.name.clone(),
            version_choice: self.settings.version.map(VersionChoice::Version),
            signature_name: signature
                .or(self.settings.signature.as_deref())
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// Reads the model's metadata: the model must exist, and so must the configured signature,
    /// whose inputs and outputs are returned.
    /// Whether the server still serves the model, asked as at start-up.
    pub(crate) async fn probe(&self) -> Result<(), InferenceError> {
        self.check_model().await.map(drop)
    }

    async fn check_model(&self) -> Result<ModelDescription, InferenceError> {
        let s = &self.settings;
        let what = match s.version {
            Some(v) => format!("model {:?} version {v}", s.name),
            None => format!("model {:?}", s.name),
        };
        let metadata_error = |message: String| InferenceError::Metadata {
            endpoint: self.endpoint.clone(),
            what: what.clone(),
            message,
        };
        let request = GetModelMetadataRequest {
            model_spec: Some(self.model_spec(None)),
            metadata_field: vec![SIGNATURE_DEF_FIELD.to_owned()],
        };
        let response = startup_call(
            &self.endpoint,
            s.connect_timeout,
            self.client().get_model_metadata(request),
            metadata_error,
        )
        .await?;
        // TF Serving's default signature when none is configured.
        let signature = s.signature.as_deref().unwrap_or("serving_default");
        let Some(any) = response.metadata.get(SIGNATURE_DEF_FIELD) else {
            return match &s.signature {
                Some(_) => Err(metadata_error("the metadata has no signature_def".into())),
                None => Ok(ModelDescription::default()),
            };
        };
        let map = <SignatureDefMap as prost::Message>::decode(any.value.as_slice())
            .map_err(|e| metadata_error(format!("cannot decode its signatures: {e}")))?;
        match map.signature_def.get(signature) {
            Some(def) => Ok(describe(def)),
            None if s.signature.is_none() => Ok(ModelDescription::default()),
            None => {
                let mut known: Vec<&str> = map.signature_def.keys().map(String::as_str).collect();
                known.sort_unstable();
                Err(metadata_error(format!(
                    "it has no signature {signature:?} (it has {known:?})"
                )))
            }
        }
    }

    /// One `Predict` call with the configured deadline.
    ///
    /// # Errors
    /// [`InferenceError`] for a malformed request or response, a gRPC status or the deadline.
    pub(crate) async fn predict(
        &self,
        request: &InferenceRequest,
    ) -> Result<InferenceResponse, InferenceError> {
        let inputs = request
            .inputs
            .iter()
            .map(|t| Ok((t.name.clone(), to_proto(t)?)))
            .collect::<Result<_, TensorError>>()
            .map_err(InferenceError::Request)?;
        let predict = PredictRequest {
            model_spec: Some(self.model_spec(request.signature.as_deref())),
            inputs,
            output_filter: request.output_filter.clone(),
        };
        let deadline = self.settings.timeout;
        let mut call = tonic::Request::new(predict);
        call.set_timeout(deadline);
        let response = tokio::time::timeout(deadline, self.client().predict(call))
            .await
            .map_err(|_| InferenceError::Deadline(deadline))?
            .map_err(InferenceError::Status)?
            .into_inner();
        let spec = response.model_spec.unwrap_or_default();
        let model = ModelInfo {
            name: if spec.name.is_empty() {
                self.settings.name.as_str().into()
            } else {
                spec.name.into()
            },
            version: match spec.version_choice {
                Some(VersionChoice::Version(v)) => Some(v.to_string().into()),
                Some(VersionChoice::VersionLabel(l)) => Some(l.into()),
                None => self.settings.version.map(|v| v.to_string().into()),
            },
        };
        // The description read at start-up is the configured signature's; another one the
        // request names is bounded by what an answer can carry.
        let described = match &request.signature {
            Some(named) if Some(named) != self.settings.signature.as_ref() => {
                &ModelDescription::default()
            }
            _ => &self.description,
        };
        let rows = batch::rows(request);
        let mut outputs = response
            .outputs
            .iter()
            .map(|(name, proto)| from_proto(name, proto, described.most_elements(name, rows)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(InferenceError::Response)?;
        outputs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(InferenceResponse { model, outputs })
    }
}

/// A signature's inputs and outputs, sorted by name.
fn describe(def: &SignatureDef) -> ModelDescription {
    let tensors = |map: &std::collections::HashMap<String, TensorInfo>| {
        let mut out: Vec<ModelTensor> = map
            .iter()
            .map(|(name, info)| ModelTensor {
                name: name.clone(),
                dtype: dtype(info.dtype),
                shape: info
                    .tensor_shape
                    .as_ref()
                    .filter(|s| !s.unknown_rank)
                    .map(|s| s.dim.iter().map(|d| d.size).collect()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    };
    ModelDescription {
        inputs: tensors(&def.inputs),
        outputs: tensors(&def.outputs),
    }
}

fn dtype(code: i32) -> Result<Dtype, String> {
    let data_type = DataType::try_from(code).unwrap_or(DataType::DtInvalid);
    Ok(match data_type {
        DataType::DtFloat => Dtype::F32,
        DataType::DtDouble => Dtype::F64,
        DataType::DtInt8 => Dtype::S8,
        DataType::DtInt16 => Dtype::S16,
        DataType::DtInt32 => Dtype::S32,
        DataType::DtInt64 => Dtype::S64,
        DataType::DtUint8 => Dtype::U8,
        DataType::DtUint16 => Dtype::U16,
        DataType::DtUint32 => Dtype::U32,
        DataType::DtUint64 => Dtype::U64,
        DataType::DtBool => Dtype::Boolean,
        DataType::DtString => Dtype::Bytes,
        other => return Err(other.as_str_name().to_owned()),
    })
}
