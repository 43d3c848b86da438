//! Records from a file instead of Kafka, for plugin development and batch scoring:
//!
//! - [`check`]: loads a plugin, checks it against the contract, configures it, and with input
//!   records shows what it would do with each (the model request it would send, the records it
//!   would emit, or why it refuses the record). No broker, no model.
//! - [`replay`]: runs records through the plugin and the configured model, exactly as the
//!   pipeline does (same batching, retries and dead-letter reasons), and writes the output
//!   records as JSON lines. No broker.
//!
//! An input file holds one record value per line (usually a JSON document); blank lines are
//! skipped. Records are numbered by line (the `offset`), from topic `file:<name>`, partition 0.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::RunError;
use crate::config::{PluginSettings, Settings};
use crate::contract::{Decision, InputRecord, ModelCall, OutputRecord, Tensor, TensorData};
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
}

/// Reads one record per non-blank line of `path`.
///
/// # Errors
/// The I/O error, with the file named by the caller.
pub fn read_records(path: &Path) -> std::io::Result<Vec<InputRecord>> {
    let file = std::fs::File::open(path)?;
    let topic: std::sync::Arc<str> = format!(
        "file:{}",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    )
    .into();
    let mut records = Vec::new();
    // Lines are bytes, not text: a record need not be UTF-8 (a poison record rarely is).
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        records.push(InputRecord {
            topic: topic.clone(),
            partition: 0,
            offset: n as i64 + 1,
            timestamp: None,
            key: None,
            value: Some(line),
            headers: Vec::new(),
        });
    }
    Ok(records)
}

fn start_plugin(settings: &PluginSettings) -> Result<PluginPool, RunError> {
    let host = PluginHost::new().map_err(|e| RunError::Startup(vec![e.to_string()]))?;
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
    records: Vec<InputRecord>,
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
    let mut summary = ReplaySummary::default();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let batch: Vec<InputRecord> = records
            .by_ref()
            .take(settings.pipeline.batch_size)
            .collect();
        summary.records += batch.len() as u64;
        let outcomes = process(stages.clone(), batch)
            .await
            .map_err(|e| RunError::Startup(vec![e.to_string()]))?;
        for Outcome { record, result, .. } in outcomes {
            match result {
                Ok(outputs) => {
                    for output in &outputs {
                        writeln!(out, "{}", output_line(&record, output)).map_err(io)?;
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

/// One output record of a replay, as a JSON line.
#[derive(Serialize)]
struct OutputLine<'a> {
    line: i64,
    topic: Option<&'a str>,
    key: Option<String>,
    value: Embedded,
    headers: BTreeMap<&'a str, String>,
}

/// One dead letter of a replay, as a JSON line.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    line: i64,
    reason: &'a str,
    fault: &'a str,
    message: &'a str,
    value: Embedded,
}

fn output_line(input: &InputRecord, output: &OutputRecord) -> String {
    let line = OutputLine {
        line: input.offset,
        topic: output.topic.as_deref(),
        key: output
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        value: bytes_json(output.value.as_deref()),
        headers: output
            .headers
            .iter()
            .map(|h| {
                (
                    h.key.as_str(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect(),
    };
    json_line(&line)
}

fn dead_letter_line(input: &InputRecord, failure: &Failure) -> String {
    let line = DeadLetterLine {
        line: input.offset,
        reason: failure.reason.code(),
        fault: failure.fault().as_str(),
        message: &failure.message,
        value: bytes_json(input.value.as_deref()),
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
    fn text_that_is_not_json_stays_text_and_binary_is_shown_lossily() {
        assert_eq!(embedded(b"not json\nat all"), r#""not json\nat all""#);
        assert_eq!(embedded(&[0xff, b'a']), "\"\u{fffd}a\"");
        assert_eq!(json_line(&bytes_json(None)), "null");
    }
}
