//! Bearer-token authorization for everything under `/api/` on the admin listener.
//!
//! With `ADMIN_TOKEN` unset nothing is authorized: an admin API that silently opens up when a
//! variable is forgotten would hand out every tenant's DingTalk credentials.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use common::secret::Secret;

use super::error::AdminError;

/// Middleware: lets the request through only with `Authorization: Bearer <ADMIN_TOKEN>`.
pub(super) async fn require_token(
    State(expected): State<Option<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    match authorize(expected.as_ref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The decision, without I/O: `Ok` when the header carries the expected token.
pub(super) fn authorize(expected: Option<&Secret>, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(expected) = expected.filter(|token| !token.is_empty()) else {
        return Err(AdminError::disabled());
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AdminError::unauthorized(
            "this call needs the header `Authorization: Bearer <ADMIN_TOKEN>`",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return Err(AdminError::unauthorized(
            "the Authorization header must be `Bearer <ADMIN_TOKEN>`",
        ));
    };
    if tokens_match(presented, expected.expose()) {
        Ok(())
    } else {
        Err(AdminError::unauthorized(
            "the bearer token is not ADMIN_TOKEN",
        ))
    }
}

/// Compares digests in constant time, so neither the content nor the length of the token
/// leaks through response timing.
fn tokens_match(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_right_bearer_token_is_accepted_whatever_the_scheme_case() {
        let token = Secret::from("t0ken");
        assert!(authorize(Some(&token), &with_auth("Bearer t0ken")).is_ok());
        assert!(authorize(Some(&token), &with_auth("bearer t0ken")).is_ok());
    }

    #[test]
    fn a_missing_or_wrong_token_is_401() {
        let token = Secret::from("t0ken");
        for headers in [
            HeaderMap::new(),
            with_auth("Bearer t0ke"),
            with_auth("Bearer t0ken-and-more"),
            with_auth("Basic dDBrZW4="),
            with_auth("t0ken"),
        ] {
            let error = authorize(Some(&token), &headers).unwrap_err();
            assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert!(!error.message.contains("t0ken"));
        }
    }

    #[test]
    fn without_an_admin_token_everything_is_refused() {
        for expected in [None, Some(Secret::from(""))] {
            let error = authorize(expected.as_ref(), &with_auth("Bearer ")).unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN);
            assert!(error.message.contains("ADMIN_TOKEN is set"));
        }
    }
}
