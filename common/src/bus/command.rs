//! Outbound commands (`dingtalk.commands.{integration_id}.{op}`), published by the dispatcher
//! and by any internal system, executed by the notifier. The publisher sets the `Nats-Msg-Id`
//! header to the command `id`, so a republished command is executed once.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{ContractError, V1};
use crate::registry::IntegrationId;

/// One command for the notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Command {
    /// Contract version (1).
    pub v: V1,
    /// The caller's idempotency key: a command id is executed at most once. At most 128 chars.
    pub id: String,
    /// The integration (DingTalk app) that sends.
    pub integration_id: IntegrationId,
    /// What to do, tagged by `op`.
    #[serde(flatten)]
    pub op: Operation,
}

impl Command {
    /// Reads and checks a command: JSON shape, `v`, and the rules serde cannot express.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ContractError> {
        let command: Self =
            serde_json::from_slice(bytes).map_err(|source| ContractError::Malformed {
                what: "command",
                source,
            })?;
        let problems = command.problems();
        if problems.is_empty() {
            Ok(command)
        } else {
            Err(ContractError::Invalid {
                what: "command",
                problems,
            })
        }
    }

    /// The op, for the subject.
    pub fn op_kind(&self) -> OpKind {
        match self.op {
            Operation::Send(_) => OpKind::Send,
            Operation::Update(_) => OpKind::Update,
            Operation::Recall(_) => OpKind::Recall,
        }
    }

    /// Every contract rule the command breaks, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.id.trim().is_empty() || self.id.len() > 128 {
            problems.push("id: must be 1 to 128 characters".to_owned());
        }
        match &self.op {
            Operation::Send(send) => {
                if send.recipients.is_empty() {
                    problems.push("recipients: at least one recipient is required".to_owned());
                }
                for (i, recipient) in send.recipients.iter().enumerate() {
                    if recipient.id.trim().is_empty() {
                        problems.push(format!("recipients[{i}].id: must not be empty"));
                    }
                }
                if let Some(mentions) = &send.mentions {
                    let groups_only = send.recipients.iter().all(|r| r.kind.is_group());
                    if (mentions.all || !mentions.user_ids.is_empty()) && !groups_only {
                        problems.push(
                            "mentions: only allowed when every recipient is a group (chat_id, webhook or session_webhook)"
                                .to_owned(),
                        );
                    }
                }
                send.message.check("message", &mut problems);
            }
            Operation::Update(update) => {
                check_target(&update.target, &mut problems);
                update.message.check("message", &mut problems);
            }
            Operation::Recall(recall) => check_target(&recall.target, &mut problems),
        }
        problems
    }
}

fn check_target(target: &str, problems: &mut Vec<String>) {
    if target.trim().is_empty() {
        problems.push("target: the id of an earlier send is required".to_owned());
    }
}

/// The three operations, also the last token of the command and result subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Send a message.
    Send,
    /// Replace the content of an earlier send.
    Update,
    /// Withdraw an earlier send.
    Recall,
}

impl OpKind {
    /// The subject token.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Update => "update",
            Self::Recall => "recall",
        }
    }

    /// Parses a subject token.
    pub fn parse(token: &str) -> Option<Self> {
        match token {
            "send" => Some(Self::Send),
            "update" => Some(Self::Update),
            "recall" => Some(Self::Recall),
            _ => None,
        }
    }
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Send a message to one or more recipients.
    Send(Send),
    /// Replace the content of an earlier send (cards in place; see `degrade`).
    Update(Update),
    /// Withdraw an earlier send.
    Recall(Recall),
}

/// `op: send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Send {
    /// Who receives it. A single `recipient` object is accepted as shorthand.
    #[serde(alias = "recipient", deserialize_with = "one_or_many")]
    #[schemars(with = "Vec<Recipient>")]
    pub recipients: Vec<Recipient>,
    /// @-mentions, for group recipients only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Mentions>,
    /// The content.
    pub message: OutboundMessage,
    /// Send as a card so that a later `update` can change it in place.
    #[serde(default)]
    pub updatable: bool,
    /// Values for `{{state.path}}` placeholders in recipient ids and message strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Map<String, Value>>,
}

/// `op: update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Update {
    /// The `id` of the earlier send command.
    pub target: String,
    /// The new content.
    pub message: OutboundMessage,
    /// What to do when the target is not a card: fail (default) or `resend` (recall + send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<Degrade>,
    /// Values for `{{state.path}}` placeholders in message strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Map<String, Value>>,
}

/// `op: recall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Recall {
    /// The `id` of the earlier send command.
    pub target: String,
}

/// The fallback for updating a message that cannot be updated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Degrade {
    /// Recall the old message and send the new content (the result says `degraded: true`).
    Resend,
}

/// One recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Recipient {
    /// How `id` is to be read.
    #[serde(rename = "type")]
    pub kind: RecipientType,
    /// The id (may contain `{{state.path}}` placeholders).
    pub id: String,
}

