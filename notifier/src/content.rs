//! What a message looks like on each of DingTalk's channels (pure).
//!
//! One outbound message has up to four renderings: a robot message template (`msgKey` +
//! `msgParam`, PROTOCOL §4.1) for batchSend and group send, a StandardCard `cardData` (§4.5), a
//! template card (§4.6), and the classic `msgtype` body of custom robots and session webhooks
//! (§2.3, §4.9). [`Content`] is the message after placeholders were filled and media uploaded;
//! each channel asks it for its own form and gets `None` when the channel cannot carry it.

use common::bus::command::{Mentions, OutboundMessage};
use serde_json::{json, Map, Value};

/// Largest body a custom robot accepts (PROTOCOL §4.9: about 20,000 bytes, error 460101).
pub const CUSTOM_ROBOT_MAX_BODY_BYTES: usize = 20_000;

/// Longest notification title we derive from a markdown text's first line.
const DERIVED_TITLE_CHARS: usize = 64;

/// A message ready for the channels.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text; `as_card` when it must go out as a StandardCard (updatable or with mentions).
    Text {
        /// The text.
        text: String,
        /// Send as a one-block StandardCard.
        as_card: bool,
    },
    /// Markdown; `as_card` as for text.
    Markdown {
        /// The notification title.
        title: String,
        /// The markdown.
        text: String,
        /// Send as a one-block StandardCard.
        as_card: bool,
    },
    /// A StandardCard's `cardData` as the caller wrote it.
    Card(Value),
    /// A card-builder template.
    Template {
        /// `cardTemplateId`.
        template_id: String,
        /// `cardParamMap`, every value a string (nested values JSON-encoded).
        params: Map<String, Value>,
    },
    /// An uploaded file.
    File {
        /// DingTalk's media id.
        media_id: String,
        /// The file name shown.
        name: String,
    },
    /// An uploaded image.
    Image {
        /// DingTalk's media id.
        media_id: String,
    },
}

/// A robot message template: `msgKey` and `msgParam` (a JSON *string*, PROTOCOL §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotMessage {
    /// The built-in template.
    pub msg_key: &'static str,
    /// Its parameters, JSON-encoded.
    pub msg_param: String,
}

impl RobotMessage {
    fn new(msg_key: &'static str, params: Value) -> Self {
        Self {
            msg_key,
            msg_param: params.to_string(),
        }
    }
}

impl Content {
    /// The content of a filled message. `as_card` asks text and markdown to go out as a card;
    /// `media_id` is the uploaded file's id (file and image messages only).
    pub fn new(message: &OutboundMessage, as_card: bool, media_id: Option<String>) -> Self {
        match message {
            OutboundMessage::Text { text } => Self::Text {
                text: text.clone(),
                as_card,
            },
            OutboundMessage::Markdown { title, text } => Self::Markdown {
                title: title.clone().unwrap_or_else(|| derived_title(text)),
                text: text.clone(),
                as_card,
            },
            OutboundMessage::Interactive { card } => Self::Card(card.clone()),
            OutboundMessage::Template {
                template_id,
                params,
            } => Self::Template {
                template_id: template_id.clone(),
                params: string_params(params),
            },
            OutboundMessage::File(media) => Self::File {
                media_id: media_id
                    .or_else(|| media.media_id.clone())
                    .unwrap_or_default(),
                name: media
                    .name
                    .clone()
                    .or_else(|| media.url.as_deref().and_then(file_name_of_url))
                    .unwrap_or_else(|| "file".to_owned()),
            },
            OutboundMessage::Image(media) => Self::Image {
                media_id: media_id
                    .or_else(|| media.media_id.clone())
                    .unwrap_or_default(),
            },
        }
    }

    /// Whether it goes out as a card (StandardCard or template) to recipients that take cards.
    pub fn is_card(&self) -> bool {
        match self {
            Self::Text { as_card, .. } | Self::Markdown { as_card, .. } => *as_card,
            Self::Card(_) | Self::Template { .. } => true,
            Self::File { .. } | Self::Image { .. } => false,
        }
    }

