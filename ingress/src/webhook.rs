//! The public callback routes:
//!
//! - `POST /api/dingtalk/webhook/{integration_id}`: robot messages (plain JSON signed with
//!   `timestamp` + `sign` headers, PROTOCOL §2), event subscriptions (`{"encrypt": …}` with
//!   `signature`/`msg_signature`, `timestamp`/`timeStamp` and `nonce` in the query, §1), and
//!   card actions in either form (§4.6b).
//! - `POST /api/dingtalk/webhook/{integration_id}/card`: card actions, the URL the notifier
//!   registers with DingTalk.
//!
//! Order of checks: integration known and accepting callbacks, body size, JSON, authenticity
//! (signature before decryption), freshness, shape; then one durable publish; only then 200.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use common::bus::event::{ConversationType, EventBody};
use common::bus::Timestamp;
use common::crypto::{self, AesKey, CallbackCrypto};
use common::registry::{ConnectionMode, Integration, IntegrationId, Registry, RegistryError};

use crate::error::CallbackError;
use crate::normalize::{self, CallbackJson, Normalized, PlainKind};
use crate::publish::{Published, Publisher};

/// Largest callback body accepted; DingTalk's payloads are a few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long the body of a callback may take to arrive. DingTalk gives up on an answer after
/// 1.5 s, so a slower body is of no use, and a client trickling bodies would otherwise hold
/// `INGRESS_MAX_IN_FLIGHT` permits for as long as it likes, starving genuine callbacks.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// The current time in milliseconds since the epoch; injectable so tests can move the clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::now().unix_millis())
}

/// What the callback handlers share (behind one `Arc`: axum clones the state per request).
#[derive(Clone)]
pub struct WebhookState {
    /// Integrations (cached in-process).
    pub registry: Registry,
    /// The cards the notifier sent, to check unsigned card callbacks against.
    pub redis: redis::aio::ConnectionManager,
    /// Where events go.
    pub publisher: Publisher,
    /// How old (or how far ahead) an encrypted callback's timestamp may be.
    pub max_skew: Duration,
    /// The robot message signature window (PROTOCOL §2.1: one hour).
    pub sign_window: Duration,
    /// Now.
    pub clock: Clock,
    /// Callbacks being handled at once; beyond it new ones get 503 (DingTalk redelivers) instead
    /// of queueing without bound and growing memory under a flood.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The 16-byte prefix of encrypted acks: `None` draws a random one (always, in service);
    /// tests fix it to compare an ack with PROTOCOL.md's vectors byte for byte.
    pub reply_prefix: Option<[u8; 16]>,
}

/// The public router.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/api/dingtalk/webhook/{integration_id}", post(webhook))
        .route(
            "/api/dingtalk/webhook/{integration_id}/card",
            post(card_webhook),
        )
        .with_state(Arc::new(state))
}

/// The query of an encrypted callback, accepting both spellings of each parameter (§1.1).
#[derive(Debug, Default)]
struct EnvelopeQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
}

impl EnvelopeQuery {
    /// Reads the query string; only encrypted callbacks need it, so robot messages skip this.
    /// A parameter given twice counts with its last value.
    fn parse(query: Option<&str>) -> Self {
        let (mut msg_signature, mut signature, mut time_stamp, mut timestamp, mut nonce) =
            (None, None, None, None, None);
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match &*name {
                "msg_signature" => &mut msg_signature,
                "signature" => &mut signature,
                "timeStamp" => &mut time_stamp,
                "timestamp" => &mut timestamp,
                "nonce" => &mut nonce,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        Self {
            signature: msg_signature.or(signature),
            timestamp: time_stamp.or(timestamp),
            nonce,
        }
    }
}

/// Which route a callback came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The main route: robot messages, events, legacy card actions.
    Main,
    /// The card callback route: card actions only.
    Card,
}

async fn webhook(
    state: State<Arc<WebhookState>>,
    path: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(Route::Main, state, path, query, headers, body).await
}

async fn card_webhook(
    state: State<Arc<WebhookState>>,
    path: Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(Route::Card, state, path, query, headers, body).await
}

