//! Why a run, a `check` or a `replay` did not start or did not stop cleanly: below both the
//! streaming run in `lib.rs` and [`crate::offline`], so that neither imports the other.

use crate::pipeline::PipelineError;

/// Why the runtime did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every check that failed at start-up, each a full sentence.
    #[error("cannot start:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Startup(Vec<String>),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}
