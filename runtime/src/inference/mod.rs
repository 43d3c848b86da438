//! Calls the model server. One [`Inference`] per process: a gRPC channel to a TensorFlow
//! Serving-compatible `PredictionService`, a bound on calls in flight, and a deadline per call.
//! At start-up it checks that the server answers and serves the configured model and signature,
//! so that a typo in the config stops the runtime instead of dead-lettering every record.

mod tensor;

use std::sync::Arc;
use std::time::Duration;

use streaminfer_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use streaminfer_proto::tensorflow::serving::{
    GetModelMetadataRequest, ModelSpec, PredictRequest, SignatureDefMap, model_spec::VersionChoice,
};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::ModelSettings;
use crate::failure::{Failure, Fault};
use crate::plugin::types::{InferenceRequest, InferenceResponse, ModelInfo};
pub use tensor::{TensorError, from_proto, to_proto};

/// Why a model call failed, or why the model server was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("invalid model endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot reach the model server at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("the model server at {endpoint} does not serve {what}: {message}")]
    Metadata {
        endpoint: String,
        what: String,
        message: String,
    },
    #[error("the plugin's request is malformed: {0}")]
    Request(TensorError),
    #[error("the model's response is malformed: {0}")]
    Response(TensorError),
    #[error("model call failed with {}: {}", .0.code(), .0.message())]
    Status(Status),
    #[error("model call exceeded its deadline of {0:?}")]
    Deadline(Duration),
}

impl InferenceError {
    /// Whether the same call may succeed later (the server is down, overloaded or slow).
    pub fn is_retryable(&self) -> bool {
        match self {
            InferenceError::Status(s) => matches!(
                s.code(),
                Code::Unavailable
                    | Code::ResourceExhausted
                    | Code::DeadlineExceeded
                    | Code::Aborted
            ),
            InferenceError::Deadline(_) => true,
            _ => false,
        }
    }

    /// The dead-letter reason for a record whose call failed this way.
    pub fn failure(&self) -> Failure {
        let message = self.to_string();
        match self {
            InferenceError::Request(_) => Failure::new("invalid-request", Fault::Plugin, message),
            InferenceError::Response(_) => Failure::new("invalid-response", Fault::Model, message),
            InferenceError::Deadline(_) => Failure::new("model-timeout", Fault::Model, message),
            InferenceError::Status(s) => {
                let reason = match s.code() {
                    Code::NotFound => "model-not-found",
                    Code::InvalidArgument => "model-invalid-argument",
                    Code::FailedPrecondition => "model-failed-precondition",
                    Code::Unavailable => "model-unavailable",
                    Code::ResourceExhausted => "model-overloaded",
                    Code::DeadlineExceeded => "model-timeout",
                    _ => "model-error",
                };
                Failure::new(reason, Fault::Model, message)
            }
            InferenceError::Endpoint { .. }
            | InferenceError::Connect { .. }
            | InferenceError::Metadata { .. } => Failure::new("model-error", Fault::Model, message),
        }
    }
}

/// A client of one model on one server.
#[derive(Debug, Clone)]
pub struct Inference {
    client: PredictionServiceClient<Channel>,
    settings: Arc<ModelSettings>,
    in_flight: Arc<Semaphore>,
}

impl Inference {
    /// Connects to the model server and checks that it serves the configured model (and
    /// signature, when one is configured).
    ///
    /// # Errors
    /// [`InferenceError::Endpoint`], [`InferenceError::Connect`] or
    /// [`InferenceError::Metadata`], each naming the endpoint.
    pub async fn connect(settings: &ModelSettings) -> Result<Self, InferenceError> {
        let endpoint = &settings.endpoint;
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| InferenceError::Endpoint {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| InferenceError::Connect {
                endpoint: endpoint.clone(),
                message: error_chain(&e),
            })?;
        let inference = Self {
            client: PredictionServiceClient::new(channel),
            settings: Arc::new(settings.clone()),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
        };
        inference.check_model().await?;
        Ok(inference)
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

    async fn check_model(&self) -> Result<(), InferenceError> {
        let s = &self.settings;
        let what = match s.version {
            Some(v) => format!("model {:?} version {v}", s.name),
            None => format!("model {:?}", s.name),
        };
        let metadata_error = |message: String| InferenceError::Metadata {
            endpoint: s.endpoint.clone(),
            what: what.clone(),
            message,
        };
        let request = GetModelMetadataRequest {
            model_spec: Some(self.model_spec(None)),
            metadata_field: vec!["signature_def".to_owned()],
        };
        let mut client = self.client.clone();
        let response = tokio::time::timeout(s.connect_timeout, client.get_model_metadata(request))
            .await
            .map_err(|_| metadata_error(format!("no answer within {:?}", s.connect_timeout)))?
            .map_err(|status| metadata_error(format!("{}: {}", status.code(), status.message())))?
            .into_inner();
        let Some(signature) = &s.signature else {
            return Ok(());
        };
        let Some(any) = response.metadata.get("signature_def") else {
            return Err(metadata_error("the metadata has no signature_def".into()));
        };
        let map = <SignatureDefMap as prost::Message>::decode(any.value.as_slice())
            .map_err(|e| metadata_error(format!("cannot decode its signatures: {e}")))?;
        if map.signature_def.contains_key(signature) {
            Ok(())
        } else {
            let mut known: Vec<&str> = map.signature_def.keys().map(String::as_str).collect();
            known.sort_unstable();
            Err(metadata_error(format!(
                "it has no signature {signature:?} (it has {known:?})"
            )))
        }
    }

    /// Calls the model for one record's request, waiting for a free slot first.
    ///
    /// # Errors
    /// [`InferenceError`] for a malformed request or response, a gRPC status or a deadline.
    pub async fn infer(
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
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| InferenceError::Status(Status::cancelled("shutting down")))?;
        let mut call = tonic::Request::new(predict);
        call.set_timeout(deadline);
        let mut client = self.client.clone();
        let response = tokio::time::timeout(deadline, client.predict(call))
            .await
            .map_err(|_| InferenceError::Deadline(deadline))?
            .map_err(InferenceError::Status)?
            .into_inner();
        let spec = response.model_spec.unwrap_or_default();
        let model = ModelInfo {
            name: if spec.name.is_empty() {
                self.settings.name.clone()
            } else {
                spec.name
            },
            version: match spec.version_choice {
                Some(VersionChoice::Version(v)) => Some(v.to_string()),
                Some(VersionChoice::VersionLabel(l)) => Some(l),
                None => self.settings.version.map(|v| v.to_string()),
            },
        };
        let mut outputs = response
            .outputs
            .iter()
            .map(|(name, proto)| from_proto(name, proto))
            .collect::<Result<Vec<_>, _>>()
            .map_err(InferenceError::Response)?;
        outputs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(InferenceResponse { model, outputs })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
