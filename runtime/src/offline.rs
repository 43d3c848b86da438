//! Records from a file instead of Kafka, for plugin development and batch scoring:
//!
//! - [`check`]: loads a plugin, checks it against the contract, configures it, and with input
//!   records shows what it would do with each (the model request it would send, the records it
//!   would emit, or why it refuses the record). No broker, no model.
//! - [`replay`]: runs records through the plugin and the configured model, exactly as the
//!   pipeline does (same batching, retries and dead-letter reasons), and writes the output
//!   records as JSON lines. No broker.
//!
//! An input file holds one record value per line (usually a JSON document), read as the replay
//! goes; blank lines hold no record and are counted. Records are numbered by line (the
//! `offset`), from topic `file:<name>`, partition 0. Output lines lose nothing: values and keys
//! that are not UTF-8 are written in base64, every header in order.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{PluginSettings, Settings};
use crate::contract::{Decision, InputRecord, ModelCall, OutputRecord, Tensor, TensorData};
use crate::error::RunError;
use crate::failure::Failure;
use crate::inference::Inference;
use crate::pipeline::{Outcome, Stages, process};
use crate::plugin::{PluginHost, PluginPool};

/// Elements of a tensor shown by `check`; the rest is counted.
const SHOWN_ELEMENTS: usize = 6;

/// Counts of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub records: u64,
    pub outputs: u64,
    pub dead_letters: u64,
    /// Lines of the input that held no record.
    pub blank_lines: u64,
}

/// The records of a file, one per non-blank line, read as they are asked for: `replay` holds one
/// batch of them at a time, not the file. Lines are bytes, not text: a record need not be
/// UTF-8 (a poison record rarely is).
#[derive(Debug)]
pub struct RecordFile {
    lines: std::io::Split<std::io::BufReader<std::fs::File>>,
    topic: std::sync::Arc<str>,
    line: i64,
    blank: u64,
}

impl RecordFile {
    /// Opens `path`.
    ///
    /// # Errors
    /// The I/O error, with the file named by the caller.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self {
            lines: std::io::BufReader::new(file).split(b'\n'),
            topic: format!("file:{name}").into(),
            line: 0,
            blank: 0,
        })
    }

    /// Blank lines met so far; they hold no record.
    pub fn blank_lines(&self) -> u64 {
        self.blank
    }
}

impl Iterator for RecordFile {
    type Item = std::io::Result<InputRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut line = match self.lines.next()? {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            self.line += 1;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                self.blank += 1;
                continue;
            }
            return Some(Ok(InputRecord {
                topic: self.topic.clone(),
                partition: 0,
                offset: self.line,
                timestamp: None,
                key: None,
                value: Some(line),
                headers: Vec::new(),
                fields: crate::contract::NO_FIELDS,
            }));
        }
    }
}

fn start_plugin(settings: &PluginSettings) -> Result<PluginPool, RunError> {
    let host = PluginHost::with_cache(settings.cache_dir.as_deref())
        .map_err(|e| RunError::Startup(vec![e.to_string()]))?;
    let loaded = host
        .load(settings)
        .map_err(|e| RunError::Startup(vec![e.to_string()]))?;
    PluginPool::start(loaded, 1).map_err(|e| RunError::Startup(vec![e.to_string()]))
}

/// Checks a plugin and shows what it does with `records`, writing a report to `out`.
///
/// # Errors
/// [`RunError::Startup`] when the plugin cannot be loaded or configured; I/O errors of `out`
/// as [`RunError::Startup`] too.
pub async fn check(
    settings: &PluginSettings,
    records: Vec<InputRecord>,
    out: &mut impl Write,
) -> Result<(), RunError> {
    let plugin = start_plugin(settings)?;
    let io = |e: std::io::Error| RunError::Startup(vec![format!("cannot write the report: {e}")]);
    writeln!(
        out,
        "plugin {}: implements {}",
        settings.path.display(),
        crate::plugin::CONTRACT
    )
    .map_err(io)?;
    let keys: Vec<&str> = settings.settings.iter().map(|(k, _)| k.as_str()).collect();
    writeln!(out, "configured with {} setting(s) {keys:?}", keys.len()).map_err(io)?;
    let required = plugin.requirements();
    if required.inputs.is_empty() && required.outputs.is_empty() {
        writeln!(out, "declares no model requirements").map_err(io)?;
    }
    for spec in &required.inputs {
        let shape: Vec<String> = spec
            .shape
            .iter()
            .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
            .collect();
        writeln!(
            out,
            "sends input {:?}: {} [{}]",
            spec.name,
            crate::inference::dtype_name(spec.dtype),
            shape.join(", ")
        )
        .map_err(io)?;
    }
    for output in &required.outputs {
        writeln!(out, "reads output {output:?}").map_err(io)?;
    }
    if !records.is_empty() {
        let (records, decisions) = plugin
            .prepare(records)
            .await
            .map_err(|e| RunError::Startup(vec![e.to_string()]))?;
        for (record, decision) in records.iter().zip(decisions) {
            let line = match decision {
                Ok(Decision::Infer(ModelCall { request, .. })) => {
                    let inputs: Vec<String> = request.inputs.iter().map(describe_tensor).collect();
                    let signature = request.signature.as_deref().unwrap_or("(default)");
                    format!(
                        "infer: {}; signature {signature}; outputs {:?}",
                        inputs.join("; "),
                        request.output_filter
                    )
                }
                Ok(Decision::Emit(outputs)) => format!("emit {} record(s)", outputs.len()),
                Ok(Decision::Skip) => "skip".to_owned(),
                Err(failure) => format!("dead letter: {}: {}", failure.reason, failure.message),
            };
            writeln!(out, "line {}: {line}", record.offset).map_err(io)?;
        }
    }
    plugin.shutdown();
    Ok(())
}

