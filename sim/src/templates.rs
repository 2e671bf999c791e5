//! Robot message templates: `msgKey` and its `msgParam` (PROTOCOL §4.1).
//!
//! DingTalk's robot send APIs take no free-form message: the caller names a built-in template
//! and passes its parameters as a JSON-encoded *string*. [`MsgTemplate::parse`] checks both the
//! key and the string, the way a wrong call would fail at DingTalk.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A validated `msgKey` with its decoded `msgParam`.
#[derive(Debug, Clone, PartialEq)]
pub struct MsgTemplate {
    /// The template name.
    pub key: String,
    /// The decoded parameters.
    pub params: Map<String, Value>,
}

/// The known msgKeys and the parameters each requires.
const TEMPLATES: &[(&str, &[&str])] = &[
    ("sampleText", &["content"]),
    ("sampleMarkdown", &["title", "text"]),
    ("sampleImageMsg", &["photoURL"]),
    ("sampleLink", &["title", "text", "messageUrl", "picUrl"]),
    (
        "sampleActionCard",
        &["title", "text", "singleTitle", "singleURL"],
    ),
    (
        "sampleActionCard2",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
        ],
    ),
    (
        "sampleActionCard3",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
            "actionTitle3",
            "actionURL3",
        ],
    ),
    (
        "sampleActionCard4",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
            "actionTitle3",
            "actionURL3",
            "actionTitle4",
            "actionURL4",
        ],
    ),
    (
        "sampleActionCard5",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
            "actionTitle3",
            "actionURL3",
            "actionTitle4",
            "actionURL4",
            "actionTitle5",
            "actionURL5",
        ],
    ),
    (
        "sampleActionCard6",
        &[
            "title",
            "text",
            "buttonTitle1",
            "buttonUrl1",
            "buttonTitle2",
            "buttonUrl2",
        ],
    ),
    ("sampleAudio", &["mediaId", "duration"]),
    ("sampleFile", &["mediaId", "fileName", "fileType"]),
    (
        "sampleVideo",
        &["duration", "videoMediaId", "videoType", "picMediaId"],
    ),
];

impl MsgTemplate {
    /// The known msgKeys, comma-separated, for error messages.
    pub fn known_keys() -> String {
        TEMPLATES
            .iter()
            .map(|(key, _)| *key)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Validates `msgKey` and `msgParam` as they appear in a request body (either may be absent
    /// or of the wrong JSON type).
    pub fn parse(msg_key: Option<&Value>, msg_param: Option<&Value>) -> Result<Self, ApiError> {
        let key = match msg_key {
            None | Some(Value::Null) => return Err(ApiError::missing("msgKey")),
            Some(Value::String(key)) => key,
            Some(_) => return Err(ApiError::invalid("msgKey", "must be a string")),
        };
        let required = TEMPLATES
            .iter()
            .find(|(known, _)| known == key)
            .map(|(_, fields)| *fields)
            .ok_or_else(|| {
                ApiError::invalid(
                    "msgKey",
                    format!("unknown msgKey {key:?}; known: {}", Self::known_keys()),
                )
            })?;
        let text = match msg_param {
            None | Some(Value::Null) => return Err(ApiError::missing("msgParam")),
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(ApiError::invalid(
                    "msgParam",
                    format!(
                        "must be a JSON-encoded string, not a JSON {}",
                        json_type(other)
                    ),
                ))
            }
        };
        let params = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(params)) => params,
            Ok(other) => {
                return Err(ApiError::invalid(
                    "msgParam",
                    format!(
                        "must encode a JSON object, not a JSON {}",
                        json_type(&other)
                    ),
                ))
            }
            Err(err) => {
                return Err(ApiError::invalid(
                    "msgParam",
                    format!("is not valid JSON: {err}"),
                ))
            }
        };
        for field in required {
            match params.get(*field) {
                Some(Value::String(_)) => {}
                None | Some(Value::Null) => {
                    return Err(ApiError::invalid(
                        "msgParam",
                        format!("{key} requires {field:?} (all of: {})", required.join(", ")),
                    ))
                }
                Some(_) => {
                    return Err(ApiError::invalid(
                        "msgParam",
                        format!("{key}.{field} must be a string"),
                    ))
                }
            }
        }
        Ok(Self {
            key: key.clone(),
            params,
        })
    }
}

/// The JSON type's name, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(key: Value, param: Value) -> Result<MsgTemplate, ApiError> {
        MsgTemplate::parse(Some(&key), Some(&param))
    }

    #[test]
    fn sample_text_with_content_in_a_json_string_is_accepted() {
        let template = parse(json!("sampleText"), json!(r#"{"content":"hi"}"#)).unwrap();
        assert_eq!(template.params["content"], "hi");
    }

    #[test]
    fn msg_param_sent_as_an_object_is_refused() {
        let err = parse(json!("sampleText"), json!({"content":"hi"})).unwrap_err();
        assert!(err.to_string().contains("JSON-encoded string"), "{err}");
    }

    #[test]
    fn msg_param_that_is_not_json_is_refused() {
        assert!(parse(json!("sampleText"), json!("content=hi")).is_err());
        assert!(parse(json!("sampleText"), json!("[1]")).is_err());
    }

    #[test]
    fn unknown_msg_key_is_refused_and_the_known_ones_are_listed() {
        let err = parse(json!("sampleActionCard1"), json!("{}")).unwrap_err();
        assert!(err.to_string().contains("sampleMarkdown"), "{err}");
    }

    #[test]
    fn markdown_without_title_is_refused() {
        let err = parse(json!("sampleMarkdown"), json!(r#"{"text":"hi"}"#)).unwrap_err();
        assert!(err.to_string().contains("title"), "{err}");
    }

    #[test]
    fn numeric_template_field_is_refused() {
        assert!(parse(
            json!("sampleAudio"),
            json!(r#"{"mediaId":"@x","duration":100}"#)
        )
        .is_err());
    }

    #[test]
    fn missing_key_or_param_is_a_missing_parameter() {
        assert_eq!(
            MsgTemplate::parse(None, Some(&json!("{}"))),
            Err(ApiError::missing("msgKey"))
        );
        assert_eq!(
            MsgTemplate::parse(Some(&json!("sampleText")), None),
            Err(ApiError::missing("msgParam"))
        );
    }
}
