//! The DingTalk API client: the only place the gateway talks to DingTalk.
//!
//! [`DingTalk::call`] takes one [`ApiCall`] for a [`Target`] and owns everything between the
//! command engine and DingTalk's answer:
//!
//! * **rate limits** shared by every replica through Redis: per (app, API) QPS, the per-egress-IP
//!   budget and the custom robot's 20 messages a minute (`limiter`);
//! * **access tokens**, cached in-process and in Redis, refreshed once across replicas
//!   (`token`);
//! * **answer classification** (PROTOCOL §6.1/§6.2) and the **retry policy** of §6.4
//!   (`classify`, `retry`);
//! * per-integration **usage** counters and metrics.
//!
//! The engine sees only a JSON body or a final [`DingTalkError`].
//!
//! # Redis keys
//!
//! All under `key_prefix` (default `dtg:`); each module documents its own:
//! `token:*` and `token-lock:*` (token cache and its single-flight lock), `limit:*` (limiter
//! logs and bans), `usage:*` (calls per integration per day and month). Pass a connection from
//! `common::redis::connect`, whose commands time out. The limiter script touches several keys
//! at once, so it needs a single Redis, not a cluster.
//!
//! # Metrics
//!
//! | name | labels | meaning |
//! |------|--------|---------|
//! | `dingtalk_gateway_notifier_dingtalk_calls_total` | `api`, `outcome`, `integration` | finished calls (`ok` or [`DingTalkError::outcome`]) |
//! | `dingtalk_gateway_notifier_dingtalk_call_duration_seconds` | `api` | a whole call, retries and waits included |
//! | `dingtalk_gateway_notifier_limiter_wait_seconds` | `api` | time spent waiting for a permit |
//! | `dingtalk_gateway_notifier_throttles_total` | `api`, `source` | throttling by our `limiter` or by `dingtalk` |
//! | `dingtalk_gateway_notifier_token_refreshes_total` | `result`, `kind` | token fetches |
//! | `dingtalk_gateway_notifier_api_usage_today_calls` / `_month_calls` | `integration` | calls spent (China time) |

mod api;
mod classify;
mod error;
mod http;
mod limiter;
mod retry;
mod token;
mod usage;

pub use api::{Api, ApiCall, App, CallBody, Host, Method, Target, TokenKind};
pub use error::DingTalkError;
pub use http::{client as http_client, TOKEN_HEADER};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::config::DingTalkEndpoints;
use common::secret::Secret;
use serde_json::{json, Value};
use tracing::Instrument as _;

use classify::{classify, Verdict};
use limiter::{Limiter, Plan};
use retry::{Attempt, Next, Policy, Tried};
use token::{now_ms, parse_token_answer, Tokens};

/// A budget of `calls` per rolling `per` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Calls allowed in any window.
    pub calls: u32,
    /// The window length.
    pub per: Duration,
}

/// Tuning of the client. The defaults follow PROTOCOL §3.3 and §6.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DingTalkOptions {
    /// Timeout of one HTTP attempt (connect + answer).
    pub call_timeout: Duration,
    /// The longest one `call` waits in total for permits and throttle backoff before it gives
    /// up with [`DingTalkError::Throttled`].
    pub max_throttle_wait: Duration,
    /// Calls per egress IP across all APIs (DingTalk bans the IP for 5 minutes beyond it).
    pub ip_budget: Budget,
    /// Messages per custom robot per rolling minute (DingTalk then throttles for ~10 minutes).
    pub custom_robot_per_minute: u32,
    /// Refresh a token this long before it expires.
    pub token_refresh_margin: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Added to the one-second (and one-minute) limiter windows so that network jitter between
    /// taking a permit and DingTalk counting the call cannot push a window over the limit.
    pub limiter_margin: Duration,
    /// First delay before retrying a 5xx/`systemError` on an idempotent call (doubles).
    pub server_retry_base: Duration,
    /// Retries of a 5xx/`systemError` on an idempotent call (PROTOCOL §6.4.3: at most 3).
    pub max_server_retries: u32,
    /// How long an egress-IP ban lasts ([`classify::IP_BAN`], DingTalk's 5 minutes; tests
    /// shorten it).
    pub ip_ban: Duration,
}

