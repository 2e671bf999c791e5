//! The integration resource: `/api/dingtalk/integrations[/{id}[/test|/trigger]]`.
//!
//! Bodies are parsed here, once, into the registry's [`IntegrationSpec`] and [`XpertId`]; the
//! registry then validates every field at once. Answers show integrations only through
//! [`Integration::masked`], so no secret leaves the gateway.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use common::registry::{Integration, IntegrationId, IntegrationSpec, MaskedIntegration, XpertId};

use super::error::{AdminError, FieldProblem};
use super::preflight;
use super::AdminState;

/// Every field an integration body may have, as the registry's [`IntegrationSpec`] spells
/// them (a unit test keeps the two in step; the OpenAPI schema is built from this list too).
pub const SPEC_FIELDS: &[&str] = &[
    "id",
    "name",
    "client_id",
    "client_secret",
    "http_callback_enabled",
    "callback_token",
    "callback_aes_key",
    "robot_code",
    "xpert_id",
    "preferred_language",
    "connection_mode",
    "qps_limit",
    "custom_robots",
];

/// Fields whose value is a secret: a type error about them must not echo the value.
const SECRET_FIELDS: &[&str] = &["client_secret", "callback_token", "callback_aes_key"];
/// A list of secrets: a type error names the expected shape, never a value.
const CUSTOM_ROBOTS_SHAPE: &str =
    "must be a list of {\"access_token\": string, \"secret\": string} objects, nothing else";

/// Every integration, sorted by id.
#[derive(Debug, Serialize)]
pub struct IntegrationList {
    /// The integrations, secrets masked.
    pub integrations: Vec<MaskedIntegration>,
}

/// The body of `PUT …/trigger`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The expert to bind.
    pub xpert_id: XpertId,
}

/// A trigger binding as the API shows it.
#[derive(Debug, Serialize)]
pub struct TriggerBinding {
    /// The integration.
    pub integration_id: IntegrationId,
    /// The expert answering for it.
    pub xpert_id: XpertId,
}

/// `PUT /api/dingtalk/integrations/{id}`: create (201) or replace (200).
pub async fn put(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AdminError> {
    let body = body.map_err(AdminError::unreadable_body)?;
    let spec = parse_spec(&id, &body)?;
    let stored = state.registry.put_integration(spec).await?;
    // `put_integration` keeps `created_at` on replacement and stamps both with one `now` on
    // creation, so this tells the two apart without a racy read before the write.
    let created = stored.created_at() == stored.updated_at();
    let masked = Json(stored.masked());
    Ok(if created {
        let location = format!("/api/dingtalk/integrations/{}", stored.id());
        (StatusCode::CREATED, [(header::LOCATION, location)], masked).into_response()
    } else {
        masked.into_response()
    })
}

/// `GET /api/dingtalk/integrations/{id}`: the integration, secrets masked.
pub async fn get(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<MaskedIntegration>, AdminError> {
    let integration = existing(&state, &id).await?;
    Ok(Json(integration.masked()))
}

/// `GET /api/dingtalk/integrations/{id}/stream`: the integration's transport and, in Stream
/// mode, each connection slot as its holding replica last reported it.
pub async fn stream_status(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let integration = existing(&state, &id).await?;
    let mode = integration.connection_mode();
    let mut connections = Vec::new();
    let mut last_error = serde_json::Value::Null;
    if mode == common::registry::ConnectionMode::Stream {
        let Some(mut redis) = state.redis.clone() else {
            return Err(AdminError::unavailable(
                "the stream status store is not configured",
            ));
        };
        let slots =
            crate::stream::lease::read_status(&mut redis, integration.id(), state.stream_slots)
                .await
                .map_err(|err| {
                    AdminError::unavailable(format!("stream status unreadable: {err}"))
                })?;
        let mut newest_error: Option<(String, serde_json::Value)> = None;
        for (slot, status) in slots.into_iter().enumerate() {
            let status = status.unwrap_or_else(
                || serde_json::json!({"slot": slot, "replica": null, "state": "unassigned"}),
            );
            if let (Some(at), Some(_)) = (
                status["last_error_at"].as_str(),
                status["last_error"].as_str(),
            ) {
                if newest_error.as_ref().is_none_or(|(t, _)| at > t.as_str()) {
                    newest_error = Some((
                        at.to_owned(),
                        serde_json::json!({
                            "message": status["last_error"], "at": at, "slot": slot, "replica": status["replica"],
                        }),
                    ));
                }
            }
            connections.push(status);
        }
        last_error = newest_error.map(|(_, e)| e).unwrap_or_default();
    }
    Ok(Json(serde_json::json!({
        "integration_id": integration.id(),
        "connection_mode": mode.as_str(),
        "connections": connections,
        "last_error": last_error,
    })))
}

/// `GET /api/dingtalk/integrations`: every integration, secrets masked.
pub async fn list(State(state): State<AdminState>) -> Result<Json<IntegrationList>, AdminError> {
    let integrations = state.registry.list_integrations().await?;
    Ok(Json(IntegrationList {
        integrations: integrations.iter().map(Integration::masked).collect(),
    }))
}

/// `DELETE /api/dingtalk/integrations/{id}`: removes it and its trigger binding.
pub async fn delete(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let parsed = known_id(&id)?;
    if state.registry.delete_integration(&parsed).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::unknown_integration(&id))
    }
}

