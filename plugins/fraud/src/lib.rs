//! Scores card transactions with a fraud model.
//!
//! Input records hold one JSON transaction in the schema of the public credit-card fraud data:
//! an integer `id`, then `Time`, `V1` … `V28` and `Amount` as numbers. `prepare` parses it once,
//! into a typed [`Transaction`], turns it into one `features` tensor (f32, shape [1, 30], in
//! that order) asking for `fraud_probability`, and keeps only the `id` for `complete`, which
//! emits, under the input record's key, a JSON verdict with the probability, the decision against
//! the `threshold` setting, the model that answered, and `source-*` headers pointing back at the
//! input record.
//!
//! Settings: `threshold` (default 0.5, in [0, 1]) and `signature` (default: the backend's).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use streaminfer_sdk::{
    Config, Decision, Dtype, ModelRequirements, Origin, Output, Plugin, PluginError, Record,
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

/// One transaction as the model sees it: the fields in [`FEATURES`] order, read straight into
/// f32 (other fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Transaction {
    #[serde(rename = "id")]
    id: i64,
    time: f32,
    v1: f32,
    v2: f32,
    v3: f32,
    v4: f32,
    v5: f32,
    v6: f32,
    v7: f32,
    v8: f32,
    v9: f32,
    v10: f32,
    v11: f32,
    v12: f32,
    v13: f32,
    v14: f32,
    v15: f32,
    v16: f32,
    v17: f32,
    v18: f32,
    v19: f32,
    v20: f32,
    v21: f32,
    v22: f32,
    v23: f32,
    v24: f32,
    v25: f32,
    v26: f32,
    v27: f32,
    v28: f32,
    amount: f32,
}

impl Transaction {
    fn features(&self) -> [f32; 30] {
        [
            self.time,
            self.v1,
            self.v2,
            self.v3,
            self.v4,
            self.v5,
            self.v6,
            self.v7,
            self.v8,
            self.v9,
            self.v10,
            self.v11,
            self.v12,
            self.v13,
            self.v14,
            self.v15,
            self.v16,
            self.v17,
            self.v18,
            self.v19,
            self.v20,
            self.v21,
            self.v22,
            self.v23,
            self.v24,
            self.v25,
            self.v26,
            self.v27,
            self.v28,
            self.amount,
        ]
    }
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
        let output = Output::json(origin.key, &verdict)?
            .with_header("source-topic", origin.topic)
            .with_header("source-partition", origin.partition.to_string())
            .with_header("source-offset", origin.offset.to_string());
        Ok(vec![output])
    }
}

/// The record's transaction id and features, parsed once through its typed form. Only a JSON
/// object is a transaction (serde would also read a struct from an array).
fn parse(record: &Record) -> Result<(i64, [f32; 30]), PluginError> {
    let first = record
        .value
        .as_deref()
        .and_then(|value| value.iter().find(|b| !b.is_ascii_whitespace()));
    if first != Some(&b'{') {
        return Err(explain(record, None));
    }
    match record.json::<Transaction>() {
        Ok(txn) => {
            let features = txn.features();
            if features.iter().all(|f| f.is_finite()) {
                Ok((txn.id, features))
            } else {
                Err(explain(record, None))
            }
        }
        Err(error) => Err(explain(record, Some(error))),
    }
}

/// Says, field by field, why a record is refused. It runs only for records the typed parse
/// refused (or whose numbers overflow f32), so the common path never builds a map; the messages
/// name the field and the value found. When every field looks right on its own (a repeated
/// field, say), the typed parse's message stands.
#[cold]
fn explain(record: &Record, typed: Option<PluginError>) -> PluginError {
    let txn = match record.json::<Map<String, Value>>() {
        Ok(txn) => txn,
        Err(error) => return error,
    };
    transaction_id(&txn)
        .err()
        .or_else(|| FEATURES.iter().find_map(|&name| feature(&txn, name).err()))
        .or(typed)
        .unwrap_or_else(|| PluginError::InvalidRecord("value is not a transaction".to_owned()))
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
