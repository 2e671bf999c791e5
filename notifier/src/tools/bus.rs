//! The tools' I/O: a command published to `DINGTALK_COMMANDS` and its one result awaited on the
//! results subject, or a query over request/reply — each bounded by the call's timeout.
//!
//! The tools go through the bus like any other publisher (rather than calling the engine in
//! process), so every replica's commands share one consumer, one record of what was sent, and
//! one result stream other systems can read.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use common::bus::command::Command;
use common::bus::query::{ListChatsReply, ListUsersReply, QueryError, LIST_CHATS, LIST_USERS};
use common::bus::result::CommandResult;
use common::bus::{subjects, MSG_ID_HEADER};
use common::registry::IntegrationId;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::translate::{query_error, ToolError};

/// Publishes commands and asks queries for the tools.
#[derive(Clone)]
pub struct ToolBus {
    nats: async_nats::Client,
    jetstream: jetstream::Context,
}

impl ToolBus {
    /// On the service's connections.
    pub fn new(nats: async_nats::Client, jetstream: jetstream::Context) -> Self {
        Self { nats, jetstream }
    }

    /// Publishes `command` (`Nats-Msg-Id` = its id) and waits for its result until `timeout`.
    ///
    /// The results subject is subscribed to before the command is published, so a result that
    /// comes back at once cannot be missed. A timeout names the command id: the command may still
    /// be executed, and its result can be looked up later.
    pub async fn execute(
        &self,
        command: &Command,
        timeout: Duration,
    ) -> Result<CommandResult, ToolError> {
        let deadline = Instant::now() + timeout;
        let op = command.op_kind();
        let results_subject = subjects::result(&command.integration_id, op);
        let mut results = self
            .nats
            .subscribe(results_subject.clone())
            .await
            .map_err(|err| unavailable(format!("cannot subscribe to {results_subject}: {err}")))?;
        let body = serde_json::to_vec(command).expect("a command serializes");
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID_HEADER, command.id.as_str());
        let subject = subjects::command(&command.integration_id, op);
        let published = async {
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(Unstored::NotSent)?;
            ack.await.map_err(Unstored::Unconfirmed)
        };
        match tokio::time::timeout_at(deadline, published).await {
            Ok(Ok(_ack)) => {}
            Ok(Err(Unstored::NotSent(err)))
                if err.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
            {
                return Err(ToolError::new(
                    "message_too_large",
                    format!(
                        "the command is larger than the bus accepts ({err}); send a shorter message or less state"
                    ),
                ))
            }
            Ok(Err(Unstored::NotSent(err))) => {
                return Err(unavailable(format!(
                    "the command {} could not be published on {subject}: {err}",
                    command.id
                ))
                .with_command(&command.id))
            }
            Ok(Err(Unstored::Unconfirmed(err))) if refused(&err) => {
                return Err(unavailable(format!(
                    "JetStream refused to store the command {} on {subject}: {err}",
                    command.id
                ))
                .with_command(&command.id))
            }
            // Sent, but whether it was stored is unknown: a call again (a new command) could
            // send the message twice.
            Ok(Err(Unstored::Unconfirmed(err))) => return Err(in_doubt(command, &results_subject, &format!("the bus did not confirm it ({err})"))),
            Err(_) => {
                return Err(in_doubt(
                    command,
                    &results_subject,
                    &format!("the bus did not confirm it within {} ms", timeout.as_millis()),
                ))
            }
        }
        let wait = async {
            while let Some(message) = results.next().await {
                // Results of other commands on the same subject are not ours; skip them.
                if let Ok(result) = CommandResult::from_slice(&message.payload) {
                    if result.command_id == command.id {
                        return Some(result);
                    }
                }
            }
            None
        };
        let outcome = tokio::time::timeout_at(deadline, wait).await;
        let _ = results.unsubscribe().await;
        match outcome {
            Ok(Some(result)) => Ok(result),
            // The command is stored and will be executed: this is no reason to call again.
            Ok(None) => Err(in_doubt(
                command,
                &results_subject,
                "the connection to the bus closed while waiting for its result",
            )),
            Err(_) => Err(in_doubt(
                command,
                &results_subject,
                &format!("no result within {} ms; it is queued", timeout.as_millis()),
            )),
        }
    }

    /// Asks `list_users`.
    pub async fn list_users(
        &self,
        integration: &IntegrationId,
        request: &common::bus::query::ListUsersRequest,
        timeout: Duration,
    ) -> Result<ListUsersReply, ToolError> {
        let body = serde_json::to_vec(request).expect("a request serializes");
        self.ask(integration, LIST_USERS, body, timeout).await
    }

    /// Asks `list_chats`.
    pub async fn list_chats(
        &self,
        integration: &IntegrationId,
        timeout: Duration,
    ) -> Result<ListChatsReply, ToolError> {
        self.ask(integration, LIST_CHATS, b"{}".to_vec(), timeout)
            .await
    }

    async fn ask<T: DeserializeOwned>(
        &self,
        integration: &IntegrationId,
        name: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, ToolError> {
        let subject = subjects::query(integration, name);
        // The call's own timeout, not the connection's default request timeout (10 s).
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(timeout));
        let reply = match self.nats.send_request(subject.clone(), request).await {
            Ok(reply) => reply,
            Err(err) if err.kind() == async_nats::client::RequestErrorKind::TimedOut => {
                return Err(ToolError::new(
                    "timeout",
                    format!(
                        "no answer to {subject} within {} ms; a query changes nothing, so calling again is safe",
                        timeout.as_millis()
                    ),
                )
                .retryable())
            }
            Err(err) => return Err(unavailable(format!("the query {subject} failed: {err}"))),
        };
        if let Ok(failure) = serde_json::from_slice::<QueryError>(&reply.payload) {
            return Err(query_error(failure.error));
        }
        serde_json::from_slice(&reply.payload).map_err(|err| {
            ToolError::new(
                "malformed_reply",
                format!("the answer to {subject} could not be read: {err}"),
            )
        })
    }
}

/// Why a command was not (known to be) stored.
enum Unstored {
    /// It never reached the server.
    NotSent(jetstream::context::PublishError),
    /// It was sent; JetStream's confirmation failed or did not come.
    Unconfirmed(jetstream::context::PublishError),
}

/// Whether JetStream answered the publish with a refusal (so nothing was stored), as opposed
/// to no usable answer.
fn refused(err: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind as Kind;
    match err.kind() {
        Kind::StreamNotFound | Kind::WrongLastMessageId | Kind::WrongLastSequence => true,
        Kind::Other => {
            std::error::Error::source(err).is_some_and(|source| source.is::<jetstream::Error>())
        }
        _ => false,
    }
}

/// A command that may have been stored, so may still be executed: not to be called again.
fn in_doubt(command: &Command, results_subject: &str, why: &str) -> ToolError {
    ToolError {
        code: "timeout".to_owned(),
        message: format!(
            "command {id}: {why}; it may still be executed: look up command_id {id} on {results_subject} (do not call again blindly, or the message may be sent twice)",
            id = command.id
        ),
        command_id: Some(command.id.clone()),
        retryable: false,
    }
}

fn unavailable(message: String) -> ToolError {
    ToolError::new("unavailable", message).retryable()
}
