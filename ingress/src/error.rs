//! The ingress's one error type and its single mapping to an HTTP answer.
//!
//! Every refusal is a JSON body `{"error":{"code","message"}}` with no secret in it, and is
//! counted in `dingtalk_gateway_ingress_callbacks_total{result=<code>}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use common::crypto::CryptoError;

/// Why a callback was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackError {
    /// The HTTP status DingTalk (or the caller) sees.
    pub status: StatusCode,
    /// A stable, machine-readable reason; also the metric label.
    pub code: &'static str,
    /// What was wrong and what is expected.
    pub message: String,
}

impl CallbackError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404: no integration with that id.
    pub fn unknown_integration(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!("no integration {id:?} is registered"),
        )
    }

    /// 403: the integration does not accept HTTP callbacks.
    pub fn callbacks_disabled(why: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "callbacks_disabled", why)
    }

    /// 401: signature or sign does not match.
    pub fn bad_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
    }

    /// 403: an unsigned card callback that names no card the gateway sent where it was pressed.
    pub fn unknown_card(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "unknown_card", message)
    }

    /// 401: timestamp outside the accepted window.
    pub fn stale(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "stale_timestamp", message)
    }

    /// 400: the ciphertext cannot be decrypted or is addressed to another app.
    pub fn undecryptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "undecryptable", message)
    }

    /// 400: not JSON, or JSON of the wrong shape.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    /// 400: a required header or query parameter is absent.
    pub fn missing(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "missing_field", what)
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the body did not arrive within {} ms", limit.as_millis()),
        )
    }

    /// 413: body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {limit} bytes"),
        )
    }

    /// 503: the event could not be made durable in time; DingTalk will redeliver.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// 500: the integration's stored configuration cannot be used.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured", message)
    }

    /// Maps a crypto failure: authentication failures are 401, the rest 400.
    pub fn from_crypto(err: CryptoError) -> Self {
        match err {
            CryptoError::Stale { .. } | CryptoError::BadTimestamp { .. } => {
                Self::stale(err.to_string())
            }
            ref e if e.is_authentication_failure() => Self::bad_signature(err.to_string()),
            CryptoError::InvalidKeyLength { .. } | CryptoError::InvalidKeyEncoding => {
                Self::misconfigured(format!(
                    "the integration's callback_aes_key is unusable: {err}"
                ))
            }
            _ => Self::undecryptable(err.to_string()),
        }
    }
}

impl IntoResponse for CallbackError {
    fn into_response(self) -> Response {
        crate::metrics::callback(self.code);
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "callback not accepted");
        } else {
            tracing::info!(code = self.code, message = %self.message, "callback refused");
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
