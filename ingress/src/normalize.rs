//! DingTalk callback payloads → normalized bus events (contract v1, `common::bus::event`).
//!
//! Pure functions: the HTTP handlers (and the Stream-mode connector, which receives the very same
//! JSON) parse here, so both transports publish identical events. Every function takes the
//! decoded JSON and returns the event body plus its de-duplication key; nothing is dropped for
//! being unfamiliar (unknown message types become `unknown`).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use common::bus::event::{
    AtUser, CardAction, CardActionEvent, CardRef, CardUser, ChatMessage, Conversation,
    ConversationType, EventBody, Media, MessageEvent, MessageType, ReplyChannel, Sender,
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

/// Tells a card action from a robot message, so one route can serve both.
pub fn classify(json: &Map<String, Value>) -> PlainKind {
    let is_card = json.get("type").and_then(Value::as_str) == Some("actionCallback")
        || (json.contains_key("outTrackId") && !json.contains_key("msgtype"))
        || json.get("EventType").and_then(Value::as_str) == Some("chatbot_card_callback")
        || json.contains_key("actionCallback");
    if is_card {
        PlainKind::CardAction
    } else {
        PlainKind::RobotMessage
    }
}

fn str_field<'a>(json: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    json.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(json: &'a Map<String, Value>, field: &str) -> Result<&'a str, ShapeError> {
    str_field(json, field).ok_or_else(|| missing(field))
}

/// DingTalk writes some numbers as strings and some as numbers; accept both.
fn millis(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Lowercase hex SHA-256, the key of payloads that carry no id of their own.
pub fn content_key(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A robot message (PROTOCOL §2.2) → `kind: message`.
pub fn robot_message(raw: Value) -> Result<Normalized, ShapeError> {
    let json = raw
        .as_object()
        .ok_or_else(|| ShapeError("body must be a JSON object".into()))?;
    let msg_id = required(json, "msgId")?.to_owned();
    let conversation_kind = match json.get("conversationType").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) {
        Some(t) if t == "1" => ConversationType::Private,
        Some(t) if t == "2" => ConversationType::Group,
        Some(other) => {
            return Err(ShapeError(format!(
                "conversationType must be \"1\" or \"2\", got {other:?}"
            )))
        }
        None => return Err(missing("conversationType")),
    };
    let conversation = Conversation {
        id: required(json, "conversationId")?.to_owned(),
        kind: conversation_kind,
        title: str_field(json, "conversationTitle").map(str::to_owned),
    };
    let sender = Sender {
        id: required(json, "senderId")?.to_owned(),
        staff_id: str_field(json, "senderStaffId").map(str::to_owned),
        nick: str_field(json, "senderNick").unwrap_or_default().to_owned(),
        corp_id: str_field(json, "senderCorpId").map(str::to_owned),
        is_admin: json
            .get("isAdmin")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let msgtype = str_field(json, "msgtype").unwrap_or("text");
    let kind = message_type(msgtype);
    let content = json.get("content").and_then(Value::as_object);
    let (text, media) = message_text_and_media(json, kind, content);
    let at_users: Vec<AtUser> = json
        .get("atUsers")
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
        ConversationType::Group => json
            .get("isInAtList")
            .and_then(Value::as_bool)
            .unwrap_or_else(|| {
                str_field(json, "chatbotUserId")
                    .is_some_and(|bot| at_users.iter().any(|u| u.dingtalk_id == bot))
            }),
    };
    let reply = match (
        str_field(json, "sessionWebhook"),
        millis(json.get("sessionWebhookExpiredTime")).and_then(Timestamp::from_unix_millis),
    ) {
        (Some(url), Some(expires_at)) => Some(ReplyChannel {
            session_webhook: url.to_owned(),
            expires_at,
        }),
        _ => None,
    };
    let robot_code = str_field(json, "robotCode").map(str::to_owned);
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
        robot_code,
        raw,
    });
    Ok(Normalized { body, key: msg_id })
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
    json: &Map<String, Value>,
    kind: MessageType,
    content: Option<&Map<String, Value>>,
) -> (String, Vec<Media>) {
    match kind {
        MessageType::Text => {
            let text = json
                .get("text")
                .and_then(Value::as_object)
                .and_then(|t| str_field(t, "content"))
                .unwrap_or_default();
            (text.trim().to_owned(), Vec::new())
        }
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
        MessageType::Unknown => {
            // Keep whatever text a newer message type carries; `raw` has the rest.
            let text = json
                .get("text")
                .and_then(Value::as_object)
                .and_then(|t| str_field(t, "content"))
                .unwrap_or_default();
            (text.trim().to_owned(), Vec::new())
        }
    }
}

