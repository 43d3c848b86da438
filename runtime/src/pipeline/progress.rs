//! Progress: the line logged every [`REPORT_EVERY`], the watchdog that notices a stream
//! consuming nothing while records wait, and the quota that keeps per-record warnings from
//! flooding the log.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::input::Input;
use super::process::Stages;
use crate::metrics::millis;

/// How often the counters are logged.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(10);
/// How long nothing may be consumed, with nothing in flight and the reader not pausing, before
/// the brokers are asked whether records wait (and a stall is reported if they do).
const STALL_AFTER: Duration = Duration::from_secs(30);

/// The progress line's state: the counts at the last line, for the rates, and the watchdog.
#[derive(Debug)]
pub(super) struct Progress {
    at: Instant,
    consumed: u64,
    produced: u64,
    watch: Watchdog,
}

impl Progress {
    pub(super) fn new(stages: &Stages) -> Self {
        let s = stages.counters.summary();
        let now = Instant::now();
        Self {
            at: now,
            consumed: s.consumed,
            produced: s.produced,
            watch: Watchdog::new(now),
        }
    }

    /// Logs the progress line, with `open` records in flight, and asks the brokers whether
    /// records wait if nothing was consumed for long while nothing was in flight.
    pub(super) fn report(
        &mut self,
        stages: &Stages,
        source: &Arc<impl Input>,
        open: usize,
        draining: bool,
    ) {
        // The heartbeat /healthz reads, and the in-flight gauge: at this pace, not per turn, so
        // that the hot path pays nothing for them.
        stages.counters.turned(open);
        let s = stages.counters.summary();
        let now = Instant::now();
        let seconds = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let in_per_s = ((s.consumed - self.consumed) as f64 / seconds).round();
        let out_per_s = ((s.produced - self.produced) as f64 / seconds).round();
        (self.at, self.consumed, self.produced) = (now, s.consumed, s.produced);
        tracing::info!(
            consumed = s.consumed,
            produced = s.produced,
            dead_lettered = s.dead_lettered,
            in_per_s,
            out_per_s,
            skipped = s.skipped,
            model_calls = s.model_calls,
            model_failures = s.model_failures,
            open,
            produce_p50_ms = millis(s.to_produce.p50),
            produce_p99_ms = millis(s.to_produce.p99),
            ack_p99_ms = millis(s.to_acknowledge.p99),
            model_p99_ms = millis(stages.inference.latency().p99),
            model_concurrency = stages.inference.concurrency(),
            model_holding = stages.inference.is_holding(),
            "progress"
        );
        let idle = open == 0 && !source.is_paused() && !draining;
        if let Some(idle_for) = self.watch.suspects(s.consumed, idle, now) {
            check_stall(source.clone(), idle_for);
        }
    }
}

/// Asks the brokers whether records wait while nothing is consumed, and says so if they do; on a
/// blocking thread of its own, so the pipeline's loop never waits for the answer.
fn check_stall(source: Arc<impl Input>, idle: Duration) {
    tokio::task::spawn_blocking(move || match source.waiting(Duration::from_secs(5)) {
        Some(waiting) if waiting > 0 => tracing::warn!(
            waiting,
            idle_s = idle.as_secs(),
            assignments = source.assignments(),
            "no progress: records wait in the assigned partitions but none were consumed"
        ),
        _ => tracing::debug!(idle_s = idle.as_secs(), "idle: no records waiting"),
    });
}

/// At most `per_second` events a second let through; the others counted, and the count handed
/// to the next one let through.
#[derive(Debug)]
pub(super) struct Quota {
    per_second: u32,
    /// The current second's start, events let through in it, and events held back since the
    /// last one let through.
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl Quota {
    pub(super) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new((None, 0, 0)),
        }
    }

    /// `Some(held back since the last one)` when this event may be logged, `None` otherwise.
    pub(super) fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (since, passed, held) = &mut *state;
        if since.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            *since = Some(now);
            *passed = 0;
        }
        if *passed >= self.per_second {
            *held += 1;
            return None;
        }
        *passed += 1;
        Some(std::mem::take(held))
    }
}

/// Notices a stream that consumes nothing while it could: nothing in flight, the reader not
/// pausing, and no record consumed for [`STALL_AFTER`]. Whether records wait is then asked of
/// the brokers; this only says when to ask, at most once per [`STALL_AFTER`].
#[derive(Debug)]
struct Watchdog {
    consumed: u64,
    since: Instant,
    asked: Option<Instant>,
}

impl Watchdog {
    fn new(now: Instant) -> Self {
        Self {
            consumed: 0,
            since: now,
            asked: None,
        }
    }

    /// Given the consumed count and whether the pipeline is idle now: how long nothing has
    /// been consumed, when it is time to ask the brokers.
    fn suspects(&mut self, consumed: u64, idle: bool, now: Instant) -> Option<Duration> {
        if consumed != self.consumed || !idle {
            self.consumed = consumed;
            self.since = now;
            self.asked = None;
            return None;
        }
        let idle_for = now.duration_since(self.since);
        let due = idle_for >= STALL_AFTER
            && self
                .asked
                .is_none_or(|at| now.duration_since(at) >= STALL_AFTER);
        if due {
            self.asked = Some(now);
        }
        due.then_some(idle_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_asks_after_a_quiet_spell_and_then_once_per_spell() {
        let start = Instant::now();
        let mut w = Watchdog::new(start);
        assert_eq!(w.suspects(0, true, start + STALL_AFTER / 2), None);
        let due = start + STALL_AFTER;
        assert_eq!(w.suspects(0, true, due), Some(STALL_AFTER));
        assert_eq!(
            w.suspects(0, true, due + STALL_AFTER / 2),
            None,
            "asked already"
        );
        assert_eq!(
            w.suspects(0, true, due + STALL_AFTER),
            Some(STALL_AFTER * 2),
            "asked again a spell later"
        );
    }

    #[test]
    fn the_watchdog_forgets_the_spell_on_progress_or_work_in_flight() {
        let start = Instant::now();
        let mut w = Watchdog::new(start);
        let later = start + STALL_AFTER;
        assert_eq!(w.suspects(5, true, later), None, "records were consumed");
        assert_eq!(w.suspects(5, true, later + STALL_AFTER / 2), None);
        assert_eq!(
            w.suspects(5, false, later + STALL_AFTER),
            None,
            "work in flight"
        );
        assert_eq!(
            w.suspects(5, true, later + STALL_AFTER * 2),
            Some(STALL_AFTER)
        );
    }

    #[test]
    fn a_quota_lets_through_its_share_a_second_and_counts_the_rest() {
        let start = Instant::now();
        let quota = Quota::new(3);
        let first: Vec<Option<u64>> = (0..10).map(|_| quota.admit(start)).collect();
        assert_eq!(first[..3], [Some(0), Some(0), Some(0)]);
        assert!(first[3..].iter().all(Option::is_none));
        let next = start + Duration::from_secs(1);
        assert_eq!(
            quota.admit(next),
            Some(7),
            "the held back are told with the next one"
        );
        assert_eq!(quota.admit(next), Some(0));
    }
}