async fn answer(
    route: Route,
    State(state): State<Arc<WebhookState>>,
    Path(integration_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(_permit) = state.in_flight.try_acquire() else {
        return CallbackError::unavailable(
            "overloaded",
            "too many callbacks in flight; retry later",
        )
        .into_response();
    };
    handle(
        &state,
        &integration_id,
        query.as_deref(),
        &headers,
        body,
        route == Route::Card,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &WebhookState,
    integration_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    card_route: bool,
) -> Result<Response, CallbackError> {
    let integration = lookup(state, integration_id).await?;
    let body = read_body(body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|err| CallbackError::malformed(format!("the callback is not JSON: {err}")))?;
    let json = CallbackJson::parse(text).map_err(malformed)?;
    if let Some(encrypt) = json.encrypt() {
        return encrypted(state, &integration, query, encrypt, card_route).await;
    }
    let kind = if card_route {
        PlainKind::CardAction
    } else {
        json.kind()
    };
    match kind {
        PlainKind::RobotMessage => {
            verify_robot_headers(state, &integration, headers, true)?;
            let normalized = json.robot_message().map_err(malformed)?;
            let id = publish(state, &integration, normalized).await?;
            Ok(Json(Accepted { ok: true, id }).into_response())
        }
        PlainKind::CardAction => {
            // How DingTalk signs HTTP card callbacks is not documented: when the robot-style
            // headers are present they must verify; without them the press must name a card
            // the gateway sent, pressed where it went (`common::cards`).
            let signed = verify_robot_headers(state, &integration, headers, false)?;
            let normalized = normalize::card_action(text).map_err(malformed)?;
            if !signed {
                check_card(state, &integration, &normalized).await?;
            }
            publish(state, &integration, normalized).await?;
            Ok(Json(json!({})).into_response())
        }
    }
}

/// The answer to a robot message: the event's id. Public for the bench, whose `raw-answer`
/// target answers the same way.
#[derive(serde::Serialize)]
pub struct Accepted {
    /// Always `true`: the event is stored.
    pub ok: bool,
    /// The event's id (`{integration_id}:{msgId}`).
    pub id: String,
}

fn malformed(err: normalize::ShapeError) -> CallbackError {
    CallbackError::malformed(err.0)
}

async fn lookup(state: &WebhookState, raw_id: &str) -> Result<Integration, CallbackError> {
    let Ok(id) = raw_id.parse::<IntegrationId>() else {
        return Err(CallbackError::unknown_integration(raw_id));
    };
    let integration = state
        .registry
        .get_integration(&id)
        .await
        .map_err(|err| match err {
            RegistryError::Redis { .. } | RegistryError::Timeout { .. } => {
                CallbackError::unavailable(
                    "registry_unavailable",
                    format!("integration lookup failed: {err}"),
                )
            }
            // A record that cannot be read (corrupt, or sealed with a retired key): the details
            // are for the operator's log, not for whoever posted.
            other => {
                tracing::error!(err = %other, "an integration's stored record cannot be used");
                CallbackError::misconfigured(
                    "the integration's stored record cannot be used; an operator must save it again",
                )
            }
        })?
        .ok_or_else(|| CallbackError::unknown_integration(raw_id))?;
    if integration.connection_mode() == ConnectionMode::Stream {
        return Err(CallbackError::callbacks_disabled(
            "this integration receives DingTalk traffic over Stream mode; HTTP callbacks are disabled",
        ));
    }
    if !integration.http_callback_enabled() {
        return Err(CallbackError::callbacks_disabled(
            "HTTP callbacks are disabled for this integration",
        ));
    }
    Ok(integration)
}

async fn read_body(body: Body) -> Result<Bytes, CallbackError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| CallbackError::body_timeout(BODY_TIMEOUT))?;
    read.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            CallbackError::too_large(MAX_BODY_BYTES)
        } else {
            CallbackError::malformed(format!("the body could not be read: {err}"))
        }
    })
}

/// An unsigned card press is believed only for a card the gateway sent for this integration,
/// pressed in its group or by the user it went to.
async fn check_card(
    state: &WebhookState,
    integration: &Integration,
    normalized: &normalize::Normalized,
) -> Result<(), CallbackError> {
    let EventBody::CardAction(action) = &normalized.body else {
        return Ok(());
    };
    let out_track_id = &action.card.out_track_id;
    let card = common::cards::lookup(
        &mut state.redis.clone(),
        integration.id().as_str(),
        out_track_id,
    )
    .await
    .map_err(|err| {
        CallbackError::unavailable(
            "redis_unavailable",
            format!("cannot check the card the callback names: {err}"),
        )
    })?;
    let group = (action.conversation.kind == ConversationType::Group)
        .then_some(action.conversation.id.as_str());
    // The id comes from whoever posted: quoted short.
    let shown: String = out_track_id.chars().take(64).collect();
    match card {
        Some(card) if card.admits(group, &action.user.staff_id) => Ok(()),
        Some(_) => Err(CallbackError::unknown_card(format!(
            "the card {shown:?} was not sent to where this press comes from"
        ))),
        None => Err(CallbackError::unknown_card(format!(
            "no card {shown:?} was sent for this integration (or it was sent longer ago than the notifier keeps records); an unsigned card callback must name one"
        ))),
    }
}

