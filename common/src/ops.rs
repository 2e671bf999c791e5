//! The operations listener every service runs on its `METRICS_ADDR`.
//!
//! - `GET /healthz`: the process is alive (always 200 while it can answer).
//! - `GET /readyz`: every dependency the service needs is reachable (200), else 503 with the
//!   failing checks, so a load balancer or Kubernetes stops sending work to it.
//! - `GET /metrics`: Prometheus text format.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The named dependency checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check; `Err` carries a short reason shown in the `/readyz` body.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Ready while the NATS client is connected.
    pub fn nats(self, client: async_nats::Client) -> Self {
        self.check("nats", move || {
            let state = client.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("connection {other}")),
                }
            }
        })
    }

    /// Ready while Redis answers `PING`.
    pub fn redis(self, conn: redis::aio::ConnectionManager) -> Self {
        self.check("redis", move || {
            let mut conn = conn.clone();
            async move {
                crate::redis::ping(&mut conn)
                    .await
                    .map_err(|err| err.to_string())
            }
        })
    }

    /// Runs every check concurrently; returns overall readiness and a per-check report.
    pub async fn run(&self) -> (bool, Map<String, Value>) {
        let results =
            futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
                };
                (*name, outcome)
            }))
            .await;
        let ready = results.iter().all(|(_, outcome)| outcome.is_ok());
        let report = results
            .into_iter()
            .map(|(name, outcome)| {
                let value = match outcome {
                    Ok(()) => json!("ok"),
                    Err(reason) => json!(reason),
                };
                (name.to_owned(), value)
            })
            .collect();
        (ready, report)
    }
}

/// The `/healthz`, `/readyz` and `/metrics` routes, to serve alone or merge into another router.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(readiness))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    let (ready, checks) = readiness.run().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks })))
}

async fn metrics() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::telemetry::render_metrics(),
    )
}

/// A running HTTP listener: its bound address (port 0 resolved) and its task.
#[derive(Debug)]
pub struct Listener {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// Completes when the listener has stopped after shutdown.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves `app` until `shutdown`, finishing in-flight requests first.
pub async fn serve(addr: SocketAddr, app: Router, shutdown: Shutdown) -> std::io::Result<Listener> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(err) = result {
            tracing::error!(%err, %addr, "listener failed");
        }
    });
    Ok(Listener { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_reports_each_failing_check() {
        let readiness = Readiness::new()
            .check("good", || async { Ok(()) })
            .check("bad", || async { Err("refused".to_owned()) });
        let (ready, report) = readiness.run().await;
        assert!(!ready);
        assert_eq!(report["good"], "ok");
        assert_eq!(report["bad"], "refused");
        assert!(Readiness::new().run().await.0);
    }

    #[tokio::test]
    async fn the_listener_serves_health_and_stops_on_shutdown() {
        let shutdown = Shutdown::new();
        let readiness = Readiness::new().check("down", || async { Err("nope".to_owned()) });
        let listener = serve(
            "127.0.0.1:0".parse().unwrap(),
            router(readiness),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", listener.addr);
        let health = http_get(&format!("{base}/healthz")).await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let ready = http_get(&format!("{base}/readyz")).await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains(r#""down":"nope""#), "{ready}");
        let metrics = http_get(&format!("{base}/metrics")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), listener.task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A tiny HTTP/1.1 GET over a raw socket, so this crate needs no HTTP client.
    async fn http_get(url: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
