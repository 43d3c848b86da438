//! A circuit breaker in front of the model server. When calls keep failing in ways that say
//! "the server is not there" (unavailable, overloaded, too slow), the breaker opens: calls stop
//! going out and wait instead of failing, so records are held rather than dead-lettered, and
//! the pipeline's bounds pause consumption. After a cool-down one probe call goes out; if it is
//! answered the breaker closes and every waiting call proceeds, otherwise the cool-down doubles.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest cool-down between probes.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    /// One probe call is out; everyone else waits for its outcome.
    HalfOpen {
        cooldown: Duration,
    },
}

/// Shared by every call to one model server.
#[derive(Debug)]
pub struct Breaker {
    phase: Mutex<Phase>,
    changed: Notify,
    threshold: u32,
    cooldown: Duration,
}

/// What [`Breaker::ready`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The breaker is closed.
    Normal,
    /// The breaker was open; this call is the probe.
    Probe,
}

impl Breaker {
    /// A breaker that opens after `threshold` consecutive failures and first waits `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            phase: Mutex::new(Phase::Closed { failures: 0 }),
            changed: Notify::new(),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The phase is plain data and every update leaves it valid: a poisoned lock is safe.
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether calls are being held back.
    pub fn is_open(&self) -> bool {
        !matches!(*self.phase(), Phase::Closed { .. })
    }

    /// Waits until a call may go out.
    pub async fn ready(&self) -> Pass {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut phase = self.phase();
                match *phase {
                    Phase::Closed { .. } => return Pass::Normal,
                    Phase::Open { until, cooldown } if Instant::now() >= until => {
                        *phase = Phase::HalfOpen { cooldown };
                        return Pass::Probe;
                    }
                    Phase::Open { until, .. } => Some(until),
                    Phase::HalfOpen { .. } => None,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// The server answered (with a result or an error of the request's own making).
    pub fn succeeded(&self) {
        let mut phase = self.phase();
        if !matches!(*phase, Phase::Closed { failures: 0 }) {
            if !matches!(*phase, Phase::Closed { .. }) {
                tracing::info!("model server answers again: resuming calls");
            }
            *phase = Phase::Closed { failures: 0 };
            drop(phase);
            self.changed.notify_waiters();
        }
    }

    /// The server did not answer usefully. Returns whether the breaker is now open, in which
    /// case the caller should wait in [`Breaker::ready`] rather than count the attempt.
    pub fn failed(&self) -> bool {
        let mut phase = self.phase();
        let now = Instant::now();
        let next = match *phase {
            Phase::Closed { failures } if failures + 1 < self.threshold => {
                *phase = Phase::Closed {
                    failures: failures + 1,
                };
                return false;
            }
            Phase::Closed { .. } => {
                tracing::warn!(
                    failures = self.threshold,
                    cooldown = ?self.cooldown,
                    "model server is failing: holding calls, probing again after the cool-down"
                );
                Phase::Open {
                    until: now + self.cooldown,
                    cooldown: self.cooldown,
                }
            }
            Phase::HalfOpen { cooldown } => {
                let cooldown = (cooldown * 2).min(MAX_COOLDOWN);
                tracing::warn!(
                    ?cooldown,
                    "model server still failing: next probe after the cool-down"
                );
                Phase::Open {
                    until: now + cooldown,
                    cooldown,
                }
            }
            open @ Phase::Open { .. } => open,
        };
        *phase = next;
        drop(phase);
        self.changed.notify_waiters();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        assert_eq!(breaker.ready().await, Pass::Normal);
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "third failure opens");
        assert!(breaker.is_open());

        let start = Instant::now();
        assert_eq!(breaker.ready().await, Pass::Probe);
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "waited for the cool-down"
        );

        // While the probe is out, others wait; its success releases them.
        let waiter = breaker.ready();
        tokio::pin!(waiter);
        assert!(futures::poll!(&mut waiter).is_pending());
        breaker.succeeded();
        assert_eq!(waiter.await, Pass::Normal);
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        assert!(breaker.failed());
        assert_eq!(breaker.ready().await, Pass::Probe);
        assert!(breaker.failed());
        let start = Instant::now();
        assert_eq!(breaker.ready().await, Pass::Probe);
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(2, Duration::from_secs(1));
        assert!(!breaker.failed());
        breaker.succeeded();
        assert!(!breaker.failed(), "count restarted after the success");
        assert!(breaker.failed());
    }
}