/// Recipient id kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientType {
    /// A userId (staff id) in the app's organization: a 1:1 robot message.
    UserId,
    /// A unionId, resolved to a userId first.
    UnionId,
    /// An openId, sent as the anchor plugin does.
    OpenId,
    /// A group's openConversationId (`cid…`).
    ChatId,
    /// A custom group robot, by its access token.
    Webhook,
    /// The `sessionWebhook` URL of an inbound message.
    SessionWebhook,
}

impl RecipientType {
    /// Whether the recipient is a group (where @-mentions make sense).
    pub fn is_group(&self) -> bool {
        matches!(self, Self::ChatId | Self::Webhook | Self::SessionWebhook)
    }
}

/// @-mentions in a group message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mentions {
    /// userIds to mention.
    #[serde(default)]
    pub user_ids: Vec<String>,
    /// Mention everyone.
    #[serde(default)]
    pub all: bool,
}

/// Message content, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboundMessage {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// Markdown (DingTalk's subset).
    Markdown {
        /// The notification title; defaults to the first line of `text`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// The markdown.
        text: String,
    },
    /// An interactive (StandardCard) card: `{config, header, contents}`.
    Interactive {
        /// The card data.
        card: Value,
    },
    /// A card built from a template in DingTalk's card builder.
    Template {
        /// The `cardTemplateId`.
        template_id: String,
        /// The template's parameters.
        #[serde(default)]
        params: Map<String, Value>,
    },
    /// A file, by DingTalk media id or by URL.
    File(MediaSource),
    /// An image, by DingTalk media id or by URL.
    Image(MediaSource),
}

impl OutboundMessage {
    fn check(&self, field: &str, problems: &mut Vec<String>) {
        match self {
            Self::Text { text } | Self::Markdown { text, .. } if text.trim().is_empty() => {
                problems.push(format!("{field}.text: must not be empty"));
            }
            Self::Interactive { card } if !card.is_object() => {
                problems.push(format!("{field}.card: must be a JSON object"));
            }
            Self::Template { template_id, .. } if template_id.trim().is_empty() => {
                problems.push(format!("{field}.template_id: must not be empty"));
            }
            Self::File(media) | Self::Image(media)
                if media.media_id.is_some() == media.url.is_some() =>
            {
                problems.push(format!(
                    "{field}: exactly one of media_id and url is required"
                ));
            }
            _ => {}
        }
    }
}

/// Where a file or image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MediaSource {
    /// A `media_id` from DingTalk's media upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// A URL the notifier downloads (hosts on `MEDIA_URL_ALLOWLIST` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The file name shown to the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Accepts either one value or a list of them.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(items) => items,
        OneOrMany::One(item) => vec![item],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Command, ContractError> {
        Command::from_slice(value.to_string().as_bytes())
    }

    #[test]
    fn a_send_with_a_list_of_recipients_reads() {
        let command = parse(json!({
            "v": 1, "id": "c1", "integration_id": "acme", "op": "send",
            "recipients": [{"type": "user_id", "id": "u1"}, {"type": "chat_id", "id": "cid1"}],
            "message": {"type": "markdown", "title": "t", "text": "## hi"}
        }))
        .unwrap();
        assert_eq!(command.op_kind(), OpKind::Send);
        let Operation::Send(send) = command.op else {
            panic!("not a send")
        };
        assert_eq!(send.recipients.len(), 2);
        assert!(!send.updatable);
    }

    #[test]
    fn a_single_recipient_is_accepted_as_shorthand() {
        let command = parse(json!({
            "v": 1, "id": "c1", "integration_id": "acme", "op": "send",
            "recipient": {"type": "user_id", "id": "{{state.dingtalkRecipientId}}"},
            "message": {"type": "text", "text": "hi"}, "state": {"dingtalkRecipientId": "u9"}
        }))
        .unwrap();
        let Operation::Send(send) = command.op else {
            panic!("not a send")
        };
        assert_eq!(send.recipients[0].id, "{{state.dingtalkRecipientId}}");
    }

    #[test]
    fn update_and_recall_need_a_target() {
        let err = parse(
            json!({"v": 1, "id": "c2", "integration_id": "acme", "op": "recall", "target": " "}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        let err = parse(
            json!({"v": 1, "id": "c2", "integration_id": "acme", "op": "update",
            "message": {"type": "text", "text": "x"}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing field `target`"), "{err}");
    }

    #[test]
    fn every_broken_rule_is_reported_at_once() {
        let err = parse(json!({
            "v": 1, "id": "", "integration_id": "acme", "op": "send",
            "recipients": [{"type": "user_id", "id": ""}],
            "mentions": {"all": true},
            "message": {"type": "file", "name": "a.pdf"}
        }))
        .unwrap_err();
        let ContractError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn unknown_ops_recipient_types_and_message_types_are_refused() {
        for (field, value) in [
            ("op", json!("delete")),
            ("recipients", json!([{"type": "email", "id": "a@b"}])),
            ("message", json!({"type": "video", "url": "x"})),
        ] {
            let mut command = json!({
                "v": 1, "id": "c1", "integration_id": "acme", "op": "send",
                "recipients": [{"type": "user_id", "id": "u1"}],
                "message": {"type": "text", "text": "hi"}
            });
            command[field] = value;
            assert!(
                matches!(parse(command), Err(ContractError::Malformed { .. })),
                "{field}"
            );
        }
    }
}
