//! Access tokens (PROTOCOL §3): cached per app and kind in-process and in Redis, refreshed
//! before they expire, fetched by one replica at a time.
//!
//! # Why single-flight across replicas
//!
//! Every replica needs the same token; if N replicas (and M tasks in each) fetched it whenever
//! it was missing, an expiry would cost N·M token calls at once. Here:
//!
//! * in-process, one task per (app, kind) talks to Redis at a time (an async mutex), the others
//!   wait for it and read the in-process cache;
//! * across replicas, the fetcher takes a Redis lock (`SET NX PX` with a random value, released
//!   by compare-and-delete so a slow holder never frees a successor's lock); the others poll
//!   the cache until the holder writes it, or take over if the lock lapses;
//! * a token inside its refresh margin but not yet expired is still served to everyone while one
//!   replica refreshes it, so an early refresh never blocks a call.
//!
//! On a token-invalid answer the caller [`invalidate`](Tokens::invalidate)s the exact token
//! that failed (compare-and-delete), so a replica that learns late cannot delete the fresh
//! token another one already fetched.
//!
//! # Redis keys (`<p>` = `key_prefix`)
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `<p>token:<integration>:<client id>:<new\|old>` | hash, TTL = lifetime | `token`, `expires_at_ms`, `refresh_at_ms` |
//! | `<p>token-lock:<integration>:<client id>:<new\|old>` | string, TTL | the holder's random value |
//!
//! The client id is part of the key so that new credentials never reuse the old app's token.
//! The two token kinds are kept apart (PROTOCOL §3.2).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::secret::Secret;
use redis::aio::ConnectionManager;
use serde_json::Value;

use super::api::{App, TokenKind};
use super::error::DingTalkError;

/// Lifetime assumed when DingTalk's answer has none or a non-positive one (PROTOCOL §3.3: a
/// zero caused a tight refetch loop elsewhere).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(7200);
/// After an early refresh failed, how long the current token serves before the next try.
const REFRESH_RETRY: Duration = Duration::from_secs(30);
/// When a call that found no token is tried again.
pub const TOKEN_RETRY: Duration = Duration::from_secs(5);
/// How often a waiting replica looks for the token another one is fetching.
const POLL: Duration = Duration::from_millis(50);

/// A token and its timing, all in wall-clock milliseconds.
#[derive(Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The token.
    pub token: Secret,
    /// When DingTalk stops accepting it.
    pub expires_at_ms: i64,
    /// When to start refreshing it.
    pub refresh_at_ms: i64,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &self.token)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish()
    }
}

impl CachedToken {
    /// A token fetched at `now_ms` that lives `lifetime`; refreshing starts `margin` before the
    /// end, but never in the first half of its life (a short-lived token with a long margin
    /// would otherwise be refetched on every call).
    pub fn fetched(token: Secret, now_ms: i64, lifetime: Duration, margin: Duration) -> Self {
        let lifetime_ms = millis(lifetime);
        let margin_ms = millis(margin).min(lifetime_ms / 2);
        Self {
            token,
            expires_at_ms: now_ms.saturating_add(lifetime_ms),
            refresh_at_ms: now_ms.saturating_add(lifetime_ms - margin_ms),
        }
    }

    /// Usable without refreshing.
    pub fn fresh(&self, now_ms: i64) -> bool {
        now_ms < self.refresh_at_ms
    }

    /// Still accepted by DingTalk.
    pub fn valid(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Reads a token answer: new API `{"accessToken","expireIn"}`, old API
/// `{"access_token","expires_in"}`. Returns the token and its lifetime.
pub fn parse_token_answer(kind: TokenKind, body: &Value) -> Result<(Secret, Duration), String> {
    let (token_field, lifetime_field) = match kind {
        TokenKind::New => ("accessToken", "expireIn"),
        TokenKind::Old => ("access_token", "expires_in"),
    };
    let token = body
        .get(token_field)
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| format!("the token answer has no {token_field}"))?;
    let lifetime = body
        .get(lifetime_field)
        .and_then(|value| {
            value
                .as_i64()
                .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        })
        .filter(|seconds| *seconds > 0)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((Secret::new(token), lifetime))
}

/// The cache key of one app's token of one kind (without prefix).
fn cache_id(app: &App, kind: TokenKind) -> String {
    format!("{}:{}:{}", app.integration_id, app.client_id, kind.as_str())
}

/// The token cache of one process.
pub struct Tokens {
    prefix: String,
    margin: Duration,
    lock_ttl: Duration,
    local: Mutex<HashMap<String, CachedToken>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    release: redis::Script,
    invalidate: redis::Script,
}

/// Compare-and-delete of the lock: only the holder's value frees it.
const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Compare-and-delete of the cached token: only the token that failed is dropped.
const INVALIDATE: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

impl Tokens {
    /// A cache refreshing `margin` before expiry; a fetch holds the cross-replica lock for at
    /// most `lock_ttl`.
    pub fn new(prefix: &str, margin: Duration, lock_ttl: Duration) -> Self {
        Self {
            prefix: prefix.to_owned(),
            margin,
            lock_ttl,
            local: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            release: redis::Script::new(RELEASE_LOCK),
            invalidate: redis::Script::new(INVALIDATE),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}token:{id}", self.prefix)
    }

