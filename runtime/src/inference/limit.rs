//! Adaptive concurrency: how many model calls may be in flight, found by AIMD. While answers
//! come back about as fast as the fastest seen, the limit grows by about one per window of calls;
//! when latency rises past twice that baseline it shrinks by a tenth, and on an explicit overload
//! signal (`RESOURCE_EXHAUSTED`, a missed deadline) it halves. It never leaves
//! `[min-in-flight, max-in-flight]`. The current limit is reported in the progress log.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Latency above this multiple of the baseline counts as a sign of queueing.
const TOLERANCE: f64 = 2.0;
/// How fast the baseline follows latencies above it (so that a lasting shift is learnt).
const BASELINE_DRIFT: f64 = 0.01;

/// How a call ended, as far as the limit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered (whatever the answer) after this long.
    Answered(Duration),
    /// The server said it is overloaded, or the call missed its deadline.
    Overloaded,
    /// Says nothing about load (the server is down, the request was bad).
    Ignored,
}

#[derive(Debug)]
struct State {
    estimate: f64,
    limit: usize,
    baseline: Option<f64>,
    /// Permits to take out of circulation as calls finish, after a decrease.
    owed: usize,
}

/// The in-flight limit shared by all calls to one model server.
#[derive(Debug)]
pub(crate) struct AdaptiveLimit {
    permits: Semaphore,
    state: Mutex<State>,
    min: usize,
    max: usize,
}

/// One call's place in flight; give it back with [`Slot::finish`].
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    limit: &'a AdaptiveLimit,
    permit: Option<SemaphorePermit<'a>>,
    started: Instant,
}

impl AdaptiveLimit {
    /// A limit between `min` and `max`, starting half-way.
    pub(crate) fn new(min: usize, max: usize) -> Self {
        let min = min.clamp(1, max.max(1));
        let max = max.max(min);
        let initial = (max / 2).max(min);
        Self {
            permits: Semaphore::new(initial),
            state: Mutex::new(State {
                estimate: initial as f64,
                limit: initial,
                baseline: None,
                owed: 0,
            }),
            min,
            max,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain numbers, valid after every update: a poisoned lock is safe to use.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current limit.
    pub(crate) fn current(&self) -> usize {
        self.state().limit
    }

    /// Waits for a place in flight.
    pub(crate) async fn acquire(&self) -> Slot<'_> {
        // The semaphore is never closed, so acquiring cannot fail; should it, the call goes out
        // without a place rather than never.
        let permit = self.permits.acquire().await.ok();
        Slot {
            limit: self,
            permit,
            started: Instant::now(),
        }
    }

    fn adjust(&self, outcome: Outcome) {
        let mut state = self.state();
        match outcome {
            Outcome::Ignored => return,
            Outcome::Overloaded => state.estimate /= 2.0,
            Outcome::Answered(latency) => {
                let latency = latency.as_secs_f64();
                let baseline = match state.baseline {
                    Some(b) if latency < b => latency,
                    Some(b) => b + (latency - b) * BASELINE_DRIFT,
                    None => latency,
                };
                state.baseline = Some(baseline);
                if latency <= baseline * TOLERANCE {
                    state.estimate += 1.0 / state.estimate.max(1.0);
                } else {
                    state.estimate *= 0.9;
                }
            }
        }
        state.estimate = state.estimate.clamp(self.min as f64, self.max as f64);
        let target = state.estimate as usize;
        if target > state.limit {
            let mut grow = target - state.limit;
            let repaid = grow.min(state.owed);
            state.owed -= repaid;
            grow -= repaid;
            self.permits.add_permits(grow);
        } else if target < state.limit {
            let shrink = state.limit - target;
            let taken = self.permits.forget_permits(shrink);
            state.owed += shrink - taken;
        }
        state.limit = target;
    }
}

impl Slot<'_> {
    /// Gives the place back and tells the limit how the call went.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Answered(_) => Outcome::Answered(self.started.elapsed()),
            other => other,
        };
        self.limit.adjust(outcome);
        self.release();
    }

    fn release(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.limit.state();
        if state.owed > 0 {
            state.owed -= 1;
            permit.forget();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn grows_while_latency_holds() {
        let limit = AdaptiveLimit::new(1, 32);
        assert_eq!(limit.current(), 16);
        for _ in 0..400 {
            limit.adjust(Outcome::Answered(FAST));
        }
        assert_eq!(limit.current(), 32, "capped at max");
        assert_eq!(limit.permits.available_permits(), 32);
    }

    #[tokio::test]
    async fn halves_on_overload_and_never_drops_below_min() {
        let limit = AdaptiveLimit::new(2, 32);
        limit.adjust(Outcome::Overloaded);
        assert_eq!(limit.current(), 8);
        assert_eq!(limit.permits.available_permits(), 8);
        for _ in 0..10 {
            limit.adjust(Outcome::Overloaded);
        }
        assert_eq!(limit.current(), 2);
    }

    #[tokio::test]
    async fn shrinks_on_rising_latency() {
        let limit = AdaptiveLimit::new(1, 32);
        limit.adjust(Outcome::Answered(FAST));
        let before = limit.current();
        limit.adjust(Outcome::Answered(FAST * 10));
        assert!(
            limit.current() < before,
            "{} should be below {before}",
            limit.current()
        );
    }

    #[tokio::test]
    async fn a_decrease_while_calls_are_out_is_paid_back_as_they_finish() {
        let limit = AdaptiveLimit::new(1, 8);
        let slots: Vec<Slot<'_>> = futures::future::join_all((0..4).map(|_| limit.acquire())).await;
        assert_eq!(limit.permits.available_permits(), 0);
        limit.adjust(Outcome::Overloaded); // 4 -> 2 with every permit out
        assert_eq!(limit.current(), 2);
        for slot in slots {
            slot.finish(Outcome::Ignored);
        }
        assert_eq!(
            limit.permits.available_permits(),
            2,
            "two permits were retired"
        );
    }
}
