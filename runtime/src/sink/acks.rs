//! Acknowledgements: the producer's delivery callback, on librdkafka's polling thread, hands
//! each record's token and outcome to the pipeline through one queue. No future, channel or
//! allocation per record: the callback pushes onto a vector the pipeline swaps out whole, and
//! wakes it only when the queue was empty.

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::Notify;

use crate::kafka::KafkaContext;

/// What the broker said of one produced record: the token it was sent with, and, if librdkafka
/// gave up on it, why and the topic it was for.
#[derive(Debug)]
pub struct Ack {
    pub token: usize,
    pub error: Option<(KafkaError, String)>,
}

/// Acknowledgements not yet taken by the pipeline.
#[derive(Debug, Default)]
pub struct Acks {
    queue: Mutex<Vec<Ack>>,
    ready: Notify,
}

impl Acks {
    pub(crate) fn push(&self, ack: Ack) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push(ack);
        let first = queue.len() == 1;
        drop(queue);
        if first {
            self.ready.notify_one();
        }
    }

    /// Moves every acknowledgement in into `into` (which should be empty: it is swapped, so
    /// that the two vectors' allocations are reused in turn).
    pub fn take(&self, into: &mut Vec<Ack>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *queue, into);
    }

    /// Resolves when an acknowledgement may have come in since the last call.
    pub async fn arrived(&self) {
        self.ready.notified().await;
    }
}

/// The producer's client context: librdkafka's logs as the other clients have them, and each
/// delivery report into [`Acks`].
#[derive(Debug, Default)]
pub struct SinkContext {
    kafka: KafkaContext,
    pub(super) acks: Arc<Acks>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.kafka.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let error = match result {
            Ok(_) => None,
            Err((error, message)) => Some((error.clone(), message.topic().to_owned())),
        };
        self.acks.push(Ack { token, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn the_first_ack_wakes_the_taker_and_all_are_taken_at_once() {
        let acks = Acks::default();
        assert!(acks.arrived().now_or_never().is_none(), "nothing in yet");
        for token in 0..3 {
            acks.push(Ack { token, error: None });
        }
        assert!(acks.arrived().now_or_never().is_some(), "woken once");
        assert!(
            acks.arrived().now_or_never().is_none(),
            "only the first push wakes"
        );
        let mut taken = Vec::new();
        acks.take(&mut taken);
        assert_eq!(taken.iter().map(|a| a.token).collect::<Vec<_>>(), [0, 1, 2]);
        taken.clear();
        acks.take(&mut taken);
        assert!(taken.is_empty());
        acks.push(Ack {
            token: 9,
            error: None,
        });
        assert!(
            acks.arrived().now_or_never().is_some(),
            "an empty queue wakes again"
        );
    }
}
