//! Command results (`dingtalk.results.{integration_id}.{op}`): exactly one per command, published
//! by the notifier once the command has succeeded, failed for good, or been superseded.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::command::{OpKind, Recipient};
use super::{ContractError, Timestamp, V1};

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandResult {
    /// Contract version (1).
    pub v: V1,
    /// The command's `id` (or its `Nats-Msg-Id` header when the body could not be read).
    pub command_id: String,
    /// The integration token of the command (as published, even when unknown).
    pub integration_id: String,
    /// The op, when the command could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<OpKind>,
    /// Overall outcome.
    pub status: Status,
    /// DingTalk's id of the sent robot message (recall and read status use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_query_key: Option<String>,
    /// The card id (`cardBizId`/`outTrackId`) when the message went out as a card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_biz_id: Option<String>,
    /// Per-recipient outcome.
    #[serde(default)]
    pub targets: Vec<TargetResult>,
    /// True when an update was carried out as recall + resend.
    #[serde(default)]
    pub degraded: bool,
    /// Why the command failed (when `status` is `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResultError>,
    /// When the notifier finished with it.
    pub finished_at: Timestamp,
}

impl CommandResult {
    /// Reads a result, checking `v`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ContractError> {
        serde_json::from_slice(bytes).map_err(|source| ContractError::Malformed {
            what: "result",
            source,
        })
    }
}

/// Overall outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done (for multi-recipient sends: see `targets` for partial failures).
    Ok,
    /// Not done; `error` says why and whether retrying may help.
    Failed,
    /// An update replaced by a newer update of the same target before it was applied.
    Superseded,
}

/// The outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TargetResult {
    /// The recipient, with placeholders filled.
    pub recipient: Recipient,
    /// Whether DingTalk accepted it.
    pub ok: bool,
    /// DingTalk's id of the robot message this recipient got (`processQueryKey`), when there
    /// is one: 1:1 and group messages and StandardCards. Recipients of one batchSend share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_query_key: Option<String>,
    /// The id of the card this recipient got (a StandardCard's `cardBizId`: the command id for
    /// the first card, `{id}:1`, `{id}:2`… for the others; a template card's `outTrackId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_biz_id: Option<String>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResultError>,
}

/// A failure, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultError {
    /// Stable code: ours (`malformed`, `unknown_integration`, `not_updatable`, …) or DingTalk's
    /// (`60011`, `invalidStaffIdList`, …).
    pub code: String,
    /// What went wrong and what would fix it.
    pub message: String,
    /// Whether the same command may succeed later (publish it again with a new id).
    #[serde(default)]
    pub retryable: bool,
}
