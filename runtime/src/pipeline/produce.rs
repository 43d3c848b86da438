//! Delivery: each processed record's outputs (or its dead letter) into the producer, in
//! consumption order, and the broker's acknowledgements back to the record they belong to.
//!
//! A record in flight has a token, its place in a queue of records by production order, given
//! to librdkafka with every record it sends for it; acknowledgements come back in bulk with
//! those tokens (see `sink::Acks`). A record is settled when everything it sent is
//! acknowledged: finished, or, if the broker refused something of it for good, to be produced
//! again as a dead letter. Tokens are never reused, so an acknowledgement of a record forgotten
//! after an abort finds nothing.
//!
//! When librdkafka's queue is full the record being sent waits, with what it sent so far, and
//! nothing after it is sent before it: order is kept and nothing is sent twice.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::outlet::Outlet;
use super::process::{Outcome, Taken};
use super::progress::Quota;
use crate::contract::InputRecord;
use crate::failure::{Failure, Reason};
use crate::metrics::Counters;
use crate::sink::{Ack, Acks, Form, PLUGIN_DIGEST_HEADER, Sent, Sink, SinkError};

/// Dead letters logged one by one per second at most; the rest are counted in the next line
/// logged (`unlogged`) and in the progress line.
const DEAD_LETTERS_LOGGED_PER_SECOND: u32 = 10;

/// How far a record in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing of it sent yet.
    Waiting,
    /// Its outputs from this index on are still to be sent.
    Outputs(usize),
    /// Its dead letter is still to be sent.
    Letter,
    /// Everything sent; acknowledgements may still be awaited.
    Sent,
}

/// A record whose outputs or dead letter are being produced.
#[derive(Debug)]
struct InFlight {
    outcome: Outcome,
    taken: Taken,
    stage: Stage,
    /// Acknowledgements still to come.
    waiting: usize,
    /// Whether what was sent is its dead letter.
    letter: bool,
    /// The first refusal among its acknowledgements.
    refused: Option<SinkError>,
}

/// Where a finished record stands in its partition, to advance the commit point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) generation: u64,
    pub(super) epoch: u64,
}

/// What became of a record whose acknowledgements are all in.
#[derive(Debug)]
pub(super) enum Settled {
    Finished(Position),
    /// In a transaction, the broker refused a record of it for good: the transaction cannot
    /// commit, and the record is to be dead-lettered when read again.
    Refused(Box<(Outcome, Taken)>),
}

/// What [`Delivery::send`] must ask before a record's first send, and tell after.
pub(super) trait Gate {
    /// Whether a new record may go into the producer now.
    fn open(&self) -> bool;
    /// The record is about to be sent.
    ///
    /// # Errors
    /// A transaction that cannot begin.
    fn entering(
        &mut self,
        record: &InputRecord,
        generation: u64,
    ) -> Result<(), super::PipelineError>;
}

/// The records in the producer, by token.
#[derive(Debug)]
pub(super) struct Delivery<O = Sink> {
    sink: O,
    counters: Arc<Counters>,
    /// In a transaction, a refused output is not followed by a dead letter in the same one.
    transactional: bool,
    /// Records in flight; `flight[i]` has token `first + i`. Settled ones leave a hole until
    /// those before them settle.
    flight: VecDeque<Option<InFlight>>,
    first: usize,
    /// Tokens of records not wholly sent, in order.
    unsent: VecDeque<usize>,
    /// Whether librdkafka's queue was full at the last send.
    full: bool,
    /// Acknowledgements taken, reused between drains.
    acks: Vec<Ack>,
    /// Bounds the per-record dead-letter warnings, so that a flood of poison records cannot
    /// flood the log.
    dead_letter_log: Quota,
}

