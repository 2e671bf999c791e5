//! The retry policy of PROTOCOL §6.4 as a pure decision: given what the last attempt produced
//! and what was already tried, return the result, refresh the token, or wait and try again.
//!
//! 1. token invalid → refresh once (single-flight), retry once;
//! 2. throttled → exponential backoff from 1 s with jitter, capped at 60 s, at least any
//!    explicit ban window, within the call's total wait budget;
//! 3. 5xx / `systemError` → at most `max_server_retries` retries with backoff, only for
//!    idempotent calls (a robot message may already be delivered);
//! 4. everything else → no retry.
//!
//! Transport failures follow the same idea: a call that never reached DingTalk (connection
//! refused) is safe to retry whatever the API; one that timed out or lost its connection
//! after sending is retried only when idempotent, and is otherwise an unknown outcome.

use std::time::Duration;

use serde_json::Value;

use super::classify::Verdict;
use super::error::DingTalkError;

/// First throttle backoff (help.dingtalk.io recommends 1 s, 2 s, 4 s, …).
pub const THROTTLE_BASE: Duration = Duration::from_secs(1);
/// Longest single throttle backoff.
pub const THROTTLE_CAP: Duration = Duration::from_secs(60);

/// What one attempt produced: an answer, or a transport failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// DingTalk answered; what it means.
    Answered(Verdict),
    /// The request never left (connection refused, DNS): nothing happened at DingTalk.
    NotSent {
        /// The transport error, without URL.
        detail: String,
    },
    /// The request may have arrived (timeout, connection reset after sending).
    Lost {
        /// The transport error, without URL.
        detail: String,
    },
}

/// What was tried so far in one `call`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried {
    /// The token was already refreshed once.
    pub token_refreshed: bool,
    /// Throttled answers so far (the backoff exponent).
    pub throttles: u32,
    /// Retries after server or transport errors so far.
    pub server_retries: u32,
    /// Time spent waiting for permits and backoffs so far.
    pub waited: Duration,
}

/// The knobs of the policy (from `DingTalkOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Total waiting budget of one call.
    pub max_throttle_wait: Duration,
    /// First delay before a server-error retry (doubles).
    pub server_retry_base: Duration,
    /// Most server-error retries.
    pub max_server_retries: u32,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Stop with this result.
    Done(Result<Value, DingTalkError>),
    /// Drop the token, fetch a fresh one, send again.
    RefreshToken,
    /// Wait this long, then send again.
    RetryAfter {
        /// The delay.
        delay: Duration,
        /// Whether this was throttling (counts towards `throttles`) or a server retry.
        throttled: bool,
    },
}

/// Decides what follows `attempt`. `jitter` is a uniform random number in `[0, 1)`.
pub fn decide(
    attempt: Attempt,
    idempotent: bool,
    tried: &Tried,
    policy: &Policy,
    jitter: f64,
) -> Next {
    let verdict = match attempt {
        Attempt::Answered(verdict) => verdict,
        Attempt::NotSent { detail } => {
            return server_retry(true, tried, policy, jitter, || DingTalkError::Server {
                code: "unreachable".to_owned(),
                message: detail,
            })
        }
        Attempt::Lost { detail } => {
            if !idempotent {
                return Next::Done(Err(DingTalkError::Unknown { detail }));
            }
            return server_retry(true, tried, policy, jitter, || DingTalkError::Server {
                code: "timeout".to_owned(),
                message: detail,
            });
        }
    };
    match verdict {
        Verdict::Ok(value) => Next::Done(Ok(value)),
        Verdict::TokenInvalid { detail } if tried.token_refreshed => {
            Next::Done(Err(DingTalkError::TokenInvalid { detail }))
        }
        Verdict::TokenInvalid { .. } => Next::RefreshToken,
        Verdict::Throttled { ban, detail } => {
            let delay = throttle_delay(tried.throttles, ban.map(|b| b.duration), jitter);
            if tried.waited + delay > policy.max_throttle_wait {
                Next::Done(Err(DingTalkError::Throttled {
                    retry_after: delay,
                    detail,
                }))
            } else {
                Next::RetryAfter {
                    delay,
                    throttled: true,
                }
            }
        }
        Verdict::Permission { code, message } => {
            Next::Done(Err(DingTalkError::Permission { code, message }))
        }
        Verdict::Rejected { code, message } => {
            Next::Done(Err(DingTalkError::Rejected { code, message }))
        }
        Verdict::QuotaExhausted { detail } => {
            Next::Done(Err(DingTalkError::QuotaExhausted { detail }))
        }
        Verdict::Server { code, message } if !idempotent => {
            // The server failed while handling a non-idempotent call: it may have taken effect.
            Next::Done(Err(DingTalkError::Unknown {
                detail: format!("{code}: {message} (not retried: the call is not idempotent)"),
            }))
        }
        Verdict::Server { code, message } => {
            server_retry(idempotent, tried, policy, jitter, || {
                DingTalkError::Server { code, message }
            })
        }
    }
}

