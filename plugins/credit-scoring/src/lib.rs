//! Scores credit applications with a logistic regression and explains every score.
//!
//! An input record holds one application as JSON: an integer `application_id` and the 20
//! attributes of the German credit data under readable names (`checking_account_status`,
//! `duration_months`, …; see `models/credit/README.md`). `prepare` checks every attribute and
//! encodes the application into the model's `features` tensor (f32, [1, D]) as
//! `models/credit/features.json` says: one column per category (1 for the applicant's, 0 for the
//! others), `(x - mean) / std` for a number. That file is embedded here, so it is the single
//! source of truth for the encoding. It also holds the model's weights: each attribute's share of
//! the logit (`w_i * x_i` summed over its columns) is exact, and the largest positive shares are
//! the reason codes. `prepare` keeps what `complete` needs (the id, the logit the weights give,
//! the reason codes) as the record's state, so an application is parsed once. `complete` emits,
//! under the input key, the probability of a bad risk, the decision against `cutoff`, the reason
//! codes and the model that answered, with `source-*` headers pointing back at the input record.
//!
//! Reason codes are only true for the model whose weights are embedded, so `complete` checks that
//! the model's probability is the one those weights give, and refuses the response otherwise.
//!
//! Settings: `cutoff` (default 0.5, in [0, 1]; `decline` at or above it), `reasons` (how many
//! reason codes at most, default 3, up to one per attribute), `signature` (default: the
//! backend's).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use streaminfer_sdk::{
    Config, Decision, Dtype, ModelRequirements, Origin, Output, Plugin, PluginError, Record,
    Request, Response, Tensor, export_plugin,
};

/// The encoding and the model's weights, written by `models/credit/train.py`.
const SPEC: &str = include_str!("../../../models/credit/features.json");
const INPUT: &str = "features";
const OUTPUT: &str = "bad_probability";
const ID: &str = "application_id";
/// How far the model's probability may be from the one the embedded weights give.
const MODEL_TOLERANCE: f64 = 1e-4;

/// The parsed `features.json`: attributes in `features` order, and the model's bias.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Spec {
    attributes: Vec<Attribute>,
    bias: f64,
}

/// One input field, its columns in the `features` tensor and their weights.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Attribute {
    Numerical {
        name: String,
        mean: f64,
        std: f64,
        weight: f32,
    },
    Categorical {
        name: String,
        categories: Vec<String>,
        weights: Vec<f32>,
    },
}

/// The configured plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    spec: Spec,
    cutoff: f64,
    reasons: usize,
    signature: Option<String>,
}

/// An application, checked and encoded.
struct Encoded {
    id: i64,
    features: Vec<f32>,
    /// Per attribute, in `features` order: its index, the input value, its share of the logit.
    shares: Vec<(usize, KeptValue, f64)>,
}

/// What `prepare` keeps of an application for `complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    id: i64,
    /// The logit the embedded weights give, to check the model's answer against.
    logit: f64,
    /// The reason codes, largest share first, at most `reasons` of them.
    reasons: Vec<(usize, KeptValue, f64)>,
}

/// An input value as the reason codes report it: a category (by index) or the number given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeptValue {
    Category(usize),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// What `complete` produces for each application.
#[derive(Debug, Serialize)]
struct Verdict<'a> {
    application_id: i64,
    bad_probability: f64,
    decision: &'static str,
    reasons: Vec<Reason<'a>>,
    model_name: &'a str,
    model_version: Option<&'a str>,
}

/// An attribute that pushed the score towards "bad", and by how much (in logit units).
#[derive(Debug, Serialize)]
struct Reason<'a> {
    feature: &'a str,
    value: Value,
    contribution: f64,
}

impl Spec {
    fn parse(text: &str) -> Result<Self, String> {
        let spec: Self = serde_json::from_str(text).map_err(|e| format!("features.json: {e}"))?;
        if spec.attributes.is_empty() || !spec.bias.is_finite() {
            return Err("features.json: no attributes, or a bias that is not finite".to_owned());
        }
        match spec.attributes.iter().find(|a| !a.is_sound()) {
            Some(bad) => Err(format!(
                "features.json: attribute `{}` is malformed",
                bad.name()
            )),
            None => Ok(spec),
        }
    }

