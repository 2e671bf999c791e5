//! Robots addressed by URL rather than by token: custom group robots (`POST /robot/send`,
//! PROTOCOL §4.9: signature, keywords, 20 messages a minute, 20,000-byte bodies) and the
//! `sessionWebhook` of robot callbacks (`POST /robot/sendBySession`, §2.3).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use common::crypto::{verify_robot_sign, ROBOT_SIGN_WINDOW};
use serde_json::{json, Value};

use crate::api::Api;
use crate::classic::ClassicMessage;
use crate::error::ApiError;
use crate::gate::{serve_call, Auth};
use crate::ids;
use crate::limits::Throttled;
use crate::messages::{Recipient, SentMessage};
use crate::session::Session;
use crate::state::SimState;

/// "token is not exist".
const ERR_NO_TOKEN: i64 = 300001;
/// "security check failed" (sign, keyword).
const ERR_SECURITY: i64 = 310000;
/// "send too fast".
const ERR_TOO_FAST: i64 = 130101;

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::CustomRobotSend.path(), post(custom_robot_send))
        .route(Api::SessionSend.path(), post(session_send))
}

/// A webhook error.
fn webhook(errcode: i64, message: impl Into<String>) -> ApiError {
    ApiError::Webhook {
        errcode,
        message: message.into(),
    }
}

/// The record of a webhook body: JSON when it parses, the raw text otherwise.
fn recordable(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn custom_robot_send(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let token = query
        .get("access_token")
        .filter(|token| !token.is_empty())
        .cloned();
    serve_call(
        &state,
        Api::CustomRobotSend,
        Auth::Webhook(token.clone()),
        recordable(&body),
        |inner, ctx| {
            let token = token.ok_or_else(|| webhook(ERR_NO_TOKEN, "token is not exist"))?;
            let per_minute = inner.limits.custom_robot_per_minute;
            let penalty_ms =
                i64::try_from(inner.limits.custom_robot_penalty.as_millis()).unwrap_or(i64::MAX);
            let robot = inner
                .custom_robots
                .get_mut(&token)
                .ok_or_else(|| webhook(ERR_NO_TOKEN, "token is not exist"))?;
            if let Some(secret) = &robot.config.secret {
                let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
                verify_robot_sign(
                    secret.expose(),
                    param("timestamp"),
                    param("sign"),
                    ctx.now_ms,
                    ROBOT_SIGN_WINDOW,
                )
                .map_err(|err| webhook(ERR_SECURITY, format!("sign not match: {err}")))?;
            }
            let message = ClassicMessage::parse(&body)?;
            let keywords = &robot.config.keywords;
            if !keywords.is_empty()
                && !keywords
                    .iter()
                    .any(|keyword| message.visible_text.contains(keyword.as_str()))
            {
                return Err(webhook(
                    ERR_SECURITY,
                    format!("keywords not in content; one of {keywords:?} is required"),
                ));
            }
            robot
                .limiter
                .admit(ctx.now_ms, per_minute, penalty_ms)
                .map_err(|throttled| {
                    let until_ms = match throttled {
                        Throttled::JustNow { until_ms } | Throttled::Still { until_ms } => until_ms,
                    };
                    webhook(
                        ERR_TOO_FAST,
                        format!(
                            "send too fast, exceed {per_minute} times per minute; throttled for {} s",
                            (until_ms - ctx.now_ms).max(0) / 1000
                        ),
                    )
                })?;
            inner.messages.push(SentMessage {
                process_query_key: ids::process_query_key(),
                robot_code: String::new(),
                recipient: Recipient::CustomRobot {
                    access_token: token,
                },
                kind: message.msgtype,
                content: message.body,
                sent_at_ms: ctx.now_ms,
                recalled: false,
            });
            Ok(json!({}))
        },
    )
    .await
}

async fn session_send(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let session = query
        .get("session")
        .ok_or_else(|| webhook(ERR_NO_TOKEN, "session is not exist: ?session= is missing"))
        .and_then(|text| Session::decode(text, ids::now_ms()));
    let robot = session.as_ref().ok().map(|s| s.robot_code.clone());
    serve_call(
        &state,
        Api::SessionSend,
        Auth::Webhook(robot),
        recordable(&body),
        |inner, ctx| {
            let session = session?;
            let message = ClassicMessage::parse(&body)?;
            inner.messages.push(SentMessage {
                process_query_key: ids::process_query_key(),
                robot_code: session.robot_code,
                recipient: Recipient::Session {
                    conversation_id: session.conversation_id,
                },
                kind: message.msgtype,
                content: message.body,
                sent_at_ms: ctx.now_ms,
                recalled: false,
            });
            Ok(json!({}))
        },
    )
    .await
}
