//! The batches being processed, and which processed one may be delivered next. A batch is
//! delivered as soon as it is processed unless an earlier batch, not yet delivered, holds a
//! record it must follow (`pipeline.order`): one of the same partition, or of the same key, or
//! none at all. So a batch held up by a slow model call holds back only the records that must
//! come after it.
//!
//! Records within a batch keep their order in every mode, and the commit point does not depend
//! on the order of delivery: the offset tracker passes only finished records.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::FuturesUnordered;

use crate::config::Order;
use crate::contract::InputRecord;
use crate::stable_hash::hash;

/// What a batch must not pass: a mark per partition or per key its records have, sorted, with
/// no repeats. Two batches with a mark in common keep their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Marks(Vec<u64>);

impl Marks {
    pub(super) fn of(order: Order, records: &[InputRecord]) -> Self {
        let partition =
            |r: &InputRecord| hash(&[b"p", r.topic.as_bytes(), b"\0", &r.partition.to_le_bytes()]);
        let mut marks: Vec<u64> = match order {
            Order::Unordered => Vec::new(),
            Order::Partition => {
                // A batch holds runs of a few partitions: mark each run once.
                let mut marks = Vec::new();
                let mut last = None;
                for r in records {
                    let run = (&*r.topic, r.partition);
                    if last != Some(run) {
                        marks.push(partition(r));
                        last = Some(run);
                    }
                }
                marks
            }
            Order::Key => records
                .iter()
                .map(|r| match r.key.as_deref() {
                    Some(key) => hash(&[b"k", key]),
                    None => partition(r),
                })
                .collect(),
        };
        marks.sort_unstable();
        marks.dedup();
        Self(marks)
    }
}

/// A batch not yet delivered.
struct Waiting<T> {
    number: u64,
    marks: Marks,
    /// Its output, once processed.
    done: Option<T>,
}

/// A batch's processing, numbered in consumption order.
struct Numbered<F> {
    number: u64,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Numbered<F> {
    type Output = (u64, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let number = self.number;
        self.future.as_mut().poll(cx).map(|out| (number, out))
    }
}

/// The batches in process and the processed ones waiting to be delivered; a [`Stream`] of
/// outputs in an order `pipeline.order` allows.
pub(super) struct Sequencer<F: Future> {
    running: FuturesUnordered<Numbered<F>>,
    /// Every batch not yet delivered, in consumption order.
    waiting: VecDeque<Waiting<F::Output>>,
    next: u64,
}

impl<F: Future> Sequencer<F> {
    pub(super) fn new() -> Self {
        Self {
            running: FuturesUnordered::new(),
            waiting: VecDeque::new(),
            next: 0,
        }
    }

    /// Starts processing a batch with `marks`, after every batch pushed before it.
    pub(super) fn push(&mut self, marks: Marks, future: F) {
        let number = self.next;
        self.next += 1;
        self.waiting.push_back(Waiting {
            number,
            marks,
            done: None,
        });
        self.running.push(Numbered {
            number,
            future: Box::pin(future),
        });
    }

    /// Batches not yet delivered (in process, or processed and held back).
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The first processed batch that no earlier undelivered batch holds back, taken out.
    fn release(&mut self) -> Option<F::Output> {
        let mut held: HashSet<u64> = HashSet::new();
        let mut found = None;
        for (i, w) in self.waiting.iter().enumerate() {
            let blocked = w.marks.0.iter().any(|m| held.contains(m));
            if w.done.is_some() && !blocked {
                found = Some(i);
                break;
            }
            held.extend(w.marks.0.iter().copied());
        }
        self.waiting.remove(found?)?.done
    }
}

impl<F: Future> Stream for Sequencer<F> {
    type Item = F::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin (the futures are boxed).
        let this = self.get_mut();
        while let Poll::Ready(Some((number, out))) = Pin::new(&mut this.running).poll_next(cx) {
            if let Ok(at) = this.waiting.binary_search_by_key(&number, |w| w.number) {
                this.waiting[at].done = Some(out);
            }
        }
        if let Some(out) = this.release() {
            return Poll::Ready(Some(out));
        }
        if this.waiting.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

impl<F: Future> Unpin for Sequencer<F> {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use tokio::sync::oneshot;