impl Default for DingTalkOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            max_throttle_wait: Duration::from_secs(30),
            ip_budget: Budget {
                calls: 10_000,
                per: Duration::from_secs(20),
            },
            custom_robot_per_minute: 20,
            token_refresh_margin: Duration::from_secs(5 * 60),
            key_prefix: "dtg:".to_owned(),
            limiter_margin: Duration::from_millis(100),
            server_retry_base: Duration::from_millis(500),
            max_server_retries: 3,
            ip_ban: classify::IP_BAN,
        }
    }
}

/// The DingTalk client. Cheap to clone; clones share caches and connections.
#[derive(Clone)]
pub struct DingTalk {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: DingTalkEndpoints,
    redis: redis::aio::ConnectionManager,
    options: DingTalkOptions,
    tokens: Tokens,
    limiter: Limiter,
    /// Permits taken by [`DingTalk::try_acquire`], by limiter bucket, waiting for their `call`.
    prepaid: Mutex<HashMap<String, Vec<Instant>>>,
    /// Integrations whose usage this process has reported (their gauges are kept current).
    reported: Mutex<std::collections::BTreeSet<String>>,
}

impl DingTalk {
    /// Builds a client over a shared HTTP client and Redis connection.
    pub fn new(
        http: reqwest::Client,
        endpoints: DingTalkEndpoints,
        redis: redis::aio::ConnectionManager,
        options: DingTalkOptions,
    ) -> Self {
        // A fetch may wait out throttling too; the lock outlives one attempt comfortably.
        let lock_ttl = options.call_timeout * 2 + Duration::from_secs(1);
        let tokens = Tokens::new(&options.key_prefix, options.token_refresh_margin, lock_ttl);
        Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                redis,
                options,
                tokens,
                limiter: Limiter::new(),
                prepaid: Mutex::new(HashMap::new()),
                reported: Mutex::new(Default::default()),
            }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &DingTalkOptions {
        &self.inner.options
    }

    /// Rate-limits, injects the right token, sends, classifies the answer and applies PROTOCOL
    /// §6.4 (token-invalid → refresh once + retry once; throttle → backoff with jitter and
    /// retry, bounded by `max_throttle_wait`; 5xx/`systemError` → ≤ 3 retries only if the call
    /// is idempotent). Returns the 2xx JSON body (old API: `errcode` 0 checked).
    pub async fn call(&self, target: &Target, call: ApiCall) -> Result<Value, DingTalkError> {
        let span = tracing::info_span!(
            "dingtalk_call",
            api = call.api.name(),
            integration = target.label()
        );
        let started = Instant::now();
        let result = self.run(target, &call).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        metrics::counter!(
            "dingtalk_gateway_notifier_dingtalk_calls_total",
            "api" => call.api.name(),
            "outcome" => outcome,
            "integration" => target.label().to_owned()
        )
        .increment(1);
        metrics::histogram!(
            "dingtalk_gateway_notifier_dingtalk_call_duration_seconds",
            "api" => call.api.name()
        )
        .record(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            span.in_scope(
                || tracing::warn!(code = %err.code(), error = %err, "DingTalk call failed"),
            );
        }
        result
    }

