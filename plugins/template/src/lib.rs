//! A starting point for a plugin. It reads `{"id": "...", "features": [numbers]}`, asks the
//! model for `score` given an f32 tensor `input` of shape [1, N], and emits
//! `{"id": "...", "score": s, "flagged": s >= threshold}` under the input's key, with `source-*`
//! headers pointing back at the input record.
//!
//! Settings: `threshold` (default 0.5), `features` (N, default 4), and the model's tensor names
//! `input` (default `input`) and `output` (default `score`).

use serde::{Deserialize, Serialize};
use streaminfer_sdk::{
    Config, Decision, Dtype, ModelRequirements, Origin, Output, Plugin, PluginError, Record,
    Request, Response, Tensor, export_plugin,
};

/// The configured plugin.
#[derive(Debug)]
pub struct Template {
    threshold: f32,
    features: usize,
    /// The model's input tensor.
    input: String,
    /// The model's output tensor, one score per record.
    output: String,
}

/// An input record's value. `&str` borrows from the record: nothing is copied to read it.
#[derive(Deserialize)]
struct Event<'a> {
    id: &'a str,
    features: Vec<f32>,
}

#[derive(Serialize)]
struct Scored {
    id: String,
    score: f32,
    flagged: bool,
}

impl Plugin for Template {
    /// What `complete` needs of the record: the event's id.
    type State = String;

    fn configure(config: &Config) -> Result<Self, String> {
        Ok(Self {
            threshold: config.parse_or("threshold", 0.5)?,
            features: config.parse_or("features", 4)?,
            input: config.parse_or("input", "input".to_owned())?,
            output: config.parse_or("output", "score".to_owned())?,
        })
    }

    fn requirements(&self) -> ModelRequirements {
        ModelRequirements::default()
            .input(&self.input, Dtype::F32, [-1, self.features as i64])
            .output(&self.output)
    }

    fn prepare(&self, record: &Record) -> Result<Decision<String>, PluginError> {
        let event: Event<'_> = record.json()?;
        if event.features.len() != self.features {
            return Err(PluginError::InvalidRecord(format!(
                "`features` has {} values, the model takes {}",
                event.features.len(),
                self.features
            )));
        }
        let input = Tensor::f32(&self.input, [1, self.features as i64], event.features)?;
        let request = Request::new(vec![input]).with_outputs([&self.output]);
        Ok(Decision::Infer(request, event.id.to_owned()))
    }

    fn complete(
        &self,
        origin: Origin,
        id: String,
        response: &Response,
    ) -> Result<Vec<Output>, PluginError> {
        let score = response.scalar_f32(&self.output)?;
        let scored = Scored {
            id,
            score,
            flagged: score >= self.threshold,
        };
        // Keyed like the input record, with `source-*` headers pointing back at it.
        Ok(vec![Output::reply_json(origin, &scored)?])
    }
}

export_plugin!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use streaminfer_sdk::TensorData;

    fn plugin() -> Template {
        Template::configure(&Config::new([("threshold", "0.7")])).expect("valid settings")
    }

    #[test]
    fn builds_the_input_tensor() {
        let record = Record::of(r#"{"id": "a", "features": [1, 2, 3, 4]}"#);
        let Ok(Decision::Infer(request, id)) = plugin().prepare(&record) else {
            panic!("expected a model call")
        };
        assert_eq!(id, "a");
        assert_eq!(request.inputs[0].shape, [1, 4]);
        assert_eq!(
            request.inputs[0].data,
            TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
        );
    }

    #[test]
    fn refuses_the_wrong_number_of_features() {
        let record = Record::of(r#"{"id": "a", "features": [1]}"#);
        let err = plugin().prepare(&record).expect_err("refused");
        assert!(matches!(err, PluginError::InvalidRecord(m) if m.contains("1 values")));
    }

    #[test]
    fn flags_scores_at_the_threshold() {
        let record = Record::of("{}").with_key("k");
        let response = Response::of([Tensor::f32("score", [1, 1], [0.7]).expect("a tensor")]);
        let outputs = plugin()
            .complete(record.origin(), "a".to_owned(), &response)
            .expect("scored");
        let value: serde_json::Value =
            serde_json::from_slice(outputs[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(value["flagged"], true);
        assert_eq!(value["id"], "a");
        assert_eq!(outputs[0].key.as_deref(), Some(&b"k"[..]));
    }
}
