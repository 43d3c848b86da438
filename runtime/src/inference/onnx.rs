//! The embedded backend: an ONNX model run in process by tract (pure Rust), for a first run
//! without any model server and for models small enough that a network hop costs more than the
//! model. Requests and responses are the same backend-neutral tensors as for a server, and
//! errors are reported with the gRPC status a server would have used, so plugins and
//! dead-letter reasons do not depend on the backend.

use std::path::Path;
use std::sync::Arc;

use tonic::Status;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoTValue, TValue, Tensor as TractTensor,
    TypedRunnableModel, tvec,
};

use super::describe::{ModelDescription, ModelTensor};
use super::error::InferenceError;
use crate::contract::{Dtype, InferenceRequest, InferenceResponse, ModelInfo, Tensor, TensorData};

/// A loaded, optimised ONNX model.
#[derive(Debug)]
pub(crate) struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    /// The model's inputs and outputs, as the optimised graph has them.
    pub(crate) description: ModelDescription,
    inputs: Vec<String>,
    outputs: Vec<String>,
    info: ModelInfo,
}

impl OnnxModel {
    /// Loads and optimises the model at `path`.
    ///
    /// # Errors
    /// [`InferenceError::Load`] naming the file and what tract could not do.
    pub(crate) fn load(
        path: &Path,
        name: &str,
        version: Option<i64>,
    ) -> Result<Self, InferenceError> {
        let load_error = |e: &dyn std::fmt::Display| InferenceError::Load {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if !path.is_file() {
            return Err(InferenceError::Load {
                path: path.to_owned(),
                message: "no such file".into(),
            });
        }
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| load_error(&format!("{e:#}")))?;
        let names = |outlets: &[tract_onnx::prelude::OutletId]| -> Vec<String> {
            outlets
                .iter()
                .map(|o| model.node(o.node).name.clone())
                .collect()
        };
        let inputs = names(model.input_outlets().map_err(|e| load_error(&e))?);
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| load_error(&e))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map_or_else(|| model.node(o.node).name.clone(), str::to_owned)
            })
            .collect();
        let optimized = model
            .into_optimized()
            .map_err(|e| load_error(&format!("{e:#}")))?;
        let facts = |outlets: &[tract_onnx::prelude::OutletId],
                     names: &[String]|
         -> Vec<ModelTensor> {
            outlets
                .iter()
                .zip(names)
                .map(|(outlet, name)| {
                    let fact = optimized.outlet_fact(*outlet).ok();
                    ModelTensor {
                        name: name.clone(),
                        dtype: fact
                            .map_or_else(|| Err("unknown".to_owned()), |f| dtype(f.datum_type)),
                        shape: fact
                            .map(|f| f.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect()),
                    }
                })
                .collect()
        };
        let description = ModelDescription {
            inputs: facts(&optimized.inputs, &inputs),
            outputs: facts(&optimized.outputs, &outputs),
        };
        let plan = tract_onnx::prelude::IntoRunnable::into_runnable(optimized)
            .map_err(|e| load_error(&format!("{e:#}")))?;
        Ok(Self {
            plan,
            description,
            inputs,
            outputs,
            info: ModelInfo {
                name: name.into(),
                version: version.map(|v| v.to_string().into()),
            },
        })
    }

    /// Runs the model on a request, on a blocking thread (inference is CPU work).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for inputs the model does not take or lacks, or an output filter naming
    /// an output it does not have; `INTERNAL` when tract fails.
    pub(crate) async fn predict(
        self: &Arc<Self>,
        request: &InferenceRequest,
    ) -> Result<InferenceResponse, InferenceError> {
        let inputs = self.inputs_of(request)?;
        let wanted = self.wanted(&request.output_filter)?;
        let model = self.clone();
        let run = tokio::task::spawn_blocking(move || model.plan.run(inputs));
        let results = match run.await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) => {
                return Err(InferenceError::Status(Status::internal(format!(
                    "ONNX model failed: {e:#}"
                ))));
            }
            Err(e) => {
                return Err(InferenceError::Status(Status::internal(format!(
                    "ONNX model panicked: {e}"
                ))));
            }
        };
        let outputs = self
            .outputs
            .iter()
            .zip(results.iter())
            .filter(|(name, _)| wanted.iter().any(|w| w == *name))
            .map(|(name, value)| from_tract(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InferenceResponse {
            model: self.info.clone(),
            outputs,
        })
    }

    fn inputs_of(
        &self,
        request: &InferenceRequest,
    ) -> Result<tract_onnx::prelude::TVec<TValue>, InferenceError> {
        if let Some(extra) = request
            .inputs
            .iter()
            .find(|t| !self.inputs.contains(&t.name))
        {
            return Err(invalid(format!(
                "the model has no input {:?} (it takes {:?})",
                extra.name, self.inputs
            )));
        }
        let mut values = tvec!();
        for name in &self.inputs {
            let tensor = request
                .inputs
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "input {name:?} is missing (the model takes {:?})",
                        self.inputs
                    ))
                })?;
            values.push(to_tract(tensor)?.into_tvalue());
        }
        Ok(values)
    }

    fn wanted(&self, filter: &[String]) -> Result<Vec<String>, InferenceError> {
        if filter.is_empty() {
            return Ok(self.outputs.clone());
        }
        match filter.iter().find(|f| !self.outputs.contains(f)) {
            Some(unknown) => Err(invalid(format!(
                "the model has no output {unknown:?} (it has {:?})",
                self.outputs
            ))),
            None => Ok(filter.to_vec()),
        }
    }
}

