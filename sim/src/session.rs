//! The `session` parameter of a simulated `sessionWebhook` URL.
//!
//! The callback client (possibly another process) mints the URL and the server later checks it,
//! with no shared state in between: the token itself carries the conversation, the robot and
//! the expiry, URL-safe base64 encoded. It is not signed; the simulator trusts its tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// errcode for an unknown or expired session (like an unknown robot token).
const ERR_UNKNOWN_SESSION: i64 = 300001;

/// What a session webhook lets a robot reply to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The conversation the callback came from.
    #[serde(rename = "c")]
    pub conversation_id: String,
    /// The robot that may reply.
    #[serde(rename = "r")]
    pub robot_code: String,
    /// Expiry, ms since the epoch (`sessionWebhookExpiredTime`).
    #[serde(rename = "e")]
    pub expires_at_ms: i64,
}

impl Session {
    /// The `session` query value.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a struct of strings and an integer serializes");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// The full webhook URL on a simulator at `base_url`.
    pub fn webhook_url(&self, base_url: &str) -> String {
        format!(
            "{}/robot/sendBySession?session={}",
            base_url.trim_end_matches('/'),
            self.encode()
        )
    }

    /// Checks a `session` query value at `now_ms`.
    pub fn decode(text: &str, now_ms: i64) -> Result<Self, ApiError> {
        let unknown = |why: &str| ApiError::Webhook {
            errcode: ERR_UNKNOWN_SESSION,
            message: format!("session is not exist: {why}"),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| unknown("not a session this simulator issued"))?;
        let session: Session = serde_json::from_slice(&bytes)
            .map_err(|_| unknown("not a session this simulator issued"))?;
        if now_ms >= session.expires_at_ms {
            return Err(unknown("the session webhook has expired"));
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            conversation_id: "cidA==".into(),
            robot_code: "dingapp".into(),
            expires_at_ms: 5_000,
        }
    }

    #[test]
    fn session_round_trips_through_the_url_value() {
        assert_eq!(Session::decode(&session().encode(), 4_999), Ok(session()));
        assert!(session()
            .webhook_url("http://h:1/")
            .starts_with("http://h:1/robot/sendBySession?session="));
    }

    #[test]
    fn expired_or_forged_sessions_are_refused() {
        assert!(Session::decode(&session().encode(), 5_000).is_err());
        assert!(Session::decode("s1", 0).is_err());
    }
}
