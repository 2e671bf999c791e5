//! The admin API's one error type and its single mapping to an HTTP answer.
//!
//! Every refusal is `{"error":{"code","message"}}` — the same shape as the public listener —
//! plus `"fields":[{"field","message"}]` when the request body broke field rules, so a form can
//! point at each bad field in one round trip. Messages never contain a secret.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use common::registry::{FieldError, RegistryError};

/// One problem with one field of a request body.
///
/// The registry's [`FieldError`] names fields it knows; unknown fields come from the caller's
/// JSON, hence an owned name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The field's name as spelled in the request JSON.
    pub field: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for FieldProblem {
    fn from(error: FieldError) -> Self {
        Self::new(error.field, error.message)
    }
}

/// Why an admin request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The HTTP status the caller sees.
    pub status: StatusCode,
    /// A stable, machine-readable reason.
    pub code: &'static str,
    /// What was wrong and what to do about it.
    pub message: String,
    /// Every bad field, for 422 answers; empty otherwise.
    pub fields: Vec<FieldProblem>,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// 401: no bearer token, or the wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: `ADMIN_TOKEN` is unset, so no request can be authorized.
    pub fn disabled() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled until ADMIN_TOKEN is set; set it to a long random \
             string (e.g. `openssl rand -hex 32`) and restart the ingress",
        )
    }

    /// 404: no integration with that id.
    pub fn unknown_integration(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!("no integration {id:?} is registered"),
        )
    }

    /// 404: the integration has no trigger binding.
    pub fn no_trigger(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no_trigger",
            format!("integration {id:?} has no trigger binding"),
        )
    }

    /// 404: nothing is served at this path.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing is served at {path}; GET /openapi.json lists every route"),
        )
    }

    /// 400: the body is not JSON, or not a JSON object.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 413 for a body over the limit, else 400: the body could not be read.
    pub fn unreadable_body(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {} bytes", super::MAX_BODY_BYTES),
            )
        } else {
            Self::malformed(rejection.body_text())
        }
    }

    /// 422: the body parsed but broke field rules; `fields` names every bad field.
    pub fn validation(fields: Vec<FieldProblem>) -> Self {
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("invalid fields: {}", names.join(", ")),
        );
        error.fields = fields;
        error
    }

    /// 409: the preflight needs `PUBLIC_BASE_URL`, which is unset.
    pub fn public_base_url_unset() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "public_base_url_unset",
            "PUBLIC_BASE_URL is not set, so the gateway cannot tell which webhook URL to enter \
             in the DingTalk console; set PUBLIC_BASE_URL to the public address of the ingress \
             (e.g. https://bot.example.com) and restart the ingress",
        )
    }

    /// 503: Redis did not answer.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            message,
        )
    }

    /// 500: stored data cannot be used.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<RegistryError> for AdminError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Validation(fields) => {
                Self::validation(fields.into_iter().map(FieldProblem::from).collect())
            }
            RegistryError::UnknownIntegration(id) => Self::unknown_integration(id.as_str()),
            RegistryError::Redis { .. } | RegistryError::Timeout { .. } => {
                Self::unavailable(error.to_string())
            }
            // Corrupt records, unopenable secrets (a missing SECRETS_KEY_PREVIOUS after a
            // rotation) and the binding race the admin API never triggers. Their messages name
            // keys and key ids, never secret values.
            RegistryError::Corrupt { .. }
            | RegistryError::Secrets { .. }
            | RegistryError::StaleGeneration { .. } => Self::internal(error.to_string()),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "admin request failed");
        }
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.fields.is_empty() {
            error["fields"] = json!(self.fields);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dingtalk-gateway admin\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_validation_becomes_422_naming_every_field() {
        let error = AdminError::from(RegistryError::Validation(vec![
            FieldError {
                field: "id",
                message: "is required".into(),
            },
            FieldError {
                field: "callback_aes_key",
                message: "must be exactly 43 characters".into(),
            },
        ]));
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.message, "invalid fields: id, callback_aes_key");
        assert_eq!(error.fields.len(), 2);
    }

    #[test]
    fn unauthorized_answers_carry_the_bearer_challenge() {
        let response = AdminError::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = AdminError::disabled().into_response();
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
