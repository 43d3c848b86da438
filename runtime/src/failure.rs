//! Why a record could not be turned into output. A [`Failure`] travels with the record to the
//! dead-letter topic, where its parts become headers: a short machine-readable reason, whose
//! fault it is, and a message for people.

use std::fmt;

/// Whose fault a failure is; dead-letter consumers route on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The record itself is bad: retrying it will fail again.
    Record,
    /// The plugin failed or broke its contract.
    Plugin,
    /// The model server refused or failed the call.
    Model,
    /// The broker failed.
    Broker,
    /// A bug or limit of the runtime itself.
    Runtime,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Record => "record",
            Fault::Plugin => "plugin",
            Fault::Model => "model",
            Fault::Broker => "broker",
            Fault::Runtime => "runtime",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A stable code, e.g. `invalid-record`, `plugin-timeout`, `inference-failed`.
    pub reason: &'static str,
    pub fault: Fault,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, fault: Fault, message: impl Into<String>) -> Self {
        Self {
            reason,
            fault,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} fault): {}",
            self.reason, self.fault, self.message
        )
    }
}