    /// The robot message template (batchSend, group send), for non-card content.
    pub fn robot_message(&self) -> Option<RobotMessage> {
        match self {
            Self::Text {
                text,
                as_card: false,
            } => Some(RobotMessage::new("sampleText", json!({ "content": text }))),
            Self::Markdown {
                title,
                text,
                as_card: false,
            } => Some(RobotMessage::new(
                "sampleMarkdown",
                json!({ "title": title, "text": text }),
            )),
            Self::File { media_id, name } => Some(RobotMessage::new(
                "sampleFile",
                json!({ "mediaId": media_id, "fileName": name, "fileType": file_type(name) }),
            )),
            Self::Image { media_id } => Some(RobotMessage::new(
                "sampleImageMsg",
                json!({ "photoURL": media_id }),
            )),
            _ => None,
        }
    }

    /// The StandardCard `cardData` (as an object; the caller JSON-encodes it), for text and
    /// markdown sent as a card (one markdown block) and interactive cards.
    pub fn standard_card(&self) -> Option<Value> {
        match self {
            Self::Text {
                text,
                as_card: true,
            } => Some(markdown_card(None, text)),
            Self::Markdown {
                title,
                text,
                as_card: true,
            } => Some(markdown_card(Some(title), text)),
            Self::Card(card) => Some(card.clone()),
            _ => None,
        }
    }

    /// The StandardCard `cardData` an update of a StandardCard sends: any text, markdown or
    /// interactive content (an update of a card is always a card).
    pub fn card_update(&self) -> Option<Value> {
        match self {
            Self::Text { text, .. } => Some(markdown_card(None, text)),
            Self::Markdown { title, text, .. } => Some(markdown_card(Some(title), text)),
            Self::Card(card) => Some(card.clone()),
            _ => None,
        }
    }

    /// The classic robot bodies for a custom robot or a session webhook: text and markdown only
    /// (cards are sent as their text), split so that each body stays within `max_body_bytes`.
    /// Mentions ride on the first body.
    pub fn classic_bodies(&self, mentions: &Mentions, max_body_bytes: usize) -> Option<Vec<Value>> {
        let (title, text) = match self {
            Self::Text { text, .. } => (None, text.as_str()),
            Self::Markdown { title, text, .. } => (Some(title.as_str()), text.as_str()),
            _ => return None,
        };
        let at = json!({ "atUserIds": mentions.user_ids, "isAtAll": mentions.all });
        let body = |part: &str, first: bool| {
            let mut body = match title {
                None => json!({ "msgtype": "text", "text": { "content": part } }),
                Some(title) => {
                    let mut part = part.to_owned();
                    if first {
                        append_mentions(&mut part, mentions);
                    }
                    json!({ "msgtype": "markdown", "markdown": { "title": title, "text": part } })
                }
            };
            if first && (mentions.all || !mentions.user_ids.is_empty()) {
                body["at"] = at.clone();
            }
            body
        };
        let overhead =
            body("", true).to_string().len() + mention_overhead(title.is_some(), mentions);
        let budget = max_body_bytes.saturating_sub(overhead).max(1);
        let parts = split_text(text, budget);
        Some(
            parts
                .iter()
                .enumerate()
                .map(|(i, part)| body(part, i == 0))
                .collect(),
        )
    }
}

/// A StandardCard with one markdown block (and a header when there is a title).
fn markdown_card(title: Option<&str>, text: &str) -> Value {
    let mut card = json!({
        "config": { "autoLayout": true, "enableForward": true },
        "contents": [{ "type": "markdown", "text": text, "id": "content" }],
    });
    if let Some(title) = title {
        card["header"] = json!({ "title": { "type": "text", "text": title } });
    }
    card
}

