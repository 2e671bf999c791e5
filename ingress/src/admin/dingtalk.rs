//! The three DingTalk calls the preflight makes, each bounded by the client's timeouts
//! ([`client`]): the new API's access token (PROTOCOL §3.1), the old API's token (§3.2) and a
//! one-user `topapi/user/listsimple` (§5).
//!
//! Errors are reduced to [`CallError`], which keeps DingTalk's own code and message but never
//! a URL: the old API takes the AppSecret and the token in the query string.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::secret::Secret;

/// Longest a single DingTalk call of the preflight may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the TCP + TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client for DingTalk calls, with the timeouts above.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!(
            "dingtalk-gateway-ingress/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        // Invariant: the builder only fails on TLS back-end or custom-certificate set-up; we use
        // the bundled rustls with its built-in roots and add nothing.
        .expect("a reqwest client with rustls defaults always builds")
}

/// Why a DingTalk call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No HTTP answer: DNS, connection, TLS or timeout.
    Unreachable {
        /// What went wrong, without the URL.
        reason: String,
    },
    /// The new API answered a non-2xx status (§6.1: `{"code","message"}`).
    Status {
        /// The HTTP status.
        status: u16,
        /// DingTalk's `code`, when the body had one.
        code: Option<String>,
        /// DingTalk's `message`, when the body had one.
        message: Option<String>,
    },
    /// The old API answered `errcode != 0` (§6.1: HTTP 200 with `{"errcode","errmsg"}`).
    ErrCode {
        /// DingTalk's `errcode`.
        errcode: i64,
        /// DingTalk's `errmsg`.
        errmsg: String,
    },
    /// An answer we could not read (not JSON, missing fields): an IP ban page or a proxy.
    Unexpected {
        /// What was wrong with it.
        what: String,
    },
}

/// `POST {api}/v1.0/oauth2/accessToken`; `Ok` when DingTalk issued a token.
pub async fn access_token(
    http: &reqwest::Client,
    api_url: &str,
    app_key: &str,
    app_secret: &Secret,
) -> Result<(), CallError> {
    let request = http
        .post(format!("{api_url}/v1.0/oauth2/accessToken"))
        .json(&json!({"appKey": app_key, "appSecret": app_secret.expose()}));
    let (status, body) = send(request).await?;
    if !status.is_success() {
        return Err(status_error(status, &body));
    }
    match body.get("accessToken").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(()),
        _ => Err(CallError::Unexpected {
            what: format!("HTTP {} without an accessToken", status.as_u16()),
        }),
    }
}

/// `GET {oapi}/gettoken?appkey=…&appsecret=…`; the old API's token.
pub async fn old_access_token(
    http: &reqwest::Client,
    oapi_url: &str,
    app_key: &str,
    app_secret: &Secret,
) -> Result<Secret, CallError> {
    let request = http
        .get(format!("{oapi_url}/gettoken"))
        .query(&[("appkey", app_key), ("appsecret", app_secret.expose())]);
    let body = old_api(request).await?;
    match body.get("access_token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(Secret::from(token)),
        _ => Err(CallError::Unexpected {
            what: "errcode 0 without an access_token".to_owned(),
        }),
    }
}

/// `POST {oapi}/topapi/user/listsimple` for one member of the root department: the cheapest
/// call that needs the contact read permission.
pub async fn list_one_member(
    http: &reqwest::Client,
    oapi_url: &str,
    token: &Secret,
) -> Result<(), CallError> {
    let request = http
        .post(format!("{oapi_url}/topapi/user/listsimple"))
        .query(&[("access_token", token.expose())])
        .json(&json!({"dept_id": 1, "cursor": 0, "size": 1}));
    old_api(request).await.map(drop)
}

/// Sends an old-API request: any HTTP error or `errcode != 0` is an error.
async fn old_api(request: reqwest::RequestBuilder) -> Result<Value, CallError> {
    let (status, body) = send(request).await?;
    if !status.is_success() {
        return Err(status_error(status, &body));
    }
    match body.get("errcode").and_then(Value::as_i64) {
        Some(0) => Ok(body),
        Some(errcode) => Err(CallError::ErrCode {
            errcode,
            errmsg: text(&body, "errmsg").unwrap_or_default(),
        }),
        None => Err(CallError::Unexpected {
            what: format!("HTTP {} without an errcode", status.as_u16()),
        }),
    }
}

/// Sends the request and reads a JSON body (`Null` for an empty one).
async fn send(request: reqwest::RequestBuilder) -> Result<(StatusCode, Value), CallError> {
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if bytes.is_empty() {
        return Ok((status, Value::Null));
    }
    serde_json::from_slice(&bytes)
        .map(|body| (status, body))
        .map_err(|_| CallError::Unexpected {
            what: format!(
                "HTTP {} with a body that is not JSON (an IP ban page or a proxy?)",
                status.as_u16()
            ),
        })
}

fn status_error(status: StatusCode, body: &Value) -> CallError {
    CallError::Status {
        status: status.as_u16(),
        code: text(body, "code"),
        message: text(body, "message"),
    }
}

fn text(body: &Value, field: &str) -> Option<String> {
    body.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// Describes a transport error without its URL (which may carry the AppSecret or a token).
fn unreachable(error: reqwest::Error) -> CallError {
    let reason = if error.is_timeout() {
        format!("no answer within {} s", CALL_TIMEOUT.as_secs())
    } else {
        let error = error.without_url();
        let mut parts = vec![error.to_string()];
        // Walk the cause chain: "error sending request" alone does not help anyone.
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            parts.push(cause.to_string());
            source = cause.source();
        }
        parts.join(": ")
    };
    CallError::Unreachable { reason }
}
