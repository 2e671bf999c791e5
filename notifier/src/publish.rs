//! Publishing results and dead letters to JetStream, each confirmed before the command is acked.
//!
//! Results carry `Nats-Msg-Id: result:{command_id}` and dead letters
//! `Nats-Msg-Id: dlq:notifier:{command_id}`, so a command executed again after a lost ack (or
//! answered again from its stored result) never produces a second copy within the streams'
//! duplicate window.

use async_nats::jetstream;
use async_nats::HeaderMap;
use common::bus::result::CommandResult;
use common::bus::{dlq_headers, subjects, MSG_ID_HEADER};

use crate::engine::{valid_token, Incoming};

/// Why a publish was not confirmed; the command is then retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish to {subject}: {message}")]
pub struct PublishError {
    /// Where it went.
    pub subject: String,
    /// What failed.
    pub message: String,
}

/// Publishes to the results and dead-letter streams.
#[derive(Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
}

impl Publisher {
    /// A publisher on the service's JetStream context.
    pub fn new(jetstream: jetstream::Context) -> Self {
        Self { jetstream }
    }

    /// The one result of a command on `dingtalk.results.{integration}.{op}` (the raw tokens of
    /// the command's subject when the command could not be read).
    pub async fn result(
        &self,
        result: &CommandResult,
        incoming: &Incoming,
    ) -> Result<(), PublishError> {
        let (raw_integration, raw_op) =
            subjects::split_command(&incoming.subject).unwrap_or(("unknown", "unknown"));
        let integration = if valid_token(&result.integration_id) {
            result.integration_id.as_str()
        } else {
            raw_integration
        };
        let op = result.op.map_or(raw_op, |op| op.as_str());
        let subject = format!("dingtalk.results.{integration}.{op}");
        let payload = serde_json::to_vec(result).expect("results serialize");
        let mut headers = HeaderMap::new();
        headers.insert(
            MSG_ID_HEADER,
            format!("result:{}", result.command_id).as_str(),
        );
        self.send(subject, headers, payload.into()).await
    }

    /// The original command, unchanged, on `dingtalk.dlq.notifier.{integration}` with its
    /// headers plus the original subject, the reason and the attempt count.
    pub async fn dead_letter(
        &self,
        incoming: &Incoming,
        command_id: &str,
        reason: &str,
    ) -> Result<(), PublishError> {
        let integration = subjects::split_command(&incoming.subject)
            .map(|(integration, _)| integration)
            .filter(|token| valid_token(token))
            .unwrap_or("unknown");
        let subject = subjects::dlq("notifier", integration);
        let mut headers = incoming.headers.clone().unwrap_or_default();
        headers.insert(dlq_headers::ORIGINAL_SUBJECT, incoming.subject.as_str());
        headers.insert(dlq_headers::REASON, one_line(reason).as_str());
        headers.insert(
            dlq_headers::ATTEMPTS,
            incoming.delivered.to_string().as_str(),
        );
        headers.insert(MSG_ID_HEADER, format!("dlq:notifier:{command_id}").as_str());
        self.send(subject, headers, incoming.payload.clone()).await
    }

    async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<(), PublishError> {
        let error = |message: String| PublishError {
            subject: subject.clone(),
            message,
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|err| error(err.to_string()))?;
        ack.await.map_err(|err| error(err.to_string()))?;
        Ok(())
    }
}

/// Header values cannot hold line breaks; keep the reason on one bounded line.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.chars().take(1000).collect()
}