/// Markdown messages only show an @-mention when `@userId` is in the text.
fn append_mentions(text: &mut String, mentions: &Mentions) {
    for user_id in &mentions.user_ids {
        let handle = format!("@{user_id}");
        if !text.contains(&handle) {
            text.push(' ');
            text.push_str(&handle);
        }
    }
}

/// Bytes the appended `@userId`s add to the first markdown body.
fn mention_overhead(markdown: bool, mentions: &Mentions) -> usize {
    if !markdown {
        return 0;
    }
    mentions.user_ids.iter().map(|id| id.len() + 2).sum()
}

/// Splits `text` into parts whose JSON-escaped length is at most `budget` bytes, at line ends
/// where possible, else at character boundaries. One part when it fits.
pub fn split_text(text: &str, budget: usize) -> Vec<String> {
    let escaped = |s: &str| Value::from(s).to_string().len() - 2;
    if escaped(text) <= budget {
        return vec![text.to_owned()];
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in text.split_inclusive('\n') {
        let line_len = escaped(line);
        if current_len + line_len <= budget {
            current.push_str(line);
            current_len += line_len;
            continue;
        }
        if !current.is_empty() {
            parts.push(std::mem::take(&mut current));
            current_len = 0;
        }
        if line_len <= budget {
            current.push_str(line);
            current_len = line_len;
            continue;
        }
        // A single line over budget: cut it by characters.
        for ch in line.chars() {
            let mut buf = [0u8; 4];
            let ch_len = escaped(ch.encode_utf8(&mut buf));
            if current_len + ch_len > budget && !current.is_empty() {
                parts.push(std::mem::take(&mut current));
                current_len = 0;
            }
            current.push(ch);
            current_len += ch_len;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// `cardParamMap` values must be strings (PROTOCOL §4.6); anything else is JSON-encoded.
fn string_params(params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), Value::String(text))
        })
        .collect()
}

/// A markdown message's title when the caller gave none: its first non-empty line without the
/// heading marks, at most 64 characters.
fn derived_title(text: &str) -> String {
    let line = text
        .lines()
        .map(|line| line.trim().trim_start_matches('#').trim())
        .find(|line| !line.is_empty())
        .unwrap_or("message");
    line.chars().take(DERIVED_TITLE_CHARS).collect()
}

/// `sampleFile.fileType`: the extension of the name, lower case (`file` when there is none).
fn file_type(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 8 => {
            ext.to_ascii_lowercase()
        }
        _ => "file".to_owned(),
    }
}

