//! Native unit tests: the plugin's logic without a Wasm host.

use serde_json::json;
use streaminfer_sdk::{Header, ModelInfo, TensorData};

use super::*;

fn credit(settings: &[(&str, &str)]) -> Credit {
    Credit::configure(&Config::new(settings.iter().copied())).expect("valid settings")
}

/// Application 2 of the German credit data (a bad risk).
fn application() -> Value {
    json!({
        "application_id": 2,
        "checking_account_status": "0_to_200_dm",
        "duration_months": 48,
        "credit_history": "existing_paid_duly",
        "purpose": "radio_television",
        "credit_amount": 5951,
        "savings": "below_100_dm",
        "employment_since": "1_to_4_years",
        "installment_rate": 2,
        "personal_status_sex": "female_divorced_separated_married",
        "other_debtors": "none",
        "residence_since": 2,
        "property": "real_estate",
        "age": 22,
        "other_installment_plans": "none",
        "housing": "own",
        "existing_credits": 1,
        "job": "skilled",
        "people_liable": 1,
        "telephone": "none",
        "foreign_worker": "yes",
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut app = application();
    app[field] = value;
    app
}

fn without(field: &str) -> Value {
    let mut app = application();
    app.as_object_mut().map(|a| a.remove(field));
    app
}

fn record(value: &Value) -> Record {
    Record {
        topic: "applications".to_owned(),
        partition: 1,
        offset: 77,
        timestamp: None,
        key: Some(b"2".to_vec()),
        value: Some(value.to_string().into_bytes()),
        headers: vec![Header {
            key: "trace".to_owned(),
            value: b"x".to_vec(),
        }],
        fields: Ok(Vec::new()),
    }
}

fn response(p: f32) -> Response {
    Response {
        model: ModelInfo {
            name: "credit".to_owned(),
            version: Some("1".to_owned()),
        },
        outputs: vec![Tensor::f32(OUTPUT, [1, 1], [p]).expect("valid tensor")],
    }
}

fn invalid_record(message: &str) -> Result<Decision<Kept>, PluginError> {
    Err(PluginError::InvalidRecord(message.to_owned()))
}

/// The features the plugin sends for `app`.
fn features(plugin: &Credit, app: &Value) -> Vec<f32> {
    match plugin.prepare(&record(app)) {
        Ok(Decision::Infer(request, _)) => match &request.inputs[0].data {
            TensorData::F32(values) => values.clone(),
            other => panic!("expected f32 features, got {other:?}"),
        },
        other => panic!("expected an inference request, got {other:?}"),
    }
}

/// What the model answers for `app`, from the embedded weights, at the model's precision.
fn model_probability(plugin: &Credit, app: &Value) -> f32 {
    let w: Vec<f32> = (plugin.spec.attributes.iter())
        .flat_map(|a| match a {
            Attribute::Numerical { weight, .. } => vec![*weight],
            Attribute::Categorical { weights, .. } => weights.clone(),
        })
        .collect();
    let x = features(plugin, app);
    let logit = plugin.spec.bias
        + w.iter()
            .zip(&x)
            .map(|(w, x)| f64::from(*w) * f64::from(*x))
            .sum::<f64>();
    (1.0 / (1.0 + (-logit).exp())) as f32
}

/// `prepare` then `complete`, as the host runs them: the state `prepare` kept goes to
/// `complete` with the record's origin.
fn complete_record(
    plugin: &Credit,
    record: &Record,
    response: &Response,
) -> Result<Vec<Output>, PluginError> {
    let Ok(Decision::Infer(_, kept)) = plugin.prepare(record) else {
        panic!("expected an inference request");
    };
    let origin = Origin {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.clone(),
    };
    plugin.complete(origin, kept, response)
}

fn verdict(plugin: &Credit, app: &Value, p: f32) -> Value {
    let outputs = complete_record(plugin, &record(app), &response(p)).expect("valid response");
    serde_json::from_slice(outputs[0].value.as_deref().unwrap_or_default()).expect("JSON value")
}

fn spec_attribute<'a>(plugin: &'a Credit, name: &str) -> &'a Attribute {
    (plugin.spec.attributes.iter())
        .find(|a| a.name() == name)
        .expect("attribute in features.json")
}

