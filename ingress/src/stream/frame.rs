//! Stream frames (PROTOCOL §7.3–7.5): parsing, the normalization of their payloads (through the
//! very functions the HTTP routes use), and the answers we write back. Pure, no I/O.

use serde_json::{json, Map, Value};

use crate::normalize::{self, CallbackJson, Normalized, PlainKind, ShapeError};

/// Robot messages.
pub const ROBOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// Robot messages, the delegate variant some SDKs subscribe to.
pub const ROBOT_DELEGATE_TOPIC: &str = "/v1.0/im/bot/messages/delegate";
/// Card button presses.
pub const CARD_TOPIC: &str = "/v1.0/card/instances/callback";

/// What we subscribe to when opening a connection: every event, robot messages and card
/// callbacks.
pub fn subscriptions() -> Value {
    json!([
        {"type": "EVENT", "topic": "*"},
        {"type": "CALLBACK", "topic": ROBOT_TOPIC},
        {"type": "CALLBACK", "topic": CARD_TOPIC},
    ])
}

/// The frame types DingTalk sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameType {
    /// Connection management: `ping`, `disconnect`, …
    System,
    /// An event subscription event.
    Event,
    /// A robot message, card callback, …
    Callback,
}

/// A parsed downstream frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// `type`.
    pub kind: FrameType,
    /// `headers.messageId`: what the ack names (changes on redelivery).
    pub message_id: String,
    /// `headers.topic`.
    pub topic: String,
    /// All headers (EVENT frames carry `eventType`, `eventId`, …).
    pub headers: Map<String, Value>,
    /// `data`: a JSON document in a string.
    pub data: String,
}

