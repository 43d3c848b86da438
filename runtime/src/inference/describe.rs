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

/// The largest answer a model server's client reads, in bytes: tonic's default decoding limit,
/// set on the clients explicitly so that this bound and the wire agree.
pub(crate) const ANSWER_BYTES: usize = 4 << 20;

impl ModelDescription {
    /// The most elements the output `name` of an answer to `rows` stacked rows may decode to:
    /// `rows` times the other dimensions when the model declares the output `[?, d1, ...]`,
    /// the product when it declares every dimension. In no case more than [`ANSWER_BYTES`]:
    /// no answer could carry more elements than bytes, so an answer above it is one whose
    /// shape claims what its values do not hold (TensorFlow lets one value stand for a whole
    /// shape, and a 20-byte answer may declare 2^36 of them).
    pub(crate) fn most_elements(&self, name: &str, rows: Option<usize>) -> u64 {
        let ceiling = ANSWER_BYTES as u64;
        let Some(dims) = self
            .outputs
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.shape.as_deref())
        else {
            return ceiling;
        };
        let (first, rest) = match dims.split_first() {
            None => return 1,
            Some((&first, rest)) => (first, rest),
        };
        let first = match (u64::try_from(first), rows) {
            (Ok(known), _) => Some(known),
            (Err(_), Some(rows)) => u64::try_from(rows).ok(),
            (Err(_), None) => None,
        };
        rest.iter()
            .try_fold(first, |n, &d| Some(n?.checked_mul(u64::try_from(d).ok()?)))
            .flatten()
            .map_or(ceiling, |n| n.min(ceiling))
    }
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
    fn an_answer_may_hold_what_was_asked() {
        let mut model = fraud_model();
        model.outputs.push(tensor("fixed", Dtype::F32, &[2, 3]));
        model.outputs.push(tensor("scalar", Dtype::F32, &[]));
        model.outputs.push(tensor("ragged", Dtype::F32, &[-1, -1]));
        model.outputs.push(ModelTensor {
            name: "unsaid".into(),
            dtype: Ok(Dtype::F32),
            shape: None,
        });
        let ceiling = ANSWER_BYTES as u64;
        assert_eq!(model.most_elements("fraud_probability", Some(500)), 500);
        assert_eq!(model.most_elements("fixed", Some(500)), 6);
        assert_eq!(model.most_elements("scalar", Some(500)), 1);
        // What the model leaves open is bounded by what an answer can carry.
        assert_eq!(model.most_elements("fraud_probability", None), ceiling);
        assert_eq!(model.most_elements("ragged", Some(500)), ceiling);
        assert_eq!(model.most_elements("unsaid", Some(500)), ceiling);
        assert_eq!(model.most_elements("absent", Some(500)), ceiling);
        assert_eq!(
            model.most_elements("fraud_probability", Some(usize::MAX)),
            ceiling
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
