//! Counters of what the pipeline did, cheap enough for the hot path (relaxed atomics), logged
//! periodically and returned as a [`Summary`] when the runtime stops; and the runtime's own
//! latency, from the moment the reader takes a record from the consumer to the moment its
//! outputs are handed to the producer, and to the moment the broker acknowledges them. The
//! broker's own delays (fetch waits, acknowledgement) are outside the first figure, so it is
//! what a record costs inside the runtime whatever broker it runs against.
//!
//! A leaf: the parts count into it, and [`crate::endpoint`] reads it for operators.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::failure::Reason;

#[derive(Debug)]
pub struct Counters {
    consumed: AtomicU64,
    produced: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    model_calls: AtomicU64,
    model_failures: AtomicU64,
    transactions: AtomicU64,
    aborted: AtomicU64,
    /// Records consumed but not yet finished, as the pipeline last counted them.
    in_flight: AtomicU64,
    /// When the pipeline's loop last turned, in milliseconds since `born`; [`NEVER`] before.
    last_turn: AtomicU64,
    born: std::time::Instant,
    /// Dead letters by [`Reason`], in the order of [`Reason::ALL`].
    dead_lettered_by: [AtomicU64; Reason::ALL.len()],
    pub(crate) to_produce: Histogram,
    pub(crate) to_acknowledge: Histogram,
    /// Records per batch handed to the plugin.
    pub(crate) batch_records: Counts,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            model_calls: AtomicU64::new(0),
            model_failures: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_turn: AtomicU64::new(NEVER),
            born: std::time::Instant::now(),
            dead_lettered_by: std::array::from_fn(|_| AtomicU64::new(0)),
            to_produce: Histogram::default(),
            to_acknowledge: Histogram::default(),
            batch_records: Counts::default(),
        }
    }
}

/// `last_turn` before the first turn.
const NEVER: u64 = u64::MAX;

/// Powers of two a [`Counts`] histogram has bounds at: 1, 2, 4, … 4096, then the rest.
const COUNT_POWERS: usize = 13;