impl<O: Outlet> Delivery<O> {
    pub(super) fn new(sink: O, counters: Arc<Counters>, transactional: bool) -> Self {
        Self {
            sink,
            counters,
            transactional,
            flight: VecDeque::new(),
            first: 0,
            unsent: VecDeque::new(),
            full: false,
            acks: Vec::new(),
            dead_letter_log: Quota::new(DEAD_LETTERS_LOGGED_PER_SECOND),
        }
    }

    /// Queues a processed record for production, after every record queued before it.
    pub(super) fn push(&mut self, outcome: Outcome, taken: Taken) {
        let token = self.first + self.flight.len();
        self.flight.push_back(Some(InFlight {
            outcome,
            taken,
            stage: Stage::Waiting,
            waiting: 0,
            letter: false,
            refused: None,
        }));
        self.unsent.push_back(token);
    }

    /// Whether records wait to be sent.
    pub(super) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Whether a record is half sent: a transaction may not be committed under it.
    pub(super) fn is_sending(&self) -> bool {
        self.unsent
            .front()
            .and_then(|&token| self.entry(token))
            .is_some_and(|e| e.stage != Stage::Waiting)
    }

    /// Whether the last send found librdkafka's queue full.
    pub(super) fn is_full(&self) -> bool {
        self.full
    }

    /// Whether nothing is in flight: every record sent and settled.
    pub(super) fn is_empty(&self) -> bool {
        self.flight.is_empty()
    }

    /// Sends records in order while the producer takes them and `gate` lets new ones in.
    /// Records with nothing to send settle at once, into `settled`.
    ///
    /// # Errors
    /// What the producer refused that no dead letter mends, or what `gate` could not do.
    pub(super) fn send(
        &mut self,
        gate: &mut impl Gate,
        settled: &mut Vec<Settled>,
    ) -> Result<(), super::PipelineError> {
        self.full = false;
        // One clock reading for every record this call sends: they leave together.
        let now = Instant::now();
        while let Some(&token) = self.unsent.front() {
            let Some(entry) = self.entry_mut(token) else {
                self.unsent.pop_front();
                continue;
            };
            if entry.stage == Stage::Waiting {
                if !gate.open() {
                    break;
                }
                gate.entering(&entry.outcome.record, entry.taken.generation)?;
            }
            match self.send_on(token, now)? {
                Sent::Full => {
                    self.full = true;
                    break;
                }
                Sent::Queued => {
                    self.unsent.pop_front();
                }
            }
            if let Some(s) = self.settle_if_done(token, now) {
                settled.push(s);
            }
        }
        Ok(())
    }

