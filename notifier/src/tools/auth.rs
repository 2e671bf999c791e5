//! `Authorization: Bearer $TOOLS_TOKEN` on every request of the tools listener (MCP and HTTP):
//! whoever holds the token can make the robot send, so nothing is served without it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::secret::Secret;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Middleware: passes the request on only with the right bearer token, else answers 401.
pub async fn require_token(
    State(expected): State<Secret>,
    request: Request,
    next: Next,
) -> Response {
    match check(&expected, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => unauthorized(reason),
    }
}

/// The decision, free of I/O: `Err` says what is wrong (never the token itself).
pub fn check(expected: &Secret, headers: &HeaderMap) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("this listener needs the header `Authorization: Bearer <TOOLS_TOKEN>`")?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or("the Authorization header must be `Bearer <TOOLS_TOKEN>`")?;
    if tokens_match(presented, expected.expose()) {
        Ok(())
    } else {
        Err("the bearer token is not TOOLS_TOKEN")
    }
}

/// Compares SHA-256 digests in constant time, so neither the content nor the length of the
/// token leaks through response timing.
fn tokens_match(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.ct_eq(&expected).into()
}

fn unauthorized(reason: &str) -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": "unauthorized", "message": reason}})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dingtalk-gateway tools\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_right_token_passes_whatever_the_scheme_case() {
        let token = Secret::from("tools-token-0123456789");
        assert!(check(&token, &with("Bearer tools-token-0123456789")).is_ok());
        assert!(check(&token, &with("bearer tools-token-0123456789")).is_ok());
    }

    #[test]
    fn a_missing_malformed_or_wrong_token_is_refused_without_echoing_it() {
        let token = Secret::from("tools-token-0123456789");
        for headers in [
            HeaderMap::new(),
            with("Bearer tools-token-012345678"),
            with("Bearer tools-token-0123456789x"),
            with("Basic dG9vbHM="),
            with("tools-token-0123456789"),
        ] {
            let reason = check(&token, &headers).unwrap_err();
            assert!(!reason.contains("0123456789"), "{reason}");
        }
    }
}
