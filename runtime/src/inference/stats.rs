//! What the model client counts for the operator: every try by how it ended, retries, rows per
//! call and latency, and whether the server answered the last readiness probe. Relaxed atomics,
//! read by the metrics exporter at each scrape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tonic::Code;

use super::error::InferenceError;
use crate::metrics::{Counts, Histogram};

/// How one try ended, as the `status` label says it: `ok`, a gRPC code in snake case, or what
/// went wrong before or after the wire.
pub(crate) const STATUSES: &[&str] = &[
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
    "invalid_request",
    "invalid_response",
];

/// Index in [`STATUSES`] of how a try ended.
fn status(result: &Result<(), &InferenceError>) -> usize {
    let code = match result {
        Ok(()) => return 0,
        Err(InferenceError::Status(s)) => s.code(),
        Err(InferenceError::Deadline(_)) => Code::DeadlineExceeded,
        Err(InferenceError::Request(_)) => return STATUSES.len() - 2,
        Err(InferenceError::Response(_) | InferenceError::Split { .. }) => {
            return STATUSES.len() - 1;
        }
        Err(_) => Code::Unknown,
    };
    // gRPC codes 1..=16 are STATUSES[1..=16] in order.
    match code {
        Code::Ok => 0,
        other => (other as usize).clamp(1, 16),
    }
}

#[derive(Debug)]
pub(crate) struct CallStats {
    tries: [AtomicU64; STATUSES.len()],
    retries: AtomicU64,
    /// How long the backend took to answer each try.
    pub(crate) latency: Histogram,
    /// Rows per try (stacked requests count each of their rows).
    pub(crate) rows: Counts,
    /// Whether the server answered the last readiness probe (always, for an embedded model).
    reachable: AtomicBool,
}

impl Default for CallStats {
    fn default() -> Self {
        Self {
            tries: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: AtomicU64::new(0),
            latency: Histogram::default(),
            rows: Counts::default(),
            reachable: AtomicBool::new(true),
        }
    }
}

impl CallStats {
    pub(crate) fn tried(&self, result: Result<(), &InferenceError>) {
        self.tries[status(&result)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn probed(&self, answered: bool) {
        self.reachable.store(answered, Ordering::Relaxed);
    }

    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Tries so far by status, every status (a series that starts at zero lets `rate()` see
    /// its first increase).
    pub(crate) fn tries(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        STATUSES
            .iter()
            .zip(&self.tries)
            .map(|(s, n)| (*s, n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn every_grpc_code_has_its_own_label() {
        let codes = [
            (Code::Cancelled, "cancelled"),
            (Code::InvalidArgument, "invalid_argument"),
            (Code::NotFound, "not_found"),
            (Code::ResourceExhausted, "resource_exhausted"),
            (Code::Unavailable, "unavailable"),
            (Code::Unauthenticated, "unauthenticated"),
        ];
        for (code, label) in codes {
            let e = InferenceError::Status(Status::new(code, "x"));
            assert_eq!(STATUSES[status(&Err(&e))], label);
        }
        let deadline = InferenceError::Deadline(std::time::Duration::from_secs(1));
        assert_eq!(STATUSES[status(&Err(&deadline))], "deadline_exceeded");
        assert_eq!(STATUSES[status(&Ok(()))], "ok");
        let stats = CallStats::default();
        stats.tried(Err(&deadline));
        stats.tried(Ok(()));
        stats.tried(Ok(()));
        let seen: Vec<_> = stats.tries().filter(|(_, n)| *n > 0).collect();
        assert_eq!(seen, [("ok", 2), ("deadline_exceeded", 1)]);
        assert_eq!(
            stats.tries().count(),
            STATUSES.len(),
            "every status, zero or not"
        );
    }
}
