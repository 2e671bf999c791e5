//! The tools over plain HTTP, and the listener's router: `GET /api/tools`,
//! `POST /api/tools/{tool_name}` and the MCP service at `/mcp`, all behind the bearer token.
//!
//! `POST` takes the tool's arguments as the body and answers the tool's result JSON — the same
//! implementation and shapes as over MCP. The status says how the call went: 200 done (a send
//! reaching only some recipients included, see `results`), 400 bad arguments, 404 unknown tool
//! or integration, 422 refused (by DingTalk or the notifier: `error.code` says why), 503 the bus
//! or registry unavailable or too many calls, 504 no result in time (`error.commandId` names the
//! command to look up).

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::secret::Secret;
use serde_json::{json, Value};

use super::catalog::ToolName;
use super::translate::{ConnectionDefaults, ToolError, ToolResult};
use super::{auth, mcp, Tools};

/// The largest request body the listener reads (both surfaces): a call becomes one bus
/// command, and the bus takes messages of at most 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole tools listener.
pub fn router(tools: Tools, token: Secret) -> Router {
    Router::new()
        .route("/api/tools", get(list))
        .route("/api/tools/{tool_name}", post(call))
        .with_state(tools.clone())
        .nest_service("/mcp", mcp::service(tools))
        // Here rather than `DefaultBodyLimit`, which only extractors obey: the MCP service
        // reads its bodies itself. Inside the token check, so strangers upload nothing.
        .layer(middleware::from_fn(limit_body))
        .layer(middleware::from_fn_with_state(token, auth::require_token))
}

/// Reads the body up to [`MAX_BODY_BYTES`]; a longer one is answered 413 in the answer shape.
async fn limit_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(err) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            let (status, error) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ToolError::new(
                        "message_too_large",
                        format!("the request body is larger than {MAX_BODY_BYTES} bytes (1 MiB), the most a call may carry"),
                    ),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    ToolError::invalid(format!("the request body could not be read: {err}")),
                )
            };
            (status, Json(ToolResult::failed("", "", error))).into_response()
        }
    }
}

/// `GET /api/tools`: every tool's name, description and argument schema.
async fn list() -> Json<Value> {
    let tools: Vec<Value> = ToolName::ALL
        .iter()
        .map(|tool| {
            json!({
                "name": tool.as_str(),
                "description": tool.description(),
                "input_schema": tool.input_schema(),
            })
        })
        .collect();
    Json(json!({ "tools": tools }))
}

/// `POST /api/tools/{tool_name}`: one call.
async fn call(
    State(tools): State<Tools>,
    Path(name): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(tool) = ToolName::parse(&name) else {
        let names: Vec<&str> = ToolName::ALL.iter().map(ToolName::as_str).collect();
        let error = ToolError::new(
            "unknown_tool",
            format!("there is no tool {name:?}; the tools are {names:?}"),
        );
        return respond(&ToolResult::failed(&name, "", error));
    };
    let defaults = match Query::<ConnectionDefaults>::try_from_uri(&uri) {
        Ok(Query(defaults)) => defaults,
        Err(err) => {
            let error = ToolError::invalid(format!(
                "the query string is invalid ({}); it may set integration_id, recipient_type (user_id, union_id, open_id, chat_id) and recipient_id",
                err.body_text()
            ));
            return respond(&ToolResult::failed(tool.as_str(), "", error));
        }
    };
    let arguments = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(value) => value,
            Err(err) => {
                let error = ToolError::invalid(format!("the body is not JSON: {err}"));
                return respond(&ToolResult::failed(tool.as_str(), "", error));
            }
        }
    };
    respond(&tools.call(tool, arguments, &defaults).await)
}

/// The status of an answer (see the module doc).
pub fn status_of(answer: &ToolResult) -> StatusCode {
    let Some(error) = &answer.error else {
        return StatusCode::OK;
    };
    match error.code.as_str() {
        "invalid_arguments" | "missing_variable" | "message_too_large" => StatusCode::BAD_REQUEST,
        "unknown_tool" | "unknown_integration" => StatusCode::NOT_FOUND,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        "unavailable" | "overloaded" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn respond(answer: &ToolResult) -> Response {
    (status_of(answer), Json(answer)).into_response()
}
