//! Why a record could not be turned into output. A [`Failure`] travels with the record to the
//! dead-letter topic, where its parts become headers: a [`Reason`] code, the [`Fault`] that code
//! always carries, and a message for people.
//!
//! [`Reason`] is the one list of dead-letter reasons: every place that dead-letters a record names
//! one of its variants, and the README's table of reasons is checked against [`Reason::ALL`].

use std::fmt;

/// Whose fault a failure is; dead-letter consumers route on it. Broker and runtime failures
/// never dead-letter a record (they pause the stream or stop the run), so they have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The record itself is bad: retrying it will fail again.
    Record,
    /// The plugin failed or broke its contract.
    Plugin,
    /// The model server refused or failed the call.
    Model,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Record => "record",
            Fault::Plugin => "plugin",
            Fault::Model => "model",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares [`Reason`] from one list, so that its code, fault, description and [`Reason::ALL`]
/// cannot drift apart.
macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $code:literal, $fault:ident, $when:literal;)+) => {
        /// Every reason a record can be dead-lettered for. The code ([`Reason::code`]) is the
        /// value of the `dead-letter-reason` header and stable across releases.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)+
        }

        impl Reason {
            /// Every reason, in the order the README lists them.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// The `dead-letter-reason` header's value.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)+
                }
            }

            /// Whose fault a record dead-lettered for this reason is.
            pub fn fault(self) -> Fault {
                match self {
                    $(Reason::$variant => Fault::$fault,)+
                }
            }

            /// When a record is dead-lettered for this reason, in the README's words.
            pub fn when(self) -> &'static str {
                match self {
                    $(Reason::$variant => $when,)+
                }
            }
        }
    };
}

reasons! {
    /// A header key is not UTF-8.
    InvalidHeader => "invalid-header", Record,
        "a header key is not UTF-8 (the contract takes text keys); dead-lettered before the plugin, headers byte for byte";
    /// The plugin refused the record (`plugin-error::invalid-record`).
    InvalidRecord => "invalid-record", Record,
        "the plugin refuses the record (not JSON, a field missing)";
    /// The plugin failed on the record (`plugin-error::failed`).
    PluginError => "plugin-error", Plugin,
        "the plugin fails on the record for any other reason";
    /// The plugin returned no result, or a wrong number of results, for the record.
    PluginContract => "plugin-contract", Plugin,
        "the plugin returns no result, or too many, for the record";
    /// The plugin trapped on the record alone, on a fresh instance.
    PluginTrap => "plugin-trap", Plugin,
        "the plugin traps on the record alone, on a fresh instance";
    /// The plugin went over its memory limit on the record alone.
    PluginMemory => "plugin-memory", Plugin,
        "the plugin exceeds `plugin.memory-limit` on the record alone";
    /// The plugin went over its wall-clock limit on the record alone.
    PluginTimeout => "plugin-timeout", Plugin,
        "the plugin exceeds `plugin.call-timeout` on the record alone";
    /// The plugin emitted more records, or more bytes, for the record than allowed.
    OutputLimit => "output-limit", Plugin,
        "the plugin makes more than `plugin.max-outputs` records or `plugin.max-output-bytes` bytes from the record";
    /// The plugin named a topic it may not write to.
    TopicNotAllowed => "topic-not-allowed", Plugin,
        "the plugin names a topic not in `plugin.allowed-topics` for one of the record's outputs";
    /// The plugin built a request no model can take.
    InvalidRequest => "invalid-request", Plugin,
        "the plugin builds a request no model can take: a shape that does not match the data, a negative or overflowing dimension, a duplicate input, or a name, element type or rank other than it declared";
    /// The producer or the broker refused one of the record's outputs for good.
    OutputRefused => "output-refused", Plugin,
        "the producer or the broker refuses one of the record's outputs for good (over `message.max.bytes`, an unknown or forbidden topic)";
    /// The model's answer for the record cannot be read.
    InvalidResponse => "invalid-response", Model,
        "the model's answer cannot be read, by the runtime or by the plugin";
    /// The server has no such model, version or signature.
    ModelNotFound => "model-not-found", Model,
        "the server has no such model, version or signature";
    /// The server refused the request's contents (gRPC `INVALID_ARGUMENT`).
    ModelInvalidArgument => "model-invalid-argument", Model,
        "the server refuses the request's contents";
    /// The server cannot serve the request in its present state (gRPC `FAILED_PRECONDITION`).
    ModelFailedPrecondition => "model-failed-precondition", Model,
        "the server cannot serve the request in its present state";
    /// The server stayed unreachable through every retry.
    ModelUnavailable => "model-unavailable", Model,
        "the server stays unreachable through every retry";
    /// The server stayed overloaded through every retry (gRPC `RESOURCE_EXHAUSTED`).
    ModelOverloaded => "model-overloaded", Model,
        "the server stays overloaded through every retry";
    /// The call ran out of `model.timeout` on every try.
    ModelTimeout => "model-timeout", Model,
        "the call runs out of `model.timeout` on every try";
    /// Any other model failure.
    ModelError => "model-error", Model,
        "any other model failure (an internal error, an embedded model that cannot run the batch)";
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why one record went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// Whose fault it is, as the reason says.
    pub fn fault(&self) -> Fault {
        self.reason.fault()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} fault): {}",
            self.reason,
            self.fault(),
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The README's table of reasons, as it must read.
    fn table() -> String {
        let mut table = String::from("| reason | fault | when |\n| --- | --- | --- |\n");
        for &reason in Reason::ALL {
            table.push_str(&format!(
                "| `{}` | `{}` | {} |\n",
                reason.code(),
                reason.fault(),
                reason.when()
            ));
        }
        table
    }

    #[test]
    fn every_reason_has_its_own_code() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn the_docs_list_every_reason_with_its_fault() {
        let expected = table();
        for (file, text) in [
            ("README.md", include_str!("../../README.md")),
            ("docs/plugins.md", include_str!("../../docs/plugins.md")),
        ] {
            assert!(
                text.contains(&expected),
                "{file}'s table of dead-letter reasons is out of date; it must read:\n\n{expected}"
            );
        }
    }
}