/// The last path segment of a URL, when it looks like a file name.
fn file_name_of_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && !path.ends_with("//")).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::bus::command::MediaSource;

    fn param(message: &RobotMessage) -> Value {
        serde_json::from_str(&message.msg_param).unwrap()
    }

    #[test]
    fn text_becomes_sample_text_with_a_json_string_param() {
        let content = Content::new(&OutboundMessage::Text { text: "hi".into() }, false, None);
        let message = content.robot_message().unwrap();
        assert_eq!(message.msg_key, "sampleText");
        assert_eq!(message.msg_param, r#"{"content":"hi"}"#);
        assert!(content.standard_card().is_none());
    }

    #[test]
    fn markdown_becomes_sample_markdown_with_a_derived_title() {
        let message = OutboundMessage::Markdown {
            title: None,
            text: "\n## Order 7731\nshipped".into(),
        };
        let robot = Content::new(&message, false, None).robot_message().unwrap();
        assert_eq!(robot.msg_key, "sampleMarkdown");
        assert_eq!(
            param(&robot),
            json!({"title": "Order 7731", "text": "\n## Order 7731\nshipped"})
        );
    }

    #[test]
    fn updatable_text_is_a_standard_card_with_one_markdown_block() {
        let message = OutboundMessage::Markdown {
            title: Some("T".into()),
            text: "**x**".into(),
        };
        let content = Content::new(&message, true, None);
        assert!(content.is_card());
        assert!(content.robot_message().is_none());
        let card = content.standard_card().unwrap();
        assert_eq!(
            card["contents"],
            json!([{"type": "markdown", "text": "**x**", "id": "content"}])
        );
        assert_eq!(card["header"]["title"]["text"], "T");
    }

    #[test]
    fn files_and_images_use_the_uploaded_media_id() {
        let file = OutboundMessage::File(MediaSource {
            media_id: None,
            url: Some("https://files.example.com/reports/q3.PDF?x=1".into()),
            name: None,
        });
        let robot = Content::new(&file, false, Some("@lAfile".into()))
            .robot_message()
            .unwrap();
        assert_eq!(robot.msg_key, "sampleFile");
        assert_eq!(
            param(&robot),
            json!({"mediaId": "@lAfile", "fileName": "q3.PDF", "fileType": "pdf"})
        );
        let image = OutboundMessage::Image(MediaSource {
            media_id: Some("@lAimg".into()),
            url: None,
            name: None,
        });
        let robot = Content::new(&image, false, None).robot_message().unwrap();
        assert_eq!(robot.msg_key, "sampleImageMsg");
        assert_eq!(param(&robot), json!({"photoURL": "@lAimg"}));
    }

    #[test]
    fn template_params_are_all_strings() {
        let mut params = Map::new();
        params.insert("n".into(), json!(3));
        params.insert("s".into(), json!("x"));
        params.insert("o".into(), json!({"a": 1}));
        let content = Content::new(
            &OutboundMessage::Template {
                template_id: "tpl.schema".into(),
                params,
            },
            false,
            None,
        );
        let Content::Template { params, .. } = content else {
            panic!()
        };
        assert_eq!(params["n"], "3");
        assert_eq!(params["s"], "x");
        assert_eq!(params["o"], r#"{"a":1}"#);
    }

    #[test]
    fn classic_bodies_carry_mentions_on_the_first_part() {
        let mentions = Mentions {
            user_ids: vec!["u1".into()],
            all: false,
        };
        let content = Content::new(
            &OutboundMessage::Markdown {
                title: Some("T".into()),
                text: "hello".into(),
            },
            true,
            None,
        );
        let bodies = content
            .classic_bodies(&mentions, CUSTOM_ROBOT_MAX_BODY_BYTES)
            .unwrap();
        assert_eq!(bodies.len(), 1);
        assert_eq!(
            bodies[0],
            json!({"msgtype": "markdown", "markdown": {"title": "T", "text": "hello @u1"},
                   "at": {"atUserIds": ["u1"], "isAtAll": false}})
        );
        let text = Content::new(&OutboundMessage::Text { text: "hi".into() }, false, None);
        let bodies = text.classic_bodies(&Mentions::default(), 20_000).unwrap();
        assert_eq!(
            bodies[0],
            json!({"msgtype": "text", "text": {"content": "hi"}})
        );
        assert!(Content::Card(json!({}))
            .classic_bodies(&mentions, 20_000)
            .is_none());
    }

    #[test]
    fn bodies_over_20000_bytes_are_split_each_within_the_limit() {
        let line = format!("{}\n", "告警 alert \"quoted\" ".repeat(20));
        let text = line.repeat(200);
        let content = Content::new(&OutboundMessage::Text { text: text.clone() }, false, None);
        let bodies = content
            .classic_bodies(&Mentions::default(), CUSTOM_ROBOT_MAX_BODY_BYTES)
            .unwrap();
        assert!(bodies.len() > 1);
        for body in &bodies {
            assert!(
                body.to_string().len() <= CUSTOM_ROBOT_MAX_BODY_BYTES,
                "{}",
                body.to_string().len()
            );
        }
        let joined: String = bodies
            .iter()
            .map(|b| b["text"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn a_single_long_line_is_cut_at_character_boundaries() {
        let text = "长".repeat(30);
        let parts = split_text(&text, 10);
        assert!(parts.iter().all(|p| p.len() <= 10));
        assert_eq!(parts.concat(), text);
    }
}