/// Checks the robot `timestamp` + `sign` headers (§2.1); `required` says whether their absence
/// is an error. `true` when they were present and verified.
fn verify_robot_headers(
    state: &WebhookState,
    integration: &Integration,
    headers: &HeaderMap,
    required: bool,
) -> Result<bool, CallbackError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    match (header("timestamp"), header("sign")) {
        (Some(timestamp), Some(sign)) => crypto::verify_robot_sign(
            integration.client_secret().expose(),
            timestamp,
            sign,
            (state.clock)(),
            state.sign_window,
        )
        .map(|()| true)
        .map_err(CallbackError::from_crypto),
        (None, None) if !required => Ok(false),
        (timestamp, _) => Err(CallbackError::missing(if timestamp.is_none() {
            "the `timestamp` header is required (milliseconds since the epoch)"
        } else {
            "the `sign` header is required (base64 HMAC-SHA256 of timestamp + \"\\n\" + app secret)"
        })),
    }
}

async fn encrypted(
    state: &WebhookState,
    integration: &Integration,
    query: Option<&str>,
    encrypt: &str,
    card_route: bool,
) -> Result<Response, CallbackError> {
    let (Some(token), Some(aes_key)) =
        (integration.callback_token(), integration.callback_aes_key())
    else {
        return Err(CallbackError::callbacks_disabled(
            "this integration has no callback_token / callback_aes_key, so it cannot receive encrypted callbacks",
        ));
    };
    let query = EnvelopeQuery::parse(query);
    let signature = query.signature.ok_or_else(|| {
        CallbackError::missing("query parameter `signature` (or `msg_signature`) is required")
    })?;
    let timestamp = query.timestamp.ok_or_else(|| {
        CallbackError::missing("query parameter `timestamp` (or `timeStamp`) is required")
    })?;
    let nonce = query
        .nonce
        .ok_or_else(|| CallbackError::missing("query parameter `nonce` is required"))?;
    let key = AesKey::parse(aes_key.expose()).map_err(CallbackError::from_crypto)?;
    let crypto = CallbackCrypto::new(token.expose(), key, integration.client_id());
    let plaintext = crypto
        .verify_and_decrypt(&signature, &timestamp, &nonce, encrypt)
        .map_err(CallbackError::from_crypto)?;
    crypto::check_timestamp_ms(&timestamp, (state.clock)(), state.max_skew)
        .map_err(CallbackError::from_crypto)?;

    let decrypted = CallbackJson::parse(&plaintext).map_err(malformed)?;
    if matches!(
        decrypted.event_type(),
        "check_url" | "check_create_suite_url" | "check_update_suite_url"
    ) {
        crate::metrics::callback("check_url");
    } else {
        let is_card = card_route || decrypted.kind() == PlainKind::CardAction;
        let normalized = if is_card {
            normalize::card_action(&plaintext)
        } else {
            decrypted.subscription_event()
        }
        .map_err(malformed)?;
        publish(state, integration, normalized).await?;
    }
    let reply = match &state.reply_prefix {
        Some(prefix) => crypto.encrypted_reply_with_prefix("success", &timestamp, &nonce, prefix),
        None => crypto.success_reply(&timestamp, &nonce),
    };
    Ok(Json(reply).into_response())
}

/// Publishes and counts; returns the event id.
async fn publish(
    state: &WebhookState,
    integration: &Integration,
    normalized: Normalized,
) -> Result<String, CallbackError> {
    let (id, published) = state
        .publisher
        .publish_normalized(integration.id(), normalized)
        .await?;
    match published {
        Published::New => crate::metrics::callback("published"),
        Published::Duplicate => {
            tracing::debug!(event_id = %id, "redelivered callback: already on the bus");
            crate::metrics::callback("duplicate");
        }
    }
    Ok(id)
}