fn server_retry(
    safe: bool,
    tried: &Tried,
    policy: &Policy,
    jitter: f64,
    error: impl FnOnce() -> DingTalkError,
) -> Next {
    if !safe || tried.server_retries >= policy.max_server_retries {
        return Next::Done(Err(error()));
    }
    Next::RetryAfter {
        delay: backoff(
            policy.server_retry_base,
            tried.server_retries,
            policy.server_retry_base * 8,
            jitter,
        ),
        throttled: false,
    }
}

/// The wait before retrying after the `n`-th throttled answer (0-based): 1 s, 2 s, 4 s … capped
/// at 60 s, jittered to 75–125 % so replicas do not retry in step, and never shorter than an
/// explicit ban window.
pub fn throttle_delay(n: u32, ban: Option<Duration>, jitter: f64) -> Duration {
    let delay = backoff(THROTTLE_BASE, n, THROTTLE_CAP, jitter);
    match ban {
        Some(ban) => delay.max(ban),
        None => delay,
    }
}

/// `base · 2^n`, capped at `cap`, scaled by 0.75 + 0.5 · `jitter`.
fn backoff(base: Duration, n: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX));
    exp.min(cap).mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::classify::{Ban, BanScope};
    use serde_json::json;

    const POLICY: Policy = Policy {
        max_throttle_wait: Duration::from_secs(30),
        server_retry_base: Duration::from_millis(500),
        max_server_retries: 3,
    };

    fn answered(verdict: Verdict) -> Attempt {
        Attempt::Answered(verdict)
    }

    fn server() -> Attempt {
        answered(Verdict::Server {
            code: "systemError".into(),
            message: "系统错误".into(),
        })
    }

    #[test]
    fn success_is_returned() {
        let next = decide(
            answered(Verdict::Ok(json!({"a": 1}))),
            false,
            &Tried::default(),
            &POLICY,
            0.5,
        );
        assert_eq!(next, Next::Done(Ok(json!({"a": 1}))));
    }

    #[test]
    fn token_invalid_refreshes_once_then_gives_up() {
        let invalid = || {
            answered(Verdict::TokenInvalid {
                detail: "40014".into(),
            })
        };
        assert_eq!(
            decide(invalid(), false, &Tried::default(), &POLICY, 0.5),
            Next::RefreshToken
        );
        let tried = Tried {
            token_refreshed: true,
            ..Tried::default()
        };
        assert_eq!(
            decide(invalid(), false, &tried, &POLICY, 0.5),
            Next::Done(Err(DingTalkError::TokenInvalid {
                detail: "40014".into()
            }))
        );
    }

    #[test]
    fn throttle_backoff_doubles_from_one_second_with_jitter_and_cap() {
        assert_eq!(throttle_delay(0, None, 0.5), Duration::from_secs(1));
        assert_eq!(throttle_delay(1, None, 0.5), Duration::from_secs(2));
        assert_eq!(throttle_delay(2, None, 0.5), Duration::from_secs(4));
        assert_eq!(throttle_delay(10, None, 0.5), Duration::from_secs(60));
        assert_eq!(throttle_delay(40, None, 0.5), Duration::from_secs(60));
        assert_eq!(throttle_delay(0, None, 0.0), Duration::from_millis(750));
        assert_eq!(throttle_delay(0, None, 1.0), Duration::from_millis(1250));
        assert_eq!(
            throttle_delay(0, Some(Duration::from_secs(50)), 0.5),
            Duration::from_secs(50)
        );
    }

    #[test]
    fn throttling_retries_within_the_wait_budget_then_reports_when_to_come_back() {
        let throttled = || {
            answered(Verdict::Throttled {
                ban: None,
                detail: "QpsLimit".into(),
            })
        };
        assert_eq!(
            decide(throttled(), false, &Tried::default(), &POLICY, 0.5),
            Next::RetryAfter {
                delay: Duration::from_secs(1),
                throttled: true
            }
        );
        let tried = Tried {
            throttles: 4,
            waited: Duration::from_secs(15),
            ..Tried::default()
        };
        assert_eq!(
            decide(throttled(), false, &tried, &POLICY, 0.5),
            Next::Done(Err(DingTalkError::Throttled {
                retry_after: Duration::from_secs(16),
                detail: "QpsLimit".into()
            }))
        );
    }

    #[test]
    fn a_ban_longer_than_the_budget_is_reported_at_once() {
        let ban = Ban {
            scope: BanScope::Ip,
            duration: Duration::from_secs(300),
        };
        let next = decide(
            answered(Verdict::Throttled {
                ban: Some(ban),
                detail: "punish".into(),
            }),
            true,
            &Tried::default(),
            &POLICY,
            0.5,
        );
        assert_eq!(
            next,
            Next::Done(Err(DingTalkError::Throttled {
                retry_after: Duration::from_secs(300),
                detail: "punish".into()
            }))
        );
    }

    #[test]
    fn server_errors_are_retried_three_times_only_when_idempotent() {
        let mut tried = Tried::default();
        for n in 0..3 {
            match decide(server(), true, &tried, &POLICY, 0.5) {
                Next::RetryAfter {
                    delay,
                    throttled: false,
                    ..
                } => {
                    assert_eq!(delay, Duration::from_millis(500) * 2u32.pow(n));
                }
                other => panic!("retry {n}: {other:?}"),
            }
            tried.server_retries += 1;
        }
        assert!(matches!(
            decide(server(), true, &tried, &POLICY, 0.5),
            Next::Done(Err(DingTalkError::Server { .. }))
        ));
        assert!(matches!(
            decide(server(), false, &Tried::default(), &POLICY, 0.5),
            Next::Done(Err(DingTalkError::Unknown { .. }))
        ));
    }

    #[test]
    fn a_lost_request_is_unknown_unless_idempotent() {
        let lost = || Attempt::Lost {
            detail: "timed out".into(),
        };
        assert_eq!(
            decide(lost(), false, &Tried::default(), &POLICY, 0.5),
            Next::Done(Err(DingTalkError::Unknown {
                detail: "timed out".into()
            }))
        );
        assert!(matches!(
            decide(lost(), true, &Tried::default(), &POLICY, 0.5),
            Next::RetryAfter {
                throttled: false,
                ..
            }
        ));
    }

    #[test]
    fn a_request_that_never_left_is_retried_even_when_not_idempotent() {
        let refused = || Attempt::NotSent {
            detail: "connection refused".into(),
        };
        assert!(matches!(
            decide(refused(), false, &Tried::default(), &POLICY, 0.5),
            Next::RetryAfter {
                throttled: false,
                ..
            }
        ));
        let tried = Tried {
            server_retries: 3,
            ..Tried::default()
        };
        assert!(matches!(
            decide(refused(), false, &tried, &POLICY, 0.5),
            Next::Done(Err(DingTalkError::Server { .. }))
        ));
    }

    #[test]
    fn no_retry_for_permission_rejection_and_quota() {
        for verdict in [
            Verdict::Permission {
                code: "60011".into(),
                message: "m".into(),
            },
            Verdict::Rejected {
                code: "40035".into(),
                message: "m".into(),
            },
            Verdict::QuotaExhausted {
                detail: "90020".into(),
            },
        ] {
            assert!(matches!(
                decide(answered(verdict), true, &Tried::default(), &POLICY, 0.5),
                Next::Done(Err(_))
            ));
        }
    }
}
