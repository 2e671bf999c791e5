//! The control API under `/_sim`: register apps, robots and groups, inject faults, inspect the
//! call record and what was "delivered". Not part of DingTalk; answers `{"error": …}` with 400
//! on bad input.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::Api;
use crate::config::{AppCredentials, CustomRobotConfig};
use crate::directory::{Directory, Group};
use crate::faults::Fault;
use crate::record::CallFilter;
use crate::state::SimState;

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/apps", get(list_apps).post(add_app))
        .route("/_sim/custom-robots", post(add_custom_robot))
        .route("/_sim/groups", post(add_group))
        .route("/_sim/directory", get(get_directory).put(put_directory))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/calls", get(list_calls).delete(clear_calls))
        .route("/_sim/rejected", get(list_rejected))
        .route("/_sim/messages", get(list_messages))
        .route("/_sim/cards", get(list_cards))
        .route("/_sim/downloads", post(add_download))
}

/// A refused control request: 400 with `{"error": …}`.
#[derive(Debug)]
struct ControlError(String);

impl<E: std::fmt::Display> From<E> for ControlError {
    fn from(err: E) -> Self {
        ControlError(err.to_string())
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(json!({ "error": self.0 }))).into_response()
    }
}

/// The answer of a control endpoint.
type Answer = Result<Json<Value>, ControlError>;

/// Parses a JSON body into `T`, or explains why not.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body).map_err(|err| ControlError(format!("invalid JSON body: {err}")))
}

async fn list_apps(State(state): State<SimState>) -> Json<Value> {
    Json(json!({ "appKeys": state.app_keys() }))
}

async fn add_app(State(state): State<SimState>, body: Bytes) -> Answer {
    let app: AppCredentials = parse(&body)?;
    let answer = json!({ "appKey": app.app_key, "robotCode": app.robot_code() });
    state.register_app(app)?;
    Ok(Json(answer))
}

async fn add_custom_robot(State(state): State<SimState>, body: Bytes) -> Answer {
    state.register_custom_robot(parse::<CustomRobotConfig>(&body)?)?;
    Ok(Json(json!({ "registered": true })))
}

async fn add_group(State(state): State<SimState>, body: Bytes) -> Answer {
    let group: Group = parse(&body)?;
    let id = group.open_conversation_id.clone();
    state.upsert_group(group)?;
    Ok(Json(json!({ "openConversationId": id })))
}

async fn get_directory(State(state): State<SimState>) -> Json<Directory> {
    Json(state.directory())
}

async fn put_directory(State(state): State<SimState>, body: Bytes) -> Answer {
    state.set_directory(parse::<Directory>(&body)?);
    Ok(Json(json!({ "replaced": true })))
}

async fn list_faults(State(state): State<SimState>) -> Json<Value> {
    Json(json!({ "faults": state.faults() }))
}

async fn add_fault(State(state): State<SimState>, body: Bytes) -> Answer {
    let added = state.add_fault(parse::<Fault>(&body)?)?;
    Ok(Json(serde_json::to_value(added)?))
}

async fn clear_faults(State(state): State<SimState>) -> Json<Value> {
    state.clear_faults();
    Json(json!({ "cleared": true }))
}

/// `?api=&app=` as a filter.
fn filter(query: &HashMap<String, String>) -> Result<CallFilter, ControlError> {
    let api = match query.get("api").filter(|name| !name.is_empty()) {
        None => None,
        Some(name) => Some(Api::parse(name).ok_or_else(|| {
            ControlError(format!("unknown api {name:?}; allowed: {}", Api::names()))
        })?),
    };
    Ok(CallFilter {
        api,
        app: query.get("app").filter(|app| !app.is_empty()).cloned(),
    })
}

async fn list_calls(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let filter = filter(&query)?;
    let (dropped, _) = state.dropped_calls();
    Ok(Json(
        json!({ "calls": state.calls(&filter), "dropped": dropped }),
    ))
}

async fn list_rejected(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let filter = filter(&query)?;
    let (_, dropped) = state.dropped_calls();
    Ok(Json(
        json!({ "calls": state.rejected(&filter), "dropped": dropped }),
    ))
}

async fn clear_calls(State(state): State<SimState>) -> Json<Value> {
    state.clear_calls();
    Json(json!({ "cleared": true }))
}

async fn list_messages(State(state): State<SimState>) -> Json<Value> {
    Json(json!({ "messages": state.messages() }))
}

async fn list_cards(State(state): State<SimState>) -> Json<Value> {
    Json(json!({
        "standardCards": state.standard_cards(),
        "instances": state.card_instances(),
    }))
}

async fn add_download(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Answer {
    if body.is_empty() {
        return Err(ControlError(
            "the body is the file's content and must not be empty".to_owned(),
        ));
    }
    let file_name = query
        .get("fileName")
        .cloned()
        .unwrap_or_else(|| "file.bin".to_owned());
    let code = state.add_download(&file_name, body);
    Ok(Json(json!({ "downloadCode": code })))
}
