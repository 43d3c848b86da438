//! A model backend that answers from a script, for the tests of what calls models: each row's
//! score is one element of the row (so a test sees that every record got its own row's answer),
//! calls may be made to fail with a status first, and every call is counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tonic::Status;

use super::describe::ModelDescription;
use super::error::InferenceError;
use crate::contract::{InferenceRequest, InferenceResponse, ModelInfo, Tensor, TensorData};

/// Answers every call with `output`, shape `[rows, 1]`: for each row of the request's first
/// input (f32, rows of `width`), the element at `column`.
#[derive(Debug)]
pub(crate) struct Scripted {
    pub(crate) description: ModelDescription,
    output: String,
    width: usize,
    column: usize,
    /// Statuses the next calls fail with, first to last.
    failures: Mutex<VecDeque<Status>>,
    calls: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(output: &str, width: usize, column: usize) -> Arc<Self> {
        Arc::new(Self {
            description: ModelDescription::default(),
            output: output.to_owned(),
            width,
            column,
            failures: Mutex::default(),
            calls: AtomicUsize::new(0),
        })
    }

    /// Makes the next calls fail, one with each status.
    pub(crate) fn failing(&self, statuses: impl IntoIterator<Item = Status>) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(statuses);
    }

    /// Calls made so far, failed ones included.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn predict(
        &self,
        request: &InferenceRequest,
    ) -> Result<InferenceResponse, InferenceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let failure = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        if let Some(status) = failure {
            return Err(InferenceError::Status(status));
        }
        let Some(Tensor {
            data: TensorData::F32(values),
            ..
        }) = request.inputs.first()
        else {
            return Err(InferenceError::Status(Status::invalid_argument(
                "the scripted model takes one f32 input",
            )));
        };
        let scores: Vec<f32> = values
            .chunks(self.width)
            .map(|row| row[self.column])
            .collect();
        Ok(InferenceResponse {
            model: ModelInfo {
                name: Arc::from("scripted"),
                version: Some(Arc::from("1")),
            },
            outputs: vec![Tensor {
                name: self.output.clone(),
                shape: vec![scores.len() as i64, 1],
                data: TensorData::F32(scores),
            }],
        })
    }
}
