//! App robot messages (PROTOCOL §4.2–§4.4): 1:1 batchSend / batchRecall / readStatus, group
//! send / recall, and the download of files users sent to the robot (§2.2).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::Api;
use crate::body::Fields;
use crate::error::ApiError;
use crate::gate::{serve_call, Auth, CallCtx};
use crate::ids;
use crate::messages::{Recipient, SentMessage};
use crate::state::{Inner, SimState};
use crate::templates::MsgTemplate;

/// At most this many `userIds` per batchSend (PROTOCOL §4.2).
pub const MAX_USER_IDS: usize = 20;

/// Bound on `processQueryKeys` per recall (DingTalk's own limit is not documented).
const MAX_RECALL_KEYS: usize = 1_000;

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::RobotBatchSend.path(), post(batch_send))
        .route(Api::RobotBatchRecall.path(), post(batch_recall))
        .route(Api::RobotReadStatus.path(), get(read_status))
        .route(Api::GroupSend.path(), post(group_send))
        .route(Api::GroupRecall.path(), post(group_recall))
        .route(Api::MessageFileDownload.path(), post(file_download))
}

/// A JSON-body endpoint of the new API: parse, then run `logic` through the gate.
async fn json_call(
    state: &SimState,
    api: Api,
    headers: &HeaderMap,
    body: &Bytes,
    logic: fn(&mut Inner, &CallCtx, Fields) -> Result<Value, ApiError>,
) -> Response {
    let parsed = Fields::from_body(body);
    let record = super::recordable(&parsed, body);
    serve_call(
        state,
        api,
        Auth::new_token(headers),
        record,
        |inner, ctx| logic(inner, ctx, parsed?),
    )
    .await
}

async fn batch_send(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    json_call(
        &state,
        Api::RobotBatchSend,
        &headers,
        &body,
        send_one_to_one,
    )
    .await
}

async fn batch_recall(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    json_call(
        &state,
        Api::RobotBatchRecall,
        &headers,
        &body,
        |inner, ctx, fields| {
            let robot_code = super::own_robot(inner, ctx, &fields)?;
            let keys = fields.str_list("processQueryKeys", MAX_RECALL_KEYS)?;
            Ok(recall(inner, &robot_code, &keys, None))
        },
    )
    .await
}

async fn group_send(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    json_call(&state, Api::GroupSend, &headers, &body, send_to_group).await
}

async fn group_recall(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    json_call(
        &state,
        Api::GroupRecall,
        &headers,
        &body,
        |inner, ctx, fields| {
            let robot_code = super::own_robot(inner, ctx, &fields)?;
            let group = fields.str("openConversationId")?.to_owned();
            let keys = fields.str_list("processQueryKeys", MAX_RECALL_KEYS)?;
            Ok(recall(inner, &robot_code, &keys, Some(&group)))
        },
    )
    .await
}

async fn file_download(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    json_call(
        &state,
        Api::MessageFileDownload,
        &headers,
        &body,
        |inner, ctx, fields| {
            let code = fields.str("downloadCode")?;
            super::own_robot(inner, ctx, &fields)?;
            let file = inner
                .media
                .by_download_code(code)
                .ok_or_else(|| ApiError::NotFound {
                    what: "downloadCode",
                    id: code.to_owned(),
                })?;
            let url = format!("{}/_sim/files/{}", inner.base_url, file.media_id);
            Ok(json!({ "downloadUrl": url }))
        },
    )
    .await
}

async fn read_status(
    State(state): State<SimState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let record = super::recordable_query(&query);
    serve_call(
        &state,
        Api::RobotReadStatus,
        Auth::new_token(&headers),
        record,
        |inner, ctx| {
            let param = |name: &str| {
                query
                    .get(name)
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| ApiError::missing(name))
            };
            let robot_code = super::check_robot(inner, ctx, param("robotCode")?)?;
            let key = param("processQueryKey")?;
            let user_ids = match inner.messages.get(&robot_code, key).map(|m| &m.recipient) {
                Some(Recipient::OneToOne { user_ids }) => user_ids.clone(),
                _ => {
                    return Err(ApiError::NotFound {
                        what: "processQueryKey",
                        id: key.clone(),
                    })
                }
            };
            let readers: Vec<Value> = user_ids
                .iter()
                .map(|user_id| {
                    let name = inner
                        .directory
                        .user(user_id)
                        .map(|user| user.name.clone())
                        .unwrap_or_default();
                    json!({ "userId": user_id, "name": name, "readStatus": "UNREAD" })
                })
                .collect();
            Ok(json!({ "sendStatus": "SUCCESS", "messageReadInfoList": readers }))
        },
    )
    .await
}

