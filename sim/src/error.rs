//! Every way the simulator refuses a call, and how DingTalk would say it (PROTOCOL §6.1).
//!
//! Handlers return [`ApiError`]; the one mapping to an HTTP answer is [`ApiError::into_answer`],
//! which picks the new-API shape (non-2xx, `{"code","message","requestid"}`) or the old-API shape
//! (HTTP 200, `{"errcode","errmsg"}`) from the endpoint's [`Family`].
//!
//! Codes quoted in PROTOCOL (`InvalidAuthentication`, `QpsLimit`, `systemError`, 40014, 42001,
//! 60011, 90018, 130101, 310000, 300001, 460101, …) are used as written. Where DingTalk's exact
//! string is not known (parameter errors, unknown resources) the code is our choice and the
//! README says so; clients should branch on the HTTP status and the documented codes only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api::Family;

/// A refused call. `Display` is the human message (`message` / `errmsg`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A required field is absent (or `null`).
    #[error("{field} is mandatory for this action.")]
    MissingParameter {
        /// The field's name as DingTalk spells it.
        field: String,
    },
    /// A field is present but not acceptable; the message says what is allowed.
    #[error("invalid {field}: {reason}")]
    InvalidParameter {
        /// The field's name.
        field: String,
        /// What was wrong and what is allowed.
        reason: String,
    },
    /// The body is absent or is not JSON (DingTalk's "body is mandatory").
    #[error("body is mandatory for this action and must be a JSON object: {reason}")]
    BadBody {
        /// Why the body could not be read.
        reason: String,
    },
    /// The id names nothing this app created (card, message, download code, group).
    #[error("{what} {id:?} does not exist")]
    NotFound {
        /// What kind of thing was looked up.
        what: &'static str,
        /// The id given.
        id: String,
    },
    /// The robot is not a member of the group.
    #[error("robot {robot_code} is not in group {open_conversation_id}")]
    RobotNotInGroup {
        /// The robot.
        robot_code: String,
        /// The group.
        open_conversation_id: String,
    },
    /// No access token was given.
    #[error("access_token is missing")]
    MissingToken,
    /// The token was never issued (or is of the other API generation).
    #[error("不合法的access_token (invalid access_token)")]
    InvalidToken,
    /// The token was issued but its lifetime is over.
    #[error("access_token expired")]
    ExpiredToken,
    /// AppKey/AppSecret do not match a registered app.
    #[error("invalid appKey or appSecret")]
    BadCredentials,
    /// More calls in this second than the per-(app, API) limit allows.
    #[error("app {app} exceeded {limit} calls per second to {api}")]
    QpsLimit {
        /// The app.
        app: String,
        /// The endpoint name.
        api: &'static str,
        /// The limit in force.
        limit: u32,
    },
    /// The app lacks the permission for this API (injected).
    #[error("no permission to call this API (injected fault)")]
    PermissionDenied,
    /// DingTalk's generic "system error" (injected).
    #[error("系统错误 (system error, injected fault)")]
    SystemError,
    /// HTTP 429 (injected).
    #[error("too many requests")]
    TooManyRequests,
    /// The egress-IP ban answer, without an errcode (injected).
    #[error("egress IP banned")]
    IpBan,
    /// An HTML error page instead of JSON (injected).
    #[error("forbidden (HTML page)")]
    HtmlPage,
    /// An HTTP 500 (injected).
    #[error("internal server error (injected fault)")]
    Http500,
    /// Department id unknown (old API 60003).
    #[error("部门不存在 (department {0} does not exist)")]
    DepartmentNotFound(i64),
    /// unionid unknown (old API 60121).
    #[error("找不到该用户 (no user with unionid {0:?})")]
    UserNotFound(String),
    /// No route for this method and path (wrong case included).
    #[error("Specified api is not found, please check your url and method: {method} {path}")]
    RouteNotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// batchSend named a userId the organization does not have (whole call refused).
    #[error("staff {0} does not exist")]
    StaffNotExisted(String),
    /// A webhook robot (custom robot or session webhook) refusal with its own errcode.
    #[error("{message}")]
    Webhook {
        /// 300001, 310000, 130101, 460101, 400402, 40035, …
        errcode: i64,
        /// What was wrong.
        message: String,
    },
}

impl ApiError {
    /// Shorthand for [`ApiError::MissingParameter`].
    pub fn missing(field: impl Into<String>) -> Self {
        ApiError::MissingParameter {
            field: field.into(),
        }
    }

