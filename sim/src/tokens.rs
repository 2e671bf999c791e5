//! Access tokens of one API generation (PROTOCOL §3). The simulator keeps two stores, one for
//! `accessToken` (new API) and one for `access_token` (old API), so a token of one kind is
//! "invalid" on the other, as the protocol notes advise clients to assume.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::ApiError;

/// Who a token was issued to, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    app_key: String,
    expires_at_ms: i64,
}

/// A token handed out, with its lifetime in seconds (`expireIn` / `expires_in`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in_s: u64,
}

/// The tokens of one kind.
#[derive(Debug)]
pub struct TokenStore {
    mint: fn() -> String,
    grants: HashMap<String, Grant>,
    current: HashMap<String, String>,
    cap: usize,
}

impl TokenStore {
    /// A store minting tokens with `mint`; expired grants are pruned once `cap` is reached
    /// (each app has at most one live token, so the live set is bounded by the app count).
    pub fn new(mint: fn() -> String, cap: usize) -> Self {
        Self {
            mint,
            grants: HashMap::new(),
            current: HashMap::new(),
            cap,
        }
    }

    /// A token for `app_key`. A still-valid token is returned again with its lifetime renewed
    /// (PROTOCOL §3.3 reports this, unverified); an expired one is replaced.
    pub fn issue(&mut self, app_key: &str, now_ms: i64, lifetime: Duration) -> Issued {
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        let expires_at_ms = now_ms.saturating_add(lifetime_ms);
        let reusable = self
            .current
            .get(app_key)
            .filter(|token| {
                self.grants
                    .get(*token)
                    .is_some_and(|grant| grant.expires_at_ms > now_ms)
            })
            .cloned();
        let token = match reusable {
            Some(token) => token,
            None => {
                if self.grants.len() >= self.cap {
                    self.grants.retain(|_, grant| grant.expires_at_ms > now_ms);
                }
                let token = (self.mint)();
                self.current.insert(app_key.to_owned(), token.clone());
                token
            }
        };
        self.grants.insert(
            token.clone(),
            Grant {
                app_key: app_key.to_owned(),
                expires_at_ms,
            },
        );
        Issued {
            token,
            expires_in_s: lifetime.as_secs(),
        }
    }

    /// The app a token belongs to, if it is known and unexpired at `now_ms`.
    pub fn check(&self, token: Option<&str>, now_ms: i64) -> Result<String, ApiError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::MissingToken)?;
        let grant = self.grants.get(token).ok_or(ApiError::InvalidToken)?;
        if grant.expires_at_ms <= now_ms {
            return Err(ApiError::ExpiredToken);
        }
        Ok(grant.app_key.clone())
    }

    /// Expires every live token (of `app_key` only, when given) at `now_ms`; returns how many.
    pub fn expire(&mut self, app_key: Option<&str>, now_ms: i64) -> usize {
        let mut expired = 0;
        for grant in self.grants.values_mut() {
            let selected = app_key.is_none_or(|app| app == grant.app_key);
            if selected && grant.expires_at_ms > now_ms {
                grant.expires_at_ms = now_ms;
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn store() -> TokenStore {
        TokenStore::new(crate::ids::new_api_token, 10)
    }

    #[test]
    fn a_valid_token_is_reissued_unchanged_and_renewed() {
        let mut tokens = store();
        let first = tokens.issue("dingA", 0, HOUR);
        let again = tokens.issue("dingA", 3_000_000, HOUR);
        assert_eq!(first.token, again.token);
        assert_eq!(
            tokens.check(Some(&first.token), 3_700_000),
            Ok("dingA".to_owned())
        );
    }

    #[test]
    fn expired_token_is_reported_as_expired_then_replaced() {
        let mut tokens = store();
        let first = tokens.issue("dingA", 0, HOUR);
        assert_eq!(
            tokens.check(Some(&first.token), 3_600_000),
            Err(ApiError::ExpiredToken)
        );
        let second = tokens.issue("dingA", 3_600_000, HOUR);
        assert_ne!(first.token, second.token);
    }

    #[test]
    fn unknown_and_missing_tokens_are_refused() {
        let tokens = store();
        assert_eq!(tokens.check(Some("nope"), 0), Err(ApiError::InvalidToken));
        assert_eq!(tokens.check(None, 0), Err(ApiError::MissingToken));
        assert_eq!(tokens.check(Some(""), 0), Err(ApiError::MissingToken));
    }

    #[test]
    fn expiring_one_app_leaves_the_others_valid() {
        let mut tokens = store();
        let a = tokens.issue("dingA", 0, HOUR);
        let b = tokens.issue("dingB", 0, HOUR);
        assert_eq!(tokens.expire(Some("dingA"), 10), 1);
        assert_eq!(
            tokens.check(Some(&a.token), 11),
            Err(ApiError::ExpiredToken)
        );
        assert!(tokens.check(Some(&b.token), 11).is_ok());
    }

    #[test]
    fn the_store_stays_bounded_by_pruning_expired_grants() {
        let mut tokens = store();
        for i in 0..100 {
            tokens.issue("dingA", i * 10_000_000, HOUR);
        }
        assert!(tokens.grants.len() <= 10);
    }
}