/// A histogram of counts (records, rows) with bounds at powers of two; lock-free.
#[derive(Debug)]
pub(crate) struct Counts {
    /// `counts[k]` holds values in (2^(k-1), 2^k]; the last one everything above 2^12.
    counts: [AtomicU64; COUNT_POWERS + 1],
    sum: AtomicU64,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl Counts {
    pub(crate) fn record(&self, n: u64) {
        // The smallest k with n <= 2^k: 0 for 0 and 1, 1 for 2, 2 for 3 and 4, ...
        let k = (64 - n.saturating_sub(1).leading_zeros()) as usize;
        self.counts[k.min(COUNT_POWERS)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn exported(&self) -> Exported {
        let mut buckets: Vec<(f64, u64)> = (0..COUNT_POWERS)
            .map(|k| ((1u64 << k) as f64, self.counts[k].load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::MAX, self.counts[COUNT_POWERS].load(Ordering::Relaxed)));
        Exported {
            count: buckets.iter().map(|b| b.1).sum(),
            buckets,
            sum: self.sum.load(Ordering::Relaxed) as f64,
        }
    }
}

/// Sub-buckets per power of two: a quantile is read to within 2^(1/4), about 19%.
const STEPS: u32 = 4;
/// Buckets from 1 µs up to 2^40 µs (about 12 days); longer latencies land in the last one.
const BUCKETS: usize = 40 * STEPS as usize;

/// Powers of two of microseconds exported as Prometheus bucket bounds: 2^7 µs (128 µs) to
/// 2^25 µs (about 34 s).
const EXPORTED_POWERS: std::ops::RangeInclusive<u32> = 7..=25;

/// A latency histogram with logarithmic buckets over microseconds; lock-free, fixed size.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS],
    /// Every latency recorded, summed, in microseconds.
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// A histogram as Prometheus has it: upper bounds in seconds with the count in each bucket
/// (not cumulative; the last bound is `f64::MAX`, written `+Inf`), the sum in seconds, the count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exported {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    /// Latencies under 4 µs share the first bucket used (4 µs); the pipeline's are milliseconds.
    fn bucket(micros: u64) -> usize {
        let micros = micros.max(4);
        let power = 63 - micros.leading_zeros();
        // The two bits below the leading one pick the quarter of the power of two.
        let fraction = (micros >> (power - 2)) & 0b11;
        ((power * STEPS) as usize + fraction as usize).min(BUCKETS - 1)
    }

    /// The largest latency bucket `index` holds.
    fn upper(index: usize) -> Duration {
        let power = index as u32 / STEPS;
        let fraction = u64::from(index as u32 % STEPS);
        let base = 1u64 << power;
        Duration::from_micros(base + ((base * (fraction + 1)) >> 2) - 1)
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(micros, Ordering::Relaxed);
    }

    /// The histogram with bounds at powers of two of microseconds, in seconds. Each bound is
    /// where this histogram's own buckets meet, so no bucket is split: a bound counts every
    /// latency below it.
    pub(crate) fn exported(&self) -> Exported {
        let mut buckets = Vec::with_capacity(EXPORTED_POWERS.clone().count() + 1);
        let mut next = 0;
        let mut count = 0;
        for power in EXPORTED_POWERS {
            let end = (power * STEPS) as usize;
            let n: u64 = self.counts[next..end]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            buckets.push(((1u64 << power) as f64 / 1e6, n));
            count += n;
            next = end;
        }
        let rest: u64 = self.counts[next..]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        buckets.push((f64::MAX, rest));
        Exported {
            buckets,
            sum: self.sum.load(Ordering::Relaxed) as f64 / 1e6,
            count: count + rest,
        }
    }

    pub(crate) fn quantiles(&self) -> Quantiles {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            if total == 0 {
                return None;
            }
            let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            counts.iter().enumerate().find_map(|(i, &n)| {
                seen += n;
                (seen >= rank).then(|| Self::upper(i))
            })
        };
        Quantiles {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// A latency for the log, in milliseconds with one decimal; -1 when nothing was measured yet.
pub fn millis(latency: Option<Duration>) -> f64 {
    latency.map_or(-1.0, |d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

/// Latency quantiles, each the upper bound of its bucket; `None` before any record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
}

/// What the pipeline did, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read from the input topic.
    pub consumed: u64,
    /// Output records acknowledged-to-be by the producer (enqueued).
    pub produced: u64,
    /// Input records that produced nothing by the plugin's choice.
    pub skipped: u64,
    /// Input records sent to the dead-letter topic.
    pub dead_lettered: u64,
    pub model_calls: u64,
    pub model_failures: u64,
    /// Transactions committed (exactly-once mode).
    pub transactions: u64,
    /// Transactions aborted, their records read again (exactly-once mode).
    pub aborted: u64,
    /// From taking a record from the consumer to handing its outputs to the producer.
    pub to_produce: Quantiles,
    /// From taking a record from the consumer to the broker's acknowledgement of its outputs.
    pub to_acknowledge: Quantiles,
}

impl Counters {
    pub fn consumed(&self, n: u64) {
        self.consumed.fetch_add(n, Ordering::Relaxed);
    }
    pub fn produced(&self, n: u64) {
        self.produced.fetch_add(n, Ordering::Relaxed);
    }
    pub fn skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dead_lettered(&self, reason: Reason) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.dead_lettered_by[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
    /// Dead letters so far for each reason, in the order of [`Reason::ALL`].
    pub fn dead_lettered_by(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|&r| (r, self.dead_lettered_by[r as usize].load(Ordering::Relaxed)))
    }
    /// The pipeline's loop is turning (called at each progress line, every 10 s), with
    /// `records` consumed but not finished: its heartbeat.
    pub fn turned(&self, records: usize) {
        self.in_flight.store(records as u64, Ordering::Relaxed);
        let at = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_turn.store(at, Ordering::Relaxed);
    }
    /// How long ago the pipeline's loop last turned; `None` before it first did.
    pub fn since_last_turn(&self) -> Option<Duration> {
        match self.last_turn.load(Ordering::Relaxed) {
            NEVER => None,
            at => Some(
                self.born
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at)),
            ),
        }
    }
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// A batch of `records` went to the plugin.
    pub fn batch(&self, records: usize) {
        self.batch_records.record(records as u64);
    }
    /// A record's outputs (or its dead letter) went to the producer this long after it arrived.
    pub fn produced_after(&self, latency: Duration) {
        self.to_produce.record(latency);
    }
    /// A record was finished (acknowledged) this long after it arrived.
    pub fn acknowledged_after(&self, latency: Duration) {
        self.to_acknowledge.record(latency);
    }
    pub fn model_calls(&self, calls: u64, failures: u64) {
        self.model_calls.fetch_add(calls, Ordering::Relaxed);
        self.model_failures.fetch_add(failures, Ordering::Relaxed);
    }

    /// A transaction committed.
    pub fn committed(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
    /// A transaction was aborted.
    pub fn aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        Summary {
            consumed: self.consumed.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            model_calls: self.model_calls.load(Ordering::Relaxed),
            model_failures: self.model_failures.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
            to_produce: self.to_produce.quantiles(),
            to_acknowledge: self.to_acknowledge.quantiles(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_what_they_hold() {
        let mut last = 0;
        for micros in 4..100_000u64 {
            let bucket = Histogram::bucket(micros);
            assert!(bucket >= last, "{micros} µs went back to bucket {bucket}");
            last = bucket;
            let upper = Histogram::upper(bucket).as_micros() as u64;
            assert!(
                upper >= micros,
                "{micros} µs above its bucket's bound {upper}"
            );
            assert!(
                upper as f64 <= micros as f64 * 1.25 + 1.0,
                "{micros} µs: bound {upper} too loose"
            );
        }
    }

    #[test]
    fn exported_buckets_count_what_lies_below_each_bound() {
        let h = Histogram::default();
        for micros in [100, 200, 1_000, 1_000, 50_000_000] {
            h.record(Duration::from_micros(micros));
        }
        let e = h.exported();
        assert_eq!(e.count, 5);
        assert!((e.sum - 50.0023).abs() < 1e-9, "{e:?}");
        assert_eq!(e.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        let below = |bound: f64| -> u64 {
            e.buckets
                .iter()
                .take_while(|b| b.0 <= bound)
                .map(|b| b.1)
                .sum()
        };
        assert_eq!(below(0.000128), 1, "100 µs is under 128 µs");
        assert_eq!(below(0.000256), 2);
        assert_eq!(below(0.001024), 4);
        assert_eq!(below(33.6), 4, "50 s is past the last bound");
        assert_eq!(e.buckets.last().map(|b| (b.0, b.1)), Some((f64::MAX, 1)));
    }

    #[test]
    fn counts_land_at_or_below_their_bound() {
        let c = Counts::default();
        for n in [1, 2, 3, 4, 5, 256, 257, 5000] {
            c.record(n);
        }
        let e = c.exported();
        let at = |bound: f64| e.buckets.iter().find(|b| b.0 == bound).map(|b| b.1);
        assert_eq!(at(1.0), Some(1));
        assert_eq!(at(2.0), Some(1));
        assert_eq!(at(4.0), Some(2), "3 and 4");
        assert_eq!(at(8.0), Some(1));
        assert_eq!(at(256.0), Some(1), "a full batch of 256 is at most 256");
        assert_eq!(at(512.0), Some(1));
        assert_eq!(at(f64::MAX), Some(1), "5000 is past 4096");
        assert_eq!((e.count, e.sum), (8, 5528.0));
    }

    #[test]
    fn quantiles_read_the_distribution() {
        let h = Histogram::default();
        assert_eq!(h.quantiles(), Quantiles::default());
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let q = h.quantiles();
        let within = |d: Option<Duration>, ms: f64| {
            let d = d.expect("recorded").as_secs_f64() * 1e3;
            d >= ms && d <= ms * 1.25
        };
        assert!(within(q.p50, 50.0), "{q:?}");
        assert!(within(q.p99, 99.0), "{q:?}");
        assert!(within(q.max, 100.0), "{q:?}");
        h.record(Duration::from_secs(u64::MAX / 4));
        assert_eq!(
            h.quantiles().max,
            Some(Histogram::upper(BUCKETS - 1)),
            "a huge latency lands in the last bucket"
        );
    }
}