fn invalid(message: String) -> InferenceError {
    InferenceError::Status(Status::invalid_argument(message))
}

fn to_tract(tensor: &Tensor) -> Result<TractTensor, InferenceError> {
    let shape: Vec<usize> = tensor
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            invalid(format!(
                "tensor {:?} has a negative dimension in {:?}",
                tensor.name, tensor.shape
            ))
        })?;
    let built = match &tensor.data {
        TensorData::F32(v) => TractTensor::from_shape(&shape, v),
        TensorData::F64(v) => TractTensor::from_shape(&shape, v),
        TensorData::S8(v) => TractTensor::from_shape(&shape, v),
        TensorData::S16(v) => TractTensor::from_shape(&shape, v),
        TensorData::S32(v) => TractTensor::from_shape(&shape, v),
        TensorData::S64(v) => TractTensor::from_shape(&shape, v),
        TensorData::U8(v) => TractTensor::from_shape(&shape, v),
        TensorData::U16(v) => TractTensor::from_shape(&shape, v),
        TensorData::U32(v) => TractTensor::from_shape(&shape, v),
        TensorData::U64(v) => TractTensor::from_shape(&shape, v),
        TensorData::Boolean(v) => TractTensor::from_shape(&shape, v),
        TensorData::Bytes(_) => {
            return Err(invalid(format!(
                "tensor {:?}: byte-string tensors are not supported by the ONNX backend",
                tensor.name
            )));
        }
    };
    built.map_err(|e| invalid(format!("tensor {:?}: {e}", tensor.name)))
}

fn dtype(datum: DatumType) -> Result<Dtype, String> {
    Ok(match datum {
        DatumType::F32 => Dtype::F32,
        DatumType::F64 => Dtype::F64,
        DatumType::I8 => Dtype::S8,
        DatumType::I16 => Dtype::S16,
        DatumType::I32 => Dtype::S32,
        DatumType::I64 => Dtype::S64,
        DatumType::U8 => Dtype::U8,
        DatumType::U16 => Dtype::U16,
        DatumType::U32 => Dtype::U32,
        DatumType::U64 => Dtype::U64,
        DatumType::Bool => Dtype::Boolean,
        other => return Err(format!("{other:?}")),
    })
}

fn from_tract(name: &str, value: &TValue) -> Result<Tensor, InferenceError> {
    let shape = value.shape().iter().map(|&d| d as i64).collect();
    let fail = |e: &dyn std::fmt::Display| {
        InferenceError::Status(Status::internal(format!("output {name:?}: {e}")))
    };
    let plain = value.try_as_plain_ram().map_err(|e| fail(&e))?;
    macro_rules! read {
        ($case:ident, $t:ty) => {
            TensorData::$case(plain.as_slice::<$t>().map_err(|e| fail(&e))?.to_vec())
        };
    }
    let data = match value.datum_type() {
        DatumType::F32 => read!(F32, f32),
        DatumType::F64 => read!(F64, f64),
        DatumType::I8 => read!(S8, i8),
        DatumType::I16 => read!(S16, i16),
        DatumType::I32 => read!(S32, i32),
        DatumType::I64 => read!(S64, i64),
        DatumType::U8 => read!(U8, u8),
        DatumType::U16 => read!(U16, u16),
        DatumType::U32 => read!(U32, u32),
        DatumType::U64 => read!(U64, u64),
        DatumType::Bool => read!(Boolean, bool),
        other => return Err(fail(&format!("element type {other:?} is not supported"))),
    };
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        data,
    })
}
