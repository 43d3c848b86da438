//! How often and how soon a failed model call is tried again: exponential backoff with full
//! jitter (a random wait between zero and the exponential bound), so that many calls failing
//! together do not return together.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::RetryPolicy;

impl RetryPolicy {
    /// The wait before try number `attempt + 1`, after `attempt` failures (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        bound.mul_f64(unit_random())
    }
}

/// A number in [0, 1), different on every call.
fn unit_random() -> f64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_bound_capped_at_max() {
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(200));
            assert!(policy.backoff(3) <= Duration::from_millis(350));
            assert!(policy.backoff(30) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn waits_are_spread_out() {
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|_| policy.backoff(1)).collect();
        assert!(
            waits.len() > 40,
            "jitter should rarely repeat: {} distinct of 50",
            waits.len()
        );
    }
}
