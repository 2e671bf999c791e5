//! Normalized inbound events (`dingtalk.events.{integration_id}.{kind}`), published by the
//! ingress for every genuine DingTalk callback, whichever transport brought it (HTTP or Stream).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ContractError, Timestamp, V1};
use crate::registry::IntegrationId;

/// One inbound event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Contract version (1).
    pub v: V1,
    /// The de-duplication key, also the `Nats-Msg-Id`: `{integration_id}:{key}` where key is the
    /// robot message's `msgId`, the event's `EventId`, or a SHA-256 of the decrypted event.
    pub id: String,
    /// The integration (DingTalk app) the callback was addressed to.
    pub integration_id: IntegrationId,
    /// When the gateway received it.
    pub received_at: Timestamp,
    /// What happened, tagged by `kind`.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// Reads an event, checking `v`; unknown fields are ignored.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ContractError> {
        serde_json::from_slice(bytes).map_err(|source| ContractError::Malformed {
            what: "event",
            source,
        })
    }

    /// The kind, for the subject.
    pub fn kind(&self) -> EventKind {
        match &self.body {
            EventBody::Message(_) => EventKind::Message,
            EventBody::CardAction(_) => EventKind::CardAction,
            EventBody::Event(_) => EventKind::Event,
            EventBody::Other => EventKind::Other,
        }
    }
}

/// The `kind` of an event, also its last subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A chat message to the robot.
    Message,
    /// A button pressed on a card we sent.
    CardAction,
    /// An event-subscription callback (contact change, approval, ...).
    Event,
    /// A kind added by a later minor release; consumers ack and skip it.
    Other,
}

impl EventKind {
    /// The subject token.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::CardAction => "card_action",
            Self::Event => "event",
            Self::Other => "other",
        }
    }
}

/// The kind-specific part of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A chat message to the robot (private, or in a group; see `message.mentions_bot`).
    Message(MessageEvent),
    /// A button pressed on a card we sent.
    CardAction(CardActionEvent),
    /// An event-subscription callback other than `check_url`.
    Event(SubscriptionEvent),
    /// A kind this build does not know (published by a newer ingress); skip it.
    #[serde(other)]
    Other,
}

/// A chat message to the robot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageEvent {
    /// Where it was said.
    pub conversation: Conversation,
    /// Who said it.
    pub sender: Sender,
    /// What was said.
    pub message: ChatMessage,
    /// How to answer without an access token, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyChannel>,
    /// The robot that received it (for internal apps normally the AppKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robot_code: Option<String>,
    /// The callback JSON exactly as DingTalk sent it, for consumers that need more.
    #[serde(default)]
    pub raw: RawJson,
}

/// A conversation: a private chat with the robot or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Conversation {
    /// DingTalk's conversation id; for groups the `openConversationId` (`cid…`) used to send.
    pub id: String,
    /// Private chat or group.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// The group's name (groups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Private (1:1 with the robot) or group chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationType {
    /// A 1:1 chat with the robot (`conversationType` "1").
    Private,
    /// A group chat (`conversationType` "2").
    Group,
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    /// DingTalk's opaque, encrypted sender id (`senderId`).
    pub id: String,
    /// The sender's userId in the robot's organization; absent for external contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub nick: String,
    /// The sender's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corp_id: Option<String>,
    /// Whether the sender is an administrator.
    #[serde(default)]
    pub is_admin: bool,
}

/// The message itself, flattened to what consumers need most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatMessage {
    /// DingTalk's `msgId`.
    pub id: String,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The text: trimmed text, flattened rich text, or an audio message's recognition.
    #[serde(default)]
    pub text: String,
    /// Users @-mentioned in the message.
    #[serde(default)]
    pub at_users: Vec<AtUser>,
    /// Whether the robot was @-mentioned (always true in private chats).
    #[serde(default)]
    pub mentions_bot: bool,
    /// Attached media (pictures, audio, video, files), fetched with their download codes.
    #[serde(default)]
    pub media: Vec<Media>,
}

/// Message types; types DingTalk adds later arrive as `unknown`, never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Plain text.
    Text,
    /// Text mixed with pictures and mentions.
    RichText,
    /// A picture.
    Picture,
    /// A voice message.
    Audio,
    /// A video.
    Video,
    /// A file.
    File,
    /// Anything else.
    #[serde(other)]
    Unknown,
}

/// A user @-mentioned in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AtUser {
    /// DingTalk's opaque user id.
    pub dingtalk_id: String,
    /// The userId, for members of the robot's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff_id: Option<String>,
}