    /// Sends what is left of one record, until all is sent or the queue is full.
    fn send_on(&mut self, token: usize, now: Instant) -> Result<Sent, SinkError> {
        let Self {
            sink,
            counters,
            transactional,
            flight,
            first,
            dead_letter_log,
            ..
        } = self;
        let Some(Some(entry)) = token.checked_sub(*first).and_then(|i| flight.get_mut(i)) else {
            return Ok(Sent::Queued);
        };
        loop {
            match entry.stage {
                Stage::Sent => return Ok(Sent::Queued),
                Stage::Waiting => {
                    entry.stage = match entry.outcome.result {
                        Ok(_) => Stage::Outputs(0),
                        Err(_) => Stage::Letter,
                    };
                }
                Stage::Outputs(next) => {
                    let Ok(outputs) = &mut entry.outcome.result else {
                        entry.stage = Stage::Letter;
                        continue;
                    };
                    let Some(output) = outputs.get(next) else {
                        if outputs.is_empty() {
                            counters.skipped();
                        }
                        counters.produced(outputs.len() as u64);
                        counters.produced_after(now.saturating_duration_since(entry.taken.arrived));
                        // librdkafka holds copies now.
                        *outputs = Vec::new();
                        entry.stage = Stage::Sent;
                        continue;
                    };
                    let digest = [(PLUGIN_DIGEST_HEADER, entry.outcome.plugin_digest.as_bytes())];
                    match sink.send(output, &digest, token) {
                        Ok(Sent::Queued) => {
                            entry.waiting += 1;
                            entry.stage = Stage::Outputs(next + 1);
                        }
                        Ok(Sent::Full) => return Ok(Sent::Full),
                        // The broker client refuses this record for good (too large, a topic
                        // the plugin named that does not exist): the input is dead-lettered
                        // with the reason; outputs already sent stay sent (at-least-once). In a
                        // transaction they would commit beside the dead letter: it is aborted
                        // instead, and the record dead-lettered alone when read again.
                        Err(error) if error.refused_for_good() => {
                            counters.produced(next as u64);
                            entry.outcome.result = Err(output_refused(&error));
                            if *transactional && next > 0 {
                                entry.refused = Some(error);
                                entry.stage = Stage::Sent;
                            } else {
                                entry.stage = Stage::Letter;
                            }
                        }
                        Err(other) => return Err(other),
                    }
                }
                Stage::Letter => {
                    let Err(failure) = &entry.outcome.result else {
                        entry.stage = Stage::Sent;
                        continue;
                    };
                    let r = &entry.outcome.record;
                    if !entry.letter
                        && let Some(unlogged) = dead_letter_log.admit(Instant::now())
                    {
                        tracing::warn!(
                            topic = %r.topic, partition = r.partition, offset = r.offset,
                            reason = failure.reason.code(), fault = %failure.fault(),
                            error = %failure.message, unlogged, "record sent to the dead-letter topic"
                        );
                    }
                    entry.letter = true;
                    let exact = entry.taken.exact_headers.as_deref();
                    let digest = &entry.outcome.plugin_digest;
                    match sink.send_dead_letter(r, exact, failure, digest, entry.taken.form, token)
                    {
                        Ok(Sent::Queued) => {
                            entry.waiting += 1;
                            counters.dead_lettered(failure.reason);
                            counters
                                .produced_after(now.saturating_duration_since(entry.taken.arrived));
                            entry.stage = Stage::Sent;
                        }
                        Ok(Sent::Full) => return Ok(Sent::Full),
                        Err(error)
                            if error.refused_for_good() && entry.taken.form == Form::Full =>
                        {
                            tracing::warn!(%error, "dead letter refused: sending it without the input's data");
                            entry.taken.form = Form::Minimal;
                        }
                        Err(other) => return Err(other),
                    }
                }
            }
        }
    }

    /// Takes the acknowledgements in and settles the records they complete, into `settled`.
    /// A record the broker refused goes again as a dead letter (outside a transaction).
    ///
    /// # Errors
    /// A delivery failure no dead letter mends (the brokers gone past `message.timeout.ms`).
    pub(super) fn acknowledge(&mut self, settled: &mut Vec<Settled>) -> Result<(), SinkError> {
        let mut acks = std::mem::take(&mut self.acks);
        self.sink.acks().take(&mut acks);
        let now = Instant::now();
        let mut failed = None;
        for ack in acks.drain(..) {
            let Some(entry) = self.entry_mut(ack.token) else {
                continue;
            };
            entry.waiting = entry.waiting.saturating_sub(1);
            if let Some((source, topic)) = ack.error {
                let error = SinkError::Delivery { topic, source };
                // Refused by the broker for good: an output's input goes to the dead-letter
                // topic; a dead letter goes again with nothing of its input. Anything else
                // stops the run, since every record would fail alike.
                let mendable =
                    error.refused_for_good() && (!entry.letter || entry.taken.form == Form::Full);
                if !mendable {
                    failed.get_or_insert(error);
                    continue;
                }
                entry.refused.get_or_insert(error);
            }
            if let Some(s) = self.settle_if_done(ack.token, now) {
                settled.push(s);
            }
        }
        self.acks = acks;
        failed.map_or(Ok(()), Err)
    }

