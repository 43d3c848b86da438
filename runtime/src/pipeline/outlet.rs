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