/// Parses a text frame; the error says what is wrong (and carries the message id when there
/// is one, for the log line).
pub fn parse(text: &str) -> Result<Frame, (Option<String>, String)> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| (None, format!("frame is not JSON: {err}")))?;
    let headers = value
        .get("headers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let message_id = headers
        .get("messageId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let fail = |why: String| (message_id.clone(), why);
    let kind = match value.get("type").and_then(Value::as_str) {
        Some("SYSTEM") => FrameType::System,
        Some("EVENT") => FrameType::Event,
        Some("CALLBACK") => FrameType::Callback,
        other => return Err(fail(format!("unknown frame type {other:?}"))),
    };
    let topic = headers
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let data = match value.get("data") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    let Some(message_id) = message_id.clone() else {
        return Err(fail("frame without headers.messageId".into()));
    };
    if kind == FrameType::Callback && topic.is_empty() {
        // Acking it would drop it unseen: say what is wrong instead.
        return Err(fail("CALLBACK frame without headers.topic".into()));
    }
    Ok(Frame {
        kind,
        message_id,
        topic,
        headers,
        data,
    })
}

/// What an EVENT/CALLBACK frame holds for the bus.
#[derive(Debug)]
pub enum Content {
    /// Normalized exactly as the HTTP path would.
    Event(Box<Normalized>),
    /// A topic we do not handle: acked and counted, never published.
    UnknownTopic,
}

/// Normalizes the payload of an EVENT or CALLBACK frame.
pub fn content(frame: &Frame) -> Result<Content, ShapeError> {
    let parse = || -> Result<Value, ShapeError> {
        serde_json::from_str(&frame.data)
            .map_err(|err| ShapeError(format!("`data` is not a JSON string holding JSON: {err}")))
    };
    match (&frame.kind, frame.topic.as_str()) {
        (FrameType::Callback, ROBOT_TOPIC | ROBOT_DELEGATE_TOPIC) => {
            let json = CallbackJson::parse(&frame.data)?;
            // The legacy card-callback shape (§4.6b) comes on the robot topic, as it comes on
            // the HTTP main route: told apart the same way.
            match json.kind() {
                PlainKind::RobotMessage => json.robot_message(),
                PlainKind::CardAction => normalize::card_action(&frame.data),
            }
            .map(|n| Content::Event(Box::new(n)))
        }
        (FrameType::Callback, CARD_TOPIC) => {
            normalize::card_action(&frame.data).map(|n| Content::Event(Box::new(n)))
        }
        (FrameType::Event, _) => normalize::subscription_event(&event_document(frame, parse()?)?)
            .map(|n| Content::Event(Box::new(n))),
        _ => Ok(Content::UnknownTopic),
    }
}

/// The document the HTTP path would decrypt for this event: Stream puts the type and id in the
/// headers, HTTP in the body (`EventType`, `EventId`), so missing ones are copied in. A body that
/// already carries them is passed on byte for byte.
fn event_document(frame: &Frame, data: Value) -> Result<String, ShapeError> {
    let Value::Object(mut body) = data else {
        return Err(ShapeError(
            "an event's `data` must hold a JSON object".into(),
        ));
    };
    let header = |name: &str| {
        frame
            .headers
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut changed = false;
    if !body.contains_key("EventType") {
        let event_type = header("eventType")
            .ok_or_else(|| ShapeError("an EVENT frame needs headers.eventType".into()))?;
        body.insert("EventType".into(), Value::String(event_type.to_owned()));
        changed = true;
    }
    if !body.contains_key("EventId") && !body.contains_key("eventId") {
        if let Some(event_id) = header("eventId") {
            body.insert("EventId".into(), Value::String(event_id.to_owned()));
            changed = true;
        }
    }
    Ok(if changed {
        Value::Object(body).to_string()
    } else {
        frame.data.clone()
    })
}

/// An answer naming `message_id`, in the shape every SDK sends (PROTOCOL §7.4).
pub fn reply(message_id: &str, code: u16, message: &str, data: &str) -> String {
    json!({
        "code": code,
        "headers": {"contentType": "application/json", "messageId": message_id},
        "message": message,
        "data": data,
    })
    .to_string()
}

/// The ack of a frame whose event is on the bus (or that we deliberately skip).
pub fn ack(frame: &Frame) -> String {
    let data = match frame.kind {
        FrameType::Event => json!({"status": "SUCCESS", "message": "success"}),
        _ => json!({"response": {}}),
    };
    reply(&frame.message_id, 200, "OK", &data.to_string())
}

/// An EVENT whose publish failed: `LATER` asks DingTalk to redeliver it.
pub fn later(frame: &Frame, why: &str) -> String {
    let data = json!({"status": "LATER", "message": why});
    reply(&frame.message_id, 200, "OK", &data.to_string())
}

/// A frame whose payload we cannot use: 400, so it is not retried forever.
pub fn malformed(message_id: &str, why: &str) -> String {
    reply(message_id, 400, why, "{}")
}

/// The answer to a SYSTEM `ping`: same message id, `data` echoed.
pub fn pong(frame: &Frame) -> String {
    reply(&frame.message_id, 200, "OK", &frame.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::bus::event::EventBody;

    fn frame(kind: &str, topic: &str, data: &str) -> Frame {
        let text = json!({"specVersion":"1.0","type":kind,
            "headers":{"messageId":"m-1","topic":topic,"eventType":"user_add_org","eventId":"ev-9"},
            "data":data})
        .to_string();
        parse(&text).unwrap()
    }

    #[test]
    fn a_frame_is_parsed_with_its_data_kept_as_sent() {
        let f = frame("CALLBACK", ROBOT_TOPIC, "{\"msgId\":\"x\"}");
        assert_eq!(f.kind, FrameType::Callback);
        assert_eq!(f.message_id, "m-1");
        assert_eq!(f.data, "{\"msgId\":\"x\"}");
    }

    #[test]
    fn bad_frames_say_why_and_keep_the_message_id() {
        assert!(parse("not json").unwrap_err().1.contains("not JSON"));
        let (id, why) =
            parse(r#"{"type":"WEIRD","headers":{"messageId":"m-2"},"data":"{}"}"#).unwrap_err();
        assert_eq!(id.as_deref(), Some("m-2"));
        assert!(why.contains("WEIRD"));
        assert!(parse(r#"{"type":"EVENT","headers":{},"data":"{}"}"#)
            .unwrap_err()
            .1
            .contains("messageId"));
    }

    #[test]
    fn a_callback_without_a_topic_is_malformed_not_skipped() {
        let (id, why) =
            parse(r#"{"type":"CALLBACK","headers":{"messageId":"m-3"},"data":"{}"}"#).unwrap_err();
        assert_eq!(id.as_deref(), Some("m-3"));
        assert!(why.contains("headers.topic"), "{why}");
    }

    #[test]
    fn a_legacy_card_callback_on_the_robot_topic_is_a_card_action() {
        let legacy = json!({"msgId": "m1", "EventType": "chatbot_card_callback",
            "value": "{\"action\":\"ok\"}", "senderStaffId": "s1", "senderId": "$:x",
            "conversationId": "cid", "conversationType": "2"})
        .to_string();
        let Content::Event(n) = content(&frame("CALLBACK", ROBOT_TOPIC, &legacy)).unwrap() else {
            panic!("expected an event")
        };
        let http = normalize::card_action(&legacy).unwrap();
        assert!(matches!(n.body, EventBody::CardAction(_)), "{:?}", n.body);
        assert_eq!(n.key, http.key);
    }

    #[test]
    fn an_unknown_topic_is_not_an_error() {
        let f = frame("CALLBACK", "/v1.0/graph/api/invoke", "{}");
        assert!(matches!(content(&f), Ok(Content::UnknownTopic)));
    }

    #[test]
    fn a_robot_payload_that_is_not_json_is_malformed() {
        let f = frame("CALLBACK", ROBOT_TOPIC, "{oops");
        assert!(content(&f)
            .unwrap_err()
            .0
            .contains("the callback is not JSON"));
    }

    #[test]
    fn an_event_takes_its_type_and_id_from_the_headers_when_the_body_lacks_them() {
        let f = frame("EVENT", "*", r#"{"UserId":["u1"]}"#);
        let Content::Event(n) = content(&f).unwrap() else {
            panic!("expected an event")
        };
        assert_eq!(n.key, "ev-9");
        match n.body {
            EventBody::Event(e) => {
                assert_eq!(e.event_type, "user_add_org");
                assert_eq!(e.payload.to_value().unwrap()["UserId"][0], "u1");
            }
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn acks_name_the_message_and_answer_in_the_type_s_shape() {
        let event = frame("EVENT", "*", "{}");
        let ack: Value = serde_json::from_str(&ack(&event)).unwrap();
        assert_eq!(ack["code"], 200);
        assert_eq!(ack["headers"]["messageId"], "m-1");
        assert_eq!(ack["data"], r#"{"message":"success","status":"SUCCESS"}"#);
        let later: Value = serde_json::from_str(&later(&event, "bus down")).unwrap();
        assert!(later["data"].as_str().unwrap().contains("LATER"));
        let callback = frame("CALLBACK", ROBOT_TOPIC, "{}");
        let ack: Value = serde_json::from_str(&super::ack(&callback)).unwrap();
        assert_eq!(ack["data"], r#"{"response":{}}"#);
    }

    #[test]
    fn a_ping_is_answered_with_its_data_echoed() {
        let ping = frame("SYSTEM", "ping", r#"{"opaque":"abc"}"#);
        let answer: Value = serde_json::from_str(&pong(&ping)).unwrap();
        assert_eq!(answer["data"], r#"{"opaque":"abc"}"#);
        assert_eq!(answer["headers"]["messageId"], "m-1");
    }
}
