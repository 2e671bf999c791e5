//! Reading request fields the way DingTalk checks them: present, of the right JSON type, with
//! the field's DingTalk name in every error.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::templates::json_type;

/// A request's JSON object, read field by field.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Map<String, Value>);

impl Fields {
    /// Parses a request body: it must be a JSON object.
    pub fn from_body(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadBody {
                reason: "the body is empty".to_owned(),
            });
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(ApiError::BadBody {
                reason: format!("found a JSON {}", json_type(&other)),
            }),
            Err(err) => Err(ApiError::BadBody {
                reason: format!("not JSON ({err})"),
            }),
        }
    }

    /// The raw value, `None` when absent or `null`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|value| !value.is_null())
    }

    /// A required non-empty string.
    pub fn str(&self, field: &str) -> Result<&str, ApiError> {
        match self.get(field) {
            None => Err(ApiError::missing(field)),
            Some(Value::String(text)) if text.is_empty() => Err(ApiError::missing(field)),
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    }

    /// An optional string (absent or `null` is `None`).
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(wrong_type(field, "a boolean", other)),
        }
    }

    /// A required integer.
    pub fn int(&self, field: &str) -> Result<i64, ApiError> {
        self.opt_int(field)?.ok_or_else(|| ApiError::missing(field))
    }

    /// An optional integer.
    pub fn opt_int(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(field, "must be an integer")),
            Some(other) => Err(wrong_type(field, "an integer", other)),
        }
    }

    /// A required non-empty array of strings, at most `max` long.
    pub fn str_list(&self, field: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let items = match self.get(field) {
            None => return Err(ApiError::missing(field)),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(field, "an array of strings", other)),
        };
        if items.is_empty() {
            return Err(ApiError::invalid(field, "must not be empty"));
        }
        if items.len() > max {
            return Err(ApiError::invalid(
                field,
                format!("has {} entries; at most {max} are allowed", items.len()),
            ));
        }
        items
            .iter()
            .map(|item| match item {
                Value::String(text) if !text.is_empty() => Ok(text.clone()),
                other => Err(ApiError::invalid(
                    field,
                    format!("entries must be non-empty strings, found {other}"),
                )),
            })
            .collect()
    }

    /// An optional JSON object, as [`Fields`].
    pub fn opt_object(&self, field: &str) -> Result<Option<Fields>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields(map.clone()))),
            Some(other) => Err(wrong_type(field, "an object", other)),
        }
    }

    /// A required JSON object.
    pub fn object(&self, field: &str) -> Result<Fields, ApiError> {
        self.opt_object(field)?
            .ok_or_else(|| ApiError::missing(field))
    }

    /// A required string that must itself hold a JSON object (DingTalk's `cardData`,
    /// `singleChatReceiver`, …).
    pub fn json_string_object(&self, field: &str) -> Result<Fields, ApiError> {
        let text = match self.get(field) {
            None => return Err(ApiError::missing(field)),
            Some(Value::String(text)) => text,
            Some(other) => {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "must be a JSON-encoded string, not a JSON {}",
                        json_type(other)
                    ),
                ))
            }
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(other) => Err(ApiError::invalid(
                field,
                format!(
                    "must encode a JSON object, not a JSON {}",
                    json_type(&other)
                ),
            )),
            Err(err) => Err(ApiError::invalid(
                field,
                format!("is not valid JSON: {err}"),
            )),
        }
    }

    /// The object back as a JSON value (for the call record).
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// The error for a field of the wrong JSON type.
fn wrong_type(field: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::invalid(
        field,
        format!("must be {expected}, not a JSON {}", json_type(found)),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(value: Value) -> Fields {
        Fields::from_body(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn body_must_be_a_json_object() {
        assert!(matches!(
            Fields::from_body(b""),
            Err(ApiError::BadBody { .. })
        ));
        assert!(matches!(
            Fields::from_body(b"appKey=x"),
            Err(ApiError::BadBody { .. })
        ));
        assert!(matches!(
            Fields::from_body(b"[1]"),
            Err(ApiError::BadBody { .. })
        ));
    }

    #[test]
    fn empty_string_counts_as_missing() {
        assert_eq!(
            fields(json!({"robotCode": ""})).str("robotCode"),
            Err(ApiError::missing("robotCode"))
        );
    }

    #[test]
    fn string_list_is_bounded_and_typed() {
        let ids: Vec<String> = (0..21).map(|i| format!("u{i}")).collect();
        assert!(fields(json!({"userIds": ids}))
            .str_list("userIds", 20)
            .is_err());
        assert!(fields(json!({"userIds": []}))
            .str_list("userIds", 20)
            .is_err());
        assert!(fields(json!({"userIds": [1]}))
            .str_list("userIds", 20)
            .is_err());
        assert_eq!(
            fields(json!({"userIds": ["a"]})).str_list("userIds", 20),
            Ok(vec!["a".to_owned()])
        );
    }

    #[test]
    fn json_string_object_refuses_objects_and_non_json() {
        assert!(fields(json!({"cardData": {"a": 1}}))
            .json_string_object("cardData")
            .is_err());
        assert!(fields(json!({"cardData": "nope"}))
            .json_string_object("cardData")
            .is_err());
        assert!(fields(json!({"cardData": "{\"a\":1}"}))
            .json_string_object("cardData")
            .is_ok());
    }
}