    /// Non-blocking limiter probe so the engine can delay-nak a throttled integration instead
    /// of holding a slot: `Ok(())` = a permit was taken; `Err(wait)` = none before `wait`.
    ///
    /// The permit is kept for the next [`call`](Self::call) of the same target and API in
    /// this process, for half of `limiter_margin` (so a late call cannot shift its slot far
    /// enough to break a window); an unused permit just lapses.
    pub async fn try_acquire(&self, target: &Target, api: Api) -> Result<(), Duration> {
        let plan = limiter::plan(target, api, &self.inner.options);
        let mut redis = self.inner.redis.clone();
        match self.inner.limiter.try_take(&mut redis, &plan).await {
            Ok(Ok(())) => {
                let ttl = self.inner.options.limiter_margin / 2;
                let mut prepaid = self
                    .inner
                    .prepaid
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // Unused permits lapse; drop them here too so the map stays small.
                prepaid.retain(|_, permits| {
                    permits.retain(|taken| taken.elapsed() < ttl);
                    !permits.is_empty()
                });
                prepaid.entry(plan.bucket).or_default().push(Instant::now());
                Ok(())
            }
            Ok(Err(wait)) => {
                metrics::counter!(
                    "dingtalk_gateway_notifier_throttles_total",
                    "api" => api.name(),
                    "source" => "limiter"
                )
                .increment(1);
                Err(wait)
            }
            Err(err) => {
                tracing::warn!(error = %err, "rate limiter unavailable");
                Err(LIMITER_DOWN_RETRY)
            }
        }
    }

    /// Takes a permit left by `try_acquire` for `bucket`, if one is still fresh.
    fn take_prepaid(&self, bucket: &str) -> bool {
        let ttl = self.inner.options.limiter_margin / 2;
        let mut prepaid = self
            .inner
            .prepaid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(permits) = prepaid.get_mut(bucket) else {
            return false;
        };
        permits.retain(|taken| taken.elapsed() < ttl);
        let taken = permits.pop().is_some();
        if permits.is_empty() {
            prepaid.remove(bucket);
        }
        taken
    }

