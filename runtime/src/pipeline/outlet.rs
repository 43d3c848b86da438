//! Where delivery sends records: the Kafka [`Sink`], or a scripted one in tests. The trait is
//! the sink's sending half and nothing more, so that delivery can be tested without a broker.

use std::sync::Arc;

use crate::contract::{InputRecord, OutputRecord};
use crate::failure::Failure;
use crate::kafka::headers::RawHeader;
use crate::sink::{Acks, Form, Sent, Sink, SinkError};

/// Where records are sent.
pub(super) trait Outlet {
    /// See [`Sink::send`].
    fn send(
        &self,
        record: &OutputRecord,
        extra: &[(&str, &[u8])],
        token: usize,
    ) -> Result<Sent, SinkError>;
    /// See [`Sink::send_dead_letter`].
    fn send_dead_letter(
        &self,
        input: &InputRecord,
        exact: Option<&[RawHeader]>,
        failure: &Failure,
        plugin_digest: &str,
        form: Form,
        token: usize,
    ) -> Result<Sent, SinkError>;
    /// Where the acknowledgements of what was sent come in.
    fn acks(&self) -> &Arc<Acks>;
}

impl Outlet for Sink {
    fn send(
        &self,
        record: &OutputRecord,
        extra: &[(&str, &[u8])],
        token: usize,
    ) -> Result<Sent, SinkError> {
        Sink::send(self, record, extra, token)
    }

    fn send_dead_letter(
        &self,
        input: &InputRecord,
        exact: Option<&[RawHeader]>,
        failure: &Failure,
        plugin_digest: &str,
        form: Form,
        token: usize,
    ) -> Result<Sent, SinkError> {
        Sink::send_dead_letter(self, input, exact, failure, plugin_digest, form, token)
    }

    fn acks(&self) -> &Arc<Acks> {
        Sink::acks(self)
    }
}

/// A sink for tests: answers from a script (queued when the script is out), notes what was
/// queued as (token, value) with dead letters as `dead letter <form> <reason>`, and, when told,
/// acknowledges each at once (the first with an error if one is set).
#[cfg(test)]
pub(super) mod scripted {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use rdkafka::error::KafkaError;

    use super::Outlet;
    use crate::contract::{InputRecord, OutputRecord};
    use crate::failure::Failure;
    use crate::kafka::headers::RawHeader;
    use crate::sink::{Ack, Acks, Form, Sent, SinkError};

    /// What a scripted sink queued: (token, value or dead letter).
    pub(in crate::pipeline) type Log = Arc<Mutex<Vec<(usize, String)>>>;

    #[derive(Debug, Default)]
    pub(in crate::pipeline) struct Scripted {
        answers: Mutex<VecDeque<Result<Sent, SinkError>>>,
        pub(in crate::pipeline) log: Log,
        pub(in crate::pipeline) acks: Arc<Acks>,
        at_once: bool,
        first_error: Mutex<Option<KafkaError>>,
    }

    impl Scripted {
        pub(in crate::pipeline) fn answering(answers: Vec<Result<Sent, SinkError>>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                ..Self::default()
            }
        }

        /// Acknowledges what it queues at once, the first with `error` if given.
        pub(in crate::pipeline) fn acknowledging(error: Option<KafkaError>) -> Self {
            Self {
                at_once: true,
                first_error: Mutex::new(error),
                ..Self::default()
            }
        }

        pub(in crate::pipeline) fn sent(&self) -> Vec<(usize, String)> {
            self.log.lock().expect("log").clone()
        }

        fn answer(&self, token: usize, what: String) -> Result<Sent, SinkError> {
            let answer = self.answers.lock().expect("script").pop_front();
            let answer = answer.unwrap_or(Ok(Sent::Queued));
            if matches!(answer, Ok(Sent::Queued)) {
                self.log.lock().expect("log").push((token, what));
                if self.at_once {
                    let error = self.first_error.lock().expect("error").take();
                    let error = error.map(|e| (e, "out".to_owned()));
                    self.acks.push(Ack { token, error });
                }
            }
            answer
        }
    }

    impl Outlet for Scripted {
        fn send(
            &self,
            record: &OutputRecord,
            _: &[(&str, &[u8])],
            token: usize,
        ) -> Result<Sent, SinkError> {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            self.answer(token, value.into_owned())
        }

        fn send_dead_letter(
            &self,
            _: &InputRecord,
            _: Option<&[RawHeader]>,
            failure: &Failure,
            _: &str,
            form: Form,
            token: usize,
        ) -> Result<Sent, SinkError> {
            self.answer(
                token,
                format!("dead letter {form:?} {}", failure.reason.code()),
            )
        }

        fn acks(&self) -> &Arc<Acks> {
            &self.acks
        }
    }
}