#[test]
fn embedded_spec_matches_the_data_set_and_declares_the_tensor() {
    let plugin = credit(&[]);
    assert_eq!(plugin.spec.attributes.len(), 20);
    assert_eq!(plugin.spec.width(), 61);
    let requirements = plugin.requirements();
    assert_eq!(requirements.inputs[0].name, "features");
    assert_eq!(requirements.inputs[0].dtype, Dtype::F32);
    assert_eq!(requirements.inputs[0].shape, [-1, 61]);
    assert_eq!(requirements.outputs, ["bad_probability"]);
}

#[test]
fn settings_have_defaults() {
    let plugin = credit(&[]);
    assert_eq!(
        (plugin.cutoff, plugin.reasons, plugin.signature),
        (0.5, 3, None)
    );
    let plugin = credit(&[
        ("cutoff", "0.2"),
        ("reasons", "0"),
        ("signature", "serving_default"),
    ]);
    assert_eq!((plugin.cutoff, plugin.reasons), (0.2, 0));
    assert_eq!(plugin.signature.as_deref(), Some("serving_default"));
    assert_eq!(credit(&[("reasons", "20")]).reasons, 20);
}

#[test]
fn bad_settings_are_refused_with_key_and_value() {
    let configure =
        |key: &str, value: &str| Credit::configure(&Config::new([(key, value)])).map(|_| ());
    assert_eq!(
        configure("cutoff", "high"),
        Err("setting `cutoff` = \"high\" is not a valid f64: invalid float literal".to_owned())
    );
    for value in ["1.5", "-0.1", "NaN"] {
        assert_eq!(
            configure("cutoff", value),
            Err(format!(
                "setting `cutoff` = \"{value}\" must be a number between 0 and 1"
            ))
        );
    }
    assert_eq!(
        configure("reasons", "-1"),
        Err(
            "setting `reasons` = \"-1\" is not a valid usize: invalid digit found in string"
                .to_owned()
        )
    );
    assert_eq!(
        configure("reasons", "21"),
        Err("setting `reasons` = \"21\" must be at most 20 (one per attribute)".to_owned())
    );
}

#[test]
fn application_is_encoded_as_features_json_says() {
    let plugin = credit(&[("signature", "scores")]);
    let Ok(Decision::Infer(request, _)) = plugin.prepare(&record(&application())) else {
        panic!("expected an inference request");
    };
    assert_eq!(request.signature.as_deref(), Some("scores"));
    assert_eq!(request.output_filter, [OUTPUT]);
    assert_eq!(request.inputs[0].name, "features");
    assert_eq!(request.inputs[0].shape, [1, 61]);

    let x = features(&plugin, &application());
    // checking_account_status: four one-hot columns, then duration_months standardised.
    assert_eq!(x[..4], [0.0, 1.0, 0.0, 0.0]);
    let Attribute::Numerical { mean, std, .. } = spec_attribute(&plugin, "duration_months") else {
        panic!("duration_months is numerical");
    };
    assert_eq!(x[4], ((48.0 - mean) / std) as f32);
    // 13 categorical attributes: exactly one 1 in each group.
    let categorical_width: usize = (plugin.spec.attributes.iter())
        .filter(|a| matches!(a, Attribute::Categorical { .. }))
        .map(Attribute::width)
        .sum();
    assert_eq!(categorical_width, 54);
    assert_eq!(x.iter().filter(|&&v| v == 1.0).count(), 13);

    // Field order and extra fields do not matter.
    let mut reordered: Map<String, Value> = Map::new();
    for (k, v) in application().as_object().expect("an object").iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    reordered.insert("note".to_owned(), json!("ignored"));
    assert_eq!(features(&plugin, &Value::Object(reordered)), x);
}