    fn lock_key(&self, id: &str) -> String {
        format!("{}token-lock:{id}", self.prefix)
    }

    fn local_get(&self, id: &str) -> Option<CachedToken> {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn local_put(&self, id: &str, token: CachedToken) {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), token);
    }

    fn flight(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// A usable token for `app`: from this process, from Redis, or fetched with `fetch` by
    /// exactly one replica. `fetch` returns the token and its lifetime.
    pub async fn get<F, Fut>(
        &self,
        redis: &mut ConnectionManager,
        app: &App,
        kind: TokenKind,
        fetch: F,
    ) -> Result<Secret, DingTalkError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Secret, Duration), DingTalkError>>,
    {
        let id = cache_id(app, kind);
        if let Some(cached) = self.local_get(&id).filter(|t| t.fresh(now_ms())) {
            return Ok(cached.token);
        }
        let flight = self.flight(&id);
        let _in_process = match flight.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another task of this process is refreshing: a token DingTalk still accepts
                // serves meanwhile, so an early refresh never makes calls queue behind it.
                if let Some(valid) = self.local_get(&id).filter(|t| t.valid(now_ms())) {
                    return Ok(valid.token);
                }
                flight.lock().await
            }
        };
        if let Some(cached) = self.local_get(&id).filter(|t| t.fresh(now_ms())) {
            return Ok(cached.token);
        }
        let key = self.key(&id);
        let lock_key = self.lock_key(&id);
        let mut fetch = Some(fetch);
        let deadline = tokio::time::Instant::now() + self.lock_ttl + POLL * 4;
        loop {
            let stored = read(redis, &key).await.map_err(redis_error)?;
            let now = now_ms();
            if let Some(stored) = stored.as_ref().filter(|t| t.fresh(now)) {
                self.local_put(&id, stored.clone());
                return Ok(stored.token.clone());
            }
            let still_valid = stored.filter(|t| t.valid(now));
            let lock_value = format!("{:032x}", rand::random::<u128>());
            let locked: Option<String> = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&lock_value)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.lock_ttl))
                .query_async(redis)
                .await
                .map_err(redis_error)?;
            if locked.is_some() {
                let Some(fetch) = fetch.take() else {
                    // Only reachable if a fetch already ran in this loop and returned: it
                    // always returns, so this is a proven-unreachable state; answer safely.
                    return Err(unavailable("token fetch was already attempted"));
                };
                let fetched = tokio::time::timeout(self.lock_ttl, fetch()).await;
                let result = match fetched {
                    Ok(Ok((token, lifetime))) => {
                        let cached = CachedToken::fetched(token, now_ms(), lifetime, self.margin);
                        let written = write(redis, &key, &cached).await;
                        if let Err(err) = written {
                            tracing::warn!(error = %err, "could not store the access token in Redis");
                        }
                        self.local_put(&id, cached.clone());
                        Ok(cached.token)
                    }
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(unavailable("fetching the access token timed out")),
                };
                let released = self
                    .release
                    .key(&lock_key)
                    .arg(&lock_value)
                    .invoke_async::<i64>(redis)
                    .await;
                if let Err(err) = released {
                    tracing::warn!(error = %err, "could not release the token lock; it expires by itself");
                }
                let outcome = if result.is_ok() { "ok" } else { "error" };
                metrics::counter!(
                    "dingtalk_gateway_notifier_token_refreshes_total",
                    "result" => outcome,
                    "kind" => kind.as_str()
                )
                .increment(1);
                return match (result, still_valid) {
                    (Ok(token), _) => Ok(token),
                    // An early refresh failed: the old token still works for a while. This
                    // process tries again after REFRESH_RETRY, not on its very next call.
                    (Err(err), Some(old)) => {
                        tracing::warn!(error = %err, "early token refresh failed; using the current token");
                        let retry_at = now_ms().saturating_add(millis(REFRESH_RETRY));
                        self.local_put(
                            &id,
                            CachedToken {
                                refresh_at_ms: retry_at.min(old.expires_at_ms),
                                ..old.clone()
                            },
                        );
                        Ok(old.token)
                    }
                    (Err(err), None) => Err(err),
                };
            }
            // Another replica is fetching. A still-valid token serves meanwhile.
            if let Some(old) = still_valid {
                return Ok(old.token);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(
                    "another replica holds the token lock but wrote no token in time",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Forgets `token` (which DingTalk just refused) here and in Redis — only if it is still
    /// the cached one, so a fresher token written meanwhile by another replica survives.
    pub async fn invalidate(
        &self,
        redis: &mut ConnectionManager,
        app: &App,
        kind: TokenKind,
        token: &Secret,
    ) {
        let id = cache_id(app, kind);
        {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            if local.get(&id).is_some_and(|cached| &cached.token == token) {
                local.remove(&id);
            }
        }
        let deleted = self
            .invalidate
            .key(self.key(&id))
            .arg(token.expose())
            .invoke_async::<i64>(redis)
            .await;
        if let Err(err) = deleted {
            tracing::warn!(error = %err, "could not drop the refused token from Redis");
        }
    }
}

fn redis_error(err: redis::RedisError) -> DingTalkError {
    unavailable(&format!("Redis unavailable for the token cache: {err}"))
}

/// Nothing was sent to DingTalk; trying again later is safe.
fn unavailable(detail: &str) -> DingTalkError {
    DingTalkError::Unavailable {
        retry_after: TOKEN_RETRY,
        detail: format!("no access token: {detail}"),
    }
}

async fn read(
    redis: &mut ConnectionManager,
    key: &str,
) -> Result<Option<CachedToken>, redis::RedisError> {
    let (token, expires_at_ms, refresh_at_ms): (Option<String>, Option<i64>, Option<i64>) =
        redis::cmd("HMGET")
            .arg(key)
            .arg("token")
            .arg("expires_at_ms")
            .arg("refresh_at_ms")
            .query_async(redis)
            .await?;
    Ok(match (token, expires_at_ms, refresh_at_ms) {
        (Some(token), Some(expires_at_ms), Some(refresh_at_ms)) => Some(CachedToken {
            token: Secret::new(token),
            expires_at_ms,
            refresh_at_ms,
        }),
        _ => None,
    })
}

async fn write(
    redis: &mut ConnectionManager,
    key: &str,
    token: &CachedToken,
) -> Result<(), redis::RedisError> {
    let ttl_ms = (token.expires_at_ms - now_ms()).max(1);
    redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(key)
        .ignore()
        .cmd("HSET")
        .arg(key)
        .arg("token")
        .arg(token.token.expose())
        .arg("expires_at_ms")
        .arg(token.expires_at_ms)
        .arg("refresh_at_ms")
        .arg(token.refresh_at_ms)
        .ignore()
        .cmd("PEXPIRE")
        .arg(key)
        .arg(ttl_ms)
        .ignore()
        .query_async::<()>(redis)
        .await
}

/// Wall-clock milliseconds; token lifetimes are long enough that replica clock skew of a few
/// seconds does not matter.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn new_and_old_token_answers_are_read() {
        let (token, lifetime) = parse_token_answer(
            TokenKind::New,
            &json!({"accessToken": "t1", "expireIn": 7200}),
        )
        .unwrap();
        assert_eq!(token.expose(), "t1");
        assert_eq!(lifetime, Duration::from_secs(7200));
        let (token, lifetime) = parse_token_answer(
            TokenKind::Old,
            &json!({"errcode": 0, "access_token": "t2", "expires_in": 3600}),
        )
        .unwrap();
        assert_eq!(token.expose(), "t2");
        assert_eq!(lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn missing_or_non_positive_lifetime_means_7200_seconds() {
        for body in [
            json!({"accessToken": "t"}),
            json!({"accessToken": "t", "expireIn": 0}),
            json!({"accessToken": "t", "expireIn": -5}),
            json!({"accessToken": "t", "expireIn": null}),
        ] {
            let (_, lifetime) = parse_token_answer(TokenKind::New, &body).unwrap();
            assert_eq!(lifetime, DEFAULT_LIFETIME, "{body}");
        }
    }

    #[test]
    fn an_answer_without_token_is_an_error_that_names_the_field() {
        let err = parse_token_answer(TokenKind::Old, &json!({"errcode": 0})).unwrap_err();
        assert!(err.contains("access_token"), "{err}");
        assert!(parse_token_answer(TokenKind::New, &json!({"accessToken": ""})).is_err());
    }

    #[test]
    fn refresh_starts_margin_before_expiry() {
        let cached = CachedToken::fetched(Secret::new("t"), 0, 120 * MIN, 5 * MIN);
        assert_eq!(cached.expires_at_ms, 7_200_000);
        assert_eq!(cached.refresh_at_ms, 6_900_000);
        assert!(cached.fresh(6_899_999));
        assert!(!cached.fresh(6_900_000));
        assert!(cached.valid(7_199_999));
        assert!(!cached.valid(7_200_000));
    }

    #[test]
    fn a_short_lived_token_is_used_for_half_its_life() {
        let cached = CachedToken::fetched(Secret::new("t"), 1_000, MIN, 5 * MIN);
        assert_eq!(cached.refresh_at_ms, 31_000);
        assert_eq!(cached.expires_at_ms, 61_000);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let cached = CachedToken::fetched(Secret::new("sekrit"), 0, MIN, MIN);
        assert!(!format!("{cached:?}").contains("sekrit"));
    }

    #[test]
    fn cache_ids_separate_kinds_and_credentials() {
        let app = App {
            integration_id: "acme".into(),
            client_id: "dingA".into(),
            client_secret: Secret::new("s"),
            robot_code: "dingA".into(),
            qps_limit: 20,
        };
        assert_eq!(cache_id(&app, TokenKind::New), "acme:dingA:new");
        assert_eq!(cache_id(&app, TokenKind::Old), "acme:dingA:old");
        let other = App {
            client_id: "dingB".into(),
            ..app.clone()
        };
        assert_ne!(
            cache_id(&app, TokenKind::New),
            cache_id(&other, TokenKind::New)
        );
    }
}
