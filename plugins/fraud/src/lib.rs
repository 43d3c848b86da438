//! Scores card transactions with a fraud model.
//!
//! Input records hold one JSON transaction in the schema of the public credit-card fraud data:
//! an integer `id`, then `Time`, `V1` … `V28` and `Amount` as numbers. The plugin declares those
//! fields and the host reads them from each record; `prepare` turns them into one `features`
//! tensor (f32, shape [1, 30], in that order) asking for `fraud_probability`, and keeps only the
//! `id` for `complete`, which
//! emits, under the input record's key, a JSON verdict with the probability, the decision against
//! the `threshold` setting, the model that answered, and `source-*` headers pointing back at the
//! input record.
//!
//! Settings: `threshold` (default 0.5, in [0, 1]) and `signature` (default: the backend's).

use serde::Serialize;
use streaminfer_sdk::{
    Config, Decision, Dtype, Field, ModelRequirements, Origin, Output, Plugin, PluginError, Record,
    Request, Response, Tensor, export_plugin,
};

/// The model's inputs, in the order the model expects them.
pub const FEATURES: [&str; 30] = [
    "Time", "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9", "V10", "V11", "V12", "V13",
    "V14", "V15", "V16", "V17", "V18", "V19", "V20", "V21", "V22", "V23", "V24", "V25", "V26",
    "V27", "V28", "Amount",
];
const INPUT: &str = "features";
const OUTPUT: &str = "fraud_probability";

/// The configured plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Fraud {
    threshold: f64,
    signature: Option<String>,
}

/// What `complete` produces for each transaction.
#[derive(Debug, Serialize)]
struct Verdict<'a> {
    id: i64,
    fraud_probability: f64,
    is_fraud: bool,
    model_name: &'a str,
    model_version: Option<&'a str>,
}

impl Plugin for Fraud {
    /// The transaction's id: all `complete` needs of the record besides its key and position.
    type State = i64;

    fn configure(config: &Config) -> Result<Self, String> {
        let threshold = config.parse_or("threshold", 0.5_f64)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!(
                "setting `threshold` = {:?} must be a number between 0 and 1",
                config.get_or("threshold", "")
            ));
        }
        let signature = config.get("signature").filter(|s| !s.is_empty());
        Ok(Self {
            threshold,
            signature: signature.map(str::to_owned),
        })
    }

    fn requirements(&self) -> ModelRequirements {
        ModelRequirements::default()
            .input(INPUT, Dtype::F32, [-1, FEATURES.len() as i64])
            .output(OUTPUT)
    }

    /// The transaction's `id`, then its features in model order.
    fn fields(&self) -> Vec<Field> {
        std::iter::once(Field::integer("id"))
            .chain(Field::numbers(FEATURES))
            .collect()
    }

    fn prepare(&self, record: &Record) -> Result<Decision<i64>, PluginError> {
        let (id, features) = parse(record)?;
        let request = Request {
            inputs: vec![Tensor::f32(INPUT, [1, FEATURES.len() as i64], features)?],
            signature: self.signature.clone(),
            output_filter: vec![OUTPUT.to_owned()],
        };
        Ok(Decision::Infer(request, id))
    }

    fn complete(
        &self,
        origin: Origin,
        id: i64,
        response: &Response,
    ) -> Result<Vec<Output>, PluginError> {
        let probability = response.scalar_f32(OUTPUT)?;
        let verdict = Verdict {
            id,
            fraud_probability: f64::from(probability),
            // Compared at the model's precision, so that a threshold of 0.7 flags a score of 0.7f32.
            is_fraud: probability >= self.threshold as f32,
            model_name: response.model_name(),
            model_version: response.model_version(),
        };
        Ok(vec![Output::reply_json(origin, &verdict)?])
    }
}

/// The record's transaction id and features, as the host read them from its fields.
fn parse(record: &Record) -> Result<(i64, Vec<f32>), PluginError> {
    let fields = record.fields()?;
    let id = fields.integer(0)?;
    let features = fields.f32s(1..1 + FEATURES.len())?;
    if let Some(i) = features.iter().position(|f| !f.is_finite()) {
        return Err(PluginError::InvalidRecord(format!(
            "field `{}` must be a number within f32 range, found {:e}",
            FEATURES[i],
            fields.number(1 + i)?
        )));
    }
    Ok((id, features))
}

export_plugin!(Fraud);

#[cfg(test)]
mod tests;
