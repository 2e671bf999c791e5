//! Stream mode over HTTP: DingTalk's open endpoint (`POST /v1.0/gateway/connections/open`,
//! PROTOCOL §7.1) and the test controls under `/_sim/stream`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::SimState;
use crate::stream::{ConnectionControl, StreamError, StreamPush};

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route("/v1.0/gateway/connections/open", post(open))
        .route("/_sim/stream/connections", get(connections))
        .route("/_sim/stream/connections/{id}/{control}", post(control))
        .route("/_sim/stream/push", post(push))
        .route("/_sim/stream/acks", get(acks))
        .route("/_sim/stream/opens", get(opens))
}

async fn open(State(state): State<SimState>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "invalidParameter", "message": "the body must be JSON"})),
        )
            .into_response();
    };
    let secret_of = |app: &str| {
        state
            .lock()
            .app(app)
            .map(|a| a.app_secret.expose().to_owned())
    };
    match state.stream().open(&body, secret_of) {
        Ok(answer) => Json(answer).into_response(),
        Err(StreamError::AuthFailed) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "authFailed", "message": "clientId or clientSecret is wrong"})),
        )
            .into_response(),
        Err(err) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "invalidParameter", "message": err.to_string()})),
        )
            .into_response(),
    }
}

async fn connections(State(state): State<SimState>) -> Response {
    Json(state.stream_connections()).into_response()
}

async fn control(
    State(state): State<SimState>,
    Path((id, control)): Path<(String, String)>,
) -> Response {
    let Ok(control) = serde_json::from_value::<ConnectionControl>(Value::String(control.clone()))
    else {
        return refuse(format!(
            "unknown control {control:?}; use disconnect, drop or silence"
        ));
    };
    if state.stream_control(&id, control) {
        Json(json!({"ok": true})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no open stream connection {id:?}")})),
        )
            .into_response()
    }
}

/// `POST /_sim/stream/push`: `{"kind": "robot" | "card" | "event", "appKey": …, "data": {…}}`,
/// events also with `eventType`, `eventId` and `corpId`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushRequest {
    kind: String,
    app_key: String,
    data: Value,
    event_type: Option<String>,
    event_id: Option<String>,
    corp_id: Option<String>,
}

async fn push(State(state): State<SimState>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<PushRequest>(&body) {
        Ok(request) => request,
        Err(err) => return refuse(format!("bad push request: {err}")),
    };
    let push = match request.kind.as_str() {
        "robot" => StreamPush::RobotMessage {
            app_key: request.app_key,
            data: request.data,
        },
        "card" => StreamPush::CardCallback {
            app_key: request.app_key,
            data: request.data,
        },
        "event" => {
            let (Some(event_type), Some(event_id)) = (request.event_type, request.event_id) else {
                return refuse("an event push needs `eventType` and `eventId`".into());
            };
            StreamPush::Event {
                app_key: request.app_key,
                event_type,
                event_id,
                corp_id: request.corp_id.unwrap_or_default(),
                data: request.data,
            }
        }
        other => return refuse(format!("unknown kind {other:?}; use robot, card or event")),
    };
    match state.stream_push(push) {
        Ok(origin) => Json(json!({"id": origin})).into_response(),
        Err(err) => refuse(err.to_string()),
    }
}

async fn acks(State(state): State<SimState>) -> Response {
    Json(state.stream_acks()).into_response()
}

async fn opens(State(state): State<SimState>) -> Response {
    Json(state.stream_opens()).into_response()
}

fn refuse(error: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
}