/// A media item attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Media {
    /// `picture`, `audio`, `video` or `file`.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Exchange it for a download URL with `robot/messageFiles/download`.
    pub download_code: String,
    /// The file's name (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// The temporary reply URL DingTalk attaches to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyChannel {
    /// The `sessionWebhook` URL.
    pub session_webhook: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// A button pressed on a card we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CardActionEvent {
    /// The card that was pressed.
    pub card: CardRef,
    /// Which button, with its parameters.
    pub action: CardAction,
    /// Who pressed it.
    pub user: CardUser,
    /// Where the card is.
    pub conversation: Conversation,
    /// The callback JSON as DingTalk sent it.
    #[serde(default)]
    pub raw: RawJson,
}

/// A card we sent, by the id we gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardRef {
    /// The `outTrackId` / `cardBizId` of the send (the command id).
    pub out_track_id: String,
}

/// The button pressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CardAction {
    /// `actionIds[0]`.
    pub id: String,
    /// The button's parameters.
    #[serde(default)]
    pub params: Value,
}

/// Who pressed the button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardUser {
    /// The user's userId.
    pub staff_id: String,
}

/// An event-subscription callback (contact changes, approvals, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionEvent {
    /// DingTalk's `EventType`, e.g. `user_add_org`.
    pub event_type: String,
    /// The decrypted event JSON, as DingTalk sent it.
    pub payload: RawJson,
}

/// A JSON value kept as the text it arrived in (an event's `raw`): the ingress writes it back
/// byte for byte instead of building a tree of it and serializing that again on every callback.
/// Any JSON value is accepted; equality compares the values, not their spelling.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Keeps `json`, which must be one JSON value (surrounding whitespace is dropped).
    pub fn from_text(json: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(json.trim().to_owned()).map(Self)
    }

    /// The text of `value`.
    pub fn from_value(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON value always serializes"))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

impl Default for RawJson {
    /// `null`, what an event without the field reads as.
    fn default() -> Self {
        Self::from_value(&Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
            || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    /// Through a [`Value`]: an event's body is flattened and tagged, so serde hands its fields
    /// over buffered, where the text itself is no longer available.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Self::from_value(&value))
    }
}

impl JsonSchema for RawJson {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Value::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Value::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message_event() -> Value {
        json!({
            "v": 1, "id": "acme:msgABC", "integration_id": "acme", "kind": "message",
            "received_at": "2026-11-25T10:00:00Z",
            "conversation": {"id": "cidXYZ==", "type": "group", "title": "ops"},
            "sender": {"id": "$:LWCP_v1:$abc", "staff_id": "user123", "nick": "Li"},
            "message": {"id": "msgABC", "type": "text", "text": "hello", "mentions_bot": true},
            "raw": {}
        })
    }

    #[test]
    fn raw_json_is_written_as_received_and_compared_by_value() {
        let raw = RawJson::from_text(" {\"b\": 1,  \"a\": [true]}\n").unwrap();
        assert_eq!(raw.get(), r#"{"b": 1,  "a": [true]}"#);
        assert_eq!(
            serde_json::to_string(&[&raw]).unwrap(),
            r#"[{"b": 1,  "a": [true]}]"#
        );
        assert_eq!(raw, RawJson::from_value(&json!({"a": [true], "b": 1})));
        assert_ne!(raw, RawJson::default());
        assert_eq!(RawJson::default().get(), "null");
        assert!(RawJson::from_text("{\"a\":").is_err());
        assert!(RawJson::from_text("1 2").is_err());
    }

    #[test]
    fn a_message_event_reads_and_writes_the_same_json() {
        let event = Event::from_slice(message_event().to_string().as_bytes()).unwrap();
        assert_eq!(event.kind(), EventKind::Message);
        let EventBody::Message(message) = &event.body else {
            panic!("not a message")
        };
        assert_eq!(message.conversation.kind, ConversationType::Group);
        let again = Event::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut value = message_event();
        value["added_later"] = json!({"x": 1});
        value["message"]["added_later"] = json!(true);
        assert!(Event::from_slice(value.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn another_version_is_refused_with_a_clear_message() {
        let mut value = message_event();
        value["v"] = json!(2);
        let err = Event::from_slice(value.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("unsupported contract version v=2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kinds_and_message_types_are_kept_not_refused() {
        let mut value = message_event();
        value["message"]["type"] = json!("chatRecord");
        let event = Event::from_slice(value.to_string().as_bytes()).unwrap();
        let EventBody::Message(message) = event.body else {
            panic!("not a message")
        };
        assert_eq!(message.message.kind, MessageType::Unknown);

        let future = json!({"v": 1, "id": "a:1", "integration_id": "a", "kind": "reaction",
            "received_at": "2026-11-25T10:00:00Z"});
        let event = Event::from_slice(future.to_string().as_bytes()).unwrap();
        assert_eq!(event.kind(), EventKind::Other);
    }
}
