//! Random identifiers in the shapes DingTalk hands out, and the wall clock in milliseconds.
//!
//! Ids only need to be unique and opaque; their prefixes make a simulator id recognisable in a
//! log line.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::distr::Alphanumeric;
use rand::Rng as _;

/// `n` random ASCII letters and digits.
pub fn alphanumeric(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A new-API access token (`accessToken`).
pub fn new_api_token() -> String {
    format!("simat{}", alphanumeric(27))
}

/// An old-API access token (`access_token`); a different prefix keeps the two kinds apart.
pub fn old_api_token() -> String {
    format!("simot{}", alphanumeric(27))
}

/// A robot message's `processQueryKey`.
pub fn process_query_key() -> String {
    format!("simpqk{}", alphanumeric(26))
}

/// A `media_id` like DingTalk's `@lA…`.
pub fn media_id() -> String {
    format!("@lASim{}", alphanumeric(24))
}

/// A robot callback's `downloadCode`.
pub fn download_code() -> String {
    format!("simdc{}", alphanumeric(27))
}

/// The `requestid` of an answer.
pub fn request_id() -> String {
    alphanumeric(20).to_ascii_lowercase()
}

/// A robot callback's `msgId`.
pub fn msg_id() -> String {
    format!("msg{}", alphanumeric(21))
}

/// An event callback's `nonce` (8 alphanumerics, as in DingTalk's real captures).
pub fn nonce() -> String {
    alphanumeric(8)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kinds_are_distinguishable_and_unique() {
        let (a, b) = (new_api_token(), new_api_token());
        assert_ne!(a, b);
        assert!(a.starts_with("simat") && old_api_token().starts_with("simot"));
        assert_eq!(a.len(), 32);
    }
}
