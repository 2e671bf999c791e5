//! The classic robot message JSON (`{"msgtype":…}`) accepted by custom group robots (PROTOCOL
//! §4.9) and by a callback's `sessionWebhook` (§2.3), validated as pure functions.

use serde_json::Value;

use crate::error::ApiError;

/// Largest body a webhook robot accepts (PROTOCOL §4.9: about 20,000 bytes, then `460101`).
pub const MAX_BODY_BYTES: usize = 20_000;

/// errcode for an unreadable body ("missing parameter json").
const ERR_NOT_JSON: i64 = 40035;
/// errcode for a missing or malformed field (PROTOCOL §6.2 "param missing").
const ERR_PARAM: i64 = 400402;
/// errcode for a body over [`MAX_BODY_BYTES`].
const ERR_TOO_LONG: i64 = 460101;

/// A validated classic message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicMessage {
    /// `text`, `markdown`, `link`, `actionCard` or `feedCard`.
    pub msgtype: String,
    /// Every visible text joined, for the custom robot's keyword check.
    pub visible_text: String,
    /// The body as received.
    pub body: Value,
}

impl ClassicMessage {
    /// Validates a webhook robot body: size, JSON, `msgtype` and that type's fields, and `at`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.len() > MAX_BODY_BYTES {
            return Err(webhook(
                ERR_TOO_LONG,
                format!(
                    "message too long: {} bytes, at most {MAX_BODY_BYTES} are allowed",
                    bytes.len()
                ),
            ));
        }
        let body: Value = serde_json::from_slice(bytes).map_err(|err| {
            webhook(
                ERR_NOT_JSON,
                format!("缺少参数 json: body is not JSON ({err})"),
            )
        })?;
        if !body.is_object() {
            return Err(webhook(
                ERR_NOT_JSON,
                "缺少参数 json: body must be a JSON object",
            ));
        }
        let msgtype = text_at(&body, &["msgtype"])?;
        let part = |field: &[&str]| text_at(&body, field);
        let visible = match msgtype.as_str() {
            "text" => vec![part(&["text", "content"])?],
            "markdown" => vec![part(&["markdown", "title"])?, part(&["markdown", "text"])?],
            "link" => {
                part(&["link", "messageUrl"])?;
                vec![part(&["link", "title"])?, part(&["link", "text"])?]
            }
            "actionCard" => {
                let texts = vec![part(&["actionCard", "title"])?, part(&["actionCard", "text"])?];
                action_card_buttons(&body["actionCard"])?;
                texts
            }
            "feedCard" => feed_card_titles(&body["feedCard"])?,
            other => {
                return Err(webhook(
                    ERR_PARAM,
                    format!(
                        "unknown msgtype {other:?}; allowed: text, markdown, link, actionCard, feedCard"
                    ),
                ))
            }
        };
        check_at(&body)?;
        Ok(Self {
            msgtype,
            visible_text: visible.join("\n"),
            body,
        })
    }
}

/// A webhook-shaped error.
fn webhook(errcode: i64, message: impl Into<String>) -> ApiError {
    ApiError::Webhook {
        errcode,
        message: message.into(),
    }
}

/// The non-empty string at a nested path, or `400402` naming the path.
fn text_at(body: &Value, path: &[&str]) -> Result<String, ApiError> {
    let value = path.iter().try_fold(body, |value, key| value.get(key));
    match value {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(webhook(
            ERR_PARAM,
            format!(
                "缺少参数 {}: a non-empty string is required",
                path.join(".")
            ),
        )),
    }
}

/// An action card needs one button (`singleTitle` + `singleURL`) or a non-empty `btns` list.
fn action_card_buttons(card: &Value) -> Result<(), ApiError> {
    if card.get("singleTitle").is_some() || card.get("singleURL").is_some() {
        text_at(card, &["singleTitle"])?;
        text_at(card, &["singleURL"])?;
        return Ok(());
    }
    match card.get("btns") {
        Some(Value::Array(buttons)) if !buttons.is_empty() => {
            for button in buttons {
                text_at(button, &["title"])?;
                text_at(button, &["actionURL"])?;
            }
            Ok(())
        }
        _ => Err(webhook(
            ERR_PARAM,
            "缺少参数 actionCard: singleTitle + singleURL or a non-empty btns list is required",
        )),
    }
}

/// A feed card needs a non-empty `links` list of `{title, messageURL, picURL}`.
fn feed_card_titles(card: &Value) -> Result<Vec<String>, ApiError> {
    match card.get("links") {
        Some(Value::Array(links)) if !links.is_empty() => links
            .iter()
            .map(|link| {
                text_at(link, &["messageURL"])?;
                text_at(link, &["picURL"])?;
                text_at(link, &["title"])
            })
            .collect(),
        _ => Err(webhook(
            ERR_PARAM,
            "缺少参数 feedCard.links: a non-empty list is required",
        )),
    }
}

/// `at`, when present: `atMobiles` / `atUserIds` lists of strings, `isAtAll` a boolean.
fn check_at(body: &Value) -> Result<(), ApiError> {
    let Some(at) = body.get("at") else {
        return Ok(());
    };
    if !at.is_object() {
        return Err(webhook(ERR_PARAM, "at must be an object"));
    }
    for list in ["atMobiles", "atUserIds"] {
        match at.get(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(webhook(
                    ERR_PARAM,
                    format!("at.{list} must be a list of strings"),
                ))
            }
        }
    }
    match at.get("isAtAll") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(webhook(ERR_PARAM, "at.isAtAll must be a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<ClassicMessage, ApiError> {
        ClassicMessage::parse(value.to_string().as_bytes())
    }

    fn errcode(result: Result<ClassicMessage, ApiError>) -> i64 {
        match result {
            Err(ApiError::Webhook { errcode, .. }) => errcode,
            other => panic!("expected a webhook error, got {other:?}"),
        }
    }

    #[test]
    fn text_message_is_accepted_and_its_content_is_visible() {
        let message = parse(json!({"msgtype":"text","text":{"content":"disk full"},
            "at":{"atUserIds":["user001"],"isAtAll":false}}))
        .unwrap();
        assert_eq!(message.visible_text, "disk full");
    }

    #[test]
    fn markdown_without_text_is_param_missing() {
        assert_eq!(
            errcode(parse(
                json!({"msgtype":"markdown","markdown":{"title":"t"}})
            )),
            400402
        );
    }

    #[test]
    fn unknown_msgtype_is_refused() {
        assert_eq!(errcode(parse(json!({"msgtype":"image"}))), 400402);
    }

    #[test]
    fn body_over_20000_bytes_is_460101() {
        let long = "x".repeat(MAX_BODY_BYTES);
        assert_eq!(
            errcode(parse(json!({"msgtype":"text","text":{"content":long}}))),
            460101
        );
    }

    #[test]
    fn body_that_is_not_json_is_40035() {
        assert_eq!(errcode(ClassicMessage::parse(b"msgtype=text")), 40035);
    }

    #[test]
    fn action_card_needs_a_button() {
        assert!(
            parse(json!({"msgtype":"actionCard","actionCard":{"title":"t","text":"x"}})).is_err()
        );
        assert!(parse(
            json!({"msgtype":"actionCard","actionCard":{"title":"t","text":"x",
            "btns":[{"title":"ok","actionURL":"https://e.x"}]}})
        )
        .is_ok());
    }

    #[test]
    fn at_user_ids_must_be_strings() {
        assert!(
            parse(json!({"msgtype":"text","text":{"content":"x"},"at":{"atUserIds":[1]}})).is_err()
        );
    }
}
