//! The librdkafka properties a configuration may not set, or only to values that keep the
//! delivery guarantee.

/// Why auto-commit must stay on (and periodic) in at-least-once mode.
const COMMITS_AT_SHUTDOWN: &str = "stored offsets would be committed only at shutdown, so a \
                                   crash would read everything since the start again";

/// librdkafka properties the runtime sets itself (no value allowed), or whose other values would
/// silently weaken the delivery guarantee.
pub(super) const CONSUMER_GUARDS: &[Guard] = &[
    Guard::owned("bootstrap.servers"),
    Guard::owned("group.id"),
    Guard::owned("enable.auto.offset.store"),
    Guard::owned("enable.partition.eof"),
    Guard {
        key: "enable.auto.commit",
        rule: Rule::OneOf(&["true"]),
        why: COMMITS_AT_SHUTDOWN,
    },
    Guard {
        key: "auto.commit.interval.ms",
        rule: Rule::Owned,
        why: "set kafka.commit-interval instead",
    },
];
/// In exactly-once mode offsets are committed by the transactions alone, and input records of
/// transactions that were aborted upstream must not be read.
pub(super) const CONSUMER_GUARDS_EXACTLY_ONCE: &[Guard] = &[
    Guard::owned("bootstrap.servers"),
    Guard::owned("group.id"),
    Guard::owned("enable.auto.offset.store"),
    Guard::owned("enable.partition.eof"),
    Guard::owned("enable.auto.commit"),
    Guard {
        key: "isolation.level",
        rule: Rule::OneOf(&["read_committed"]),
        why: "records of aborted upstream transactions would be read, and their outputs \
              committed",
    },
];
/// `acks` and its librdkafka alias `request.required.acks` are one setting.
pub(super) const ACKS: Guard = Guard {
    key: "acks",
    rule: Rule::OneOf(&["all", "-1"]),
    why: "an output acknowledged by the leader alone (or not at all) can be lost while its \
          input's offset is committed",
};
pub(super) const PRODUCER_GUARDS: &[Guard] = &[
    Guard::owned("bootstrap.servers"),
    ACKS,
    Guard {
        key: "request.required.acks",
        ..ACKS
    },
    Guard {
        key: "enable.idempotence",
        rule: Rule::OneOf(&["true"]),
        why: "the producer's retries could then duplicate or reorder outputs",
    },
    Guard::owned("transactional.id"),
];

/// A pass-through property the runtime constrains.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) key: &'static str,
    pub(crate) rule: Rule,
    /// Why other values are refused.
    pub(crate) why: &'static str,
}

/// Which values of a guarded property a configuration may set.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// None: the runtime sets the property itself.
    Owned,
    /// These, compared without case.
    OneOf(&'static [&'static str]),
}

impl Guard {
    const fn owned(key: &'static str) -> Self {
        Self {
            key,
            rule: Rule::Owned,
            why: "",
        }
    }

    /// Whether `value` keeps the guarantee; `None` when no value may be set at all.
    pub(crate) fn allows(&self, value: &str) -> Option<bool> {
        match self.rule {
            Rule::Owned => None,
            Rule::OneOf(values) => Some(values.iter().any(|a| a.eq_ignore_ascii_case(value))),
        }
    }

    /// The values allowed, as a message says them.
    pub(crate) fn allowed(&self) -> String {
        match self.rule {
            Rule::Owned => "none".to_owned(),
            Rule::OneOf(values) => values.join(", "),
        }
    }
}