    /// Settles the record of `token` if everything it sent is acknowledged: finished (it
    /// leaves the queue), or refused (it leaves in a transaction, and is queued again as a dead
    /// letter outside one).
    fn settle_if_done(&mut self, token: usize, now: Instant) -> Option<Settled> {
        let transactional = self.transactional;
        let entry = self.entry_mut(token)?;
        // In a transaction a refusal dooms it at once: the record leaves before the rest of its
        // acknowledgements, so that no commit can start with it inside.
        let doomed = transactional && entry.refused.is_some();
        if entry.stage != Stage::Sent || (entry.waiting > 0 && !doomed) {
            return None;
        }
        let Some(error) = entry.refused.take() else {
            let entry = self.remove(token)?;
            self.counters
                .acknowledged_after(now.saturating_duration_since(entry.taken.arrived));
            let r = entry.outcome.record;
            return Some(Settled::Finished(Position {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                generation: entry.taken.generation,
                epoch: entry.taken.epoch,
            }));
        };
        tracing::warn!(%error, "the broker refused a record it had been given");
        // A refused output's input is dead-lettered whole; a refused dead letter goes again with
        // nothing of its input.
        if entry.outcome.result.is_ok() {
            entry.outcome.result = Err(output_refused(&error));
        }
        entry.taken.form = if entry.letter {
            Form::Minimal
        } else {
            Form::Full
        };
        if transactional {
            let entry = self.remove(token)?;
            return Some(Settled::Refused(Box::new((entry.outcome, entry.taken))));
        }
        entry.stage = Stage::Letter;
        entry.letter = false;
        // Before anything not yet sent: it is the oldest record waiting.
        self.unsent.push_front(token);
        None
    }

    /// Whether acknowledgements are still to come for a record in flight.
    pub(super) fn is_awaiting(&self) -> bool {
        self.flight.iter().flatten().any(|e| e.waiting > 0)
    }

    /// Resolves when acknowledgements may have come in.
    pub(super) async fn arrived(&self) {
        self.sink.acks().arrived().await;
    }

    /// Where acknowledgements come in.
    pub(super) fn acks(&self) -> Arc<Acks> {
        self.sink.acks().clone()
    }

    /// Forgets every record in flight (their transaction was aborted; they are read again).
    /// Acknowledgements still to come for them find nothing.
    pub(super) fn forget(&mut self) {
        self.first += self.flight.len();
        self.flight.clear();
        self.unsent.clear();
        self.full = false;
    }

    fn entry(&self, token: usize) -> Option<&InFlight> {
        self.flight.get(token.checked_sub(self.first)?)?.as_ref()
    }

    fn entry_mut(&mut self, token: usize) -> Option<&mut InFlight> {
        self.flight
            .get_mut(token.checked_sub(self.first)?)?
            .as_mut()
    }

    fn remove(&mut self, token: usize) -> Option<InFlight> {
        let taken = self.flight.get_mut(token.checked_sub(self.first)?)?.take();
        while let Some(None) = self.flight.front() {
            self.flight.pop_front();
            self.first += 1;
        }
        taken
    }
}

