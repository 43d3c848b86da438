//! What can go wrong producing: a record refused, the brokers gone, a transaction that cannot
//! commit; and which of those a retry or a dead letter mends.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long to wait before retrying a transactional call librdkafka calls retriable (a commit
/// still in progress, a coordinator moving).
const TRANSACTION_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Why a record could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot reach the Kafka brokers at {brokers} within {timeout:?}: {source}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
    #[error("output topic {topic:?} does not exist on {brokers}")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot produce to {topic:?}: {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the broker did not acknowledge a record for {topic:?}: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot start transactions as {id:?}: {source}")]
    InitTransactions {
        id: String,
        #[source]
        source: KafkaError,
    },
}

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The transaction must be aborted and its records read again; the producer goes on.
    #[error("the transaction must be aborted: {0}")]
    Abortable(#[source] KafkaError),
    /// The producer cannot go on: another instance took over its transactional id (fenced), or
    /// the brokers refused transactions for good.
    #[error("the transactional producer cannot go on: {0}")]
    Fatal(#[source] KafkaError),
    /// Another producer with the same transactional id took over.
    #[error("another instance took over this one's transactional id (fenced): {0}")]
    Fenced(#[source] KafkaError),
    /// The commit was sent but its outcome did not come back within the time given: the
    /// broker may still commit the transaction, or abort it when it times out. The producer can
    /// neither abort it nor begin another, so the run stops; outputs and input offsets commit or
    /// abort together, and the next start reads on from whichever it was.
    #[error(
        "the transaction's commit did not finish within {0:?}: it may still go through, or the broker aborts it; outputs and input offsets go together either way, and the next start reads on from there"
    )]
    Undecided(Duration),
    /// The abort itself failed: the brokers are gone, or (a broker that closes the connection
    /// rather than say so) another instance fenced this one.
    #[error(
        "cannot abort the transaction (the brokers unreachable, or another instance with the same transactional id fenced this one): {0}"
    )]
    AbortFailed(#[source] KafkaError),
}

impl TransactionError {
    pub(super) fn of(error: KafkaError) -> Self {
        // librdkafka calls some fencings abortable; aborting then waits for a coordinator that
        // no longer answers this producer.
        match &error {
            _ if is_fencing(&error) => Self::Fenced(error),
            KafkaError::Transaction(e) if e.is_fatal() => Self::Fatal(error),
            _ => Self::Abortable(error),
        }
    }
}

/// Whether `error` is one librdkafka says a retry may mend (a call that timed out, a
/// coordinator moving): for a commit, one whose outcome is not known yet.
pub(super) fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_retriable())
}

/// Whether `error` says another producer with the same transactional id took over. (An
/// `INVALID_PRODUCER_EPOCH` alone can also mean the broker timed the transaction out, which an
/// abort mends; librdkafka marks it fatal when it is a fencing.)
fn is_fencing(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::ProducerFenced | C::Fenced)
    )
}

/// Calls `step` until it succeeds, fails in a way a retry cannot mend, or `until` passes.
pub(super) fn retrying(
    until: std::time::Instant,
    step: impl Fn(Duration) -> Result<(), KafkaError>,
) -> Result<(), TransactionError> {
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match step(left) {
            Ok(()) => return Ok(()),
            Err(error) if is_retriable(&error) && !left.is_zero() => {
                tracing::debug!(%error, "transaction step failed; retrying");
                std::thread::sleep(TRANSACTION_RETRY_BACKOFF.min(left));
            }
            Err(error) => return Err(TransactionError::of(error)),
        }
    }
}

impl SinkError {
    /// Whether the broker (or its client) refused this one record for good: too large, a
    /// topic that does not exist or may not be written, a record it calls invalid. Such a
    /// record's input is dead-lettered; any other failure (the brokers unreachable until
    /// `message.timeout.ms`) stops the run, since every record would fail alike.
    pub fn refused_for_good(&self) -> bool {
        use RDKafkaErrorCode as C;
        let (Self::Produce { source, .. } | Self::Delivery { source, .. }) = self else {
            return false;
        };
        matches!(
            source.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::MessageBatchTooLarge
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::PolicyViolation
                    | C::UnknownTopic
                    | C::UnknownPartition
                    | C::UnknownTopicOrPartition
            )
        )
    }

    /// Whether another producer with the same transactional id took over: nothing this one
    /// sends can commit any more.
    pub fn fenced(&self) -> bool {
        match self {
            Self::Produce { source, .. } | Self::Delivery { source, .. } => is_fencing(source),
            _ => false,
        }
    }
}
