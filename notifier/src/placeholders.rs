//! `{{state.path}}` placeholders in recipient ids and message strings, filled from the
//! command's `state` object (the seed writes `{{state.dingtalkRecipientId}}`).
//!
//! A placeholder whose variable is missing (or `null`) is an error, never an empty string: an
//! alert sent to "" or reading "Dear ," is worse than a failed command the caller can see.
//! Only `{{state.…}}` is a placeholder; other `{{…}}` text (a template language in a markdown
//! message, say) is left alone.

use common::bus::command::{MediaSource, Mentions, OutboundMessage, Recipient};
use common::bus::result::ResultError;
use serde_json::{Map, Value};

/// The start of a placeholder.
const OPEN: &str = "{{";
/// The end of a placeholder.
const CLOSE: &str = "}}";

/// At most this many bytes may placeholders add to a command, all its strings together: a
/// short text repeating a placeholder of a large state value would otherwise grow without bound.
pub const MAX_FILLED_BYTES: usize = 1024 * 1024;
/// At most this many problems are listed one by one (the rest are counted), so that the error
/// stays small whatever the command holds.
const MAX_LISTED_PROBLEMS: usize = 10;

/// Why the placeholders of a command could not be filled; lists every problem at once (up to
/// [`MAX_LISTED_PROBLEMS`], then counts them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", .problems.join("; "), more(*.unlisted))]
pub struct FillError {
    /// One line per problem, naming the placeholder and where it was.
    pub problems: Vec<String>,
    /// How many more problems there were.
    pub unlisted: usize,
    /// Whether filling stopped at [`MAX_FILLED_BYTES`].
    pub too_large: bool,
}

/// `text` cut to at most `max` characters, marked with `…` where it was cut.
fn shorten(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn more(unlisted: usize) -> String {
    if unlisted == 0 {
        String::new()
    } else {
        format!("; and {unlisted} more")
    }
}

impl FillError {
    /// The error code of a command whose placeholders could not be filled.
    pub fn code(&self) -> &'static str {
        if self.too_large {
            "message_too_large"
        } else {
            "missing_variable"
        }
    }

    /// The command's failure (not retryable: the same command fails the same way).
    pub fn result_error(&self) -> ResultError {
        let message = if self.too_large {
            self.to_string()
        } else {
            format!("{self}; add the variables to the command's state")
        };
        ResultError {
            code: self.code().to_owned(),
            message,
            retryable: false,
        }
    }
}

/// Fills placeholders in strings, collecting every problem instead of stopping at the first.
#[derive(Debug)]
pub struct Filler<'a> {
    state: Option<&'a Map<String, Value>>,
    problems: Vec<String>,
    unlisted: usize,
    /// Bytes the placeholders may still add.
    budget: usize,
    too_large: bool,
}

impl<'a> Filler<'a> {
    /// A filler reading from `state` (absent state: every placeholder is missing).
    pub fn new(state: Option<&'a Map<String, Value>>) -> Self {
        Self::with_limit(state, MAX_FILLED_BYTES)
    }

    /// A filler whose placeholders may add at most `limit` bytes in all.
    pub fn with_limit(state: Option<&'a Map<String, Value>>, limit: usize) -> Self {
        Self {
            state,
            problems: Vec::new(),
            unlisted: 0,
            budget: limit,
            too_large: false,
        }
    }

