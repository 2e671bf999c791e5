//! The one error type of the DingTalk client: what finally happened to a call after the retry
//! policy of PROTOCOL §6.4 ran, in terms the command engine can act on.

use std::time::Duration;

/// Why a DingTalk call did not succeed. Every variant is final: the client already refreshed
/// tokens, waited out throttling and retried what was safe to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DingTalkError {
    /// Still throttled after bounded waiting (our limiter, DingTalk's QPS limits, an IP ban).
    /// `retry_after` is when trying again makes sense.
    #[error("throttled; retry after {retry_after:?}: {detail}")]
    Throttled {
        /// When to try again.
        retry_after: Duration,
        /// What throttled us.
        detail: String,
    },
    /// The call was not sent: something it needs is unavailable right now (an access token
    /// DingTalk would not issue, the Redis behind the token cache or the rate limiter). Sending
    /// it later is safe and may succeed.
    #[error("not sent; retry after {retry_after:?}: {detail}")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
        /// What was missing.
        detail: String,
    },
    /// The token was refused again after the one refresh and retry (wrong secret, app
    /// disabled).
    #[error("access token refused after a refresh: {detail}")]
    TokenInvalid {
        /// DingTalk's answer.
        detail: String,
    },
    /// The app lacks a permission or scope (60011, 403 AccessTokenPermissionDenied, 50004,
    /// 60020). `message` names what to grant in the DingTalk console.
    #[error("permission missing ({code}): {message}")]
    Permission {
        /// DingTalk's code.
        code: String,
        /// What to grant or fix.
        message: String,
    },
    /// DingTalk refused the request itself (4xx, parameter errors, custom robot
    /// 310000/460101/300001, …); sending it again cannot help.
    #[error("rejected by DingTalk ({code}): {message}")]
    Rejected {
        /// DingTalk's code.
        code: String,
        /// DingTalk's message.
        message: String,
    },
    /// 5xx or `systemError` on an idempotent call, after the retries.
    #[error("DingTalk server error ({code}): {message}")]
    Server {
        /// DingTalk's code or the HTTP status.
        code: String,
        /// DingTalk's message.
        message: String,
    },
    /// The outcome is unknown (timeout, connection dropped mid-call, 5xx on a non-idempotent
    /// call): it may or may not have taken effect, so callers must not blindly re-send.
    #[error("outcome unknown: {detail}")]
    Unknown {
        /// What happened.
        detail: String,
    },
    /// The org's API quota is used up (90020 / ApiCountLimitForOrg): stop and alert.
    #[error("DingTalk API quota exhausted: {detail}")]
    QuotaExhausted {
        /// DingTalk's answer.
        detail: String,
    },
}

impl DingTalkError {
    /// A short machine-readable code: DingTalk's own code where there is one, else the
    /// variant (`throttled`, `unavailable`, `token_invalid`, `unknown`, `quota_exhausted`).
    pub fn code(&self) -> String {
        match self {
            DingTalkError::Throttled { .. } => "throttled".to_owned(),
            DingTalkError::Unavailable { .. } => "unavailable".to_owned(),
            DingTalkError::TokenInvalid { .. } => "token_invalid".to_owned(),
            DingTalkError::Permission { code, .. }
            | DingTalkError::Rejected { code, .. }
            | DingTalkError::Server { code, .. } => code.clone(),
            DingTalkError::Unknown { .. } => "unknown".to_owned(),
            DingTalkError::QuotaExhausted { .. } => "quota_exhausted".to_owned(),
        }
    }

    /// Whether sending the same call again later is both safe and may succeed: throttling
    /// passes, a missing token may be issued, a server error on an idempotent call may heal. Not for an unknown outcome
    /// (duplicates), nor for anything a human must fix.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            DingTalkError::Throttled { .. }
                | DingTalkError::Unavailable { .. }
                | DingTalkError::Server { .. }
        )
    }

    /// The outcome label of `dingtalk_gateway_notifier_dingtalk_calls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            DingTalkError::Throttled { .. } => "throttled",
            DingTalkError::Unavailable { .. } => "unavailable",
            DingTalkError::TokenInvalid { .. } => "token_invalid",
            DingTalkError::Permission { .. } => "permission",
            DingTalkError::Rejected { .. } => "rejected",
            DingTalkError::Server { .. } => "server",
            DingTalkError::Unknown { .. } => "unknown",
            DingTalkError::QuotaExhausted { .. } => "quota_exhausted",
        }
    }
}
