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

mod check;
mod lines;
mod replay;

use std::io::BufRead;
use std::path::Path;

pub use check::check;
pub use replay::{ReplaySummary, replay};

use crate::config::PluginSettings;
use crate::contract::InputRecord;
use crate::error::RunError;
use crate::plugin::{PluginHost, PluginPool};

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

#[cfg(test)]
mod tests {
    use super::*;

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
