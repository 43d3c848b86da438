//! Native unit tests: the plugin's logic without a Wasm host.

use serde_json::{Map, Value, json};
use streaminfer_sdk::{Header, ModelInfo, TensorData};

use super::*;

fn fraud(settings: &[(&str, &str)]) -> Fraud {
    Fraud::configure(&Config::new(settings.iter().copied())).expect("valid settings")
}

/// A transaction whose features are 0.0, 1.0, … 29.0 in model order.
fn transaction() -> Value {
    let mut txn = Map::new();
    txn.insert("id".to_owned(), json!(42));
    for (i, name) in FEATURES.iter().enumerate() {
        txn.insert((*name).to_owned(), json!(i as f64));
    }
    Value::Object(txn)
}

fn record(value: Option<Vec<u8>>) -> Record {
    Record {
        topic: "transactions".to_owned(),
        partition: 3,
        offset: 1234,
        timestamp: Some(1_700_000_000_000),
        key: Some(b"card-7".to_vec()),
        value,
        headers: vec![Header {
            key: "trace".to_owned(),
            value: b"x".to_vec(),
        }],
        fields: Ok(Vec::new()),
    }
    .with_fields(&fraud(&[]).fields())
}

fn json_record(value: &Value) -> Record {
    record(Some(value.to_string().into_bytes()))
}

fn response(outputs: Vec<Tensor>, version: Option<&str>) -> Response {
    Response {
        model: ModelInfo {
            name: "fraud".to_owned(),
            version: version.map(str::to_owned),
        },
        outputs,
    }
}

fn score(p: f32) -> Response {
    let tensor = Tensor::f32(OUTPUT, [1, 1], [p]).expect("valid tensor");
    response(vec![tensor], Some("2"))
}

fn origin() -> Origin {
    Origin {
        topic: "transactions".to_owned(),
        partition: 3,
        offset: 1234,
        timestamp: Some(1_700_000_000_000),
        key: Some(b"card-7".to_vec()),
    }
}

fn invalid_record(message: &str) -> Result<Decision<i64>, PluginError> {
    Err(PluginError::InvalidRecord(message.to_owned()))
}

#[test]
fn settings_have_defaults() {
    assert_eq!(
        fraud(&[]),
        Fraud {
            threshold: 0.5,
            signature: None
        }
    );
    assert_eq!(
        fraud(&[("threshold", "0.8"), ("signature", "serving_default")]),
        Fraud {
            threshold: 0.8,
            signature: Some("serving_default".to_owned())
        }
    );
    assert_eq!(fraud(&[("signature", "")]).signature, None);
}

#[test]
fn bad_threshold_is_refused_with_key_and_value() {
    let configure = |value: &str| Fraud::configure(&Config::new([("threshold", value)]));
    assert_eq!(
        configure("high"),
        Err("setting `threshold` = \"high\" is not a valid f64: invalid float literal".to_owned())
    );
    for value in ["1.5", "-0.1", "NaN"] {
        assert_eq!(
            configure(value),
            Err(format!(
                "setting `threshold` = \"{value}\" must be a number between 0 and 1"
            ))
        );
    }
    assert!(configure("0").is_ok());
    assert!(configure("1").is_ok());
}

#[test]
fn features_tensor_is_laid_out_in_model_order() {
    let plugin = fraud(&[("signature", "scores")]);
    let decision = plugin.prepare(&json_record(&transaction()));
    let Ok(Decision::Infer(request, id)) = decision else {
        panic!("expected an inference request, got {decision:?}");
    };
    assert_eq!(id, 42, "the id is kept for complete");
    assert_eq!(request.signature.as_deref(), Some("scores"));
    assert_eq!(request.output_filter, [OUTPUT]);
    let [tensor] = request.inputs.as_slice() else {
        panic!("expected one input tensor");
    };
    assert_eq!(tensor.name, "features");
    assert_eq!(tensor.shape, [1, 30]);
    let expected: Vec<f32> = (0..30).map(|i| i as f32).collect();
    assert_eq!(tensor.data, TensorData::F32(expected));
}

#[test]
fn default_signature_is_left_to_the_backend() {
    let decision = fraud(&[]).prepare(&json_record(&transaction()));
    assert!(matches!(decision, Ok(Decision::Infer(request, _)) if request.signature.is_none()));
}

