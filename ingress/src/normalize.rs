//! DingTalk callback payloads → normalized bus events (contract v1, `common::bus::event`).
//!
//! Pure functions: the HTTP handlers (and the Stream-mode connector, which receives the very same
//! JSON) parse here, so both transports publish identical events. Every function takes the JSON
//! text as DingTalk sent it (read once, by [`CallbackJson`]) and returns the event body plus its
//! de-duplication key; the text itself becomes the event's `raw`. Nothing is dropped for being
//! unfamiliar (unknown message types become `unknown`).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use common::bus::event::{
    AtUser, CardAction, CardActionEvent, CardRef, CardUser, ChatMessage, Conversation,
    ConversationType, EventBody, Media, MessageEvent, MessageType, RawJson, ReplyChannel, Sender,
    SubscriptionEvent,
};
use common::bus::Timestamp;

/// A callback body that is JSON but not the shape DingTalk sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

fn missing(field: &str) -> ShapeError {
    ShapeError(format!("missing or empty string field `{field}`"))
}

/// A normalized body and the key that identifies it across redeliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// What the event says.
    pub body: EventBody,
    /// De-duplication key (without the integration prefix): the `msgId`, the `EventId`, or a
    /// SHA-256 of the JSON when DingTalk gives no id.
    pub key: String,
}

/// What kind of payload a plain (unencrypted) JSON body on the webhook route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainKind {
    /// A robot chat message (§2.2).
    RobotMessage,
    /// A card button press (§4.6b), standard or legacy shape.
    CardAction,
}

fn str_field<'a>(json: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    json.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(json: &'a Map<String, Value>, field: &str) -> Result<&'a str, ShapeError> {
    str_field(json, field).ok_or_else(|| missing(field))
}

/// Lowercase hex SHA-256, the key of payloads that carry no id of their own.
pub fn content_key(bytes: &[u8]) -> String {
    common::crypto::hex_lower(&Sha256::digest(bytes))
}

/// A JSON object as DingTalk sends it in a callback, read once: the fields that tell what it is
/// (`encrypt`, the card markers, `EventType`) and those a robot message is normalized from,
/// borrowed from the text where they need no unescaping. The rest is skipped, and kept only as
/// the text itself (an event's `raw`), so a robot message costs no JSON tree.
pub struct CallbackJson<'a> {
    text: &'a str,
    fields: Fields<'a>,
}

/// The fields of [`CallbackJson`], each read leniently: DingTalk's payloads vary between
/// versions, so a field of an unexpected type counts as absent instead of refusing the callback.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(borrow)]
    encrypt: Loose<'a>,
    #[serde(borrow, rename = "type")]
    kind: Loose<'a>,
    #[serde(borrow)]
    out_track_id: Loose<'a>,
    #[serde(borrow, rename = "EventType")]
    event_type: Loose<'a>,
    #[serde(borrow)]
    action_callback: Loose<'a>,
    #[serde(borrow, rename = "EventId")]
    event_id_pascal: Loose<'a>,
    #[serde(borrow)]
    event_id: Loose<'a>,
    #[serde(borrow)]
    msg_id: Loose<'a>,
    #[serde(borrow)]
    msgtype: Loose<'a>,
    #[serde(borrow)]
    conversation_id: Loose<'a>,
    #[serde(borrow)]
    conversation_type: Loose<'a>,
    #[serde(borrow)]
    conversation_title: Loose<'a>,
    #[serde(borrow)]
    sender_id: Loose<'a>,
    #[serde(borrow)]
    sender_staff_id: Loose<'a>,
    #[serde(borrow)]
    sender_nick: Loose<'a>,
    #[serde(borrow)]
    sender_corp_id: Loose<'a>,
    #[serde(borrow)]
    is_admin: Loose<'a>,
    #[serde(borrow)]
    is_in_at_list: Loose<'a>,
    #[serde(borrow)]
    chatbot_user_id: Loose<'a>,
    #[serde(borrow)]
    session_webhook: Loose<'a>,
    #[serde(borrow)]
    session_webhook_expired_time: Loose<'a>,
    #[serde(borrow)]
    robot_code: Loose<'a>,
    /// `{"content": "…"}` of text messages.
    text: Option<Value>,
    /// The body of other message types.
    content: Option<Value>,
    at_users: Option<Value>,
}