/// A card button press (PROTOCOL §4.6b) → `kind: card_action`. Also accepts the legacy shape
/// (`value` or `actionCallback.value` next to `msgId`). `body` is the exact JSON received, hashed
/// into the key since card callbacks carry no id of their own.
pub fn card_action(raw: Value, body: &[u8]) -> Result<Normalized, ShapeError> {
    let json = raw
        .as_object()
        .ok_or_else(|| ShapeError("body must be a JSON object".into()))?;
    let key = content_key(body);
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
            raw: raw.clone(),
        });
        return Ok(Normalized { body, key });
    }
    legacy_card_action(&raw, json, key)
}

/// The anchor plugin's legacy card callback: `value` (or `actionCallback.value`) next to `msgId`.
fn legacy_card_action(
    raw: &Value,
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
        raw: raw.clone(),
    });
    Ok(Normalized { body, key })
}

/// A decrypted event-subscription callback → `kind: event` (the caller answers `check_url`
/// itself and publishes nothing for it).
pub fn subscription_event(decrypted: &str) -> Result<Normalized, ShapeError> {
    let payload: Value = serde_json::from_str(decrypted)
        .map_err(|err| ShapeError(format!("the decrypted event is not JSON: {err}")))?;
    let json = payload
        .as_object()
        .ok_or_else(|| ShapeError("the decrypted event must be a JSON object".into()))?;
    let event_type = required(json, "EventType")?.to_owned();
    let key = str_field(json, "EventId")
        .or_else(|| str_field(json, "eventId"))
        .map(str::to_owned)
        .unwrap_or_else(|| content_key(decrypted.as_bytes()));
    Ok(Normalized {
        body: EventBody::Event(SubscriptionEvent {
            event_type,
            payload,
        }),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group_text() -> Value {
        json!({"msgId":"msgABC","msgtype":"text","text":{"content":" hello "},"conversationId":"cidXYZ==",
            "conversationType":"2","conversationTitle":"ops","senderId":"$:LWCP_v1:$abc","senderStaffId":"user123",
            "senderNick":"Li","senderCorpId":"dingcorp","chatbotUserId":"$:LWCP_v1:$bot","chatbotCorpId":"dingcorp",
            "robotCode":"dingappkey","isAdmin":false,"isInAtList":true,"atUsers":[{"dingtalkId":"$:LWCP_v1:$bot"}],
            "createAt":1700000000000i64,"sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=s1",
            "sessionWebhookExpiredTime":1700005400000i64})
    }

    fn message(n: Normalized) -> MessageEvent {
        match n.body {
            EventBody::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_group_text_message_is_normalized_with_its_msg_id_as_key() {
        let n = robot_message(group_text()).unwrap();
        assert_eq!(n.key, "msgABC");
        let m = message(n);
        assert_eq!(m.conversation.kind, ConversationType::Group);
        assert_eq!(m.conversation.title.as_deref(), Some("ops"));
        assert_eq!(m.message.text, "hello");
        assert!(m.message.mentions_bot);
        assert_eq!(m.sender.staff_id.as_deref(), Some("user123"));
        assert_eq!(m.reply.unwrap().expires_at.unix_millis(), 1_700_005_400_000);
        assert_eq!(m.robot_code.as_deref(), Some("dingappkey"));
        assert_eq!(m.raw["msgId"], "msgABC");
    }

    #[test]
    fn a_group_message_without_the_bot_mentioned_is_kept_and_flagged() {
        let mut raw = group_text();
        raw["isInAtList"] = json!(false);
        raw["atUsers"] = json!([]);
        assert!(!message(robot_message(raw).unwrap()).message.mentions_bot);
    }

    #[test]
    fn private_messages_always_mention_the_bot() {
        let mut raw = group_text();
        raw["conversationType"] = json!("1");
        raw.as_object_mut().unwrap().remove("isInAtList");
        let m = message(robot_message(raw).unwrap());
        assert_eq!(m.conversation.kind, ConversationType::Private);
        assert!(m.message.mentions_bot);
    }

    #[test]
    fn rich_text_is_flattened_and_its_pictures_become_media() {
        let mut raw = group_text();
        raw["msgtype"] = json!("richText");
        raw["content"] = json!({"richText":[{"text":"look "},{"type":"picture","downloadCode":"dc1"},{"text":"here"}]});
        let m = message(robot_message(raw).unwrap());
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
            message(robot_message(raw.clone()).unwrap()).message.text,
            "你好"
        );
        raw["msgtype"] = json!("file");
        raw["content"] = json!({"downloadCode":"f1","fileName":"a.pdf"});
        let m = message(robot_message(raw).unwrap());
        assert_eq!(m.message.media[0].file_name.as_deref(), Some("a.pdf"));
    }

    #[test]
    fn unknown_message_types_are_published_as_unknown() {
        let mut raw = group_text();
        raw["msgtype"] = json!("chatRecord");
        assert_eq!(
            message(robot_message(raw).unwrap()).message.kind,
            MessageType::Unknown
        );
    }

    #[test]
    fn a_message_without_msg_id_or_conversation_is_refused() {
        for field in ["msgId", "conversationId", "conversationType", "senderId"] {
            let mut raw = group_text();
            raw.as_object_mut().unwrap().remove(field);
            let err = robot_message(raw).unwrap_err();
            assert!(err.0.contains(field), "{field}: {err}");
        }
        let mut raw = group_text();
        raw["conversationType"] = json!("3");
        assert!(robot_message(raw).is_err());
        assert!(robot_message(json!([1, 2])).is_err());
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
        assert_eq!(classify(raw.as_object().unwrap()), PlainKind::CardAction);
        assert_eq!(
            classify(group_text().as_object().unwrap()),
            PlainKind::RobotMessage
        );
        let body = raw.to_string();
        let n = card_action(raw, body.as_bytes()).unwrap();
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
        assert!(card_action(raw.clone(), b"x").is_err());
        raw["content"] = json!("not json");
        assert!(card_action(raw, b"x").is_err());
    }

    #[test]
    fn the_legacy_card_shape_is_normalized_too() {
        let raw = json!({"msgId":"m1","EventType":"chatbot_card_callback","senderStaffId":"u1",
            "conversationId":"cid1","conversationType":"2","value":"{\"action\":\"end_conversation\"}"});
        assert_eq!(classify(raw.as_object().unwrap()), PlainKind::CardAction);
        let EventBody::CardAction(c) = card_action(raw, b"x").unwrap().body else {
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
            let n = robot_message(raw).unwrap();
            serde_json::to_vec(&n.body).expect("the event serializes");
            assert!(message(n).reply.is_none(), "{ms}");
        }
        let mut raw = group_text();
        raw["sessionWebhookExpiredTime"] = json!(YEAR_0_START_MS);
        let reply = message(robot_message(raw).unwrap()).reply.unwrap();
        assert_eq!(reply.expires_at.unix_millis(), YEAR_0_START_MS);
    }
}
