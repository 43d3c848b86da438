//! A circuit breaker in front of the model server. When calls keep failing in ways that say
//! "the server is not there" (unavailable, overloaded, too slow), the breaker opens: calls stop
//! going out and wait instead of failing, so records are held rather than dead-lettered, and
//! the pipeline's bounds pause consumption. After a cool-down one probe call goes out; if it is
//! answered the breaker closes and every waiting call proceeds, otherwise the cool-down doubles.
//!
//! Invariant: a probe always settles the breaker. Every pass is a [`Ticket`]; a probe's ticket
//! that is dropped without a verdict (the call failed in a way that says nothing about the
//! server, or was cancelled) hands the probe to the next caller at once, so the breaker can never
//! stay half-open with nobody probing.

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

    /// `closed`, `open` (calls held back) or `half-open` (one probe call out).
    pub fn state(&self) -> &'static str {
        match *self.phase() {
            Phase::Closed { .. } => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen { .. } => "half-open",
        }
    }

    /// Whether calls are being held back.
    pub fn is_open(&self) -> bool {
        !matches!(*self.phase(), Phase::Closed { .. })
    }

    /// Waits until a call may go out; the ticket carries the call's verdict back.
    pub async fn ready(&self) -> Ticket<'_> {
        let pass = self.admit().await;
        Ticket {
            breaker: self,
            pass,
            settled: false,
        }
    }

    async fn admit(&self) -> Pass {
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

    /// The probe went without a verdict: the next caller probes at once.
    fn probe_abandoned(&self) {
        let mut phase = self.phase();
        if let Phase::HalfOpen { cooldown } = *phase {
            *phase = Phase::Open {
                until: Instant::now(),
                cooldown,
            };
            drop(phase);
            self.changed.notify_waiters();
        }
    }

    /// The server answered (with a result or an error of the request's own making).
    fn succeeded(&self) {
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
    fn failed(&self) -> bool {
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

/// One call's passage through the breaker. Settle it with [`Ticket::succeeded`] or
/// [`Ticket::failed`]; dropping it unsettled says the call told nothing about the server.
#[derive(Debug)]
#[must_use = "a probe's ticket must settle the breaker"]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    pass: Pass,
    settled: bool,
}

impl Ticket<'_> {
    /// Whether this call is the probe.
    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// The server answered (with a result or an error of the request's own making).
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.succeeded();
    }

    /// The server did not answer usefully. Returns whether the breaker is now open, in which
    /// case the caller should wait in [`Breaker::ready`] rather than count the attempt.
    pub fn failed(mut self) -> bool {
        self.settled = true;
        self.breaker.failed()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.pass == Pass::Probe {
            self.breaker.probe_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        assert_eq!(breaker.ready().await.pass(), Pass::Normal);
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "third failure opens");
        assert!(breaker.is_open());

        let start = Instant::now();
        let probe = breaker.ready().await;
        assert_eq!(probe.pass(), Pass::Probe);
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "waited for the cool-down"
        );

        // While the probe is out, others wait; its success releases them.
        let waiter = breaker.ready();
        tokio::pin!(waiter);
        assert!(futures::poll!(&mut waiter).is_pending());
        probe.succeeded();
        assert_eq!(waiter.await.pass(), Pass::Normal);
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        assert!(breaker.failed());
        let probe = breaker.ready().await;
        assert_eq!(probe.pass(), Pass::Probe);
        assert!(probe.failed());
        let start = Instant::now();
        assert_eq!(breaker.ready().await.pass(), Pass::Probe);
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_a_verdict_hands_the_probe_on_at_once() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        assert!(breaker.failed());
        let probe = breaker.ready().await;
        assert_eq!(probe.pass(), Pass::Probe);
        let waiter = breaker.ready();
        tokio::pin!(waiter);
        assert!(
            futures::poll!(&mut waiter).is_pending(),
            "waits while the probe is out"
        );
        // The probe's call failed in a way that says nothing about the server (an invalid
        // request, a cancelled call): its ticket is dropped unsettled.
        let start = Instant::now();
        drop(probe);
        let next = waiter.await;
        assert_eq!(next.pass(), Pass::Probe, "the waiting call probes instead");
        assert_eq!(start.elapsed(), Duration::ZERO, "without another cool-down");
        next.succeeded();
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_does_not_hold_the_breaker() {
        let breaker = Breaker::new(1, Duration::from_secs(1));
        assert!(breaker.failed());
        let call = async {
            let _ticket = breaker.ready().await;
            std::future::pending::<()>().await;
        };
        // The probing call is cancelled (a timeout around it, say).
        assert!(
            tokio::time::timeout(Duration::from_secs(5), call)
                .await
                .is_err()
        );
        let next = tokio::time::timeout(Duration::from_secs(1), breaker.ready())
            .await
            .expect("the breaker is not stuck half-open");
        assert_eq!(next.pass(), Pass::Probe);
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
