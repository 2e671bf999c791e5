//! The HTTP surface: one router per DingTalk resource, the control API under `/_sim`, and a
//! fallback that answers unknown paths (a wrong-case `otoMessages`, say) with DingTalk's 404.
//!
//! New-API paths (`/v1.0/…`) and old-API paths (`/gettoken`, `/topapi/…`, `/media/…`,
//! `/robot/…`) do not overlap, so one listener serves both hosts.

mod cards;
mod contacts;
mod control;
mod media;
mod oauth;
mod robot;
mod standard_card;
mod stream;
mod webhook_robots;

use std::collections::HashMap;

use axum::http::{Method, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{Map, Value};

use crate::api::Family;
use crate::body::Fields;
use crate::error::ApiError;
use crate::gate::CallCtx;
use crate::ids;
use crate::state::{Inner, SimState};

/// Every route the simulator serves.
pub(crate) fn router(state: SimState, max_upload_bytes: usize) -> Router {
    Router::new()
        .merge(oauth::routes())
        .merge(robot::routes())
        .merge(standard_card::routes())
        .merge(cards::routes())
        .merge(media::routes(max_upload_bytes))
        .merge(contacts::routes())
        .merge(webhook_robots::routes())
        .merge(control::routes())
        .merge(stream::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// DingTalk's answer to a path (or method) it does not serve, in the shape of the host the path
/// belongs to.
async fn not_found(method: Method, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    let family = if path.starts_with("/v1.0/") {
        Family::New
    } else {
        Family::Old
    };
    ApiError::RouteNotFound {
        method: method.to_string(),
        path,
    }
    .into_answer(family, &ids::request_id())
}

/// What the call record keeps of a JSON body: the parsed object, or the raw text when it was
/// not a JSON object.
pub(crate) fn recordable(parsed: &Result<Fields, ApiError>, raw: &[u8]) -> Value {
    match parsed {
        Ok(fields) => fields.to_value(),
        Err(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
    }
}

/// Query parameters as a JSON object for the record, without the access token.
pub(crate) fn recordable_query(query: &HashMap<String, String>) -> Value {
    let map: Map<String, Value> = query
        .iter()
        .filter(|(key, _)| key.as_str() != "access_token")
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    Value::Object(map)
}

/// The old-API token of a request's query.
pub(crate) fn old_token(query: &HashMap<String, String>) -> Option<String> {
    query.get("access_token").cloned()
}

/// Checks the body's `robotCode` is the calling app's robot and returns it.
pub(crate) fn own_robot(inner: &Inner, ctx: &CallCtx, fields: &Fields) -> Result<String, ApiError> {
    let robot_code = fields.str("robotCode")?;
    check_robot(inner, ctx, robot_code)
}

/// Checks `robot_code` is the calling app's robot.
pub(crate) fn check_robot(
    inner: &Inner,
    ctx: &CallCtx,
    robot_code: &str,
) -> Result<String, ApiError> {
    let app = inner.app(ctx.app_key()?).ok_or(ApiError::InvalidToken)?;
    if app.robot_code() != robot_code {
        return Err(ApiError::NotFound {
            what: "robotCode (not a robot of this app)",
            id: robot_code.to_owned(),
        });
    }
    Ok(robot_code.to_owned())
}
