//! The HTTP endpoint an orchestrator and Prometheus talk to: `GET /metrics` (the OpenMetrics
//! text format), `GET /healthz` and `GET /readyz` (200, or 503 with the reasons in the body).
//! HTTP/1.1 only, one request per connection, a bounded number of connections, a deadline on
//! reading each request and on each connection, so that a slow or hostile client cannot hold
//! the runtime's resources for long.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::health::Health;

/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS_AT_MOST: usize = 16;
/// How long a client may take to send a request's headers.
const HEADERS_WITHIN: Duration = Duration::from_secs(5);
/// How long one connection may last, however slowly its client reads: a client that asks and
/// never reads gives its place back.
const CONNECTION_AT_MOST: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Listens on `address` and serves there in a task of its own; logs the address bound (port 0
/// picks a free one).
///
/// # Errors
/// A sentence naming the address when it cannot be bound.
pub async fn bind(
    address: std::net::SocketAddr,
    health: Arc<Health>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot serve /metrics on {address} (metrics.listen): {e}"))?;
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    let registry = Arc::new(super::export::registry(health.clone()));
    Ok(tokio::spawn(serve(listener, health, registry)))
}

/// Serves until the task is dropped.
async fn serve(listener: TcpListener, health: Arc<Health>, registry: Arc<Registry>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_AT_MOST));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (health, registry) = (health.clone(), registry.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&request, &health, &registry);
                async move { Ok::<_, Infallible>(answer) }
            });
            // One request per connection: probes and scrapes come seconds apart.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADERS_WITHIN)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_AT_MOST, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%error, "metrics endpoint: connection ended with an error");
                }
                Err(_) => tracing::debug!("metrics endpoint: connection cut at its time limit"),
            }
            drop(permit);
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    health: &Health,
    registry: &Registry,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut body = String::with_capacity(16 * 1024);
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
                    response
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics\n".into(),
                ),
            }
        }
        "/healthz" => match health.liveness() {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not live: {why}\n"),
            ),
        },
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.join("; ")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