    use super::*;

    fn record(partition: i32, key: Option<&str>) -> InputRecord {
        InputRecord {
            topic: Arc::from("in"),
            partition,
            offset: 0,
            timestamp: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: None,
            headers: Vec::new(),
            fields: crate::contract::NO_FIELDS,
        }
    }

    type Finish = oneshot::Sender<&'static str>;

    /// Batches of `records` pushed under `order`; each finishes when its sender is used.
    fn sequencer(
        order: Order,
        batches: &[&[(i32, Option<&str>)]],
    ) -> (
        Sequencer<impl Future<Output = &'static str> + use<>>,
        Vec<Finish>,
    ) {
        let mut s = Sequencer::new();
        let mut finish = Vec::new();
        for batch in batches {
            let records: Vec<InputRecord> = batch.iter().map(|&(p, k)| record(p, k)).collect();
            let (tx, rx) = oneshot::channel();
            s.push(Marks::of(order, &records), async move {
                rx.await.unwrap_or("dropped")
            });
            finish.push(tx);
        }
        (s, finish)
    }

    /// What the sequencer delivers now, without waiting.
    fn ready<F: Future>(s: &mut Sequencer<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        while let Some(Some(item)) = s.next().now_or_never() {
            out.push(item);
        }
        out
    }

    use futures::FutureExt;

    #[tokio::test]
    async fn by_partition_a_slow_batch_holds_back_its_partitions_only() {
        let (mut s, mut f) = sequencer(
            Order::Partition,
            &[&[(0, None), (1, None)], &[(1, None)], &[(2, None)]],
        );
        let _ = f.remove(2).send("p2");
        let _ = f.remove(1).send("p1 later");
        assert_eq!(
            ready(&mut s),
            ["p2"],
            "partition 2 passes; partition 1 waits"
        );
        assert_eq!(s.len(), 2);
        let _ = f.remove(0).send("p0 p1");
        assert_eq!(ready(&mut s), ["p0 p1", "p1 later"]);
        assert!(s.is_empty());
        assert_eq!(s.next().await, None);
    }

    #[tokio::test]
    async fn by_key_other_keys_pass_and_keyless_records_keep_their_partitions_order() {
        let (mut s, mut f) = sequencer(
            Order::Key,
            &[
                &[(0, Some("a")), (0, None)],
                &[(0, Some("b"))],
                &[(0, Some("a"))],
                &[(0, None)],
                &[(1, None)],
            ],
        );
        for sender in f.drain(1..).rev() {
            let _ = sender.send("later");
        }
        assert_eq!(
            ready(&mut s),
            ["later", "later"],
            "key b and partition 1's keyless record pass; key a and partition 0's keyless wait"
        );
        assert_eq!(s.len(), 3);
        let _ = f.remove(0).send("first");
        assert_eq!(ready(&mut s), ["first", "later", "later"]);
    }

    #[tokio::test]
    async fn unordered_delivers_each_batch_when_it_is_processed() {
        let (mut s, mut f) = sequencer(Order::Unordered, &[&[(0, Some("a"))], &[(0, Some("a"))]]);
        let _ = f.remove(1).send("second");
        assert_eq!(ready(&mut s), ["second"]);
        let _ = f.remove(0).send("first");
        assert_eq!(ready(&mut s), ["first"]);
    }

    #[test]
    fn marks_name_each_partition_or_key_once() {
        let records = [record(0, Some("a")), record(0, Some("a")), record(1, None)];
        assert_eq!(Marks::of(Order::Partition, &records).0.len(), 2);
        assert_eq!(Marks::of(Order::Key, &records).0.len(), 2);
        assert_eq!(Marks::of(Order::Unordered, &records), Marks::default());
        assert_ne!(
            Marks::of(Order::Key, &[record(0, None)]),
            Marks::of(Order::Key, &[record(1, None)]),
        );
    }
}