    fn width(&self) -> usize {
        self.attributes.iter().map(Attribute::width).sum()
    }
}

impl Attribute {
    fn name(&self) -> &str {
        match self {
            Self::Numerical { name, .. } | Self::Categorical { name, .. } => name,
        }
    }

    /// Whether every number is usable and there is one weight per column.
    fn is_sound(&self) -> bool {
        match self {
            Self::Numerical {
                mean, std, weight, ..
            } => mean.is_finite() && std.is_finite() && *std > 0.0 && weight.is_finite(),
            Self::Categorical {
                categories,
                weights,
                ..
            } => {
                !categories.is_empty()
                    && categories.len() == weights.len()
                    && weights.iter().all(|w| w.is_finite())
            }
        }
    }

    fn width(&self) -> usize {
        match self {
            Self::Numerical { .. } => 1,
            Self::Categorical { categories, .. } => categories.len(),
        }
    }

    /// The value a reason code shows for what `encode` kept.
    fn shown(&self, kept: &KeptValue) -> Value {
        match (self, kept) {
            (Self::Categorical { categories, .. }, KeptValue::Category(i)) => categories
                .get(*i)
                .map_or(Value::Null, |c| Value::String(c.clone())),
            (_, KeptValue::Unsigned(n)) => Value::from(*n),
            (_, KeptValue::Signed(n)) => Value::from(*n),
            (_, KeptValue::Float(x)) => Value::from(*x),
            (Self::Numerical { .. }, KeptValue::Category(_)) => Value::Null,
        }
    }

    /// Appends this attribute's columns for `value`; returns what to keep of the value and its
    /// share of the logit.
    fn encode(&self, value: &Value, columns: &mut Vec<f32>) -> Result<(KeptValue, f64), String> {
        match self {
            Self::Numerical {
                mean, std, weight, ..
            } => {
                let number = value
                    .as_f64()
                    .ok_or_else(|| format!("must be a number, found {value}"))?;
                let x = ((number - mean) / std) as f32;
                if !x.is_finite() {
                    return Err(format!("is out of range: {value}"));
                }
                columns.push(x);
                let kept = match (value.as_u64(), value.as_i64()) {
                    (Some(n), _) => KeptValue::Unsigned(n),
                    (None, Some(n)) => KeptValue::Signed(n),
                    (None, None) => KeptValue::Float(number),
                };
                Ok((kept, f64::from(*weight) * f64::from(x)))
            }
            Self::Categorical {
                categories,
                weights,
                ..
            } => {
                let index = value
                    .as_str()
                    .and_then(|v| categories.iter().position(|c| c == v));
                let Some(index) = index else {
                    let what = if value.is_string() {
                        "has unknown value"
                    } else {
                        "must be a string, found"
                    };
                    return Err(format!(
                        "{what} {value} (allowed: {})",
                        categories.join(", ")
                    ));
                };
                columns.extend((0..categories.len()).map(|i| if i == index { 1.0 } else { 0.0 }));
                Ok((KeptValue::Category(index), f64::from(weights[index])))
            }
        }
    }
}

impl Credit {
    /// Checks every field of `application` and encodes it; names every problem at once.
    fn encode(&self, application: &Map<String, Value>) -> Result<Encoded, PluginError> {
        let mut problems = Vec::new();
        let id = match application.get(ID) {
            Some(value) => value.as_i64().or_else(|| {
                problems.push(format!("field `{ID}` must be an integer, found {value}"));
                None
            }),
            None => {
                problems.push(format!("field `{ID}` is missing"));
                None
            }
        };
        let mut features = Vec::with_capacity(self.spec.width());
        let mut shares = Vec::with_capacity(self.spec.attributes.len());
        for (index, attribute) in self.spec.attributes.iter().enumerate() {
            let name = attribute.name();
            match application
                .get(name)
                .map(|v| attribute.encode(v, &mut features))
            {
                None => problems.push(format!("field `{name}` is missing")),
                Some(Err(problem)) => problems.push(format!("field `{name}` {problem}")),
                Some(Ok((kept, share))) => shares.push((index, kept, share)),
            }
        }
        match id {
            Some(id) if problems.is_empty() => Ok(Encoded {
                id,
                features,
                shares,
            }),
            _ => Err(PluginError::InvalidRecord(problems.join("; "))),
        }
    }
}