/// `POST /api/dingtalk/integrations/{id}/test`: the preflight checklist.
pub async fn test(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<preflight::Report>, AdminError> {
    let integration = existing(&state, &id).await?;
    let Some(base) = state.public_base_url.as_deref() else {
        return Err(AdminError::public_base_url_unset());
    };
    let report = preflight::run(&state.http, &state.dingtalk, base, &integration).await;
    tracing::info!(integration = %id, ok = report.ok, "preflight finished");
    Ok(Json(report))
}

/// `PUT /api/dingtalk/integrations/{id}/trigger`: binds the expert that answers.
pub async fn put_trigger(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TriggerBinding>, AdminError> {
    let integration_id = known_id(&id)?;
    let body = body.map_err(AdminError::unreadable_body)?;
    let body: TriggerBody = parse_trigger(&body)?;
    state
        .registry
        .set_trigger(&integration_id, body.xpert_id.clone())
        .await?;
    tracing::info!(integration = %integration_id, xpert = %body.xpert_id, "trigger bound");
    Ok(Json(TriggerBinding {
        integration_id,
        xpert_id: body.xpert_id,
    }))
}

/// `GET /api/dingtalk/integrations/{id}/trigger`: the bound expert.
pub async fn get_trigger(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<TriggerBinding>, AdminError> {
    let integration = existing(&state, &id).await?;
    let integration_id = integration.id().clone();
    match state.registry.get_trigger(&integration_id).await? {
        Some(xpert_id) => Ok(Json(TriggerBinding {
            integration_id,
            xpert_id,
        })),
        None => Err(AdminError::no_trigger(&id)),
    }
}

/// `DELETE /api/dingtalk/integrations/{id}/trigger`: unbinds the expert.
pub async fn delete_trigger(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let integration = existing(&state, &id).await?;
    if state.registry.delete_trigger(integration.id()).await? {
        tracing::info!(integration = %id, "trigger unbound");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::no_trigger(&id))
    }
}

/// An id from the path that could name an integration; a malformed one cannot, so it is 404.
fn known_id(raw: &str) -> Result<IntegrationId, AdminError> {
    raw.parse()
        .map_err(|_| AdminError::unknown_integration(raw))
}

/// The stored integration named in the path, or 404.
async fn existing(state: &AdminState, raw: &str) -> Result<Integration, AdminError> {
    let id = known_id(raw)?;
    state
        .registry
        .get_integration(&id)
        .await?
        .ok_or_else(|| AdminError::unknown_integration(raw))
}

/// Parses a PUT body into a spec for integration `path_id`.
///
/// Syntax errors are 400. Everything else is 422 with every problem at once: unknown fields,
/// values of the wrong JSON type, an `id` that contradicts the path. The path's id wins, so the
/// body may omit `id`. Field rules (lengths, the AES key, languages) are the registry's.
pub fn parse_spec(path_id: &str, body: &[u8]) -> Result<IntegrationSpec, AdminError> {
    let object = json_object(body)?;
    let mut problems = Vec::new();
    for (field, value) in &object {
        if !SPEC_FIELDS.contains(&field.as_str()) {
            problems.push(FieldProblem::new(
                clip(field),
                format!("is not a known field; allowed: {}", SPEC_FIELDS.join(", ")),
            ));
            continue;
        }
        // One field at a time, so each type error is attributed to its field.
        let alone = Value::Object(Map::from_iter([(field.clone(), value.clone())]));
        if let Err(error) = serde_json::from_value::<IntegrationSpec>(alone) {
            let message = if SECRET_FIELDS.contains(&field.as_str()) {
                "must be a string".to_owned()
            } else if field == "custom_robots" {
                CUSTOM_ROBOTS_SHAPE.to_owned()
            } else {
                error.to_string()
            };
            problems.push(FieldProblem::new(field.as_str(), message));
        }
    }
    if let Some(body_id) = object.get("id").and_then(Value::as_str) {
        if body_id != path_id {
            problems.push(FieldProblem::new(
                "id",
                format!("must match the id in the URL ({path_id:?}) or be omitted"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(AdminError::validation(problems));
    }
    let mut spec: IntegrationSpec =
        serde_json::from_value(Value::Object(object)).map_err(|error| {
            AdminError::validation(vec![FieldProblem::new("body", error.to_string())])
        })?;
    spec.id = path_id.to_owned();
    Ok(spec)
}

/// Parses a `PUT …/trigger` body.
fn parse_trigger(body: &[u8]) -> Result<TriggerBody, AdminError> {
    let object = json_object(body)?;
    let unknown: Vec<FieldProblem> = object
        .keys()
        .filter(|k| k.as_str() != "xpert_id")
        .map(|k| FieldProblem::new(clip(k), "is not a known field; allowed: xpert_id"))
        .collect();
    if !unknown.is_empty() {
        return Err(AdminError::validation(unknown));
    }
    serde_json::from_value(Value::Object(object)).map_err(|error| {
        let message = if error.to_string().contains("missing field") {
            "is required".to_owned()
        } else {
            error.to_string()
        };
        AdminError::validation(vec![FieldProblem::new("xpert_id", message)])
    })
}

/// The body as a JSON object; anything else is 400.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, AdminError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(AdminError::malformed("the body must be a JSON object")),
        Err(error) => Err(AdminError::malformed(format!(
            "the body is not valid JSON: {error}"
        ))),
    }
}

/// Caller-supplied field names are echoed in errors; keep them short.
fn clip(field: &str) -> String {
    const MAX: usize = 64;
    if field.chars().count() > MAX {
        let head: String = field.chars().take(MAX).collect();
        format!("{head}…")
    } else {
        field.to_owned()
    }
}

/// An example body, for the OpenAPI document.
pub fn example_spec() -> Value {
    json!({
        "name": "Acme support bot",
        "client_id": "dingxxxxxxxxxxxxxxxx",
        "client_secret": "<AppSecret from the developer console>",
        "callback_token": "<Token from the event subscription page>",
        "callback_aes_key": "<43-character aes_key from the event subscription page>",
        "preferred_language": "zh-Hans",
        "connection_mode": "http"
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn fields(error: &AdminError) -> Vec<&str> {
        error.fields.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn the_path_id_fills_in_an_omitted_body_id() {
        let spec = parse_spec("acme", br#"{"client_id":"k","client_secret":"s"}"#).unwrap();
        assert_eq!(spec.id, "acme");
        let same = parse_spec("acme", br#"{"id":"acme"}"#).unwrap();
        assert_eq!(same.id, "acme");
    }

    #[test]
    fn a_body_id_that_contradicts_the_path_is_422() {
        let error = parse_spec("acme", br#"{"id":"other"}"#).unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(fields(&error), ["id"]);
    }

    #[test]
    fn unknown_and_mistyped_fields_are_all_named() {
        let error = parse_spec(
            "acme",
            br#"{"client_secert":"s","qps_limit":"fast","client_secret":12345,"name":"ok"}"#,
        )
        .unwrap_err();
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        let mut names = fields(&error);
        names.sort_unstable();
        assert_eq!(names, ["client_secert", "client_secret", "qps_limit"]);
        let secret = error
            .fields
            .iter()
            .find(|f| f.field == "client_secret")
            .unwrap();
        assert_eq!(secret.message, "must be a string");
        assert!(!format!("{error:?}").contains("12345"));
    }

    #[test]
    fn malformed_json_and_non_objects_are_400() {
        for body in [&b"{"[..], b"", b"[1]", b"\"text\""] {
            let error = parse_spec("acme", body).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    #[test]
    fn a_mistyped_custom_robot_is_named_without_echoing_its_values() {
        for robots in [
            json!([{"access_token": "tok-visible", "secret": 12345}]),
            json!([{"access_token": "tok-visible", "secret": "SEC-visible", "extra": 1}]),
            json!({"access_token": "tok-visible"}),
        ] {
            let body = json!({"client_id": "k", "client_secret": "s", "custom_robots": robots});
            let error = parse_spec("acme", body.to_string().as_bytes()).unwrap_err();
            assert_eq!(fields(&error), ["custom_robots"]);
            let text = format!("{error:?}");
            assert!(
                !text.contains("visible") && !text.contains("12345"),
                "{text}"
            );
        }
    }

    #[test]
    fn spec_fields_are_exactly_what_the_registry_accepts() {
        // Each listed field is accepted on its own…
        for field in SPEC_FIELDS {
            let value = match *field {
                "http_callback_enabled" => json!(true),
                "qps_limit" => json!(5),
                "custom_robots" => json!([{"access_token": "t", "secret": "s"}]),
                _ => json!("x"),
            };
            let body = json!({ *field: value }).to_string();
            parse_spec("x", body.as_bytes()).unwrap_or_else(|e| panic!("{field}: {e:?}"));
        }
        // …and serde's own list of expected fields is ours.
        let error = serde_json::from_value::<IntegrationSpec>(json!({"nope": 1})).unwrap_err();
        let expected: Vec<String> = SPEC_FIELDS.iter().map(|f| format!("`{f}`")).collect();
        assert!(error.to_string().contains(&expected.join(", ")), "{error}");
    }

    #[test]
    fn trigger_bodies_need_exactly_an_xpert_id() {
        assert_eq!(
            parse_trigger(br#"{"xpert_id":"x-1"}"#)
                .unwrap()
                .xpert_id
                .as_str(),
            "x-1"
        );
        for (body, field) in [
            (&br#"{}"#[..], "xpert_id"),
            (br#"{"xpert_id":"a b"}"#, "xpert_id"),
            (br#"{"xpert_id":"x","extra":1}"#, "extra"),
        ] {
            let error = parse_trigger(body).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(fields(&error), [field]);
        }
    }
}
