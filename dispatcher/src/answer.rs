//! Answers as notifier commands: the dispatcher never calls DingTalk itself.
//!
//! An answer is one send, then (when it streams) updates of that send, then a final update with
//! the whole text. Every command id is derived from the event id (see
//! [`crate::routing::command_id`]), so a redelivered event that answers again publishes the same
//! ids and JetStream drops the duplicates.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use common::bus::command::{Command, Degrade, Operation, OutboundMessage, Send, Update};
use common::bus::{subjects, Timestamp, MSG_ID_HEADER, V1};
use common::registry::{IntegrationId, Language};

use crate::routing::{command_id, ReplyTarget};
use crate::texts::Text;
use crate::throttle::Throttle;

/// How long one publish may wait for JetStream's acknowledgement.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// A command could not be stored on the bus.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot publish command {id}: {reason}")]
pub struct PublishError {
    /// The command id.
    pub id: String,
    /// What failed.
    pub reason: String,
}

/// Publishes commands to `DINGTALK_COMMANDS` and waits for the stream's acknowledgement.
#[derive(Debug, Clone)]
pub struct Commands {
    jetstream: Context,
}

impl Commands {
    /// Publishes on `jetstream`.
    pub fn new(jetstream: Context) -> Self {
        Self { jetstream }
    }

    /// Publishes `command` with `Nats-Msg-Id` = its id.
    pub async fn publish(&self, command: &Command) -> Result<(), PublishError> {
        let error = |reason: String| PublishError {
            id: command.id.clone(),
            reason,
        };
        let subject = subjects::command(&command.integration_id, command.op_kind());
        let payload = serde_json::to_vec(command).map_err(|e| error(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, command.id.as_str());
        let publish = async {
            self.jetstream
                .publish_with_headers(subject, headers, payload.into())
                .await?
                .await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_)) => {
                crate::metrics::command(command.op_kind().as_str());
                Ok(())
            }
            Ok(Err(err)) => Err(error(err.to_string())),
            Err(_) => Err(error(format!(
                "no acknowledgement within {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }
}

/// When the next update of a growing answer may go out. Pure arithmetic, tested with plain
/// instants.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    interval: Duration,
    last: Instant,
}

impl Pacer {
    /// At most one update per `interval`, counted from `start` (the card's send).
    pub fn new(interval: Duration, start: Instant) -> Self {
        Self {
            interval,
            last: start,
        }
    }

    /// Whether an update may go out at `now`, with the interval stretched `slowdown` times
    /// (the integration is being throttled).
    pub fn due(&self, now: Instant, slowdown: u32) -> bool {
        now.duration_since(self.last) >= self.interval * slowdown.max(1)
    }

    /// Records an update sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last = now;
    }
}

/// One answer to one event, from the first command to the last.
#[derive(Debug)]
pub struct Reply<'a> {
    commands: &'a Commands,
    throttle: &'a Throttle,
    event_id: &'a str,
    integration: &'a IntegrationId,
    target: &'a ReplyTarget,
    language: Language,
    interval: Duration,
    received: Instant,
    card: Option<Pacer>,
    updates: u32,
    shown: String,
    first_published: bool,
}

impl<'a> Reply<'a> {
    /// An answer to event `event_id` for `target`; `received` is when the event was consumed
    /// (for the overhead metric).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        commands: &'a Commands,
        throttle: &'a Throttle,
        event_id: &'a str,
        integration: &'a IntegrationId,
        target: &'a ReplyTarget,
        language: Language,
        interval: Duration,
        received: Instant,
    ) -> Self {
        Self {
            commands,
            throttle,
            event_id,
            integration,
            target,
            language,
            interval,
            received,
            card: None,
            updates: 0,
            shown: String::new(),
            first_published: false,
        }
    }

    fn command(&self, id: String, op: Operation) -> Command {
        Command {
            v: V1,
            id,
            integration_id: self.integration.clone(),
            op,
        }
    }

    fn send(&self, message: OutboundMessage, updatable: bool) -> Command {
        self.command(
            command_id::reply(self.event_id),
            Operation::Send(Send {
                recipients: vec![self.target.recipient.clone()],
                mentions: self.target.mentions(),
                message,
                updatable,
                state: None,
            }),
        )
    }

