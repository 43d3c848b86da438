//! Counters of what the pipeline did, cheap enough for the hot path (relaxed atomics), logged
//! periodically and returned as a [`Summary`] when the runtime stops.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    consumed: AtomicU64,
    produced: AtomicU64,
    skipped: AtomicU64,
    dead_lettered: AtomicU64,
    model_calls: AtomicU64,
    model_failures: AtomicU64,
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
    pub fn model_calls(&self, calls: u64, failures: u64) {
        self.model_calls.fetch_add(calls, Ordering::Relaxed);
        self.model_failures.fetch_add(failures, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        Summary {
            consumed: self.consumed.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            model_calls: self.model_calls.load(Ordering::Relaxed),
            model_failures: self.model_failures.load(Ordering::Relaxed),
        }
    }
}
