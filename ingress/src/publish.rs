//! Durable publishing of normalized events: a callback is acknowledged only after JetStream has
//! acknowledged the event, and only within a bound well under DingTalk's 1500 ms.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::HeaderMap;

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
    jetstream: Context,
    timeout: Duration,
}

impl Publisher {
    /// A publisher that gives up (answering 503) after `timeout`.
    pub fn new(jetstream: Context, timeout: Duration) -> Self {
        Self { jetstream, timeout }
    }

    /// Wraps a normalized payload of `integration` into its version-1 event (id
    /// `{integration_id}:{key}`, the `Nats-Msg-Id`) and publishes it; both transports (HTTP
    /// callbacks and Stream frames) come through here, so their events cannot differ.
    pub async fn publish_normalized(
        &self,
        integration: &IntegrationId,
        normalized: Normalized,
    ) -> Result<(String, Published), CallbackError> {
        let event = Event {
            v: V1,
            id: [integration.as_str(), ":", &normalized.key].concat(),
            integration_id: integration.clone(),
            received_at: Timestamp::now(),
            body: normalized.body,
        };
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
        let publish = async {
            self.jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await?
                .await
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(ack)) => {
                crate::metrics::publish_latency(started.elapsed());
                Ok(if ack.duplicate {
                    Published::Duplicate
                } else {
                    Published::New
                })
            }
            Ok(Err(err)) => Err(CallbackError::unavailable(
                "bus_unavailable",
                format!("the event could not be stored ({err}); retry later"),
            )),
            Err(_) => Err(CallbackError::unavailable(
                "bus_timeout",
                format!(
                    "the event was not stored within {} ms; retry later",
                    self.timeout.as_millis()
                ),
            )),
        }
    }
}
