//! A small pool of HTTP/2 connections to one model server, used in turn. One connection
//! multiplexes many calls, but its single TCP stream and flow-control window can cap throughput;
//! `model.connections` spreads calls over several.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::error::InferenceError;
use crate::config::{ModelSettings, TlsSettings};

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
        let template = if endpoint.starts_with("https://") {
            template
                .tls_config(tls(settings.tls.as_ref()))
                .map_err(|e| InferenceError::Endpoint {
                    endpoint: endpoint.to_owned(),
                    message: error_chain(&e),
                })?
        } else {
            template
        };
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

/// The client's TLS: the configured authorities or the system's roots, a client certificate if
/// configured, the server name to check.
fn tls(settings: Option<&TlsSettings>) -> ClientTlsConfig {
    let default = TlsSettings::default();
    let settings = settings.unwrap_or(&default);
    let mut config = match &settings.ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let Some((cert, key)) = &settings.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &settings.domain {
        config = config.domain_name(domain.clone());
    }
    config
}

/// Awaits a start-up call (metadata, readiness) for at most `limit`. A call that never reached
/// the server (no connection, a TLS handshake refused) is [`InferenceError::Connect`]; one the
/// server answered with an error, or did not answer in time, is `refused(message)`.
pub(crate) async fn startup_call<T>(
    endpoint: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    refused: impl FnOnce(String) -> InferenceError,
) -> Result<T, InferenceError> {
    match tokio::time::timeout(limit, call).await {
        Err(_) => Err(refused(format!("no answer within {limit:?}"))),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => match std::error::Error::source(&status) {
            // tonic keeps the transport's own error as the status's source.
            Some(transport) => Err(InferenceError::Connect {
                endpoint: endpoint.to_owned(),
                message: error_chain(transport),
            }),
            None => Err(refused(format!("{}: {}", status.code(), status.message()))),
        },
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        // Some errors repeat their source in their own message: say each part once.
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}