#[test]
fn unknown_category_names_field_value_and_allowed_values() {
    assert_eq!(
        credit(&[]).prepare(&record(&with("housing", json!("castle")))),
        invalid_record(
            "field `housing` has unknown value \"castle\" (allowed: rent, own, for_free)"
        )
    );
    assert_eq!(
        credit(&[]).prepare(&record(&with("telephone", json!(true)))),
        invalid_record("field `telephone` must be a string, found true (allowed: none, yes)")
    );
}

#[test]
fn missing_and_mistyped_fields_are_all_named() {
    let plugin = credit(&[]);
    assert_eq!(
        plugin.prepare(&record(&without("age"))),
        invalid_record("field `age` is missing")
    );
    assert_eq!(
        plugin.prepare(&record(&without("application_id"))),
        invalid_record("field `application_id` is missing")
    );
    let mut app = with("application_id", json!("2"));
    app["credit_amount"] = json!("5951");
    app["duration_months"] = json!(1e300);
    app.as_object_mut().map(|a| a.remove("purpose"));
    assert_eq!(
        plugin.prepare(&record(&app)),
        invalid_record(
            "field `application_id` must be an integer, found \"2\"; \
             field `duration_months` is out of range: 1e+300; field `purpose` is missing; \
             field `credit_amount` must be a number, found \"5951\""
        )
    );
    assert_eq!(
        plugin.prepare(&Record {
            value: Some(b"{not json".to_vec()),
            ..record(&application())
        }),
        invalid_record("value is not valid JSON: key must be a string at line 1 column 2")
    );
    assert_eq!(
        plugin.prepare(&Record {
            value: None,
            ..record(&application())
        }),
        invalid_record("record has no value")
    );
}

#[test]
fn verdict_carries_score_decision_reasons_key_and_source_headers() {
    let plugin = credit(&[]);
    let p = model_probability(&plugin, &application());
    let outputs =
        complete_record(&plugin, &record(&application()), &response(p)).expect("valid response");
    let [output] = outputs.as_slice() else {
        panic!("expected one output record")
    };
    assert_eq!(output.key.as_deref(), Some(&b"2"[..]));
    assert_eq!(output.topic, None);
    assert_eq!(output.header_str("source-topic"), Some("applications"));
    assert_eq!(output.header_str("source-partition"), Some("1"));
    assert_eq!(output.header_str("source-offset"), Some("77"));
    assert_eq!(output.headers.len(), 3);
    let value: Value =
        serde_json::from_slice(output.value.as_deref().unwrap_or_default()).expect("JSON");
    assert_eq!(value["application_id"], json!(2));
    assert_eq!(value["bad_probability"], json!(f64::from(p)));
    assert_eq!(
        value["decision"],
        json!(if p >= 0.5 { "decline" } else { "approve" })
    );
    assert_eq!(
        (
            value["model_name"].as_str(),
            value["model_version"].as_str()
        ),
        (Some("credit"), Some("1"))
    );
    assert_eq!(value["reasons"].as_array().map(Vec::len), Some(3));
}

#[test]
fn cutoff_boundary_is_inclusive_at_model_precision() {
    let p = model_probability(&credit(&[]), &application());
    let decision = |cutoff: &str, p: f32| {
        verdict(&credit(&[("cutoff", cutoff)]), &application(), p)["decision"].clone()
    };
    // `p` printed as the shortest decimal that reads back as the same f32.
    assert_eq!(decision(&p.to_string(), p), json!("decline"));
    assert_eq!(decision(&p.to_string(), p.next_down()), json!("approve"));
    assert_eq!(decision("0", p), json!("decline"));
    assert_eq!(decision("1", p), json!("approve"));
}

