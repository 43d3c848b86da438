//! Re-emits each record's key and value unchanged to the output topic, without calling the
//! model. It measures what the runtime costs around a plugin (consume, cross into WebAssembly,
//! produce, commit): the ceiling the benchmark compares every real pipeline with.

use streaminfer_sdk::{Config, Decision, Output, Plugin, PluginError, Record, export_plugin};

/// The plugin; it has no settings.
#[derive(Debug)]
pub struct Passthrough;

impl Plugin for Passthrough {
    type State = ();

    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn prepare(&self, record: &Record) -> Result<Decision<()>, PluginError> {
        Ok(Decision::Emit(vec![Output::new(
            record.key.clone(),
            record.value.clone(),
        )]))
    }
}

export_plugin!(Passthrough);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_come_out_as_they_went_in() {
        let record = Record {
            topic: "in".to_owned(),
            partition: 2,
            offset: 9,
            timestamp: None,
            key: Some(b"k".to_vec()),
            value: Some(b"\x00not json\xff".to_vec()),
            headers: Vec::new(),
            fields: Ok(Vec::new()),
        };
        let Ok(Decision::Emit(outputs)) = Passthrough.prepare(&record) else {
            panic!("expected records to emit");
        };
        assert_eq!(outputs, [Output::new(record.key, record.value)]);
    }
}