fn describe_tensor(tensor: &Tensor) -> String {
    macro_rules! show {
        ($v:expr) => {{
            let shown: Vec<String> = $v
                .iter()
                .take(SHOWN_ELEMENTS)
                .map(|x| format!("{x:?}"))
                .collect();
            let more = $v.len().saturating_sub(SHOWN_ELEMENTS);
            (shown.join(", "), more)
        }};
    }
    let (dtype, (values, more)) = match &tensor.data {
        TensorData::F32(v) => ("f32", show!(v)),
        TensorData::F64(v) => ("f64", show!(v)),
        TensorData::S8(v) => ("s8", show!(v)),
        TensorData::S16(v) => ("s16", show!(v)),
        TensorData::S32(v) => ("s32", show!(v)),
        TensorData::S64(v) => ("s64", show!(v)),
        TensorData::U8(v) => ("u8", show!(v)),
        TensorData::U16(v) => ("u16", show!(v)),
        TensorData::U32(v) => ("u32", show!(v)),
        TensorData::U64(v) => ("u64", show!(v)),
        TensorData::Boolean(v) => ("boolean", show!(v)),
        TensorData::Bytes(v) => (
            "bytes",
            show!(
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>()
            ),
        ),
    };
    let more = if more > 0 {
        format!(", … {more} more")
    } else {
        String::new()
    };
    format!(
        "{:?} {dtype} {:?} = [{values}{more}]",
        tensor.name, tensor.shape
    )
}

