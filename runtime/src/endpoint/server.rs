//! The HTTP endpoint an orchestrator and Prometheus talk to: `GET /metrics` (the OpenMetrics
//! text format), `GET /healthz` and `GET /readyz` (200, or 503 with the reasons in the body).
//! HTTP/1.1 only, one request per connection, a bounded number of connections, a deadline on
//! reading each request and on each connection, so that a slow or hostile client cannot hold
//! the runtime's resources for long.
//!
//! Idle sockets cannot starve the probes: every connection is accepted at once, and one that
//! arrives when all places are taken takes the place of the connection that has waited longest
//! without sending its request. A probe sends its request as it connects, so it is answered
//! however many silent clients there are.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use super::health::Health;

/// What clients may hold of the endpoint, all together and each.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections open at once. Past it a new connection evicts the one that has waited
    /// longest for its request; when every one has sent its request (they are being
    /// answered), it waits in the listen backlog.
    connections: usize,
    /// How long a client may take to send a request's headers.
    headers_within: Duration,
    /// How long one connection may last, however slowly its client reads: a client that asks
    /// and never reads gives its place back.
    connection_at_most: Duration,
}

const LIMITS: Limits = Limits {
    connections: 64,
    headers_within: Duration::from_secs(2),
    connection_at_most: Duration::from_secs(10),
};

/// The connections that have not sent their request yet, oldest first, each with the signal
/// that evicts it.
#[derive(Debug, Default)]
struct Silent {
    waiting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

impl Silent {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes connection `id` as waiting for its request; returns what evicts it.
    fn arrived(&self, id: u64) -> Arc<Notify> {
        let evict = Arc::new(Notify::new());
        self.lock().push_back((id, evict.clone()));
        evict
    }

    /// Connection `id` sent its request, or ended: it may no longer be evicted.
    fn spoke(&self, id: u64) {
        let mut waiting = self.lock();
        if let Some(at) = waiting.iter().position(|(i, _)| *i == id) {
            waiting.remove(at);
        }
    }

    /// Evicts the connection that has waited longest; false when none waits.
    fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_front();
        oldest.is_some_and(|(_, evict)| {
            // A permit is kept if its task is not waiting yet: it leaves at its next poll.
            evict.notify_one();
            true
        })
    }
}

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
    Ok(tokio::spawn(serve(listener, health, registry, LIMITS)))
}

/// Serves until the task is dropped.
async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    registry: Arc<Registry>,
    limits: Limits,
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    let silent = Arc::new(Silent::default());
    for id in 0.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics endpoint: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if silent.evict_oldest() {
                    tracing::debug!(
                        "metrics endpoint: full; the longest silent connection gives its place"
                    );
                }
                // The evicted connection gives its place back at once; with none to evict,
                // the place of the first connection answered.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                permit
            }
        };
        let (health, registry, silent) = (health.clone(), registry.clone(), silent.clone());
        let evict = silent.arrived(id);
        tokio::spawn(async move {
            let spoken = silent.clone();
            let service = hyper::service::service_fn(move |request| {
                spoken.spoke(id);
                let answer = answer(&request, &health, &registry);
                async move { Ok::<_, Infallible>(answer) }
            });
            // One request per connection: probes and scrapes come seconds apart.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers_within)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = tokio::time::timeout(limits.connection_at_most, connection) => match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "metrics endpoint: connection ended with an error");
                    }
                    Err(_) => tracing::debug!("metrics endpoint: connection cut at its time limit"),
                },
                () = evict.notified() => {}
            }
            silent.spoke(id);
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const SHORT: Limits = Limits {
        connections: 2,
        headers_within: Duration::from_millis(300),
        connection_at_most: Duration::from_secs(1),
    };

    async fn endpoint(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let health = Arc::new(Health::default());
        let registry = Arc::new(super::super::export::registry(health.clone()));
        tokio::spawn(serve(listener, health, registry, limits));
        address
    }

    /// Sends `GET path` and reads the whole answer (the server closes after one request).
    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        answer
    }

    #[tokio::test]
    async fn answers_each_path() {
        let address = endpoint(SHORT).await;
        let metrics = get(address, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("streaminfer_build_info"), "{metrics}");
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");
        let live = get(address, "/healthz").await;
        assert!(live.starts_with("HTTP/1.1 200"), "starting is live: {live}");
        let ready = get(address, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.ends_with("not ready: starting\n"), "{ready}");
        assert!(get(address, "/x").await.starts_with("HTTP/1.1 404"));
    }

    /// Clients that connect and never send a request take every place; the next client takes
    /// the place of the one silent longest, which is closed, and is answered at once. The
    /// others are cut at the header deadline.
    #[tokio::test]
    async fn a_new_client_takes_the_place_of_the_longest_silent() {
        let address = endpoint(SHORT).await;
        let mut silent = Vec::new();
        for _ in 0..SHORT.connections {
            silent.push(TcpStream::connect(address).await.expect("connect"));
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get(address, "/healthz"))
            .await
            .expect("a new client is answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < SHORT.headers_within.mul_f32(0.5),
            "answered after {:?}, as if it waited for a silent client's deadline",
            started.elapsed()
        );
        let mut rest = Vec::new();
        let oldest = tokio::time::timeout(
            SHORT.headers_within.mul_f32(0.5),
            silent[0].read_to_end(&mut rest),
        )
        .await;
        assert!(oldest.is_ok(), "the longest silent client was not closed");
        for mut stream in silent.into_iter().skip(1) {
            // Closed, with or without a reset: either ends the read; a timeout fails the test.
            let _closed =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
                    .await
                    .expect("the server closes a silent connection");
        }
    }

    /// With the limits the runtime serves with: more idle sockets than it has places (any pod
    /// of a cluster reaches `0.0.0.0:9898`) cannot make a probe miss its 2 s timeout.
    #[tokio::test]
    async fn probes_are_answered_while_idle_sockets_take_every_place() {
        let address = endpoint(LIMITS).await;
        let mut silent = Vec::new();
        for _ in 0..LIMITS.connections + 16 {
            silent.push(TcpStream::connect(address).await.expect("connect"));
        }
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(2), get(address, "/healthz"))
                .await
                .expect("a probe is answered within its 2 s timeout");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        drop(silent);
    }

    /// A client that trickles its headers a byte at a time is cut at the header deadline.
    #[tokio::test]
    async fn a_trickling_client_is_cut() {
        let address = endpoint(SHORT).await;
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let started = Instant::now();
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut probe = [0_u8; 64];
            // Closed, or an error answer for the late headers: either way, cut.
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a trickling client was never cut"
            );
        }
        assert!(started.elapsed() >= SHORT.headers_within.mul_f32(0.9));
    }
}
