//! The path every simulated call takes: authenticate, count against the per-(app, API) limit,
//! apply injected faults, run the endpoint, record the outcome, answer in DingTalk's shape.
//!
//! Handlers only parse their input and supply the endpoint logic as a closure; ordering and
//! recording are decided here once, so no endpoint can skip the record or the rate limit.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use crate::api::{Api, Family};
use crate::error::ApiError;
use crate::faults::InjectedFailure;
use crate::ids;
use crate::state::{Inner, SimState};

/// The header carrying a new-API token.
pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// How a call identifies its app.
#[derive(Debug)]
pub(crate) enum Auth {
    /// New-API token from the header (absent = `None`).
    NewToken(Option<String>),
    /// Old-API token from `?access_token=`.
    OldToken(Option<String>),
    /// AppKey + AppSecret (token endpoints), or why they could not be read.
    Credentials(Result<(String, String), ApiError>),
    /// A webhook robot: no token and no per-app limit; the id is for the record and fault
    /// matching only (the endpoint authenticates it).
    Webhook(Option<String>),
}

impl Auth {
    /// The new-API token of a request.
    pub fn new_token(headers: &HeaderMap) -> Self {
        Auth::NewToken(
            headers
                .get(TOKEN_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        )
    }

    /// Resolves the caller's AppKey, or refuses.
    fn resolve(self, inner: &mut Inner, now_ms: i64) -> Result<Option<String>, ApiError> {
        match self {
            Auth::NewToken(token) => inner.new_tokens.check(token.as_deref(), now_ms).map(Some),
            Auth::OldToken(token) => inner.old_tokens.check(token.as_deref(), now_ms).map(Some),
            Auth::Credentials(credentials) => {
                let (key, secret) = credentials?;
                match inner.app(&key) {
                    Some(app) if app.app_secret.expose() == secret => Ok(Some(key)),
                    _ => Err(ApiError::BadCredentials),
                }
            }
            Auth::Webhook(id) => Ok(id),
        }
    }

    /// Whether calls made this way count against the per-(app, API) QPS limit.
    fn rate_limited(&self) -> bool {
        !matches!(self, Auth::Webhook(_))
    }
}

/// What the endpoint logic knows about the call.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    /// The caller's AppKey (webhooks: their id), when known.
    pub app: Option<String>,
    /// Milliseconds since the epoch, taken after any injected delay.
    pub now_ms: i64,
    /// User ids an injected `flow_control` fault holds back (batchSend).
    pub flow_controlled: Vec<String>,
}

impl CallCtx {
    /// The AppKey of an authenticated app call.
    pub fn app_key(&self) -> Result<&str, ApiError> {
        // Endpoints that use this are reached only through token or credential auth, which
        // always yields an app; a webhook id here would be a wiring mistake, answered as such.
        self.app.as_deref().ok_or(ApiError::InvalidToken)
    }
}

/// Runs one call through the pipeline. `record_body` is what the call record keeps; `handle` is
/// the endpoint logic, run under the state lock, returning the success body.
pub(crate) async fn serve_call(
    state: &SimState,
    api: Api,
    auth: Auth,
    record_body: Value,
    handle: impl FnOnce(&mut Inner, &CallCtx) -> Result<Value, ApiError>,
) -> Response {
    let family = api.family();
    let request_id = ids::request_id();
    let rate_limited = auth.rate_limited();
    let admitted = {
        let mut inner = state.lock();
        let now_ms = ids::now_ms();
        let outcome = auth.resolve(&mut inner, now_ms).and_then(|app| {
            if let (Some(app), true) = (&app, rate_limited) {
                let limit = inner.limits.qps_per_app_api;
                let window = inner.qps.entry((app.clone(), api)).or_default();
                if !window.admit(now_ms, limit) {
                    return Err(ApiError::QpsLimit {
                        app: app.clone(),
                        api: api.name(),
                        limit,
                    });
                }
            }
            Ok(app)
        });
        match outcome {
            Ok(app) => {
                let effects = inner.faults.take(api, app.as_deref());
                Ok((app, effects))
            }
            Err(err) => {
                refuse(&mut inner, api, None, record_body.clone(), &err, family);
                Err(err)
            }
        }
    };
    let (app, effects) = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return err.into_answer(family, &request_id),
    };
    if !effects.delay.is_zero() {
        tokio::time::sleep(effects.delay).await;
    }
    let mut inner = state.lock();
    let result = match effects.failure {
        Some(failure) => Err(injected(failure, app.as_deref(), api, &inner)),
        None => {
            let ctx = CallCtx {
                app: app.clone(),
                now_ms: ids::now_ms(),
                flow_controlled: effects.flow_controlled,
            };
            match handle(&mut inner, &ctx) {
                // Carried out (and recorded below as refused, with the answer it got).
                Ok(_) if effects.answer_lost => Err(ApiError::Http500),
                result => result,
            }
        }
    };
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(err) => err.status(family),
    };
    tracing::debug!(
        api = api.name(),
        app = app.as_deref(),
        status = status.as_u16(),
        "simulated call"
    );
    match result {
        Ok(body) => {
            inner.record(api, app, record_body, status.as_u16(), None);
            drop(inner);
            success(family, body)
        }
        Err(err) => {
            refuse(&mut inner, api, app, record_body, &err, family);
            drop(inner);
            err.into_answer(family, &request_id)
        }
    }
}

/// Records a refusal with its reason.
fn refuse(
    inner: &mut Inner,
    api: Api,
    app: Option<String>,
    body: Value,
    err: &ApiError,
    family: Family,
) {
    let status = err.status(family).as_u16();
    inner.record(api, app, body, status, Some(err.to_string()));
}

/// The error an injected failure answers with.
fn injected(failure: InjectedFailure, app: Option<&str>, api: Api, inner: &Inner) -> ApiError {
    match failure {
        InjectedFailure::Http500 => ApiError::Http500,
        InjectedFailure::SystemError => ApiError::SystemError,
        InjectedFailure::Permission => ApiError::PermissionDenied,
        InjectedFailure::QpsLimit => ApiError::QpsLimit {
            app: app.unwrap_or_default().to_owned(),
            api: api.name(),
            limit: inner.limits.qps_per_app_api,
        },
        InjectedFailure::TooManyRequests => ApiError::TooManyRequests,
        InjectedFailure::IpBan => ApiError::IpBan,
        InjectedFailure::HtmlPage => ApiError::HtmlPage,
    }
}

/// A success answer: the body as is (new API) or behind `errcode: 0, errmsg: "ok"` (old API).
fn success(family: Family, body: Value) -> Response {
    match (family, body) {
        (Family::Old, Value::Object(fields)) => {
            let mut answer = Map::new();
            answer.insert("errcode".to_owned(), Value::from(0));
            answer.insert("errmsg".to_owned(), Value::from("ok"));
            answer.extend(fields);
            Json(Value::Object(answer)).into_response()
        }
        (_, body) => Json(body).into_response(),
    }
}