    /// `text` with its placeholders filled; problems are remembered with `field` for context and
    /// the text is returned unchanged where a placeholder failed (or entirely, once the filled
    /// text would pass the limit).
    pub fn text(&mut self, field: &str, text: &str) -> String {
        if self.too_large {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            let after_open = &rest[start + OPEN.len()..];
            let Some(end) = after_open.find(CLOSE) else {
                if after_open.trim_start().starts_with("state.") {
                    let shown = shorten(rest[start..].to_owned(), 40);
                    self.problem(format!(
                        "{field}: placeholder {shown:?} is not closed with }}}}"
                    ));
                }
                break;
            };
            let inner = after_open[..end].trim();
            let whole = &rest[start..start + OPEN.len() + end + CLOSE.len()];
            out.push_str(&rest[..start]);
            match inner.strip_prefix("state.") {
                Some(path) => match self.lookup(path) {
                    Some(value) if value.len() > self.budget => {
                        self.too_large = true;
                        self.problem(format!(
                            "{field}: filling the placeholders would make the message larger than the {MAX_FILLED_BYTES} bytes they may add; send less data in state"
                        ));
                        return text.to_owned();
                    }
                    Some(value) => {
                        self.budget -= value.len();
                        out.push_str(&value);
                    }
                    None => {
                        self.problem(format!(
                            "{field}: {whole} has no value in state (missing or null)"
                        ));
                        out.push_str(whole);
                    }
                },
                None => out.push_str(whole),
            }
            rest = &after_open[end + CLOSE.len()..];
        }
        out.push_str(rest);
        out
    }

