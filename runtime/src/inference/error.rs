//! Why a model call failed, or why the model server was refused at start-up: the one error of
//! every backend, with what the caller decides from it (retry, overload, dead-letter reason).

use std::time::Duration;

use tonic::{Code, Status};

use super::tensor::TensorError;
use crate::failure::{Failure, Reason};

/// Why a model call failed, or why the model server was refused at start-up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error("invalid model endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("cannot load the ONNX model {path}: {message}")]
    Load {
        path: std::path::PathBuf,
        message: String,
    },
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
    #[error("the response to {rows} stacked rows cannot be split: {message}")]
    Split { rows: usize, message: String },
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

    /// Whether the failure says the server has more work than it can do.
    pub(super) fn is_overload(&self) -> bool {
        match self {
            InferenceError::Status(s) => {
                matches!(s.code(), Code::ResourceExhausted | Code::DeadlineExceeded)
            }
            InferenceError::Deadline(_) => true,
            _ => false,
        }
    }

    /// Whether the server answered, so that it is up even though the call failed.
    pub(super) fn server_answered(&self) -> bool {
        match self {
            InferenceError::Status(s) => !matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            InferenceError::Response(_) | InferenceError::Split { .. } => true,
            _ => false,
        }
    }

    /// The dead-letter reason for a record whose call failed this way.
    pub fn failure(&self) -> Failure {
        let message = self.to_string();
        match self {
            InferenceError::Request(_) => Failure::new(Reason::InvalidRequest, message),
            InferenceError::Response(_) => Failure::new(Reason::InvalidResponse, message),
            InferenceError::Deadline(_) => Failure::new(Reason::ModelTimeout, message),
            InferenceError::Status(s) => {
                let reason = match s.code() {
                    Code::NotFound => Reason::ModelNotFound,
                    Code::InvalidArgument => Reason::ModelInvalidArgument,
                    Code::FailedPrecondition => Reason::ModelFailedPrecondition,
                    Code::Unavailable => Reason::ModelUnavailable,
                    Code::ResourceExhausted => Reason::ModelOverloaded,
                    Code::DeadlineExceeded => Reason::ModelTimeout,
                    _ => Reason::ModelError,
                };
                Failure::new(reason, message)
            }
            InferenceError::Split { .. } => Failure::new(Reason::InvalidResponse, message),
            InferenceError::Endpoint { .. }
            | InferenceError::Load { .. }
            | InferenceError::Connect { .. }
            | InferenceError::Metadata { .. } => Failure::new(Reason::ModelError, message),
        }
    }
}
