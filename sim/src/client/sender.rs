//! Posting callbacks to a receiver (the ingress) the way DingTalk does: robot messages with the
//! `timestamp` + `sign` headers (PROTOCOL §2.1), events encrypted and signed in the query (§1),
//! card actions as plain JSON (§4.6b; DingTalk's signing of these is not documented).

use std::time::{Duration, Instant};

use common::crypto::{robot_sign, CryptoError, EncryptedReply};
use serde::Serialize;
use serde_json::Value;

use super::card_action::CardAction;
use super::event::EventSigner;
use super::robot_message::RobotMessage;
use crate::ids;

/// Why a callback could not be delivered at all (as opposed to being answered non-200).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The event secrets are unusable.
    #[error("event crypto: {0}")]
    Crypto(#[from] CryptoError),
}

/// The receiver's answer to one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Time from sending to the full answer (serialized as `latencyMs`).
    #[serde(rename = "latencyMs", serialize_with = "as_millis")]
    pub latency: Duration,
}

impl Answer {
    /// Whether DingTalk would count this as delivered (HTTP 200).
    pub fn is_ack(&self) -> bool {
        self.status == 200
    }
}

fn as_millis<S: serde::Serializer>(latency: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(latency.as_secs_f64() * 1000.0)
}

/// The answer to an event callback, with the decrypted reply when it verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventAnswer {
    /// The raw answer.
    pub answer: Answer,
    /// The decrypted reply (`success` from a correct receiver), or why it did not open.
    pub reply: Result<String, String>,
}

/// An HTTP client acting as DingTalk's callback sender.
#[derive(Debug, Clone)]
pub struct CallbackClient {
    http: reqwest::Client,
}

impl CallbackClient {
    /// A client whose every request times out after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(256)
                .build()?,
        })
    }

    /// Posts a robot message signed with the app secret, at the current time.
    pub async fn send_robot_message(
        &self,
        url: &str,
        app_secret: &str,
        message: &RobotMessage,
    ) -> Result<Answer, ClientError> {
        let now_ms = ids::now_ms();
        self.post_signed(url, app_secret, &message.to_json(now_ms), now_ms)
            .await
    }

    /// Posts a robot message body as is, signed at `now_ms` (redeliveries keep the body and
    /// re-sign).
    pub async fn post_signed(
        &self,
        url: &str,
        app_secret: &str,
        body: &Value,
        now_ms: i64,
    ) -> Result<Answer, ClientError> {
        let timestamp = now_ms.to_string();
        let request = self
            .http
            .post(url)
            .header("timestamp", &timestamp)
            .header("sign", robot_sign(app_secret, &timestamp))
            .json(body);
        answer(request).await
    }

    /// Encrypts, signs and posts an event; checks the encrypted reply.
    pub async fn send_event(
        &self,
        url: &str,
        signer: &EventSigner,
        event: &Value,
    ) -> Result<EventAnswer, ClientError> {
        let sealed = signer.seal(
            &event.to_string(),
            &ids::now_ms().to_string(),
            &ids::nonce(),
        );
        let request = self
            .http
            .post(url)
            .query(&sealed.query())
            .json(&sealed.body());
        let answer = answer(request).await?;
        let reply = serde_json::from_str::<EncryptedReply>(&answer.body)
            .map_err(|err| format!("the answer is not an encrypted reply: {err}"))
            .and_then(|reply| signer.open_reply(&reply).map_err(|err| err.to_string()));
        Ok(EventAnswer { answer, reply })
    }

    /// Posts a card action callback.
    pub async fn send_card_action(
        &self,
        url: &str,
        action: &CardAction,
    ) -> Result<Answer, ClientError> {
        answer(self.http.post(url).json(&action.to_json())).await
    }
}

/// Sends and reads the whole answer, timing it.
async fn answer(request: reqwest::RequestBuilder) -> Result<Answer, ClientError> {
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok(Answer {
        status,
        body,
        latency: started.elapsed(),
    })
}
