//! What an operator reads from a running runtime over HTTP, read from the parts' own counters
//! at each request (nothing on the hot path knows about it):
//!
//! - [`export`]: everything an operator watches, in the Prometheus exposition format;
//! - [`health`]: liveness and readiness;
//! - [`server`]: `/metrics`, `/healthz` and `/readyz` over HTTP.

pub mod export;
pub mod health;
pub mod server;
