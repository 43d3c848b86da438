//! Scores card transactions with a fraud model.
//!
//! Input records hold one JSON transaction in the schema of the public credit-card fraud data:
//! an integer `id`, then `Time`, `V1` … `V28` and `Amount` as numbers. `prepare` turns them into
//! one `features` tensor (f32, shape [1, 30], in that order) and asks for `fraud_probability`;
//! `complete` emits, under the input record's key, a JSON verdict with the probability, the
//! decision against the `threshold` setting, the model that answered, and `source-*` headers
//! pointing back at the input record.
//!
//! Settings: `threshold` (default 0.5, in [0, 1]) and `signature` (default: the backend's).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use streaminfer_sdk::{
    Config, Decision, Dtype, ModelRequirements, Output, Plugin, PluginError, Record, Request,
    Response, Tensor, export_plugin,
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

    fn prepare(&self, record: &Record) -> Result<Decision, PluginError> {
        let txn: Map<String, Value> = record.json()?;
        transaction_id(&txn)?;
        let features = FEATURES
            .iter()
            .map(|&name| feature(&txn, name))
            .collect::<Result<Vec<f32>, _>>()?;
        let request = Request {
            inputs: vec![Tensor::f32(INPUT, [1, FEATURES.len() as i64], features)?],
            signature: self.signature.clone(),
            output_filter: vec![OUTPUT.to_owned()],
        };
        Ok(request.into())
    }

    fn complete(&self, record: &Record, response: &Response) -> Result<Vec<Output>, PluginError> {
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        let Id { id } = record.json()?;
        // Compared at the model's precision, so that a threshold of 0.7 flags a score of 0.7f32.
        let probability = match response.output(OUTPUT)?.as_f32()? {
            [p] if p.is_finite() => *p,
            values => {
                return Err(PluginError::InvalidResponse(format!(
                    "output `{OUTPUT}` must hold one finite number, got {values:?}"
                )));
            }
        };
        let verdict = Verdict {
            id,
            fraud_probability: f64::from(probability),
            is_fraud: probability >= self.threshold as f32,
            model_name: response.model_name(),
            model_version: response.model_version(),
        };
        let output = Output::json(record.key.clone(), &verdict)?
            .with_header("source-topic", record.topic.as_str())
            .with_header("source-partition", record.partition.to_string())
            .with_header("source-offset", record.offset.to_string());
        Ok(vec![output])
    }
}

fn transaction_id(txn: &Map<String, Value>) -> Result<i64, PluginError> {
    let value = field(txn, "id")?;
    value
        .as_i64()
        .ok_or_else(|| wrong_type("id", "an integer", value))
}

fn feature(txn: &Map<String, Value>, name: &str) -> Result<f32, PluginError> {
    let value = field(txn, name)?;
    let number = value
        .as_f64()
        .ok_or_else(|| wrong_type(name, "a number", value))? as f32;
    if number.is_finite() {
        Ok(number)
    } else {
        Err(wrong_type(name, "a number within f32 range", value))
    }
}

fn field<'a>(txn: &'a Map<String, Value>, name: &str) -> Result<&'a Value, PluginError> {
    txn.get(name)
        .ok_or_else(|| PluginError::InvalidRecord(format!("field `{name}` is missing")))
}

#[cold]
fn wrong_type(name: &str, expected: &str, found: &Value) -> PluginError {
    PluginError::InvalidRecord(format!("field `{name}` must be {expected}, found {found}"))
}

export_plugin!(Fraud);

#[cfg(test)]
mod tests;