/// One field of a callback, whatever JSON it holds.
#[derive(Debug, Default)]
enum Loose<'a> {
    /// Not in the object.
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// A fraction, an object or an array (skipped).
    Other,
}

impl Loose<'_> {
    fn is_present(&self) -> bool {
        !matches!(self, Loose::Absent)
    }

    /// The string, even empty.
    fn any_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A non-empty string.
    fn str(&self) -> Option<&str> {
        self.any_str().filter(|s| !s.is_empty())
    }

    fn bool(&self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// DingTalk writes some numbers as strings and some as numbers; accept both.
    fn millis(&self) -> Option<i64> {
        match self {
            Loose::Int(n) => Some(*n),
            Loose::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for Any<'a> {
            type Value = Loose<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Loose<'a>, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }

            fn visit_bool<E>(self, v: bool) -> Result<Loose<'a>, E> {
                Ok(Loose::Bool(v))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Loose<'a>, E> {
                Ok(Loose::Int(v))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Loose<'a>, E> {
                Ok(i64::try_from(v).map_or(Loose::Other, Loose::Int))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Loose<'a>, E> {
                Ok(Loose::Other)
            }

            fn visit_unit<E>(self) -> Result<Loose<'a>, E> {
                Ok(Loose::Null)
            }

            fn visit_none<E>(self) -> Result<Loose<'a>, E> {
                Ok(Loose::Null)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'a>, D::Error> {
                Loose::deserialize(d)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }

        deserializer.deserialize_any(Any(PhantomData))
    }
}

