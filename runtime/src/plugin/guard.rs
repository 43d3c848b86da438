//! What the host refuses of a plugin's answers, the same for every backend and for `replay` and
//! `check`: a request no model can take, more outputs than one record may make, a topic the
//! plugin may not write to, and model requirements too large to be real. Each refusal fails only
//! the record it concerns, as the plugin's fault.

use std::collections::HashSet;
use std::fmt;

use crate::config::OutputLimits;
use crate::contract::{InferenceRequest, ModelRequirements, OutputRecord};
use crate::failure::{Failure, Reason};

/// Inputs or outputs a plugin may declare at most; past it the declaration is refused at
/// start-up and summarised, not printed.
pub(crate) const MAX_DECLARED: usize = 1024;
/// What one header costs beyond its key and value (Kafka's framing, the host's bookkeeping), so
/// that thousands of empty headers count.
const HEADER_OVERHEAD: usize = 16;
/// Dimensions one declared or requested shape may have at most.
const MAX_RANK: usize = 32;

/// Checks one record's outputs against the limits: how many, how many bytes, which topics.
pub(crate) fn outputs(outputs: &[OutputRecord], limits: &OutputLimits) -> Result<(), Failure> {
    if outputs.len() > limits.max_records {
        return Err(Failure::new(
            Reason::OutputLimit,
            format!(
                "the plugin made {} output records from one record; plugin.max-outputs is {}",
                outputs.len(),
                limits.max_records
            ),
        ));
    }
    let mut bytes: u64 = 0;
    for output in outputs {
        let headers: usize = output
            .headers
            .iter()
            .map(|h| HEADER_OVERHEAD + h.key.len() + h.value.len())
            .sum();
        let size = output.key.as_ref().map_or(0, Vec::len)
            + output.value.as_ref().map_or(0, Vec::len)
            + output.topic.as_ref().map_or(0, String::len)
            + headers;
        bytes = bytes.saturating_add(size as u64);
        if let Some(topic) = &output.topic
            && !limits.topics.iter().any(|t| t == topic)
        {
            return Err(Failure::new(
                Reason::TopicNotAllowed,
                format!(
                    "the plugin named topic {:?}; plugin.allowed-topics is {:?}",
                    shortened(topic, 120),
                    limits.topics
                ),
            ));
        }
    }
    if bytes > limits.max_bytes {
        return Err(Failure::new(
            Reason::OutputLimit,
            format!(
                "the plugin made {bytes} bytes of output from one record; plugin.max-output-bytes is {}",
                limits.max_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks a request before any model sees it: every tensor's shape is concrete, does not
/// overflow and matches its data; no input name repeats; and where the plugin declared its
/// inputs, the request sends exactly those, each with the declared element type, rank and
/// fixed dimensions.
pub(crate) fn request(
    request: &InferenceRequest,
    declared: &ModelRequirements,
) -> Result<(), Failure> {
    let refuse = |message: String| Err(Failure::new(Reason::InvalidRequest, message));
    // Runs for every record a plugin sends to the model: no allocation unless it refuses, and
    // a request has a handful of inputs, so a quadratic look for repeats is the cheap one.
    for (i, tensor) in request.inputs.iter().enumerate() {
        let name = Named(&tensor.name);
        if request.inputs[..i].iter().any(|t| t.name == tensor.name) {
            return refuse(format!("input {name:?} is sent twice"));
        }
        if tensor.shape.len() > MAX_RANK {
            return refuse(format!(
                "input {name:?} has {} dimensions; at most {MAX_RANK} are allowed",
                tensor.shape.len()
            ));
        }
        let mut elements: u64 = 1;
        for &d in &tensor.shape {
            let Ok(d) = u64::try_from(d) else {
                return refuse(format!(
                    "input {name:?} has shape {:?}: a request's dimensions cannot be negative",
                    tensor.shape
                ));
            };
            let Some(n) = elements.checked_mul(d) else {
                return refuse(format!(
                    "input {name:?} has shape {:?}, more elements than can be counted",
                    tensor.shape
                ));
            };
            elements = n;
        }
        let found = tensor.data.len() as u64;
        if elements != found {
            return refuse(format!(
                "input {name:?} has shape {:?}, which holds {elements} elements, but {found} were given",
                tensor.shape
            ));
        }
        if declared.inputs.is_empty() {
            continue;
        }
        let Some(spec) = declared.inputs.iter().find(|s| s.name == tensor.name) else {
            return refuse(format!("input {name:?} is not one the plugin declared"));
        };
        let dtype = tensor.data.dtype();
        if dtype != spec.dtype {
            return refuse(format!(
                "input {name:?} is {dtype:?}, the plugin declared {:?}",
                spec.dtype
            ));
        }
        let fits = tensor.shape.len() == spec.shape.len()
            && tensor
                .shape
                .iter()
                .zip(&spec.shape)
                .all(|(&d, &s)| s == -1 || d == s);
        if !fits {
            return refuse(format!(
                "input {name:?} has shape {:?}, the plugin declared {:?}",
                tensor.shape, spec.shape
            ));
        }
    }
    if let Some(missing) = declared
        .inputs
        .iter()
        .find(|s| !request.inputs.iter().any(|t| t.name == s.name))
    {
        return refuse(format!(
            "input {:?}, which the plugin declared, is not sent",
            missing.name
        ));
    }
    Ok(())
}

/// Checks what a plugin declares at start-up: a bounded number of inputs and outputs, unique
/// names, and dimensions that are sizes or -1 (any size).
pub(crate) fn requirements(declared: &ModelRequirements) -> Result<(), String> {
    let (inputs, outputs) = (declared.inputs.len(), declared.outputs.len());
    if inputs > MAX_DECLARED || outputs > MAX_DECLARED {
        return Err(format!(
            "it declares {inputs} model inputs and {outputs} outputs; at most {MAX_DECLARED} of each are allowed"
        ));
    }
    let mut names = HashSet::new();
    for spec in &declared.inputs {
        let name = Named(&spec.name);
        if !names.insert(spec.name.as_str()) {
            return Err(format!("it declares input {name:?} twice"));
        }
        if spec.shape.len() > MAX_RANK {
            return Err(format!(
                "it declares input {name:?} with {} dimensions; at most {MAX_RANK} are allowed",
                spec.shape.len()
            ));
        }
        if let Some(d) = spec.shape.iter().find(|&&d| d < -1) {
            return Err(format!(
                "it declares input {name:?} with shape {:?}: {d} is neither a size nor -1 (any size)",
                spec.shape
            ));
        }
    }
    Ok(())
}

/// A name as refusals quote it, cut to 120 characters; cut and copied only when a message is
/// made, never for a request that passes.
struct Named<'a>(&'a str);

impl fmt::Debug for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&shortened(self.0, 120), f)
    }
}

/// At most `max` characters of `text`, saying how much was cut.
pub(crate) fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes cut)", &text[..cut], text.len() - cut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Dtype, Header, Tensor, TensorData, TensorSpec};

    fn limits() -> OutputLimits {
        OutputLimits {
            max_records: 3,
            max_bytes: 100,
            topics: vec!["scores".into()],
        }
    }

    fn output(value: usize, topic: Option<&str>) -> OutputRecord {
        OutputRecord {
            key: None,
            value: Some(vec![b'x'; value]),
            headers: vec![Header {
                key: "h".into(),
                value: b"v".to_vec(),
            }],
            topic: topic.map(str::to_owned),
        }
    }

    #[test]
    fn outputs_are_counted_measured_and_their_topics_checked() {
        let l = limits();
        assert!(outputs(&[output(10, None), output(10, Some("scores"))], &l).is_ok());
        let many = vec![output(1, None); 4];
        assert_eq!(
            outputs(&many, &l).expect_err("too many").reason,
            Reason::OutputLimit
        );
        // 2 × (33 + 16 + "h" + "v") = 102 bytes > 100.
        let big = [output(33, None), output(33, None)];
        let failure = outputs(&big, &l).expect_err("too big");
        assert_eq!(failure.reason, Reason::OutputLimit);
        assert!(failure.message.contains("102 bytes"), "{failure}");
        let mut empty_headers = output(0, None);
        empty_headers.headers = vec![
            Header {
                key: String::new(),
                value: Vec::new(),
            };
            7
        ];
        assert!(
            outputs(&[empty_headers], &l).is_err(),
            "headers count even when empty"
        );
        for topic in ["transactions", "", "scores2"] {
            let failure = outputs(&[output(1, Some(topic))], &l).expect_err("not allowed");
            assert_eq!(failure.reason, Reason::TopicNotAllowed, "{topic:?}");
        }
    }

    fn tensor(name: &str, shape: &[i64], data: TensorData) -> Tensor {
        Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    fn ask(inputs: Vec<Tensor>) -> InferenceRequest {
        InferenceRequest {
            inputs,
            signature: None,
            output_filter: Vec::new(),
        }
    }

    fn declared() -> ModelRequirements {
        ModelRequirements {
            inputs: vec![TensorSpec {
                name: "features".into(),
                dtype: Dtype::F32,
                shape: vec![-1, 3],
            }],
            outputs: vec!["score".into()],
        }
    }

    fn refused(request: InferenceRequest, declared: &ModelRequirements) -> String {
        let failure = super::request(&request, declared).expect_err("refused");
        assert_eq!(failure.reason, Reason::InvalidRequest);
        assert_eq!(failure.fault(), crate::failure::Fault::Plugin);
        failure.message
    }

    #[test]
    fn requests_are_checked_before_any_model_sees_them() {
        let none = ModelRequirements::default();
        let good = || tensor("features", &[1, 3], TensorData::F32(vec![0.0; 3]));
        assert!(request(&ask(vec![good()]), &declared()).is_ok());
        assert!(request(&ask(vec![good()]), &none).is_ok());

        let short = tensor("features", &[1, 3], TensorData::F32(vec![0.0; 2]));
        assert!(refused(ask(vec![short]), &none).contains("3 elements, but 2"));
        let negative = tensor("features", &[-1, 3], TensorData::F32(vec![0.0; 3]));
        assert!(refused(ask(vec![negative]), &none).contains("negative"));
        let huge = tensor("features", &[i64::MAX, 4], TensorData::F32(Vec::new()));
        assert!(refused(ask(vec![huge]), &none).contains("more elements"));
        assert!(refused(ask(vec![good(), good()]), &none).contains("twice"));

        let f64s = tensor("features", &[1, 3], TensorData::F64(vec![0.0; 3]));
        assert!(refused(ask(vec![f64s]), &declared()).contains("F64"));
        let rank = tensor("features", &[3], TensorData::F32(vec![0.0; 3]));
        assert!(refused(ask(vec![rank]), &declared()).contains("declared [-1, 3]"));
        let width = tensor("features", &[1, 4], TensorData::F32(vec![0.0; 4]));
        assert!(refused(ask(vec![width]), &declared()).contains("declared [-1, 3]"));
        let other = tensor("other", &[1], TensorData::F32(vec![0.0]));
        assert!(
            refused(ask(vec![good(), other]), &declared()).contains("not one the plugin declared")
        );
        assert!(refused(ask(Vec::new()), &declared()).contains("is not sent"));
    }

    #[test]
    fn declarations_are_bounded_and_their_dimensions_sizes_or_any() {
        assert!(requirements(&declared()).is_ok());
        let mut below = declared();
        below.inputs[0].shape = vec![-2, 3];
        assert!(requirements(&below).expect_err("refused").contains("-2"));
        let mut twice = declared();
        twice.inputs.push(twice.inputs[0].clone());
        assert!(requirements(&twice).expect_err("refused").contains("twice"));
        let flood = ModelRequirements {
            inputs: Vec::new(),
            outputs: vec!["o".into(); 200_000],
        };
        let said = requirements(&flood).expect_err("refused");
        assert!(
            said.contains("200000 outputs") && said.len() < 200,
            "{said}"
        );
    }

    #[test]
    fn long_text_is_shortened_with_what_was_cut() {
        assert_eq!(shortened("short", 10), "short");
        assert_eq!(shortened("abcdef", 3), "abc… (3 bytes cut)");
        assert_eq!(shortened("ééé", 1), "é… (4 bytes cut)");
    }
}
