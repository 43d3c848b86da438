//! `replay`: records from a file through the plugin and the configured model, as the pipeline
//! runs them, the outputs and dead letters written as JSON lines.

use std::io::Write;

use super::lines::{dead_letter_line, output_line};
use super::{RecordFile, start_plugin};
use crate::config::Settings;
use crate::contract::InputRecord;
use crate::error::RunError;
use crate::inference::Inference;
use crate::pipeline::{Outcome, Stages, process};

/// Counts of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub records: u64,
    pub outputs: u64,
    pub dead_letters: u64,
    /// Lines of the input that held no record.
    pub blank_lines: u64,
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