impl<'a> CallbackJson<'a> {
    /// Reads `text`, which must be one JSON object.
    pub fn parse(text: &'a str) -> Result<Self, ShapeError> {
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => not_an_object(),
                Err(err) => not_json(err),
            });
        }
        let fields = serde_json::from_str(text).map_err(not_json)?;
        Ok(Self { text, fields })
    }

    /// The `encrypt` field of an encrypted envelope (§1).
    pub fn encrypt(&self) -> Option<&str> {
        self.fields.encrypt.any_str()
    }

    /// `EventType`, empty when there is none.
    pub fn event_type(&self) -> &str {
        self.fields.event_type.any_str().unwrap_or_default()
    }

    /// Tells a card action from a robot message, so one route can serve both.
    pub fn kind(&self) -> PlainKind {
        let f = &self.fields;
        let is_card = f.kind.any_str() == Some("actionCallback")
            || (f.out_track_id.is_present() && !f.msgtype.is_present())
            || f.event_type.any_str() == Some("chatbot_card_callback")
            || f.action_callback.is_present();
        if is_card {
            PlainKind::CardAction
        } else {
            PlainKind::RobotMessage
        }
    }

    /// The text it was read from.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// A robot message (PROTOCOL §2.2) → `kind: message`.
    pub fn robot_message(&self) -> Result<Normalized, ShapeError> {
        let f = &self.fields;
        let required = |field: &Loose<'_>, name: &str| {
            field.str().map(str::to_owned).ok_or_else(|| missing(name))
        };
        let msg_id = required(&f.msg_id, "msgId")?;
        let conversation_type = match &f.conversation_type {
            Loose::Str(s) => Some(s.clone()),
            Loose::Int(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        };
        let conversation_kind = match conversation_type.as_deref() {
            Some("1") => ConversationType::Private,
            Some("2") => ConversationType::Group,
            Some(other) => {
                return Err(ShapeError(format!(
                    "conversationType must be \"1\" or \"2\", got {other:?}"
                )))
            }
            None => return Err(missing("conversationType")),
        };
        let conversation = Conversation {
            id: required(&f.conversation_id, "conversationId")?,
            kind: conversation_kind,
            title: f.conversation_title.str().map(str::to_owned),
        };
        let sender = Sender {
            id: required(&f.sender_id, "senderId")?,
            staff_id: f.sender_staff_id.str().map(str::to_owned),
            nick: f.sender_nick.str().unwrap_or_default().to_owned(),
            corp_id: f.sender_corp_id.str().map(str::to_owned),
            is_admin: f.is_admin.bool().unwrap_or(false),
        };
        let kind = message_type(f.msgtype.str().unwrap_or("text"));
        let content = f.content.as_ref().and_then(Value::as_object);
        let (text, media) = message_text_and_media(f.text.as_ref(), kind, content);
        let at_users: Vec<AtUser> = f
            .at_users
            .as_ref()
            .and_then(Value::as_array)
            .map(|users| {
                users
                    .iter()
                    .filter_map(Value::as_object)
                    .filter_map(|u| {
                        Some(AtUser {
                            dingtalk_id: str_field(u, "dingtalkId")?.to_owned(),
                            staff_id: str_field(u, "staffId").map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mentions_bot = match conversation_kind {
            ConversationType::Private => true,
            ConversationType::Group => f.is_in_at_list.bool().unwrap_or_else(|| {
                f.chatbot_user_id
                    .str()
                    .is_some_and(|bot| at_users.iter().any(|u| u.dingtalk_id == bot))
            }),
        };
        let reply = match (
            f.session_webhook.str(),
            f.session_webhook_expired_time
                .millis()
                .and_then(Timestamp::from_unix_millis),
        ) {
            (Some(url), Some(expires_at)) => Some(ReplyChannel {
                session_webhook: url.to_owned(),
                expires_at,
            }),
            _ => None,
        };
        let body = EventBody::Message(MessageEvent {
            conversation,
            sender,
            message: ChatMessage {
                id: msg_id.clone(),
                kind,
                text,
                at_users,
                mentions_bot,
                media,
            },
            reply,
            robot_code: f.robot_code.str().map(str::to_owned),
            raw: raw_json(self.text)?,
        });
        Ok(Normalized { body, key: msg_id })
    }
}

impl CallbackJson<'_> {
    /// An event-subscription callback (decrypted, or a Stream event) → `kind: event`, keyed by
    /// its `EventId` (`eventId`) or, without one, by a hash of its text.
    pub fn subscription_event(&self) -> Result<Normalized, ShapeError> {
        let f = &self.fields;
        let event_type = f.event_type.str().ok_or_else(|| missing("EventType"))?;
        let key = f
            .event_id_pascal
            .str()
            .or_else(|| f.event_id.str())
            .map_or_else(|| content_key(self.text.as_bytes()), str::to_owned);
        Ok(Normalized {
            body: EventBody::Event(SubscriptionEvent {
                event_type: event_type.to_owned(),
                payload: raw_json(self.text)?,
            }),
            key,
        })
    }
}

/// `text` (already read as JSON) as an event's `raw`.
fn raw_json(text: &str) -> Result<RawJson, ShapeError> {
    RawJson::from_text(text).map_err(not_json)
}

fn not_json(err: serde_json::Error) -> ShapeError {
    ShapeError(format!("the callback is not JSON: {err}"))
}

fn not_an_object() -> ShapeError {
    ShapeError("the callback must be a JSON object".into())
}

/// A robot message (PROTOCOL §2.2) → `kind: message`, from the JSON text DingTalk sent.
pub fn robot_message(text: &str) -> Result<Normalized, ShapeError> {
    CallbackJson::parse(text)?.robot_message()
}

fn message_type(msgtype: &str) -> MessageType {
    match msgtype {
        "text" => MessageType::Text,
        "richText" => MessageType::RichText,
        "picture" => MessageType::Picture,
        "audio" => MessageType::Audio,
        "video" => MessageType::Video,
        "file" => MessageType::File,
        _ => MessageType::Unknown,
    }
}

fn media_item(kind: MessageType, item: &Map<String, Value>) -> Option<Media> {
    let code =
        str_field(item, "downloadCode").or_else(|| str_field(item, "pictureDownloadCode"))?;
    Some(Media {
        kind,
        download_code: code.to_owned(),
        file_name: str_field(item, "fileName").map(str::to_owned),
    })
}

fn message_text_and_media(
    text_field: Option<&Value>,
    kind: MessageType,
    content: Option<&Map<String, Value>>,
) -> (String, Vec<Media>) {
    let text_content = || {
        text_field
            .and_then(Value::as_object)
            .and_then(|t| str_field(t, "content"))
            .unwrap_or_default()
    };
    match kind {
        MessageType::Text => (text_content().trim().to_owned(), Vec::new()),
        MessageType::RichText => {
            let items = content
                .and_then(|c| c.get("richText"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut text = String::new();
            let mut media = Vec::new();
            for item in items.iter().filter_map(Value::as_object) {
                if let Some(part) = str_field(item, "text") {
                    text.push_str(part);
                } else if str_field(item, "type") == Some("picture") {
                    media.extend(media_item(MessageType::Picture, item));
                }
            }
            (text.trim().to_owned(), media)
        }
        MessageType::Audio => {
            let text = content
                .and_then(|c| str_field(c, "recognition"))
                .unwrap_or_default();
            (
                text.trim().to_owned(),
                content
                    .and_then(|c| media_item(kind, c))
                    .into_iter()
                    .collect(),
            )
        }
        MessageType::Picture | MessageType::Video | MessageType::File => (
            String::new(),
            content
                .and_then(|c| media_item(kind, c))
                .into_iter()
                .collect(),
        ),
        // Keep whatever text a newer message type carries; `raw` has the rest.
        MessageType::Unknown => (text_content().trim().to_owned(), Vec::new()),
    }
}

/// A card button press (PROTOCOL §4.6b) → `kind: card_action`, from the JSON text DingTalk sent.
/// Also accepts the legacy shape (`value` or `actionCallback.value` next to `msgId`). The text is
/// hashed into the key since card callbacks carry no id of their own.
pub fn card_action(text: &str) -> Result<Normalized, ShapeError> {
    let parsed: Value = serde_json::from_str(text).map_err(not_json)?;
    let json = parsed.as_object().ok_or_else(not_an_object)?;
    let key = content_key(text.as_bytes());
    let raw = raw_json(text)?;
    if let Some(out_track_id) = str_field(json, "outTrackId") {
        let content: Value = match json.get("content") {
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|err| {
                ShapeError(format!(
                    "`content` must be a JSON string holding JSON: {err}"
                ))
            })?,
            Some(Value::Object(o)) => Value::Object(o.clone()),
            _ => return Err(missing("content")),
        };
        let private = content.get("cardPrivateData").unwrap_or(&Value::Null);
        let action_id = private
            .get("actionIds")
            .and_then(Value::as_array)
            .and_then(|ids| ids.first())
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ShapeError("`content.cardPrivateData.actionIds` must hold at least one id".into())
            })?;
        let params = private
            .get("params")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let kind = match str_field(json, "spaceType") {
            Some("IM_ROBOT") | Some("im_robot") => ConversationType::Private,
            _ => ConversationType::Group,
        };
        let body = EventBody::CardAction(CardActionEvent {
            card: CardRef {
                out_track_id: out_track_id.to_owned(),
            },
            action: CardAction {
                id: action_id.to_owned(),
                params,
            },
            user: CardUser {
                staff_id: required(json, "userId")?.to_owned(),
            },
            conversation: Conversation {
                id: str_field(json, "spaceId").unwrap_or_default().to_owned(),
                kind,
                title: None,
            },
            raw,
        });
        return Ok(Normalized { body, key });
    }
    legacy_card_action(raw, json, key)
}

/// The anchor plugin's legacy card callback: `value` (or `actionCallback.value`) next to `msgId`.
fn legacy_card_action(
    raw: RawJson,
    json: &Map<String, Value>,
    key: String,
) -> Result<Normalized, ShapeError> {
    let value = json
        .get("actionCallback")
        .and_then(|a| a.get("value"))
        .or_else(|| json.get("value"))
        .ok_or_else(|| {
            ShapeError("a card callback needs `outTrackId` (or a legacy `value`)".into())
        })?;
    let value: Value = match value {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        other => other.clone(),
    };
    let action_id = value
        .get("action")
        .or_else(|| value.get("id"))
        .and_then(Value::as_str)
        .or_else(|| value.as_str())
        .ok_or_else(|| ShapeError("the legacy card `value` must name its action".into()))?;
    let kind = match json.get("conversationType").and_then(Value::as_str) {
        Some("1") => ConversationType::Private,
        _ => ConversationType::Group,
    };
    let body = EventBody::CardAction(CardActionEvent {
        card: CardRef {
            out_track_id: str_field(json, "msgId").unwrap_or_default().to_owned(),
        },
        action: CardAction {
            id: action_id.to_owned(),
            params: value.clone(),
        },
        user: CardUser {
            staff_id: str_field(json, "senderStaffId")
                .or_else(|| str_field(json, "userId"))
                .ok_or_else(|| missing("senderStaffId"))?
                .to_owned(),
        },
        conversation: Conversation {
            id: str_field(json, "conversationId")
                .unwrap_or_default()
                .to_owned(),
            kind,
            title: None,
        },
        raw,
    });
    Ok(Normalized { body, key })
}

/// A decrypted event-subscription callback → `kind: event` (the caller answers `check_url`
/// itself and publishes nothing for it).
pub fn subscription_event(decrypted: &str) -> Result<Normalized, ShapeError> {
    CallbackJson::parse(decrypted)?.subscription_event()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn group_text() -> Value {
        json!({"msgId":"msgABC","msgtype":"text","text":{"content":" hello "},"conversationId":"cidXYZ==",
            "conversationType":"2","conversationTitle":"ops","senderId":"$:LWCP_v1:$abc","senderStaffId":"user123",
            "senderNick":"Li","senderCorpId":"dingcorp","chatbotUserId":"$:LWCP_v1:$bot","chatbotCorpId":"dingcorp",
            "robotCode":"dingappkey","isAdmin":false,"isInAtList":true,"atUsers":[{"dingtalkId":"$:LWCP_v1:$bot"}],
            "createAt":1700000000000i64,"sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=s1",
            "sessionWebhookExpiredTime":1700005400000i64})
    }

    fn kind_of(json: &Value) -> PlainKind {
        CallbackJson::parse(&json.to_string()).unwrap().kind()
    }

    fn message(n: Normalized) -> MessageEvent {
        match n.body {
            EventBody::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_group_text_message_is_normalized_with_its_msg_id_as_key() {
        let n = robot_message(&group_text().to_string()).unwrap();
        assert_eq!(n.key, "msgABC");
        let m = message(n);
        assert_eq!(m.conversation.kind, ConversationType::Group);
        assert_eq!(m.conversation.title.as_deref(), Some("ops"));
        assert_eq!(m.message.text, "hello");
        assert!(m.message.mentions_bot);
        assert_eq!(m.sender.staff_id.as_deref(), Some("user123"));
        assert_eq!(m.reply.unwrap().expires_at.unix_millis(), 1_700_005_400_000);
        assert_eq!(m.robot_code.as_deref(), Some("dingappkey"));
        assert_eq!(m.raw.to_value().unwrap()["msgId"], "msgABC");
    }

    #[test]
    fn a_group_message_without_the_bot_mentioned_is_kept_and_flagged() {
        let mut raw = group_text();
        raw["isInAtList"] = json!(false);
        raw["atUsers"] = json!([]);
        assert!(
            !message(robot_message(&raw.to_string()).unwrap())
                .message
                .mentions_bot
        );
    }

    #[test]
    fn private_messages_always_mention_the_bot() {
        let mut raw = group_text();
        raw["conversationType"] = json!("1");
        raw.as_object_mut().unwrap().remove("isInAtList");
        let m = message(robot_message(&raw.to_string()).unwrap());
        assert_eq!(m.conversation.kind, ConversationType::Private);
        assert!(m.message.mentions_bot);
    }

    #[test]
    fn rich_text_is_flattened_and_its_pictures_become_media() {
        let mut raw = group_text();
        raw["msgtype"] = json!("richText");
        raw["content"] = json!({"richText":[{"text":"look "},{"type":"picture","downloadCode":"dc1"},{"text":"here"}]});
        let m = message(robot_message(&raw.to_string()).unwrap());
        assert_eq!(m.message.kind, MessageType::RichText);
        assert_eq!(m.message.text, "look here");
        assert_eq!(m.message.media[0].download_code, "dc1");
    }

    #[test]
    fn audio_carries_its_recognition_and_files_their_name() {
        let mut raw = group_text();
        raw["msgtype"] = json!("audio");
        raw["content"] = json!({"downloadCode":"a1","duration":"3","recognition":"你好"});
        assert_eq!(
            message(robot_message(&raw.clone().to_string()).unwrap())
                .message
                .text,
            "你好"
        );
        raw["msgtype"] = json!("file");
        raw["content"] = json!({"downloadCode":"f1","fileName":"a.pdf"});
        let m = message(robot_message(&raw.to_string()).unwrap());
        assert_eq!(m.message.media[0].file_name.as_deref(), Some("a.pdf"));
    }

    #[test]
    fn unknown_message_types_are_published_as_unknown() {
        let mut raw = group_text();
        raw["msgtype"] = json!("chatRecord");
        assert_eq!(
            message(robot_message(&raw.to_string()).unwrap())
                .message
                .kind,
            MessageType::Unknown
        );
    }

    #[test]
    fn a_message_without_msg_id_or_conversation_is_refused() {
        for field in ["msgId", "conversationId", "conversationType", "senderId"] {
            let mut raw = group_text();
            raw.as_object_mut().unwrap().remove(field);
            let err = robot_message(&raw.to_string()).unwrap_err();
            assert!(err.0.contains(field), "{field}: {err}");
        }
        let mut raw = group_text();
        raw["conversationType"] = json!("3");
        assert!(robot_message(&raw.to_string()).is_err());
        assert!(robot_message(&json!([1, 2]).to_string()).is_err());
    }

    #[test]
    fn fields_of_unexpected_types_count_as_absent_and_raw_is_the_text_received() {
        let text = r#" { "msgId" : "msg\u0041", "conversationId":"c1","conversationType":2,"senderId":"s1",
            "senderNick": 7, "isAdmin":"yes", "isInAtList":null, "atUsers":{"x":1}, "text":"plain",
            "sessionWebhook":"https://x","sessionWebhookExpiredTime":"1700005400000","robotCode":["r"],
            "extra":{"deep":[1,2,{"a":null}]}, "chatbotUserId": 1.5, "big": 18446744073709551615 } "#;
        let n = robot_message(text).unwrap();
        assert_eq!(n.key, "msgA");
        let m = message(n);
        assert_eq!(m.conversation.kind, ConversationType::Group);
        assert_eq!(m.sender.nick, "");
        assert!(!m.sender.is_admin);
        assert!(!m.message.mentions_bot);
        assert!(m.message.at_users.is_empty());
        assert_eq!(m.message.text, "");
        assert_eq!(m.reply.unwrap().expires_at.unix_millis(), 1_700_005_400_000);
        assert_eq!(m.robot_code, None);
        assert_eq!(m.raw.get(), text.trim());
    }

    #[test]
    fn a_body_that_is_not_a_json_object_says_which() {
        let error = |text: &str| CallbackJson::parse(text).err().unwrap().0;
        assert_eq!(error("[1]"), "the callback must be a JSON object");
        assert_eq!(error(" 12 "), "the callback must be a JSON object");
        for broken in ["{\"a\":", "nope", r#"{"msgId":"a"} x"#] {
            assert!(
                error(broken).starts_with("the callback is not JSON: "),
                "{}",
                error(broken)
            );
        }
        let plain = CallbackJson::parse(r#"{"encrypt":"abc","EventType":"x"}"#).unwrap();
        assert_eq!(plain.encrypt(), Some("abc"));
        assert_eq!(plain.event_type(), "x");
        // An empty `encrypt` is still an envelope (refused later as undecryptable).
        let empty = CallbackJson::parse(r#"{"encrypt":""}"#).unwrap();
        assert_eq!(empty.encrypt(), Some(""));
    }

    /// Any JSON value, small enough to shrink quickly.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            3 => prop_oneof![
                Just(String::new()),
                Just("1".to_owned()),
                Just("2".to_owned()),
                Just("text".to_owned()),
                Just("actionCallback".to_owned()),
                Just("chatbot_card_callback".to_owned()),
                ".{0,12}",
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A callback-like object: the field names the reader knows, with values of any type.
    fn any_callback() -> impl Strategy<Value = Map<String, Value>> {
        const NAMES: &[&str] = &[
            "encrypt",
            "type",
            "outTrackId",
            "EventType",
            "actionCallback",
            "EventId",
            "eventId",
            "msgId",
            "msgtype",
            "conversationId",
            "conversationType",
            "conversationTitle",
            "senderId",
            "senderStaffId",
            "senderNick",
            "senderCorpId",
            "isAdmin",
            "isInAtList",
            "chatbotUserId",
            "sessionWebhook",
            "sessionWebhookExpiredTime",
            "robotCode",
            "text",
            "content",
            "atUsers",
            "userId",
            "spaceId",
            "value",
            "other",
        ];
        prop::collection::btree_map(prop::sample::select(NAMES), any_json(), 0..NAMES.len())
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The lenient typed reading accepts every JSON object (without repeated keys) and
        /// agrees with a JSON tree on what it reads; the normalizers never panic, and what they
        /// publish carries the text unchanged.
        #[test]
        fn every_callback_object_is_read_as_a_tree_would_read_it(object in any_callback()) {
            let text = Value::Object(object.clone()).to_string();
            let json = CallbackJson::parse(&text).unwrap();
            prop_assert_eq!(json.encrypt(), object.get("encrypt").and_then(Value::as_str));
            prop_assert_eq!(
                json.event_type(),
                object.get("EventType").and_then(Value::as_str).unwrap_or_default()
            );
            let is_card = object.get("type").and_then(Value::as_str) == Some("actionCallback")
                || (object.contains_key("outTrackId") && !object.contains_key("msgtype"))
                || object.get("EventType").and_then(Value::as_str) == Some("chatbot_card_callback")
                || object.contains_key("actionCallback");
            prop_assert_eq!(json.kind() == PlainKind::CardAction, is_card);
            let tree = Value::Object(object.clone());
            if let Ok(n) = json.robot_message() {
                prop_assert_eq!(Some(n.key.as_str()), object.get("msgId").and_then(Value::as_str));
                let m = message(n);
                prop_assert_eq!(m.raw.to_value().unwrap(), tree.clone());
                prop_assert_eq!(m.raw.get(), text.as_str());
            }
            if let Ok(n) = json.subscription_event() {
                let EventBody::Event(e) = n.body else { panic!("not an event") };
                prop_assert_eq!(e.payload.get(), text.as_str());
            }
            if let Ok(n) = card_action(&text) {
                prop_assert_eq!(n.key, content_key(text.as_bytes()));
            }
        }
    }

    fn card_callback() -> Value {
        json!({"type":"actionCallback","outTrackId":"cmd-42","corpId":"dingcorp","userId":"user123","userIdType":1,
            "spaceType":"IM_GROUP","spaceId":"cidXYZ==",
            "content":"{\"cardPrivateData\":{\"actionIds\":[\"confirm\"],\"params\":{\"action\":\"confirm\"}}}",
            "extension":"{}"})
    }

    #[test]
    fn a_card_action_names_the_card_button_user_and_space() {
        let raw = card_callback();
        assert_eq!(kind_of(&raw), PlainKind::CardAction);
        assert_eq!(kind_of(&group_text()), PlainKind::RobotMessage);
        let body = raw.to_string();
        let n = card_action(&body).unwrap();
        assert_eq!(n.key, content_key(body.as_bytes()));
        let EventBody::CardAction(c) = n.body else {
            panic!()
        };
        assert_eq!(c.card.out_track_id, "cmd-42");
        assert_eq!(c.action.id, "confirm");
        assert_eq!(c.action.params["action"], "confirm");
        assert_eq!(c.user.staff_id, "user123");
        assert_eq!(c.conversation.id, "cidXYZ==");
        assert_eq!(c.conversation.kind, ConversationType::Group);
    }

    #[test]
    fn a_card_action_without_action_ids_is_refused() {
        let mut raw = card_callback();
        raw["content"] = json!("{\"cardPrivateData\":{\"actionIds\":[]}}");
        assert!(card_action(&raw.to_string()).is_err());
        raw["content"] = json!("not json");
        assert!(card_action(&raw.to_string()).is_err());
    }

    #[test]
    fn the_legacy_card_shape_is_normalized_too() {
        let raw = json!({"msgId":"m1","EventType":"chatbot_card_callback","senderStaffId":"u1",
            "conversationId":"cid1","conversationType":"2","value":"{\"action\":\"end_conversation\"}"});
        assert_eq!(kind_of(&raw), PlainKind::CardAction);
        let EventBody::CardAction(c) = card_action(&raw.to_string()).unwrap().body else {
            panic!()
        };
        assert_eq!(c.action.id, "end_conversation");
        assert_eq!(c.card.out_track_id, "m1");
    }

    #[test]
    fn events_are_keyed_by_their_id_or_their_hash() {
        let n = subscription_event(r#"{"EventType":"user_add_org","EventId":"e1"}"#).unwrap();
        assert_eq!(n.key, "e1");
        let text = r#"{"EventType":"user_add_org","UserId":["u1"]}"#;
        assert_eq!(
            subscription_event(text).unwrap().key,
            content_key(text.as_bytes())
        );
        assert!(subscription_event(r#"{"UserId":1}"#).is_err());
        assert!(subscription_event("nope").is_err());
    }

    /// Found with the `callback` fuzz target (fuzz/): an expiry in years -9999..=-1 used to fit
    /// a `Timestamp` but not RFC 3339, so the event failed to serialize and `publish` panicked.
    /// `Timestamp::from_unix_millis` now refuses such times.
    #[test]
    fn a_session_webhook_expiry_outside_rfc3339_years_is_dropped_and_the_event_serializes() {
        const YEAR_0_START_MS: i64 = -62_167_219_200_000;
        for ms in [
            YEAR_0_START_MS - 1,
            -100_000_000_000_000,
            -377_705_116_800_000, // 9999 BC
        ] {
            let mut raw = group_text();
            raw["sessionWebhookExpiredTime"] = json!(ms);
            let n = robot_message(&raw.to_string()).unwrap();
            serde_json::to_vec(&n.body).expect("the event serializes");
            assert!(message(n).reply.is_none(), "{ms}");
        }
        let mut raw = group_text();
        raw["sessionWebhookExpiredTime"] = json!(YEAR_0_START_MS);
        let reply = message(robot_message(&raw.to_string()).unwrap())
            .reply
            .unwrap();
        assert_eq!(reply.expires_at.unix_millis(), YEAR_0_START_MS);
    }
}
