//! `check`: a plugin loaded, checked against the contract and configured, and what it would do
//! with each input record, without a broker or a model.

use std::io::Write;

use super::start_plugin;
use crate::config::PluginSettings;
use crate::contract::{Decision, InputRecord, ModelCall, Tensor, TensorData};
use crate::error::RunError;

/// Elements of a tensor shown by `check`; the rest is counted.
const SHOWN_ELEMENTS: usize = 6;

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