    async fn publish(&mut self, command: Command) -> Result<(), PublishError> {
        if self.target.expired(Timestamp::now()) {
            // The run outlived the session webhook (an external contact's only way back):
            // DingTalk would refuse the call, so say so here instead of sending it.
            crate::metrics::undeliverable("session_webhook_expired");
            tracing::warn!(
                event = self.event_id,
                command = %command.id,
                "the answer cannot be delivered: the conversation's session webhook expired during the run"
            );
            return Ok(());
        }
        self.commands.publish(&command).await?;
        if !self.first_published {
            self.first_published = true;
            crate::metrics::first_command(self.received.elapsed());
        }
        Ok(())
    }

    /// Sends the updatable card with the localized "thinking…" text, once; not at all when the
    /// recipient cannot take cards (a session webhook).
    pub async fn thinking(&mut self) -> Result<(), PublishError> {
        if self.card.is_some() || !self.target.can_stream() {
            return Ok(());
        }
        let text = Text::Thinking.in_language(self.language).to_owned();
        self.publish(self.send(markdown(text), true)).await?;
        self.card = Some(Pacer::new(self.interval, Instant::now()));
        Ok(())
    }

    /// Shows `text` on the card if an update is due; sends the card first if it is not out yet.
    pub async fn progress(&mut self, text: &str) -> Result<(), PublishError> {
        if !self.target.can_stream() || text.trim().is_empty() {
            return Ok(());
        }
        self.thinking().await?;
        let slowdown = self.throttle.slowdown(self.integration);
        let now = Instant::now();
        let Some(pacer) = self.card.as_mut() else {
            return Ok(());
        };
        if !pacer.due(now, slowdown) || self.shown == text {
            return Ok(());
        }
        pacer.sent(now);
        self.updates += 1;
        self.shown = text.to_owned();
        let id = command_id::update(self.event_id, self.updates);
        let update = self.command(
            id,
            Operation::Update(Update {
                target: command_id::reply(self.event_id),
                message: markdown(text.to_owned()),
                degrade: None,
                state: None,
            }),
        );
        self.publish(update).await
    }

    /// The whole answer: the final update of the card, or one send when no card went out.
    pub async fn finish(&mut self, text: &str) -> Result<(), PublishError> {
        let text = if text.trim().is_empty() {
            Text::EmptyAnswer.in_language(self.language)
        } else {
            text
        };
        let command = if self.card.is_some() {
            self.command(
                command_id::last(self.event_id),
                Operation::Update(Update {
                    target: command_id::reply(self.event_id),
                    message: markdown(text.to_owned()),
                    // The final answer must arrive even where the card cannot be updated.
                    degrade: Some(Degrade::Resend),
                    state: None,
                }),
            )
        } else {
            self.send(markdown(text.to_owned()), false)
        };
        self.publish(command).await
    }

    /// A system text as the whole answer (in the card when one is out).
    pub async fn say(&mut self, text: Text) -> Result<(), PublishError> {
        let text = text.in_language(self.language);
        if self.card.is_some() {
            self.finish(text).await
        } else {
            let command = self.send(
                OutboundMessage::Text {
                    text: text.to_owned(),
                },
                false,
            );
            self.publish(command).await
        }
    }
}

fn markdown(text: String) -> OutboundMessage {
    OutboundMessage::Markdown { title: None, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_paced_by_the_interval_times_the_slowdown() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut pacer = Pacer::new(second, start);
        assert!(!pacer.due(start + Duration::from_millis(999), 1));
        assert!(pacer.due(start + second, 1));
        pacer.sent(start + second);
        assert!(!pacer.due(start + 2 * second, 2));
        assert!(pacer.due(start + 3 * second, 2));
        assert!(
            pacer.due(start + 2 * second, 0),
            "a zero slowdown counts as one"
        );
    }

    #[test]
    fn fifty_chunks_over_five_seconds_make_at_most_five_paced_updates() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Duration::from_secs(1), start);
        let mut updates = 0;
        for chunk in 1..=50u64 {
            let now = start + Duration::from_millis(chunk * 100);
            if pacer.due(now, 1) {
                pacer.sent(now);
                updates += 1;
            }
        }
        // Plus the final update: at most six in all.
        assert!(updates <= 5, "{updates}");
    }
}
