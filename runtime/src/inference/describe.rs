//! What a model takes and gives, as its backend describes it, and the start-up check of a
//! plugin's declared requirements against it. A mismatch (an input the model does not take or
//! takes with another element type or shape, an output it does not have) refuses the start with
//! both sides shown, instead of dead-lettering every record once traffic flows.

use std::fmt;

use crate::contract::{Dtype, ModelRequirements};

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTensor {
    pub name: String,
    /// `Err` holds the backend's name of a type the contract cannot carry.
    pub dtype: Result<Dtype, String>,
    /// Dimensions with -1 for any size; `None` when the model does not say.
    pub shape: Option<Vec<i64>>,
}

/// A model's inputs and outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDescription {
    pub inputs: Vec<ModelTensor>,
    pub outputs: Vec<ModelTensor>,
}

/// How a dtype is written in messages: as the contract's `tensor-data` case.
pub(crate) fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::S8 => "s8",
        Dtype::S16 => "s16",
        Dtype::S32 => "s32",
        Dtype::S64 => "s64",
        Dtype::U8 => "u8",
        Dtype::U16 => "u16",
        Dtype::U32 => "u32",
        Dtype::U64 => "u64",
        Dtype::Boolean => "boolean",
        Dtype::Bytes => "bytes",
    }
}

struct Shape<'a>(Option<&'a [i64]>);

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("[any shape]"),
            Some(dims) => {
                let dims: Vec<String> = dims
                    .iter()
                    .map(|d| {
                        if *d < 0 {
                            "?".to_owned()
                        } else {
                            d.to_string()
                        }
                    })
                    .collect();
                write!(f, "[{}]", dims.join(", "))
            }
        }
    }
}

fn shapes_agree(plugin: &[i64], model: &[i64]) -> bool {
    plugin.len() == model.len()
        && plugin
            .iter()
            .zip(model)
            .all(|(p, m)| *p < 0 || *m < 0 || p == m)
}

/// Every way in which `required` and `model` disagree; empty when they agree or the plugin
/// declares nothing.
pub fn mismatches(required: &ModelRequirements, model: &ModelDescription) -> Vec<String> {
    let mut problems = Vec::new();
    let names = |ts: &[ModelTensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    for spec in &required.inputs {
        let sent = format!("{} {}", dtype_name(spec.dtype), Shape(Some(&spec.shape)));
        let Some(input) = model.inputs.iter().find(|t| t.name == spec.name) else {
            problems.push(format!(
                "input {:?}: the plugin sends {sent}, the model has no such input (it takes {:?})",
                spec.name,
                names(&model.inputs)
            ));
            continue;
        };
        let type_agrees = input.dtype.as_ref().is_ok_and(|d| *d == spec.dtype);
        let shape_agrees = input
            .shape
            .as_deref()
            .is_none_or(|m| shapes_agree(&spec.shape, m));
        if !(type_agrees && shape_agrees) {
            let expected = match &input.dtype {
                Ok(d) => dtype_name(*d).to_owned(),
                Err(other) => other.clone(),
            };
            problems.push(format!(
                "input {:?}: the plugin sends {sent}, the model expects {expected} {}",
                spec.name,
                Shape(input.shape.as_deref())
            ));
        }
    }
    if !required.inputs.is_empty() {
        for input in &model.inputs {
            if !required.inputs.iter().any(|s| s.name == input.name) {
                problems.push(format!(
                    "input {:?}: the model needs it, the plugin does not send it",
                    input.name
                ));
            }
        }
    }
    for output in &required.outputs {
        if !model.outputs.iter().any(|t| &t.name == output) {
            problems.push(format!(
                "output {output:?}: the plugin reads it, the model has no such output (it gives {:?})",
                names(&model.outputs)
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::TensorSpec;

    fn tensor(name: &str, dtype: Dtype, shape: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            dtype: Ok(dtype),
            shape: Some(shape.to_vec()),
        }
    }

    fn fraud_model() -> ModelDescription {
        ModelDescription {
            inputs: vec![tensor("features", Dtype::F32, &[-1, 30])],
            outputs: vec![tensor("fraud_probability", Dtype::F32, &[-1, 1])],
        }
    }

    fn requires(dtype: Dtype, shape: &[i64], output: &str) -> ModelRequirements {
        ModelRequirements {
            inputs: vec![TensorSpec {
                name: "features".into(),
                dtype,
                shape: shape.to_vec(),
            }],
            outputs: vec![output.into()],
        }
    }

    #[test]
    fn matching_requirements_pass() {
        assert!(
            mismatches(
                &requires(Dtype::F32, &[-1, 30], "fraud_probability"),
                &fraud_model()
            )
            .is_empty()
        );
        assert!(
            mismatches(
                &requires(Dtype::F32, &[1, 30], "fraud_probability"),
                &fraud_model()
            )
            .is_empty()
        );
        assert!(
            mismatches(
                &ModelRequirements {
                    inputs: vec![],
                    outputs: vec![]
                },
                &fraud_model()
            )
            .is_empty()
        );
    }

    #[test]
    fn every_mismatch_is_reported_with_both_sides() {
        let mut model = fraud_model();
        model.inputs.push(tensor("country", Dtype::Bytes, &[-1]));
        let found = mismatches(&requires(Dtype::F64, &[-1, 20], "score"), &model);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(
            found[0],
            "input \"features\": the plugin sends f64 [?, 20], the model expects f32 [?, 30]"
        );
        assert!(
            found[1].contains("\"country\": the model needs it"),
            "{}",
            found[1]
        );
        assert!(
            found[2].contains("\"score\"") && found[2].contains("fraud_probability"),
            "{}",
            found[2]
        );
    }

    #[test]
    fn types_the_contract_cannot_carry_are_named() {
        let mut model = fraud_model();
        model.inputs[0].dtype = Err("DT_HALF".into());
        let found = mismatches(
            &requires(Dtype::F32, &[-1, 30], "fraud_probability"),
            &model,
        );
        assert_eq!(
            found,
            ["input \"features\": the plugin sends f32 [?, 30], the model expects DT_HALF [?, 30]"]
        );
    }
}
