//! `check` and `replay` with the real fraud plugin and the real embedded ONNX model: records
//! from a file, no broker, no model server. `scripts/test.sh` builds the plugin first and passes
//! its path in `FRAUD_PLUGIN`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use streaminfer::config::{self, Mode};
use streaminfer::offline;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

mod common;

use common::fraud_plugin;

fn transaction(id: u64, amount: f64) -> String {
    common::transaction(id, 1000.0, |i| (f64::from(i) - 14.0) / 10.0, amount)
}

fn records_file(dir: &Path) -> PathBuf {
    let path = dir.join("records.jsonl");
    let lines = [
        transaction(1, 12.5),
        "not json".to_owned(),
        String::new(),
        transaction(2, 950.0),
    ];
    std::fs::write(&path, lines.join("\n")).expect("write records");
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("offline-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn replay_scores_each_line_and_dead_letters_the_bad_one() {
    let dir = temp_dir("replay");
    let records = offline::RecordFile::open(&records_file(&dir)).expect("opens");
    let settings = config::load(
        &repo().join("config/fraud.toml"),
        Mode::Offline,
        &fraud_plugin(),
        &[],
        std::iter::empty(),
    )
    .expect("config/fraud.toml is valid");

    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let summary = offline::replay(settings, records, &mut out, &mut dead)
        .await
        .expect("replays");
    assert_eq!(
        (
            summary.records,
            summary.outputs,
            summary.dead_letters,
            summary.blank_lines
        ),
        (3, 2, 1, 1),
        "the blank line is counted, not replayed"
    );

    let outputs: Vec<Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        outputs
            .iter()
            .map(|o| o["value"]["id"].clone())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        outputs
            .iter()
            .map(|o| o["line"].clone())
            .collect::<Vec<_>>(),
        [1, 4]
    );
    for output in &outputs {
        let p = output["value"]["fraud_probability"]
            .as_f64()
            .expect("a probability");
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert_eq!(output["value"]["is_fraud"], p >= 0.5);
        assert_eq!(output["value"]["model_version"], "1");
        let headers = output["headers"].as_array().expect("headers in order");
        assert_eq!(headers[0]["key"], "source-topic");
        assert_eq!(headers[0]["value"], "file:records.jsonl");
        let last = headers.last().expect("the digest");
        assert_eq!(last["key"], "plugin-digest");
        assert!(
            last["value"]
                .as_str()
                .is_some_and(|d| d.starts_with("sha256:"))
        );
    }
    let dead: Value = serde_json::from_slice(&dead).expect("one JSON line");
    assert_eq!(dead["line"], 2);
    assert_eq!(dead["reason"], "invalid-record");
    assert_eq!(dead["value"], "not json");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn check_reports_the_contract_and_what_each_record_would_do() {
    let dir = temp_dir("check");
    let records = offline::RecordFile::open(&records_file(&dir))
        .expect("opens")
        .collect::<Result<Vec<_>, _>>()
        .expect("reads");
    let settings = config::load(
        &repo().join("config/fraud.toml"),
        Mode::Offline,
        &fraud_plugin(),
        &[],
        std::iter::empty(),
    )
    .expect("valid")
    .plugin;
    let mut report = Vec::new();
    offline::check(&settings, records, &mut report)
        .await
        .expect("checks");
    let report = String::from_utf8(report).expect("utf-8");
    assert!(
        report.contains("implements streaminfer:plugin/plugin@0.3.0"),
        "{report}"
    );
    assert!(
        report.contains("sends input \"features\": f32 [?, 30]"),
        "{report}"
    );
    assert!(
        report.contains("reads output \"fraud_probability\""),
        "{report}"
    );
    assert!(
        report.contains("line 1: infer: \"features\" f32 [1, 30] = [1000.0, -1.3,"),
        "{report}"
    );
    assert!(
        report.contains("line 2: dead letter: invalid-record"),
        "{report}"
    );
    assert!(report.contains("line 4: infer:"), "{report}");
    std::fs::remove_dir_all(&dir).ok();
}