    /// Shorthand for [`ApiError::InvalidParameter`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidParameter {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Status and `code` of the new-API answer.
    pub fn new_api_status_and_code(&self) -> (StatusCode, String) {
        let (status, code) = match self {
            ApiError::MissingParameter { field } => {
                return (StatusCode::BAD_REQUEST, format!("Missing{field}"))
            }
            ApiError::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalidParameter"),
            ApiError::BadBody { .. } => (StatusCode::BAD_REQUEST, "MissingBody"),
            ApiError::NotFound { .. }
            | ApiError::DepartmentNotFound(_)
            | ApiError::UserNotFound(_) => (StatusCode::BAD_REQUEST, "resource.not.found"),
            ApiError::RobotNotInGroup { .. } => (StatusCode::BAD_REQUEST, "robot.notInGroup"),
            ApiError::StaffNotExisted(_) => (StatusCode::BAD_REQUEST, "staffId.notExisted"),
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::ExpiredToken => {
                (StatusCode::BAD_REQUEST, "InvalidAuthentication")
            }
            ApiError::BadCredentials => (StatusCode::BAD_REQUEST, "invalidClientIdOrSecret"),
            ApiError::QpsLimit { .. } => (
                StatusCode::FORBIDDEN,
                "Forbidden.AccessDenied.QpsLimitForApi",
            ),
            ApiError::PermissionDenied => (
                StatusCode::FORBIDDEN,
                "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            ),
            ApiError::SystemError => (StatusCode::BAD_REQUEST, "systemError"),
            ApiError::Http500 => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "Throttling"),
            ApiError::IpBan | ApiError::HtmlPage => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "InvalidAction.NotFound"),
            ApiError::Webhook { .. } => (StatusCode::BAD_REQUEST, "invalidParameter"),
        };
        (status, code.to_owned())
    }

    /// HTTP status and `errcode` of the old-API answer (the status is 200 except for injected
    /// 500s and unknown routes).
    pub fn old_api_status_and_errcode(&self) -> (StatusCode, i64) {
        match self {
            ApiError::MissingParameter { .. }
            | ApiError::InvalidParameter { .. }
            | ApiError::BadBody { .. }
            | ApiError::NotFound { .. }
            | ApiError::RobotNotInGroup { .. }
            | ApiError::StaffNotExisted(_) => (StatusCode::OK, 40035),
            ApiError::MissingToken | ApiError::InvalidToken => (StatusCode::OK, 40014),
            ApiError::ExpiredToken => (StatusCode::OK, 42001),
            ApiError::BadCredentials => (StatusCode::OK, 40089),
            ApiError::QpsLimit { .. } => (StatusCode::OK, 90018),
            ApiError::PermissionDenied => (StatusCode::OK, 60011),
            ApiError::SystemError => (StatusCode::OK, -1),
            ApiError::Http500 => (StatusCode::INTERNAL_SERVER_ERROR, -1),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, -1),
            ApiError::IpBan | ApiError::HtmlPage => (StatusCode::FORBIDDEN, -1),
            ApiError::DepartmentNotFound(_) => (StatusCode::OK, 60003),
            ApiError::UserNotFound(_) => (StatusCode::OK, 60121),
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, 404),
            ApiError::Webhook { errcode, .. } => (StatusCode::OK, *errcode),
        }
    }

    /// The HTTP status this error is answered with in `family`.
    pub fn status(&self, family: Family) -> StatusCode {
        match family {
            Family::New => self.new_api_status_and_code().0,
            Family::Old => self.old_api_status_and_errcode().0,
        }
    }

    /// The answer DingTalk would give, in the endpoint's shape.
    pub fn into_answer(&self, family: Family, request_id: &str) -> Response {
        let message = self.to_string();
        // Answers of DingTalk's front, not of the API: the same on both API generations.
        match self {
            ApiError::IpBan => {
                let body = json!({"status": 1111, "wait": 5, "source": "x5", "punish": "deny",
                    "rgv587_flag": "sm"});
                return (StatusCode::FORBIDDEN, Json(body)).into_response();
            }
            ApiError::HtmlPage => {
                return (
                    StatusCode::FORBIDDEN,
                    [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><title>403 Forbidden</title></head><body><h1>403 Forbidden</h1></body></html>",
                )
                    .into_response();
            }
            _ => {}
        }
        match family {
            Family::New => {
                let (status, code) = self.new_api_status_and_code();
                let mut body = json!({ "code": code, "message": message, "requestid": request_id });
                if let ApiError::PermissionDenied = self {
                    body["accessdenieddetail"] =
                        json!({ "requiredScopes": ["qyapi_robot_sendmsg"] });
                }
                (status, Json(body)).into_response()
            }
            Family::Old => {
                let (status, errcode) = self.old_api_status_and_errcode();
                let body: Value =
                    json!({ "errcode": errcode, "errmsg": message, "request_id": request_id });
                (status, Json(body)).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_are_400_invalid_authentication_on_the_new_api() {
        for err in [
            ApiError::MissingToken,
            ApiError::InvalidToken,
            ApiError::ExpiredToken,
        ] {
            assert_eq!(
                err.new_api_status_and_code(),
                (StatusCode::BAD_REQUEST, "InvalidAuthentication".to_owned())
            );
        }
    }

    #[test]
    fn old_api_token_errors_distinguish_invalid_from_expired() {
        assert_eq!(ApiError::InvalidToken.old_api_status_and_errcode().1, 40014);
        assert_eq!(ApiError::ExpiredToken.old_api_status_and_errcode().1, 42001);
    }

    #[test]
    fn qps_limit_code_contains_the_substring_clients_match() {
        let err = ApiError::QpsLimit {
            app: "a".into(),
            api: "robot.batchSend",
            limit: 20,
        };
        let (status, code) = err.new_api_status_and_code();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(code.contains("QpsLimit"));
        assert_eq!(err.old_api_status_and_errcode(), (StatusCode::OK, 90018));
    }

    #[test]
    fn missing_parameter_code_names_the_field() {
        let (_, code) = ApiError::missing("robotCode").new_api_status_and_code();
        assert_eq!(code, "MissingrobotCode");
        assert_eq!(
            ApiError::missing("robotCode").to_string(),
            "robotCode is mandatory for this action."
        );
    }
}