    fn problem(&mut self, problem: String) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            // Field names come from the command (card keys): keep each line short.
            self.problems.push(shorten(problem, 300));
        } else {
            self.unlisted += 1;
        }
    }

    /// Every string inside `value` (object values and array items, recursively) filled.
    pub fn json(&mut self, field: &str, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(field, text)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.json(&format!("{field}[{i}]"), item))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(self.map(field, map)),
            other => other.clone(),
        }
    }

    /// Every string value of `map` filled (keys are left alone).
    pub fn map(&mut self, field: &str, map: &Map<String, Value>) -> Map<String, Value> {
        map.iter()
            .map(|(key, item)| (key.clone(), self.json(&format!("{field}.{key}"), item)))
            .collect()
    }

    /// Ends filling: `Ok` when every placeholder had a value.
    pub fn finish(self) -> Result<(), FillError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(FillError {
                problems: self.problems,
                unlisted: self.unlisted,
                too_large: self.too_large,
            })
        }
    }

    /// The text of `state.<path>`: strings as they are, numbers and booleans printed, objects
    /// and arrays as JSON; `None` when missing or null. Path segments are object keys or array
    /// indices.
    fn lookup(&self, path: &str) -> Option<String> {
        let mut segments = path.split('.');
        let first = segments.next()?;
        let mut value = self.state?.get(first)?;
        for segment in segments {
            value = match value {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match value {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// A message with every string filled (text, title, card, template id and parameters, media).
pub fn fill_message(filler: &mut Filler<'_>, message: &OutboundMessage) -> OutboundMessage {
    let mut media = |media: &MediaSource| MediaSource {
        media_id: media
            .media_id
            .as_ref()
            .map(|id| filler.text("message.media_id", id)),
        url: media
            .url
            .as_ref()
            .map(|url| filler.text("message.url", url)),
        name: media
            .name
            .as_ref()
            .map(|name| filler.text("message.name", name)),
    };
    match message {
        OutboundMessage::Text { text } => OutboundMessage::Text {
            text: filler.text("message.text", text),
        },
        OutboundMessage::Markdown { title, text } => OutboundMessage::Markdown {
            title: title.as_ref().map(|t| filler.text("message.title", t)),
            text: filler.text("message.text", text),
        },
        OutboundMessage::Interactive { card } => OutboundMessage::Interactive {
            card: filler.json("message.card", card),
        },
        OutboundMessage::Template {
            template_id,
            params,
        } => OutboundMessage::Template {
            template_id: filler.text("message.template_id", template_id),
            params: filler.map("message.params", params),
        },
        OutboundMessage::File(source) => OutboundMessage::File(media(source)),
        OutboundMessage::Image(source) => OutboundMessage::Image(media(source)),
    }
}

/// Recipients with their ids filled.
pub fn fill_recipients(filler: &mut Filler<'_>, recipients: &[Recipient]) -> Vec<Recipient> {
    recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| Recipient {
            kind: recipient.kind,
            id: filler.text(&format!("recipients[{i}].id"), &recipient.id),
        })
        .collect()
}

/// Mentions with their userIds filled (none when absent).
pub fn fill_mentions(filler: &mut Filler<'_>, mentions: Option<&Mentions>) -> Mentions {
    mentions.map_or_else(Mentions::default, |mentions| Mentions {
        user_ids: mentions
            .user_ids
            .iter()
            .enumerate()
            .map(|(i, id)| filler.text(&format!("mentions.user_ids[{i}]"), id))
            .collect(),
        all: mentions.all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_state_variable_replaces_its_placeholder() {
        let state = state(
            json!({"dingtalkRecipientId": "user123", "order": {"id": 7731, "items": ["a", "b"]}}),
        );
        let mut filler = Filler::new(Some(&state));
        assert_eq!(
            filler.text("id", "{{state.dingtalkRecipientId}}"),
            "user123"
        );
        assert_eq!(
            filler.text(
                "text",
                "Order {{ state.order.id }}: {{state.order.items.1}}"
            ),
            "Order 7731: b"
        );
        assert_eq!(filler.text("text", "{{state.order.items}}"), r#"["a","b"]"#);
        assert!(filler.finish().is_ok());
    }

    #[test]
    fn a_missing_variable_is_an_error_never_an_empty_string() {
        let state = state(json!({"name": null}));
        let mut filler = Filler::new(Some(&state));
        let text = filler.text(
            "message.text",
            "Dear {{state.name}}, order {{state.order.id}}",
        );
        assert_eq!(text, "Dear {{state.name}}, order {{state.order.id}}");
        let err = filler.finish().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems[0].contains("message.text: {{state.name}}"),
            "{err}"
        );
        assert!(err.problems[1].contains("{{state.order.id}}"), "{err}");
    }

    #[test]
    fn without_state_every_placeholder_is_missing() {
        let mut filler = Filler::new(None);
        filler.text("recipients[0].id", "{{state.x}}");
        assert!(filler.finish().is_err());
    }

    #[test]
    fn other_double_braces_are_left_alone() {
        let mut filler = Filler::new(None);
        assert_eq!(
            filler.text("t", "{{user}} and {{ other.x }} and {{"),
            "{{user}} and {{ other.x }} and {{"
        );
        assert!(filler.finish().is_ok());
    }

    #[test]
    fn an_unclosed_state_placeholder_is_reported() {
        let mut filler = Filler::new(None);
        filler.text("t", "hi {{state.name");
        assert!(filler.finish().unwrap_err().problems[0].contains("not closed"));
    }

    #[test]
    fn json_values_are_filled_recursively() {
        let state = state(json!({"who": "Li", "n": 3}));
        let mut filler = Filler::new(Some(&state));
        let card = json!({"header": {"title": {"type": "text", "text": "Hi {{state.who}}"}},
                          "contents": [{"type": "markdown", "text": "{{state.n}} items"}], "n": 1});
        let filled = filler.json("card", &card);
        assert_eq!(filled["header"]["title"]["text"], "Hi Li");
        assert_eq!(filled["contents"][0]["text"], "3 items");
        assert_eq!(filled["n"], 1);
        assert!(filler.finish().is_ok());
    }

    #[test]
    fn placeholders_may_add_only_so_much_then_filling_stops() {
        let state = state(json!({"blob": "z".repeat(1000)}));
        let mut filler = Filler::with_limit(Some(&state), 2500);
        assert_eq!(filler.text("a", "{{state.blob}}{{state.blob}}").len(), 2000);
        let text = "{{state.blob}}".repeat(100);
        assert_eq!(filler.text("b", &text), text, "left as it was");
        assert_eq!(
            filler.text("c", "{{state.blob}}"),
            "{{state.blob}}",
            "stopped"
        );
        let err = filler.finish().unwrap_err();
        assert!(err.too_large);
        assert_eq!(err.code(), "message_too_large");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].starts_with("b: "), "{err}");
    }

    #[test]
    fn many_problems_are_counted_not_listed() {
        let mut filler = Filler::new(None);
        filler.text("t", &"{{state.gone}} ".repeat(25));
        let err = filler.finish().unwrap_err();
        assert_eq!(err.code(), "missing_variable");
        assert_eq!(err.problems.len(), 10);
        assert!(err.to_string().ends_with("; and 15 more"), "{err}");
    }
}