#[test]
fn reasons_are_the_largest_positive_shares_per_attribute() {
    let everything = credit(&[("reasons", "20")]);
    let app = application();
    let p = model_probability(&everything, &app);
    let reasons = verdict(&everything, &app, p)["reasons"]
        .as_array()
        .cloned()
        .expect("a list");
    let shares: Vec<f64> = reasons
        .iter()
        .map(|r| r["contribution"].as_f64().expect("a number"))
        .collect();
    assert!(
        shares.len() >= 3,
        "application 2 should have several reasons: {reasons:?}"
    );
    assert!(
        shares.windows(2).all(|w| w[0] >= w[1]),
        "largest first: {shares:?}"
    );
    assert!(
        shares.iter().all(|&s| s > 0.0),
        "only reasons towards bad: {shares:?}"
    );

    // Each share is the model's w_i * x_i summed over the attribute's columns: for a category,
    // the weight of the applicant's category; for a number, weight times the standardised value.
    let x = features(&everything, &app);
    let mut column = 0;
    let mut expected = Vec::new();
    for attribute in &everything.spec.attributes {
        let share = match attribute {
            Attribute::Numerical { weight, .. } => f64::from(*weight) * f64::from(x[column]),
            Attribute::Categorical { weights, .. } => (0..weights.len())
                .map(|i| f64::from(weights[i]) * f64::from(x[column + i]))
                .sum(),
        };
        column += attribute.width();
        if share > 0.0 {
            expected.push((attribute.name(), share));
        }
    }
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let names: Vec<&str> = reasons
        .iter()
        .map(|r| r["feature"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, expected.iter().map(|e| e.0).collect::<Vec<_>>());
    // JSON carries the shortest decimal of each f64; serde_json may read it back one ulp off.
    for (got, (name, want)) in shares.iter().zip(&expected) {
        assert!(
            (got - want).abs() < 1e-12,
            "{name}: contribution {got}, expected {want}"
        );
    }
    for reason in &reasons {
        let feature = reason["feature"].as_str().expect("a name");
        assert_eq!(
            reason["value"], app[feature],
            "the input value of {feature}"
        );
    }

    // `reasons` caps the list from the top.
    let top = verdict(&credit(&[]), &app, p)["reasons"]
        .as_array()
        .cloned()
        .expect("a list");
    assert_eq!(top[..], reasons[..3]);
    assert_eq!(
        verdict(&credit(&[("reasons", "0")]), &app, p)["reasons"],
        json!([])
    );
}

#[test]
fn responses_that_do_not_fit_are_invalid() {
    let plugin = credit(&[]);
    let input = record(&application());
    let complete = |response: Response| complete_record(&plugin, &input, &response).map(|_| ());
    let invalid = |message: &str| Err(PluginError::InvalidResponse(message.to_owned()));

    let mut other = response(0.5);
    other.outputs[0].name = "logits".to_owned();
    assert_eq!(
        complete(other),
        invalid("model response has no output tensor `bad_probability` (outputs: [logits])")
    );

    let mut two = response(0.5);
    two.outputs[0] = Tensor::f32(OUTPUT, [2, 1], [0.1, 0.2]).expect("valid tensor");
    assert_eq!(
        complete(two),
        invalid("output `bad_probability` must hold one finite number, got [0.1, 0.2]")
    );
    assert!(matches!(
        complete(response(f32::NAN)),
        Err(PluginError::InvalidResponse(_))
    ));

    // A model other than the one whose weights are embedded: its reasons would be wrong.
    let p = model_probability(&plugin, &application());
    let Err(PluginError::InvalidResponse(message)) = complete(response(1.0 - p)) else {
        panic!("a probability the weights do not give must be refused");
    };
    assert!(
        message.contains("the reason codes would not be the model's"),
        "{message}"
    );
}

#[test]
fn malformed_spec_is_refused() {
    assert!(Spec::parse("{}").is_err());
    assert_eq!(
        Spec::parse(r#"{"attributes": [], "bias": 0}"#),
        Err("features.json: no attributes, or a bias that is not finite".to_owned())
    );
    let short = r#"{"attributes": [{"name": "x", "kind": "categorical", "categories": ["a", "b"], "weights": [1]}], "bias": 0}"#;
    assert_eq!(
        Spec::parse(short),
        Err("features.json: attribute `x` is malformed".to_owned())
    );
    let flat = r#"{"attributes": [{"name": "y", "kind": "numerical", "mean": 1, "std": 0, "weight": 1}], "bias": 0}"#;
    assert_eq!(
        Spec::parse(flat),
        Err("features.json: attribute `y` is malformed".to_owned())
    );
}
