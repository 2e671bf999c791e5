//! The admin listener (`ADMIN_ADDR`, default `127.0.0.1:8081`): how an operator, or the
//! Xpert platform when it publishes an expert with a DingTalk trigger, manages integrations.
//!
//! - `/api/dingtalk/integrations…`: create, read, list, delete, preflight-test integrations,
//!   and bind the expert that answers ([`integrations`]). Every call under `/api/` needs
//!   `Authorization: Bearer $ADMIN_TOKEN`; with `ADMIN_TOKEN` unset all of them are refused.
//! - `/healthz`, `/readyz`, `/metrics` (no token: probes and Prometheus scrape them) and
//!   `/openapi.json`, the document of both listeners.
//!
//! The routes come from one table ([`routes::ROUTES`]) that also generates the OpenAPI
//! document. Every request is counted in
//! `dingtalk_gateway_ingress_admin_requests_total{method,route,status}`.

mod auth;
mod dingtalk;
mod error;
pub mod integrations;
pub mod openapi;
pub mod preflight;
pub mod reencrypt;
pub mod routes;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use common::config::DingTalkEndpoints;
use common::ops::{self, Listener, Readiness};
use common::registry::Registry;
use common::runtime::StartError;
use common::secret::Secret;
use common::shutdown::Shutdown;

pub use error::{AdminError, FieldProblem};

use crate::Config;

/// Largest admin request body; an integration is well under 4 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An admin token shorter than this is accepted but logged as weak at start-up.
const WEAK_TOKEN_LEN: usize = 16;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// Integrations and trigger bindings.
    pub registry: Registry,
    /// `ADMIN_TOKEN`; `None` refuses every `/api/` call.
    pub admin_token: Option<Secret>,
    /// `PUBLIC_BASE_URL`, for the webhook URL the preflight reports.
    pub public_base_url: Option<String>,
    /// Where the preflight calls DingTalk.
    pub dingtalk: DingTalkEndpoints,
    /// The HTTP client for those calls, with timeouts ([`http_client`]).
    pub http: reqwest::Client,
    /// The checks behind `/readyz`.
    pub readiness: Readiness,
    /// Redis, for the Stream connection status every replica publishes.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// `STREAM_CONNECTIONS_PER_APP`: how many slots each stream integration has.
    pub stream_slots: usize,
}

impl AdminState {
    /// The state for `config`'s admin listener.
    pub fn new(config: &Config, registry: Registry, readiness: Readiness) -> Self {
        Self {
            registry,
            admin_token: config.admin_token.clone(),
            public_base_url: config.public_base_url.clone(),
            dingtalk: config.dingtalk.clone(),
            http: http_client(),
            readiness,
            redis: None,
            stream_slots: config.stream.connections_per_app,
        }
    }
}

/// The HTTP client for DingTalk calls: every call is bounded (5 s, 3 s to connect).
pub fn http_client() -> reqwest::Client {
    dingtalk::client()
}

/// Everything the admin listener serves: the admin routes of [`routes::ROUTES`], the ops
/// routes, a JSON 404 for anything else, and the request counter.
pub fn router(state: AdminState) -> Router {
    let readiness = state.readiness.clone();
    routes::admin_router(state.admin_token.clone())
        .with_state(state)
        .merge(ops::router(readiness))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(observe))
}

/// Binds `config.admin_addr` and serves [`router`] until `shutdown`.
pub async fn serve(
    config: &Config,
    registry: Registry,
    redis: redis::aio::ConnectionManager,
    readiness: Readiness,
    shutdown: &Shutdown,
) -> Result<Listener, StartError> {
    match &config.admin_token {
        None => tracing::warn!(
            "ADMIN_TOKEN is not set: the admin API refuses every call until it is set"
        ),
        Some(token) if token.expose().len() < WEAK_TOKEN_LEN => tracing::warn!(
            "ADMIN_TOKEN is shorter than {WEAK_TOKEN_LEN} characters; use a long random value"
        ),
        Some(_) => {}
    }
    let mut state = AdminState::new(config, registry, readiness);
    state.redis = Some(redis);
    let listener = ops::serve(config.admin_addr, router(state), shutdown.clone())
        .await
        .map_err(|err| StartError::Listen {
            var: "ADMIN_ADDR",
            addr: config.admin_addr,
            reason: err.to_string(),
        })?;
    tracing::info!(addr = %listener.addr, "admin API listening");
    Ok(listener)
}

async fn no_route(uri: Uri) -> AdminError {
    AdminError::no_route(uri.path())
}

/// Counts and logs every request by route template (never by raw path, which would put
/// integration ids into metric labels without bound).
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await.into_response();
    let status = response.status().as_u16();
    ::metrics::counter!(
        "dingtalk_gateway_ingress_admin_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    if route.starts_with("/api/") {
        tracing::info!(%method, %route, status, "admin request");
    } else {
        tracing::debug!(%method, %route, status, "admin request");
    }
    response
}
