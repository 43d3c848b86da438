//! A small pool of HTTP/2 connections to one model server, used in turn. One connection
//! multiplexes many calls, but its single TCP stream and flow-control window can cap throughput;
//! `model.connections` spreads calls over several.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::InferenceError;
use crate::config::ModelSettings;

/// Open connections, handed out round-robin.
#[derive(Debug)]
pub(crate) struct Channels {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Channels {
    /// Opens `model.connections` connections to `endpoint`.
    ///
    /// # Errors
    /// [`InferenceError::Endpoint`] for a malformed URL, [`InferenceError::Connect`] when the
    /// server cannot be reached.
    pub(crate) async fn connect(
        settings: &ModelSettings,
        endpoint: &str,
    ) -> Result<Self, InferenceError> {
        let template = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| InferenceError::Endpoint {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        let mut channels = Vec::with_capacity(settings.connections);
        for _ in 0..settings.connections.max(1) {
            // Each `connect` opens its own HTTP/2 connection.
            let channel = template
                .connect()
                .await
                .map_err(|e| InferenceError::Connect {
                    endpoint: endpoint.to_owned(),
                    message: error_chain(&e),
                })?;
            channels.push(channel);
        }
        Ok(Self {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// The next connection in turn.
    pub(crate) fn next(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
