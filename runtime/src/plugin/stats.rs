//! What the plugin host counts for the operator, across every instance and every reload of the
//! plugin: time per call of each export, calls that failed or whose results the host refused (by
//! the reason their records get), instance rebuilds and reloads. Read by the metrics exporter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::failure::Reason;
use crate::metrics::Histogram;

/// The handler exports timed per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Prepare,
    Complete,
}

impl Export {
    pub(crate) const ALL: [Export; 2] = [Export::Prepare, Export::Complete];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Export::Prepare => "prepare",
            Export::Complete => "complete",
        }
    }
}

/// The reasons a plugin call or its results can fail for, as `plugin_faults_total` labels them.
pub(crate) const FAULTS: [Reason; 7] = [
    Reason::PluginTrap,
    Reason::PluginTimeout,
    Reason::PluginMemory,
    Reason::PluginContract,
    Reason::OutputLimit,
    Reason::TopicNotAllowed,
    Reason::InvalidRequest,
];

/// Whether a fault happened on a batch (whose records are then asked one by one) or on one
/// record alone (which is dead-lettered for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Batch,
    Record,
}

impl Scope {
    pub(crate) fn of(items: usize) -> Self {
        if items > 1 {
            Scope::Batch
        } else {
            Scope::Record
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Batch => "batch",
            Scope::Record => "record",
        }
    }
}

#[derive(Debug)]
pub struct PluginStats {
    calls: [Histogram; 2],
    /// Calls that trapped, ran out of time or memory, or miscounted, and results the host
    /// refused, by scope and by the reason the records get.
    faults: [[AtomicU64; Reason::ALL.len()]; 2],
    rebuilds: AtomicU64,
    reloads: AtomicU64,
    reloads_refused: AtomicU64,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self {
            calls: std::array::from_fn(|_| Histogram::default()),
            faults: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            rebuilds: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
        }
    }
}

impl PluginStats {
    pub(crate) fn called(&self, export: Export, took: Duration) {
        self.calls[export as usize].record(took);
    }

    pub(crate) fn call_times(&self, export: Export) -> &Histogram {
        &self.calls[export as usize]
    }

    pub(crate) fn fault(&self, scope: Scope, reason: Reason) {
        self.faults[scope as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Faults so far by scope and reason, every one of [`FAULTS`] (zero or not).
    pub(crate) fn faults(&self) -> impl Iterator<Item = (Scope, Reason, u64)> + '_ {
        [Scope::Batch, Scope::Record]
            .into_iter()
            .flat_map(move |scope| {
                FAULTS.iter().map(move |&r| {
                    let n = self.faults[scope as usize][r as usize].load(Ordering::Relaxed);
                    (scope, r, n)
                })
            })
    }

    pub(crate) fn rebuilt(&self) {
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// A reload was tried: it replaced the plugin, or it was refused and the old one stayed.
    pub(crate) fn reloaded(&self, replaced: bool) {
        let counter = if replaced {
            &self.reloads
        } else {
            &self.reloads_refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads that replaced the plugin, and reloads refused.
    pub(crate) fn reloads(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.reloads_refused.load(Ordering::Relaxed),
        )
    }
}
