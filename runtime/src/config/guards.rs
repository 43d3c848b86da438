//! The librdkafka properties a configuration may not set, or only to values that keep the
//! delivery guarantee.

/// librdkafka properties the runtime sets itself (no value allowed), or whose other values would
/// silently weaken the delivery guarantee (only the values listed are allowed).
pub(super) const CONSUMER_GUARDS: &[Guard] = &[
    Guard::owned("bootstrap.servers"),
    Guard::owned("group.id"),
    Guard::owned("enable.auto.offset.store"),
    Guard::owned("enable.partition.eof"),
    Guard {
        key: "enable.auto.commit",
        allowed: &["true"],
        why: "stored offsets would be committed only at shutdown, so a crash would read \
              everything since the start again",
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
        allowed: &["read_committed"],
        why: "records of aborted upstream transactions would be read, and their outputs \
              committed",
    },
];
/// `acks` and its librdkafka alias `request.required.acks` are one setting.
pub(super) const ACKS: Guard = Guard {
    key: "acks",
    allowed: &["all", "-1"],
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
        allowed: &["true"],
        why: "the producer's retries could then duplicate or reorder outputs",
    },
    Guard::owned("transactional.id"),
];

/// A pass-through property the runtime constrains.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) key: &'static str,
    /// The values a user may set, compared without case; none: the runtime owns the property.
    pub(crate) allowed: &'static [&'static str],
    /// Why other values are refused.
    pub(crate) why: &'static str,
}

impl Guard {
    const fn owned(key: &'static str) -> Self {
        Self {
            key,
            allowed: &[],
            why: "",
        }
    }
}
