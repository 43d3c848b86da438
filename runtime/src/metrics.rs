//! Counters of what the pipeline did, cheap enough for the hot path (relaxed atomics), logged
//! periodically and returned as a [`Summary`] when the runtime stops; and the runtime's own
//! latency, from the moment the reader takes a record from the consumer to the moment its
//! outputs are handed to the producer, and to the moment the broker acknowledges them. The
//! broker's own delays (fetch waits, acknowledgement) are outside the first figure, so it is
//! what a record costs inside the runtime whatever broker it runs against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counters {
    consumed: AtomicU64,
    produced: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    model_calls: AtomicU64,
    model_failures: AtomicU64,
    transactions: AtomicU64,
    aborted: AtomicU64,
    to_produce: Histogram,
    to_acknowledge: Histogram,
}

/// Sub-buckets per power of two: a quantile is read to within 2^(1/4), about 19%.
const STEPS: u32 = 4;
/// Buckets from 1 µs up to 2^40 µs (about 12 days); longer latencies land in the last one.
const BUCKETS: usize = 40 * STEPS as usize;

/// A latency histogram with logarithmic buckets over microseconds; lock-free, fixed size.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
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
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
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