#[test]
fn bad_records_are_invalid_and_name_the_problem() {
    let plugin = fraud(&[]);
    assert_eq!(
        plugin.prepare(&record(Some(b"{not json".to_vec()))),
        invalid_record("the value is not valid JSON: key must be a string at line 1 column 2")
    );
    assert_eq!(
        plugin.prepare(&record(None)),
        invalid_record("the record has no value")
    );
    assert_eq!(
        plugin.prepare(&json_record(&json!([1, 2]))),
        invalid_record("the value is not a JSON object")
    );

    let mut txn = transaction();
    txn.as_object_mut().map(|t| t.remove("V17"));
    assert_eq!(
        plugin.prepare(&json_record(&txn)),
        invalid_record("field `V17` is missing")
    );

    let mut txn = transaction();
    txn["Amount"] = json!("12.50");
    assert_eq!(
        plugin.prepare(&json_record(&txn)),
        invalid_record("field `Amount` is a string, expected a number")
    );

    let mut txn = transaction();
    txn["id"] = json!(1.5);
    assert_eq!(
        plugin.prepare(&json_record(&txn)),
        invalid_record(
            "field `id` is a number with a fraction or an exponent, expected an integer"
        )
    );

    let mut txn = transaction();
    txn["V1"] = json!(1e300);
    assert_eq!(
        plugin.prepare(&json_record(&txn)),
        invalid_record("field `V1` must be a number within f32 range, found 1e300")
    );

    // A transaction is an object, not a row of the right length. (A field given twice is
    // refused by the host's reader, which `with_fields` does not imitate: see the runtime's
    // tests of declared fields.)
    let mut row = vec![json!(42)];
    row.extend((0..30).map(|i| json!(i)));
    assert_eq!(
        plugin.prepare(&json_record(&Value::Array(row))),
        invalid_record("the value is not a JSON object")
    );
}

#[test]
fn fields_beyond_the_schema_are_ignored_and_integers_are_numbers() {
    let mut txn = transaction();
    txn["merchant"] = json!({"name": "acme", "tags": [1, 2]});
    txn["Amount"] = json!(12);
    let decision = fraud(&[]).prepare(&json_record(&txn));
    let Ok(Decision::Infer(request, 42)) = decision else {
        panic!("expected an inference request for id 42, got {decision:?}");
    };
    assert_eq!(request.inputs[0].as_f32().map(|f| f[29]), Ok(12.0));
}

#[test]
fn verdict_carries_score_model_key_and_source_headers() {
    let outputs = fraud(&[])
        .complete(origin(), 42, &score(0.75))
        .expect("valid response");
    let [output] = outputs.as_slice() else {
        panic!("expected one output record");
    };
    assert_eq!(output.key.as_deref(), Some(&b"card-7"[..]));
    assert_eq!(output.topic, None);
    let value: Value =
        serde_json::from_slice(output.value.as_deref().unwrap_or_default()).expect("JSON value");
    assert_eq!(
        value,
        json!({
            "id": 42,
            "fraud_probability": 0.75,
            "is_fraud": true,
            "model_name": "fraud",
            "model_version": "2",
        })
    );
    assert_eq!(output.header_str("source-topic"), Some("transactions"));
    assert_eq!(output.header_str("source-partition"), Some("3"));
    assert_eq!(output.header_str("source-offset"), Some("1234"));
    assert_eq!(output.headers.len(), 3);
}

#[test]
fn unversioned_model_and_rank_one_output() {
    let tensor = Tensor::f32(OUTPUT, [1], [0.25]).expect("valid tensor");
    let outputs = fraud(&[])
        .complete(origin(), 42, &response(vec![tensor], None))
        .expect("valid response");
    let value: Value = serde_json::from_slice(outputs[0].value.as_deref().unwrap_or_default())
        .expect("JSON value");
    assert_eq!(value["model_version"], Value::Null);
    assert_eq!(value["is_fraud"], json!(false));
    assert_eq!(value["fraud_probability"], json!(0.25));
}

#[test]
fn threshold_boundary_is_inclusive_at_model_precision() {
    let is_fraud = |threshold: &str, p: f32| {
        let outputs = fraud(&[("threshold", threshold)])
            .complete(origin(), 42, &score(p))
            .expect("valid response");
        let value: Value = serde_json::from_slice(outputs[0].value.as_deref().unwrap_or_default())
            .expect("JSON value");
        value["is_fraud"].as_bool().expect("a boolean")
    };
    assert!(is_fraud("0.5", 0.5));
    assert!(!is_fraud("0.5", 0.5_f32.next_down()));
    assert!(is_fraud("0.7", 0.7));
    assert!(!is_fraud("0.7", 0.7_f32.next_down()));
    assert!(is_fraud("0", 0.0));
    assert!(!is_fraud("1", 1.0_f32.next_down()));
    assert!(is_fraud("1", 1.0));
}

#[test]
fn unexpected_responses_are_invalid() {
    let plugin = fraud(&[]);
    let complete = |response: Response| plugin.complete(origin(), 42, &response).map(|_| ());

    let other = Tensor::f32("logits", [1, 1], [0.1]).expect("valid tensor");
    assert_eq!(
        complete(response(vec![other], None)),
        Err(PluginError::InvalidResponse(
            "model response has no output tensor `fraud_probability` (outputs: [logits])"
                .to_owned()
        ))
    );

    let doubles = Tensor::f64(OUTPUT, [1, 1], [0.1]).expect("valid tensor");
    assert_eq!(
        complete(response(vec![doubles], None)),
        Err(PluginError::InvalidResponse(
            "tensor `fraud_probability` holds f64 elements, expected f32".to_owned()
        ))
    );

    let two = Tensor::f32(OUTPUT, [2, 1], [0.1, 0.2]).expect("valid tensor");
    assert_eq!(
        complete(response(vec![two], None)),
        Err(PluginError::InvalidResponse(
            "output `fraud_probability` must hold one finite number, got [0.1, 0.2]".to_owned()
        ))
    );

    assert!(matches!(
        complete(score(f32::NAN)),
        Err(PluginError::InvalidResponse(_))
    ));
}
