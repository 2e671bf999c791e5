//! Durable publishing of normalized events: a callback is acknowledged only after JetStream has
//! acknowledged the event, and only within a bound well under DingTalk's 1500 ms.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::{Client, HeaderMap, Request};
use serde::de::IgnoredAny;
use serde::Deserialize;

use common::bus::event::Event;
use common::bus::{subjects, Timestamp, MSG_ID_HEADER, V1};
use common::registry::IntegrationId;

use crate::error::CallbackError;
use crate::normalize::Normalized;

/// The serialization buffer's first size; larger events grow it.
const EVENT_BUFFER_BYTES: usize = 2048;

/// Whether JetStream stored the event or recognised its id as already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored now.
    New,
    /// A redelivery within the duplicate window: stored before, not stored again.
    Duplicate,
}

/// Publishes events to `DINGTALK_EVENTS` and waits for the stream's acknowledgement.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    timeout: Duration,
}

impl Publisher {
    /// A publisher on `jetstream`'s connection that gives up (answering 503) after `timeout`.
    pub fn new(jetstream: Context, timeout: Duration) -> Self {
        Self {
            client: jetstream.client(),
            timeout,
        }
    }

    /// Wraps a normalized payload of `integration` into its version-1 event (id
    /// `{integration_id}:{key}`, the `Nats-Msg-Id`) and publishes it; both transports (HTTP
    /// callbacks and Stream frames) come through here, so their events cannot differ.
    pub async fn publish_normalized(
        &self,
        integration: &IntegrationId,
        normalized: Normalized,
    ) -> Result<(String, Published), CallbackError> {
        let event = event(integration, normalized);
        let published = self.publish(&event).await?;
        Ok((event.id, published))
    }

    /// Publishes `event` with `Nats-Msg-Id` = its id, and waits for the acknowledgement.
    pub async fn publish(&self, event: &Event) -> Result<Published, CallbackError> {
        let subject = subjects::event(&event.integration_id, event.kind());
        // Sized for a chat message's event (about 1 KiB) so that writing one does not regrow it.
        let mut payload = Vec::with_capacity(EVENT_BUFFER_BYTES);
        serde_json::to_writer(&mut payload, event).expect("an event always serializes");
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, event.id.as_str());
        let started = Instant::now();
        // A JetStream publish is a request whose reply is the stream's acknowledgement. It is
        // made here on the core client rather than through `jetstream::Context::publish`, which
        // adds a second timer, an in-flight semaphore and an acknowledgement parser that tries
        // the error shape first (building a serde error for every success): 4,100 of a robot
        // callback's 91,000 instructions (BENCHMARKS.md). This one timeout bounds all of it,
        // sending included, so the request has none of its own.
        let request = Request::new()
            .headers(headers)
            .payload(payload.into())
            .timeout(None);
        let answer = tokio::time::timeout(self.timeout, self.client.send_request(subject, request))
            .await
            .map_err(|_| {
                CallbackError::unavailable(
                    "bus_timeout",
                    format!(
                        "the event was not stored within {} ms; retry later",
                        self.timeout.as_millis()
                    ),
                )
            })?;
        let duplicate = answer
            .map_err(|err| err.to_string())
            .and_then(|reply| read_ack(&reply.payload))
            .map_err(|why| {
                CallbackError::unavailable(
                    "bus_unavailable",
                    format!("the event could not be stored ({why}); retry later"),
                )
            })?;
        crate::metrics::publish_latency(started.elapsed());
        Ok(if duplicate {
            Published::Duplicate
        } else {
            Published::New
        })
    }
}

/// The version-1 event of a normalized payload of `integration`: its id (also the
/// `Nats-Msg-Id`) is `{integration_id}:{key}`, and it was received now.
pub fn event(integration: &IntegrationId, normalized: Normalized) -> Event {
    Event {
        v: V1,
        id: [integration.as_str(), ":", &normalized.key].concat(),
        integration_id: integration.clone(),
        received_at: Timestamp::now(),
        body: normalized.body,
    }
}

/// JetStream's answer to a publish: `{"stream": …, "seq": …}` with `"duplicate": true` when
/// the message id was already stored within the duplicate window, or `{"error": {…}}`.
#[derive(Deserialize)]
struct PublishAck {
    #[serde(default)]
    error: Option<AckError>,
    #[serde(default)]
    stream: Option<IgnoredAny>,
    #[serde(default)]
    duplicate: bool,
}

/// Why JetStream refused a publish (a full stream, a wrong stream, an outage).
#[derive(Deserialize)]
struct AckError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u16,
    #[serde(default)]
    description: String,
}

/// Reads an acknowledgement: whether the message was a duplicate, or why it was not stored.
fn read_ack(payload: &[u8]) -> Result<bool, String> {
    let ack: PublishAck = serde_json::from_slice(payload)
        .map_err(|err| format!("unreadable JetStream acknowledgement: {err}"))?;
    match (ack.error, ack.stream) {
        (Some(error), _) => Err(format!(
            "JetStream error {} ({}): {}",
            error.code, error.err_code, error.description
        )),
        (None, Some(_)) => Ok(ack.duplicate),
        (None, None) => Err("a reply without a stream is no JetStream acknowledgement".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_tell_new_from_duplicate() {
        assert_eq!(
            read_ack(br#"{"stream":"DINGTALK_EVENTS","seq":7}"#),
            Ok(false)
        );
        assert_eq!(
            read_ack(br#"{"stream":"DINGTALK_EVENTS","seq":7,"duplicate":true}"#),
            Ok(true)
        );
        assert_eq!(
            read_ack(br#"{"stream":"DINGTALK_EVENTS","domain":"hub","seq":9,"duplicate":false}"#),
            Ok(false)
        );
    }

    #[test]
    fn refusals_and_foreign_replies_are_errors_that_say_why() {
        let refused = read_ack(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"DINGTALK_EVENTS","seq":0}"#,
        )
        .unwrap_err();
        assert_eq!(
            refused,
            "JetStream error 503 (10077): maximum messages exceeded"
        );
        assert!(read_ack(b"{}")
            .unwrap_err()
            .contains("no JetStream acknowledgement"));
        assert!(read_ack(b"+OK")
            .unwrap_err()
            .starts_with("unreadable JetStream acknowledgement"));
    }
}
