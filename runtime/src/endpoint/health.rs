//! Liveness and readiness, as `/healthz` and `/readyz` answer them.
//!
//! - Live: the process is starting, or its pipeline loop has reached its progress line (every
//!   10 s) within [`LIVE_WITHIN`], or it is draining for a shutdown. A pipeline that has
//!   stopped, or a loop stuck past that bound, is not live: the orchestrator should restart the
//!   process.
//! - Ready: the pipeline runs, this member owns at least one partition, the model server
//!   answered the last probe, and the circuit breaker is closed. Not ready is not a fault: a
//!   member with no partition (more members than partitions) is not ready, nor is one whose
//!   model server is away; both recover by themselves.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::pipeline::Stages;
use crate::source::Source;

/// How long the pipeline loop may go without turning before the process is reported dead.
pub const LIVE_WITHIN: Duration = Duration::from_secs(60);

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;
const STOPPED: u8 = 3;

/// What the running runtime is made of, for health and metrics, while it runs.
pub(crate) struct Parts {
    pub(crate) stages: Arc<Stages>,
    pub(crate) source: Arc<Source>,
}

/// Weak handles, so that the pipeline's shutdown still holds the last references to the
/// consumer (to close it and leave the group) and to the plugin pool (to stop its threads).
#[derive(Debug)]
struct Running {
    stages: Weak<Stages>,
    source: Weak<Source>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The runtime's state as the health endpoints and the exporter see it; shared with the
/// HTTP server from before start-up to the end.
#[derive(Debug, Default)]
pub struct Health {
    phase: AtomicU8,
    parts: OnceLock<Running>,
}

impl Health {
    /// The pipeline is assembled and about to run.
    pub(crate) fn running(&self, stages: &Arc<Stages>, source: &Arc<Source>) {
        let _ = self.parts.set(Running {
            stages: Arc::downgrade(stages),
            source: Arc::downgrade(source),
        });
        self.phase.store(RUNNING, Ordering::Relaxed);
    }

    /// A shutdown was asked for: records in flight are being drained.
    pub fn stopping(&self) {
        self.phase.store(STOPPING, Ordering::Relaxed);
    }

    /// The pipeline has returned.
    pub(crate) fn stopped(&self) {
        self.phase.store(STOPPED, Ordering::Relaxed);
    }

    /// The parts, while the pipeline holds them.
    pub(crate) fn parts(&self) -> Option<Parts> {
        let running = self.parts.get()?;
        Some(Parts {
            stages: running.stages.upgrade()?,
            source: running.source.upgrade()?,
        })
    }

    /// `Ok` when live; otherwise why not.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn liveness(&self) -> Result<(), String> {
        let phase = self.phase.load(Ordering::Relaxed);
        let idle = match phase {
            RUNNING => self
                .parts()
                .and_then(|p| p.stages.counters.since_last_turn()),
            _ => None,
        };
        live(phase, idle)
    }

    /// `Ok` when ready; otherwise every reason why not.
    ///
    /// # Errors
    /// Each unmet condition as a short sentence.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let phase = self.phase.load(Ordering::Relaxed);
        let parts = match (phase, self.parts()) {
            (RUNNING, Some(parts)) => parts,
            (STARTING, _) | (RUNNING, None) => return Err(vec!["starting".into()]),
            (STOPPING, _) => return Err(vec!["shutting down".into()]),
            _ => return Err(vec!["stopped".into()]),
        };
        let mut not = Vec::new();
        if parts.source.owned_partitions() == 0 {
            not.push("no partition assigned".into());
        }
        let model = &parts.stages.inference;
        if !model.reachable() {
            not.push("the model server did not answer the last probe".into());
        }
        let breaker = model.breaker_state();
        if breaker != "closed" {
            not.push(format!("the model breaker is {breaker}"));
        }
        if not.is_empty() { Ok(()) } else { Err(not) }
    }

    /// Probes the model server every `every` while the runtime runs, for readiness.
    pub(crate) async fn probe_model(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Only the model client is held across the call, never the consumer.
            let model = self.parts().map(|p| p.stages.inference.clone());
            if let Some(model) = model {
                model.probe().await;
            }
        }
    }
}

/// Liveness in `phase`, the loop having last turned `idle` ago (`None`: not yet, or unknown).
fn live(phase: u8, idle: Option<Duration>) -> Result<(), String> {
    match (phase, idle) {
        (STOPPED, _) => Err("the pipeline has stopped".into()),
        (RUNNING, Some(idle)) if idle > LIVE_WITHIN => Err(format!(
            "the pipeline loop has not turned for {}s",
            idle.as_secs()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_without_a_pipeline() {
        let h = Health::default();
        assert_eq!(h.liveness(), Ok(()), "starting is live");
        assert_eq!(h.readiness(), Err(vec!["starting".to_owned()]));
        h.stopping();
        assert_eq!(h.liveness(), Ok(()), "draining is live");
        assert_eq!(h.readiness(), Err(vec!["shutting down".to_owned()]));
        h.stopped();
        assert!(h.liveness().is_err());
        assert!(h.readiness().is_err());
    }

    #[test]
    fn a_stuck_loop_is_not_live() {
        let turned = |secs| live(RUNNING, Some(Duration::from_secs(secs)));
        assert_eq!(turned(10), Ok(()));
        assert_eq!(
            live(RUNNING, Some(LIVE_WITHIN)),
            Ok(()),
            "at the bound, still live"
        );
        assert_eq!(
            turned(61),
            Err("the pipeline loop has not turned for 61s".to_owned())
        );
        assert_eq!(live(RUNNING, None), Ok(()), "before the first turn");
        assert_eq!(
            live(STOPPING, Some(Duration::from_secs(600))),
            Ok(()),
            "a long drain"
        );
    }
}