/// Why an input is dead-lettered when the broker refuses one of its outputs.
fn output_refused(error: &SinkError) -> Failure {
    Failure::new(
        Reason::OutputRefused,
        format!("an output record was refused: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    use super::super::outlet::scripted::Scripted;
    use super::*;
    use crate::contract::OutputRecord;

    /// A gate that is always open and notes the offsets that entered.
    #[derive(Default)]
    struct Entered(Vec<i64>);

    impl Gate for Entered {
        fn open(&self) -> bool {
            true
        }

        fn entering(
            &mut self,
            record: &InputRecord,
            _: u64,
        ) -> Result<(), super::super::PipelineError> {
            self.0.push(record.offset);
            Ok(())
        }
    }

    fn delivery(sink: Scripted, transactional: bool) -> Delivery<Scripted> {
        Delivery::new(sink, Arc::new(Counters::default()), transactional)
    }

    /// A record at `offset` with one output per value.
    fn processed(offset: i64, values: &[&str]) -> (Outcome, Taken) {
        let record = InputRecord {
            topic: Arc::from("in"),
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            fields: crate::contract::NO_FIELDS,
        };
        let outputs = values
            .iter()
            .map(|v| OutputRecord {
                key: None,
                value: Some(v.as_bytes().to_vec()),
                headers: Vec::new(),
                topic: None,
            })
            .collect();
        let outcome = Outcome {
            record,
            result: Ok(outputs),
            plugin_digest: Arc::from("digest"),
        };
        let taken = Taken {
            arrived: Instant::now(),
            generation: 1,
            epoch: 0,
            exact_headers: None,
            refused: None,
            form: Form::Full,
        };
        (outcome, taken)
    }

    fn too_large() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    }

    fn refused() -> SinkError {
        SinkError::Produce {
            topic: "out".into(),
            source: too_large(),
        }
    }

    fn ack(delivery: &Delivery<Scripted>, token: usize, error: Option<KafkaError>) {
        let error = error.map(|e| (e, "out".to_owned()));
        delivery.sink.acks.push(Ack { token, error });
    }

    fn finished(settled: &[Settled]) -> Vec<i64> {
        settled
            .iter()
            .filter_map(|s| match s {
                Settled::Finished(p) => Some(p.offset),
                Settled::Refused(_) => None,
            })
            .collect()
    }

    fn sent(what: &[(usize, &str)]) -> Vec<(usize, String)> {
        what.iter().map(|(t, w)| (*t, (*w).to_owned())).collect()
    }

    #[test]
    fn records_settle_when_all_their_acknowledgements_are_in_whatever_their_order() {
        let mut d = delivery(Scripted::default(), false);
        let mut gate = Entered::default();
        let mut settled = Vec::new();
        for (offset, values) in [(10, &["a", "b"][..]), (11, &[][..]), (12, &["c"][..])] {
            let (o, t) = processed(offset, values);
            d.push(o, t);
        }
        d.send(&mut gate, &mut settled).expect("sent");
        assert_eq!(gate.0, [10, 11, 12]);
        assert_eq!(d.sink.sent(), sent(&[(0, "a"), (0, "b"), (2, "c")]));
        assert_eq!(finished(&settled), [11], "nothing to send: settled at once");
        settled.clear();
        ack(&d, 2, None);
        ack(&d, 0, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert_eq!(finished(&settled), [12], "record 10 awaits its second ack");
        settled.clear();
        ack(&d, 0, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert_eq!(finished(&settled), [10]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_full_queue_holds_back_the_record_and_all_after_it_and_sends_nothing_twice() {
        let sink = Scripted::answering(vec![Ok(Sent::Queued), Ok(Sent::Full)]);
        let mut d = delivery(sink, false);
        let mut gate = Entered::default();
        let mut settled = Vec::new();
        let (o, t) = processed(0, &["a", "b"]);
        d.push(o, t);
        let (o, t) = processed(1, &["c"]);
        d.push(o, t);
        d.send(&mut gate, &mut settled).expect("sent");
        assert!(d.is_full() && d.is_sending() && d.has_unsent());
        assert_eq!(d.sink.sent(), sent(&[(0, "a")]));
        assert_eq!(gate.0, [0], "the record after the full one has not entered");
        d.send(&mut gate, &mut settled).expect("sent");
        assert!(!d.is_full() && !d.has_unsent());
        assert_eq!(d.sink.sent(), sent(&[(0, "a"), (0, "b"), (1, "c")]));
        assert_eq!(gate.0, [0, 1], "each record enters once");
    }

    #[test]
    fn an_output_refused_on_enqueue_dead_letters_its_input_outside_a_transaction() {
        let sink = Scripted::answering(vec![Ok(Sent::Queued), Err(refused())]);
        let mut d = delivery(sink, false);
        let mut settled = Vec::new();
        let (o, t) = processed(7, &["a", "huge"]);
        d.push(o, t);
        d.send(&mut Entered::default(), &mut settled).expect("sent");
        assert_eq!(
            d.sink.sent(),
            sent(&[(0, "a"), (0, "dead letter Full output-refused")])
        );
        assert!(settled.is_empty());
        ack(&d, 0, None);
        ack(&d, 0, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert_eq!(finished(&settled), [7]);
    }

    #[test]
    fn in_a_transaction_a_record_whose_second_output_is_refused_settles_at_once() {
        let sink = Scripted::answering(vec![Ok(Sent::Queued), Err(refused())]);
        let mut d = delivery(sink, true);
        let mut settled = Vec::new();
        let (o, t) = processed(7, &["a", "huge"]);
        d.push(o, t);
        d.send(&mut Entered::default(), &mut settled).expect("sent");
        // Before its first output's acknowledgement: no commit may start with it inside.
        let [Settled::Refused(again)] = &settled[..] else {
            panic!("expected the record refused, got {settled:?}");
        };
        let failure = again.0.result.as_ref().expect_err("refused");
        assert_eq!(failure.reason, Reason::OutputRefused);
        assert_eq!(
            d.sink.sent(),
            sent(&[(0, "a")]),
            "no dead letter inside the transaction"
        );
        assert!(!d.is_sending());
    }

    #[test]
    fn a_refusal_in_an_acknowledgement_sends_the_dead_letter_before_anything_unsent() {
        let mut d = delivery(Scripted::default(), false);
        let mut settled = Vec::new();
        let mut gate = Entered::default();
        let (o, t) = processed(0, &["a"]);
        d.push(o, t);
        d.send(&mut gate, &mut settled).expect("sent");
        let (o, t) = processed(1, &["b"]);
        d.push(o, t);
        ack(&d, 0, Some(too_large()));
        d.acknowledge(&mut settled).expect("acknowledged");
        assert!(settled.is_empty());
        d.send(&mut gate, &mut settled).expect("sent");
        assert_eq!(
            d.sink.sent(),
            sent(&[(0, "a"), (0, "dead letter Full output-refused"), (1, "b")])
        );
        // The dead letter refused too: it goes again without the input's data.
        ack(&d, 0, Some(too_large()));
        d.acknowledge(&mut settled).expect("acknowledged");
        d.send(&mut gate, &mut settled).expect("sent");
        assert_eq!(
            d.sink.sent()[3],
            (0, "dead letter Minimal output-refused".into())
        );
        ack(&d, 0, None);
        ack(&d, 1, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert_eq!(finished(&settled), [0, 1]);
        assert_eq!(gate.0, [0, 1]);
    }

    #[test]
    fn acknowledgements_of_forgotten_records_find_nothing() {
        let mut d = delivery(Scripted::default(), true);
        let mut settled = Vec::new();
        let mut gate = Entered::default();
        let (o, t) = processed(5, &["a"]);
        d.push(o, t);
        d.send(&mut gate, &mut settled).expect("sent");
        assert!(d.is_awaiting());
        d.forget();
        assert!(d.is_empty() && !d.is_awaiting());
        let (o, t) = processed(5, &["a"]);
        d.push(o, t);
        d.send(&mut gate, &mut settled).expect("sent");
        ack(&d, 0, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert!(
            settled.is_empty(),
            "token 0 belonged to the forgotten record"
        );
        ack(&d, 1, None);
        d.acknowledge(&mut settled).expect("acknowledged");
        assert_eq!(finished(&settled), [5]);
    }

    #[test]
    fn a_delivery_failure_no_dead_letter_mends_is_an_error() {
        let mut d = delivery(Scripted::default(), false);
        let mut settled = Vec::new();
        let (o, t) = processed(0, &["a"]);
        d.push(o, t);
        d.send(&mut Entered::default(), &mut settled).expect("sent");
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        ack(&d, 0, Some(timed_out));
        assert!(d.acknowledge(&mut settled).is_err());
        assert!(settled.is_empty());
    }
}