/// Runs `records` through the plugin and the model; output records go to `out` and dead
/// letters to `dead`, one JSON document per line each.
///
/// # Errors
/// [`RunError::Startup`] when the plugin or the model cannot be started (every problem
/// listed), or writing fails.
pub async fn replay(
    settings: Settings,
    mut records: RecordFile,
    out: &mut impl Write,
    dead: &mut impl Write,
) -> Result<ReplaySummary, RunError> {
    let plugin_settings = settings.plugin.clone();
    let plugin = tokio::task::spawn_blocking(move || start_plugin(&plugin_settings));
    let (plugin, inference) = tokio::join!(plugin, Inference::connect(&settings.model));
    let mut problems = Vec::new();
    let plugin = match plugin {
        Ok(Ok(pool)) => Some(pool),
        Ok(Err(RunError::Startup(p))) => {
            problems.extend(p);
            None
        }
        Ok(Err(other)) => return Err(other),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let inference = inference.map_err(|e| problems.push(e.to_string())).ok();
    let (Some(plugin), Some(inference)) = (plugin, inference) else {
        return Err(RunError::Startup(problems));
    };
    let disagreements =
        crate::inference::mismatches(plugin.requirements(), inference.description());
    if !disagreements.is_empty() {
        plugin.shutdown();
        return Err(RunError::Startup(disagreements));
    }
    let stages = std::sync::Arc::new(Stages::new(plugin, inference));
    let io = |e: std::io::Error| RunError::Startup(vec![format!("cannot write the results: {e}")]);
    let read = |e: std::io::Error| RunError::Startup(vec![format!("cannot read the records: {e}")]);
    let mut summary = ReplaySummary::default();
    loop {
        let batch = records
            .by_ref()
            .take(settings.pipeline.batch_size)
            .collect::<Result<Vec<InputRecord>, _>>()
            .map_err(read)?;
        if batch.is_empty() {
            break;
        }
        summary.records += batch.len() as u64;
        let outcomes = process(stages.clone(), batch)
            .await
            .map_err(|e| RunError::Startup(vec![e.to_string()]))?;
        for Outcome {
            record,
            result,
            plugin_digest,
        } in outcomes
        {
            match result {
                Ok(outputs) => {
                    for output in &outputs {
                        writeln!(out, "{}", output_line(&record, output, &plugin_digest))
                            .map_err(io)?;
                    }
                    summary.outputs += outputs.len() as u64;
                }
                Err(failure) => {
                    writeln!(dead, "{}", dead_letter_line(&record, &failure)).map_err(io)?;
                    summary.dead_letters += 1;
                }
            }
        }
    }
    match std::sync::Arc::try_unwrap(stages) {
        Ok(stages) => {
            if let Ok(pool) = std::sync::Arc::try_unwrap(stages.plugin()) {
                pool.shutdown();
            }
        }
        Err(_) => tracing::debug!("plugin still referenced after the replay"),
    }
    summary.blank_lines = records.blank_lines();
    Ok(summary)
}

/// Bytes as they go into a JSON line: the document itself when they hold one, written verbatim
/// (numbers print exactly as the plugin wrote them) when it is on one line, re-written compactly
/// when it spans several (a line holds one record); else the text, else null.
#[derive(Serialize)]
#[serde(untagged)]
enum Embedded {
    Document(Box<RawValue>),
    Reformatted(serde_json::Value),
    Text(String),
    Null,
}

fn bytes_json(bytes: Option<&[u8]>) -> Embedded {
    let Some(bytes) = bytes else {
        return Embedded::Null;
    };
    match std::str::from_utf8(bytes) {
        Ok(text) if text.trim().contains(['\n', '\r']) => serde_json::from_str(text)
            .map_or_else(|_| Embedded::Text(text.to_owned()), Embedded::Reformatted),
        Ok(text) => RawValue::from_string(text.trim().to_owned())
            .map_or_else(|_| Embedded::Text(text.to_owned()), Embedded::Document),
        Err(_) => Embedded::Text(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// One JSON line; the line types hold only strings, numbers and string-keyed maps, which always
/// serialize, but a failure still yields a line that says so rather than a panic.
fn json_line(line: &impl Serialize) -> String {
    serde_json::to_string(line).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// Bytes as a line shows them without loss: `Shown` (JSON or text, under the field's own
/// name) when they are UTF-8, else base64 under `<name>_base64`.
enum Lossless {
    Shown(Embedded),
    Base64(String),
}

fn lossless(bytes: Option<&[u8]>) -> Lossless {
    match bytes {
        Some(b) if std::str::from_utf8(b).is_err() => Lossless::Base64(base64(b)),
        other => Lossless::Shown(bytes_json(other)),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A header of an output record, in order, duplicates kept; a value that is not UTF-8 in
/// base64.
#[derive(Serialize)]
struct HeaderLine<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

impl<'a> HeaderLine<'a> {
    fn of(key: &'a str, value: &'a [u8]) -> Self {
        match std::str::from_utf8(value) {
            Ok(text) => Self {
                key,
                value: Some(text),
                value_base64: None,
            },
            Err(_) => Self {
                key,
                value: None,
                value_base64: Some(base64(value)),
            },
        }
    }
}

/// One output record of a replay, as a JSON line: the key and value as they are (JSON embedded
/// when it is JSON, text as a string, anything else in base64 under `key_base64` or
/// `value_base64`), and every header in order, the `plugin-digest` the stream adds last.
#[derive(Serialize)]
struct OutputLine<'a> {
    line: i64,
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    headers: Vec<HeaderLine<'a>>,
}

/// One dead letter of a replay, as a JSON line; the value as [`OutputLine`] has it.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    line: i64,
    reason: &'a str,
    fault: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Embedded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// The field and its `_base64` twin, one of them set.
fn fields(bytes: Option<&[u8]>) -> (Option<Embedded>, Option<String>) {
    match lossless(bytes) {
        Lossless::Shown(shown) => (Some(shown), None),
        Lossless::Base64(encoded) => (None, Some(encoded)),
    }
}

fn output_line(input: &InputRecord, output: &OutputRecord, plugin_digest: &str) -> String {
    let (key, key_base64) = match output.key.as_deref() {
        // A key is shown as text, not as JSON: keys are rarely documents.
        Some(k) => match std::str::from_utf8(k) {
            Ok(text) => (Some(Embedded::Text(text.to_owned())), None),
            Err(_) => (None, Some(base64(k))),
        },
        None => (Some(Embedded::Null), None),
    };
    let (value, value_base64) = fields(output.value.as_deref());
    let mut headers: Vec<HeaderLine<'_>> = output
        .headers
        .iter()
        .map(|h| HeaderLine::of(&h.key, &h.value))
        .collect();
    headers.push(HeaderLine::of(
        crate::sink::PLUGIN_DIGEST_HEADER,
        plugin_digest.as_bytes(),
    ));
    let line = OutputLine {
        line: input.offset,
        topic: output.topic.as_deref(),
        key,
        key_base64,
        value,
        value_base64,
        headers,
    };
    json_line(&line)
}

fn dead_letter_line(input: &InputRecord, failure: &Failure) -> String {
    let (value, value_base64) = fields(input.value.as_deref());
    let line = DeadLetterLine {
        line: input.offset,
        reason: failure.reason.code(),
        fault: failure.fault().as_str(),
        message: &failure.message,
        value,
        value_base64,
    };
    json_line(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(bytes: &[u8]) -> String {
        json_line(&bytes_json(Some(bytes)))
    }

    #[test]
    fn a_document_on_one_line_is_kept_verbatim_and_one_on_several_is_made_one_line() {
        assert_eq!(
            embedded(br#" {"score":0.10000000149}"#),
            r#"{"score":0.10000000149}"#
        );
        let pretty = embedded(b"{\n  \"id\": 7,\r\n  \"ok\": true\n}\n");
        assert_eq!(pretty, r#"{"id":7,"ok":true}"#);
        assert!(!pretty.contains('\n'));
    }

    #[test]
    fn text_that_is_not_json_stays_text() {
        assert_eq!(embedded(b"not json\nat all"), r#""not json\nat all""#);
        assert_eq!(json_line(&bytes_json(None)), "null");
    }

    fn input(value: &[u8]) -> InputRecord {
        InputRecord {
            topic: "file:in".into(),
            partition: 0,
            offset: 3,
            timestamp: None,
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
            fields: crate::contract::NO_FIELDS,
        }
    }

    #[test]
    fn an_output_line_loses_nothing() {
        let output = OutputRecord {
            key: Some(vec![0xff, 0x00]),
            value: Some(vec![0xfe, b'a']),
            headers: vec![
                crate::contract::Header {
                    key: "h".into(),
                    value: b"1".to_vec(),
                },
                crate::contract::Header {
                    key: "h".into(),
                    value: vec![0x80],
                },
            ],
            topic: None,
        };
        let line: serde_json::Value =
            serde_json::from_str(&output_line(&input(b"x"), &output, "sha256:ab")).expect("JSON");
        assert_eq!(line["key_base64"], "/wA=");
        assert_eq!(line["value_base64"], "/mE=");
        assert!(line.get("value").is_none() && line.get("key").is_none());
        assert_eq!(
            line["headers"],
            serde_json::json!([
                {"key": "h", "value": "1"},
                {"key": "h", "value_base64": "gA=="},
                {"key": "plugin-digest", "value": "sha256:ab"},
            ]),
            "in order, duplicates kept, the digest last"
        );
        let text = OutputRecord {
            key: Some(b"k".to_vec()),
            value: Some(br#"{"score": 0.5}"#.to_vec()),
            headers: Vec::new(),
            topic: Some("audit".into()),
        };
        let line: serde_json::Value =
            serde_json::from_str(&output_line(&input(b"x"), &text, "d")).expect("JSON");
        assert_eq!(
            (&line["key"], &line["value"]["score"]),
            (&"k".into(), &0.5.into())
        );
    }

    #[test]
    fn a_dead_letter_line_keeps_a_binary_value() {
        let failure = Failure::new(crate::failure::Reason::InvalidRecord, "not JSON");
        let line: serde_json::Value =
            serde_json::from_str(&dead_letter_line(&input(&[0xff]), &failure)).expect("JSON");
        assert_eq!(line["value_base64"], "/w==");
        assert_eq!(line["reason"], "invalid-record");
    }

    #[test]
    fn a_record_file_is_read_lazily_and_its_blank_lines_counted() {
        let path = std::env::temp_dir().join(format!("records-{}.jsonl", std::process::id()));
        std::fs::write(&path, b"{\"a\": 1}\n\n  \r\n\xff\n{\"b\": 2}").expect("written");
        let mut file = RecordFile::open(&path).expect("opened");
        let first = file.next().expect("a record").expect("read");
        assert_eq!(
            (first.offset, first.topic.as_ref()),
            (1, &*format!("file:records-{}.jsonl", std::process::id()))
        );
        let rest: Vec<InputRecord> = file.by_ref().map(|r| r.expect("read")).collect();
        assert_eq!(rest.iter().map(|r| r.offset).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(rest[0].value.as_deref(), Some(&[0xff][..]));
        assert_eq!(file.blank_lines(), 2);
        std::fs::remove_file(&path).expect("removed");
    }
}
