//! Token endpoints (PROTOCOL §3): `POST /v1.0/oauth2/accessToken` (new API, JSON body) and
//! `GET /gettoken` (old API, query). Each kind is valid only on its own API.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::api::Api;
use crate::body::Fields;
use crate::error::ApiError;
use crate::gate::{serve_call, Auth};
use crate::state::SimState;

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::NewToken.path(), post(new_token))
        .route(Api::OldToken.path(), get(old_token))
}

async fn new_token(State(state): State<SimState>, body: Bytes) -> Response {
    let parsed = Fields::from_body(&body);
    let credentials = parsed.as_ref().map_err(Clone::clone).and_then(|fields| {
        Ok((
            fields.str("appKey")?.to_owned(),
            fields.str("appSecret")?.to_owned(),
        ))
    });
    let record = masked(super::recordable(&parsed, &body), "appSecret");
    serve_call(
        &state,
        Api::NewToken,
        Auth::Credentials(credentials),
        record,
        |inner, ctx| {
            let app = ctx.app_key()?.to_owned();
            let lifetime = inner.limits.token_lifetime;
            let issued = inner.new_tokens.issue(&app, ctx.now_ms, lifetime);
            Ok(json!({ "accessToken": issued.token, "expireIn": issued.expires_in_s }))
        },
    )
    .await
}

async fn old_token(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| {
        query
            .get(name)
            .filter(|value| !value.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::missing(name))
    };
    let credentials = param("appkey").and_then(|key| Ok((key, param("appsecret")?)));
    let record = masked(super::recordable_query(&query), "appsecret");
    serve_call(
        &state,
        Api::OldToken,
        Auth::Credentials(credentials),
        record,
        |inner, ctx| {
            let app = ctx.app_key()?.to_owned();
            let lifetime = inner.limits.token_lifetime;
            let issued = inner.old_tokens.issue(&app, ctx.now_ms, lifetime);
            Ok(json!({ "access_token": issued.token, "expires_in": issued.expires_in_s }))
        },
    )
    .await
}

/// The record never keeps a secret.
fn masked(mut record: Value, field: &str) -> Value {
    if let Some(secret) = record.get_mut(field) {
        *secret = Value::from("***");
    }
    record
}