    /// The call loop: token, permit, send, classify, decide (PROTOCOL §6.4).
    async fn run(&self, target: &Target, call: &ApiCall) -> Result<Value, DingTalkError> {
        let options = &self.inner.options;
        let plan = limiter::plan(target, call.api, options);
        let policy = Policy {
            max_throttle_wait: options.max_throttle_wait,
            server_retry_base: options.server_retry_base,
            max_server_retries: options.max_server_retries,
        };
        let idempotent = call.idempotent();
        let mut tried = Tried::default();
        let mut first_attempt = true;
        let mut redis = self.inner.redis.clone();
        loop {
            let token = match (target, call.api.token_kind()) {
                (Target::App(app), Some(kind)) => Some((app, kind, self.token(app, kind).await?)),
                _ => None,
            };
            // A permit from `try_acquire` serves only the first attempt, and only if still
            // fresh now that the token is in hand (a late permit could break a window).
            let prepaid = std::mem::take(&mut first_attempt) && self.take_prepaid(&plan.bucket);
            if !prepaid {
                self.wait_permit(&plan, call.api, &mut tried).await?;
            }
            let request = http::build(
                &self.inner.http,
                &self.inner.endpoints,
                target,
                call,
                token.as_ref().map(|(_, kind, token)| (*kind, token)),
                now_ms(),
            )?;
            let attempt = match http::send(request, options.call_timeout).await {
                Ok((status, body)) => {
                    let mut verdict = classify(call.api, status, &body, now_ms());
                    if let Verdict::Throttled {
                        ban:
                            Some(
                                ban @ classify::Ban {
                                    scope: classify::BanScope::Ip,
                                    ..
                                },
                            ),
                        ..
                    } = &mut verdict
                    {
                        ban.duration = options.ip_ban;
                    }
                    Attempt::Answered(verdict)
                }
                Err(failure) => failure,
            };
            if let (Target::App(app), false) = (target, matches!(attempt, Attempt::NotSent { .. }))
            {
                self.count_usage(&mut redis, &app.integration_id).await;
            }
            if let Attempt::Answered(Verdict::Throttled {
                ban: Some(ban),
                detail,
            }) = &attempt
            {
                let key = limiter::ban_key(&plan, ban.scope, options);
                tracing::warn!(ban_s = ban.duration.as_secs(), %detail, "DingTalk asked to pause; sharing the ban");
                if let Err(err) = self.inner.limiter.ban(&mut redis, &key, ban.duration).await {
                    tracing::warn!(error = %err, "could not store the ban in Redis");
                }
            }
            if let Attempt::Answered(Verdict::Throttled { .. }) = &attempt {
                metrics::counter!(
                    "dingtalk_gateway_notifier_throttles_total",
                    "api" => call.api.name(),
                    "source" => "dingtalk"
                )
                .increment(1);
            }
            match retry::decide(attempt, idempotent, &tried, &policy, rand::random()) {
                Next::Done(result) => return result,
                Next::RefreshToken => {
                    if let Some((app, kind, token)) = &token {
                        tracing::info!(
                            kind = kind.as_str(),
                            "access token refused; refreshing once"
                        );
                        self.inner
                            .tokens
                            .invalidate(&mut redis, app, *kind, token)
                            .await;
                    }
                    tried.token_refreshed = true;
                }
                Next::RetryAfter { delay, throttled } => {
                    if throttled {
                        tried.throttles += 1;
                        tried.waited += delay;
                    } else {
                        tried.server_retries += 1;
                    }
                    tracing::debug!(delay_ms = delay.as_millis() as u64, throttled, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Waits for a permit from every budget of `plan`, within what is left of the call's wait
    /// budget; the time spent counts against it.
    async fn wait_permit(
        &self,
        plan: &Plan,
        api: Api,
        tried: &mut Tried,
    ) -> Result<(), DingTalkError> {
        let started = Instant::now();
        let mut redis = self.inner.redis.clone();
        let mut throttled = false;
        loop {
            let wait = match self.inner.limiter.try_take(&mut redis, plan).await {
                Ok(Ok(())) => {
                    metrics::histogram!(
                        "dingtalk_gateway_notifier_limiter_wait_seconds",
                        "api" => api.name()
                    )
                    .record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Ok(Err(wait)) => wait,
                Err(err) => {
                    return Err(DingTalkError::Unavailable {
                        retry_after: LIMITER_DOWN_RETRY,
                        detail: format!("rate limiter unavailable: {err}"),
                    })
                }
            };
            if !throttled {
                throttled = true;
                metrics::counter!(
                    "dingtalk_gateway_notifier_throttles_total",
                    "api" => api.name(),
                    "source" => "limiter"
                )
                .increment(1);
            }
            // A little jitter so the tasks woken for the same free slot do not all collide.
            let wait = wait + Duration::from_micros(rand::random_range(0..5_000));
            if tried.waited + wait > self.inner.options.max_throttle_wait {
                metrics::histogram!(
                    "dingtalk_gateway_notifier_limiter_wait_seconds",
                    "api" => api.name()
                )
                .record(started.elapsed().as_secs_f64());
                return Err(DingTalkError::Throttled {
                    retry_after: wait,
                    detail: format!("rate limit of {} reached", plan.bucket),
                });
            }
            tokio::time::sleep(wait).await;
            tried.waited += wait;
        }
    }

    /// A token of `kind` for `app`, cached or fetched once across replicas.
    async fn token(&self, app: &App, kind: TokenKind) -> Result<Secret, DingTalkError> {
        let mut redis = self.inner.redis.clone();
        self.inner
            .tokens
            .get(&mut redis, app, kind, || self.fetch_token(app, kind))
            .await
    }

    /// Asks DingTalk for a token (through the same limiter and policy as any call).
    async fn fetch_token(
        &self,
        app: &App,
        kind: TokenKind,
    ) -> Result<(Secret, Duration), DingTalkError> {
        let call = match kind {
            TokenKind::New => ApiCall::json(
                Api::AccessToken,
                json!({"appKey": app.client_id, "appSecret": app.client_secret.expose()}),
            ),
            TokenKind::Old => ApiCall::get(
                Api::OldAccessToken,
                vec![
                    ("appkey".to_owned(), app.client_id.clone()),
                    (
                        "appsecret".to_owned(),
                        app.client_secret.expose().to_owned(),
                    ),
                ],
            ),
        };
        // Boxed: `run` → `token` → `fetch_token` → `run` (for a token endpoint, which needs no
        // token, so the recursion is one level deep).
        let body = Box::pin(self.run(&Target::App(app.clone()), &call))
            .await
            .map_err(|err| match err {
                DingTalkError::Rejected { code, message }
                | DingTalkError::Permission { code, message } => DingTalkError::TokenInvalid {
                    detail: format!(
                        "cannot fetch a {} access token (check the app's credentials): {code}: {message}",
                        kind.as_str()
                    ),
                },
                // DingTalk's token endpoint failing says nothing about the call that needed
                // the token: that call was not sent.
                DingTalkError::Server { .. } | DingTalkError::Unknown { .. } => {
                    DingTalkError::Unavailable {
                        retry_after: token::TOKEN_RETRY,
                        detail: format!(
                            "DingTalk did not issue a {} access token: {err}",
                            kind.as_str()
                        ),
                    }
                }
                other => other,
            })?;
        parse_token_answer(kind, &body).map_err(|message| DingTalkError::Rejected {
            code: "bad_token_answer".to_owned(),
            message,
        })
    }

    /// Counts one attempt against the integration's daily and monthly usage.
    async fn count_usage(&self, redis: &mut redis::aio::ConnectionManager, integration: &str) {
        match usage::record(redis, &self.inner.options.key_prefix, integration).await {
            Ok((today, month)) => {
                self.inner
                    .reported
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(integration.to_owned());
                report_usage(integration, today, month);
            }
            Err(err) => tracing::debug!(error = %err, "could not count API usage"),
        }
    }

    /// Reads again, from Redis, the usage of every integration this process reported, and
    /// reports it: the totals every replica adds to, and 0 once a new day or month began (a
    /// replica that made no call since would otherwise go on reporting the old period's
    /// total). Returns what it reported.
    pub async fn refresh_usage(&self) -> Vec<(String, u64, u64)> {
        let integrations: Vec<String> = self
            .inner
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let mut redis = self.inner.redis.clone();
        let mut reported = Vec::with_capacity(integrations.len());
        for integration in integrations {
            match usage::read(&mut redis, &self.inner.options.key_prefix, &integration).await {
                Ok((today, month)) => {
                    report_usage(&integration, today, month);
                    reported.push((integration, today, month));
                }
                Err(err) => tracing::debug!(error = %err, "could not read API usage"),
            }
        }
        reported
    }

    /// [`DingTalk::refresh_usage`] every [`USAGE_REFRESH`] until `shutdown`.
    pub async fn keep_usage_current(self, shutdown: common::shutdown::Shutdown) {
        shutdown
            .every(USAGE_REFRESH, || {
                let client = self.clone();
                async move {
                    client.refresh_usage().await;
                }
            })
            .await;
    }
}

/// How often the usage gauges are read again from Redis.
pub const USAGE_REFRESH: Duration = Duration::from_secs(60);

fn report_usage(integration: &str, today: u64, month: u64) {
    metrics::gauge!(
        "dingtalk_gateway_notifier_api_usage_today_calls",
        "integration" => integration.to_owned()
    )
    .set(today as f64);
    metrics::gauge!(
        "dingtalk_gateway_notifier_api_usage_month_calls",
        "integration" => integration.to_owned()
    )
    .set(month as f64);
}

/// When the limiter's Redis is unreachable nothing is sent; the caller retries after this.
const LIMITER_DOWN_RETRY: Duration = Duration::from_secs(1);