impl Plugin for Credit {
    /// The id, the logit and the reason codes: `complete` needs nothing else of the record.
    type State = Kept;

    fn configure(config: &Config) -> Result<Self, String> {
        let spec = Spec::parse(SPEC)?;
        let cutoff = config.parse_or("cutoff", 0.5_f64)?;
        if !(0.0..=1.0).contains(&cutoff) {
            let raw = config.get_or("cutoff", "");
            return Err(format!(
                "setting `cutoff` = {raw:?} must be a number between 0 and 1"
            ));
        }
        let reasons = config.parse_or("reasons", 3_usize)?;
        if reasons > spec.attributes.len() {
            let most = spec.attributes.len();
            return Err(format!(
                "setting `reasons` = \"{reasons}\" must be at most {most} (one per attribute)"
            ));
        }
        let signature = config.get("signature").filter(|s| !s.is_empty());
        Ok(Self {
            spec,
            cutoff,
            reasons,
            signature: signature.map(str::to_owned),
        })
    }

    fn requirements(&self) -> ModelRequirements {
        ModelRequirements::default()
            .input(INPUT, Dtype::F32, [-1, self.spec.width() as i64])
            .output(OUTPUT)
    }

    fn prepare(&self, record: &Record) -> Result<Decision<Kept>, PluginError> {
        let application: Map<String, Value> = record.json()?;
        let Encoded {
            id,
            features,
            shares,
        } = self.encode(&application)?;
        let logit = self.spec.bias + shares.iter().map(|(_, _, share)| share).sum::<f64>();
        let mut reasons: Vec<_> = shares
            .into_iter()
            .filter(|(_, _, share)| *share > 0.0)
            .collect();
        // Stable: equal shares keep attribute order.
        reasons.sort_by(|a, b| b.2.total_cmp(&a.2));
        reasons.truncate(self.reasons);
        let request = Request {
            inputs: vec![Tensor::f32(INPUT, [1, features.len() as i64], features)?],
            signature: self.signature.clone(),
            output_filter: vec![OUTPUT.to_owned()],
        };
        Ok(Decision::Infer(request, Kept { id, logit, reasons }))
    }

    fn complete(
        &self,
        origin: Origin,
        kept: Kept,
        response: &Response,
    ) -> Result<Vec<Output>, PluginError> {
        let probability = response.scalar_f32(OUTPUT)?;
        let expected = 1.0 / (1.0 + (-kept.logit).exp());
        if (expected - f64::from(probability)).abs() > MODEL_TOLERANCE {
            return Err(PluginError::InvalidResponse(format!(
                "model `{}` answered {OUTPUT} = {probability}, the weights in this plugin's \
                 features.json give {expected:.6}: the reason codes would not be the model's",
                response.model_name()
            )));
        }
        let reasons = kept
            .reasons
            .iter()
            .map(|(index, value, contribution)| {
                let attribute = self.spec.attributes.get(*index).ok_or_else(|| {
                    PluginError::Failed(format!("kept attribute index {index} is out of range"))
                })?;
                Ok(Reason {
                    feature: attribute.name(),
                    value: attribute.shown(value),
                    contribution: *contribution,
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let verdict = Verdict {
            application_id: kept.id,
            bad_probability: f64::from(probability),
            // Compared at the model's precision, so that a cutoff of 0.7 declines a score of 0.7f32.
            decision: if probability >= self.cutoff as f32 {
                "decline"
            } else {
                "approve"
            },
            reasons,
            model_name: response.model_name(),
            model_version: response.model_version(),
        };
        Ok(vec![Output::reply_json(origin, &verdict)?])
    }
}

export_plugin!(Credit);

#[cfg(test)]
mod tests;