/// batchSend: unknown ids go to `invalidStaffIdList`, ids held back by an injected fault to
/// `flowControlledStaffIdList`, the rest receive the message.
fn send_one_to_one(inner: &mut Inner, ctx: &CallCtx, fields: Fields) -> Result<Value, ApiError> {
    let robot_code = super::own_robot(inner, ctx, &fields)?;
    let user_ids = fields.str_list("userIds", MAX_USER_IDS)?;
    let template = MsgTemplate::parse(fields.get("msgKey"), fields.get("msgParam"))?;
    if inner.limits.refuse_batch_with_unknown_staff {
        if let Some(unknown) = user_ids
            .iter()
            .find(|user_id| inner.directory.user(user_id).is_none())
        {
            return Err(ApiError::StaffNotExisted(unknown.clone()));
        }
    }
    let mut invalid = Vec::new();
    let mut flow_controlled = Vec::new();
    let mut delivered = Vec::new();
    for user_id in user_ids {
        if inner.directory.user(&user_id).is_none() {
            invalid.push(user_id);
        } else if ctx.flow_controlled.contains(&user_id) {
            flow_controlled.push(user_id);
        } else {
            delivered.push(user_id);
        }
    }
    let key = ids::process_query_key();
    inner.messages.push(SentMessage {
        process_query_key: key.clone(),
        robot_code,
        recipient: Recipient::OneToOne {
            user_ids: delivered,
        },
        kind: template.key,
        content: Value::Object(template.params),
        sent_at_ms: ctx.now_ms,
        recalled: false,
    });
    Ok(json!({
        "processQueryKey": key,
        "invalidStaffIdList": invalid,
        "flowControlledStaffIdList": flow_controlled,
        "filteredStaffIdList": [],
    }))
}

/// Group send: the group must exist and the robot must be in it.
fn send_to_group(inner: &mut Inner, ctx: &CallCtx, fields: Fields) -> Result<Value, ApiError> {
    let robot_code = super::own_robot(inner, ctx, &fields)?;
    let group = fields.str("openConversationId")?;
    let template = MsgTemplate::parse(fields.get("msgKey"), fields.get("msgParam"))?;
    robot_in_group(inner, &robot_code, group)?;
    let key = ids::process_query_key();
    inner.messages.push(SentMessage {
        process_query_key: key.clone(),
        robot_code,
        recipient: Recipient::Group {
            open_conversation_id: group.to_owned(),
        },
        kind: template.key,
        content: Value::Object(template.params),
        sent_at_ms: ctx.now_ms,
        recalled: false,
    });
    Ok(json!({ "processQueryKey": key }))
}

/// Checks the group exists and `robot_code` is in it.
pub(crate) fn robot_in_group(inner: &Inner, robot_code: &str, group: &str) -> Result<(), ApiError> {
    let found = inner
        .directory
        .group(group)
        .ok_or_else(|| ApiError::NotFound {
            what: "openConversationId",
            id: group.to_owned(),
        })?;
    if !found.has_robot(robot_code) {
        return Err(ApiError::RobotNotInGroup {
            robot_code: robot_code.to_owned(),
            open_conversation_id: group.to_owned(),
        });
    }
    Ok(())
}

/// Recalls each key; failures are reported per key, never as a call error.
fn recall(inner: &mut Inner, robot_code: &str, keys: &[String], group: Option<&str>) -> Value {
    let mut succeeded = Vec::new();
    let mut failed = Map::new();
    for key in keys {
        match inner.messages.recall(robot_code, key, group) {
            Ok(()) => succeeded.push(Value::from(key.clone())),
            Err(failure) => {
                failed.insert(key.clone(), Value::from(failure.reason()));
            }
        }
    }
    json!({ "successResult": succeeded, "failedResult": failed })
}
