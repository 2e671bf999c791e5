//! The tools: their names (the seed's, exactly), descriptions and arguments.
//!
//! Each tool's arguments are one Rust type; its JSON Schema is generated from that type once and
//! served both as the MCP `inputSchema` and in `GET /api/tools`, and the same type reads the
//! arguments of both, so the two surfaces cannot drift apart.

use std::sync::OnceLock;

use common::bus::command::RecipientType;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest file `dingtalk_send_file` sends (the notifier's media limit, 10 MiB).
pub const MAX_FILE_BYTES: u64 = crate::media::MAX_MEDIA_BYTES as u64;
/// How long a call waits for its result unless `timeoutMs` says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The shortest and longest `timeoutMs` accepted (an update may wait up to two minutes for its
/// target's send, so longer waits are pointless).
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=120_000;

/// One of the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolName {
    /// `dingtalk_send_text_notification`
    SendText,
    /// `dingtalk_send_rich_notification`
    SendRich,
    /// `dingtalk_update_message`
    UpdateMessage,
    /// `dingtalk_recall_message`
    RecallMessage,
    /// `dingtalk_list_users`
    ListUsers,
    /// `dingtalk_list_chats`
    ListChats,
    /// `dingtalk_send_file`
    SendFile,
}

impl ToolName {
    /// Every tool, in the order they are listed.
    pub const ALL: [ToolName; 7] = [
        Self::SendText,
        Self::SendRich,
        Self::UpdateMessage,
        Self::RecallMessage,
        Self::ListUsers,
        Self::ListChats,
        Self::SendFile,
    ];

    /// The tool's name, as the seed spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SendText => "dingtalk_send_text_notification",
            Self::SendRich => "dingtalk_send_rich_notification",
            Self::UpdateMessage => "dingtalk_update_message",
            Self::RecallMessage => "dingtalk_recall_message",
            Self::ListUsers => "dingtalk_list_users",
            Self::ListChats => "dingtalk_list_chats",
            Self::SendFile => "dingtalk_send_file",
        }
    }

    /// The tool of that name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.as_str() == name)
    }

    /// What the tool does and when to use it, for the model choosing tools.
    pub fn description(&self) -> &'static str {
        match self {
            Self::SendText => {
                "Send a plain-text DingTalk message to users or group chats. Use it to notify \
                 someone proactively, not for the normal reply of the conversation. Returns a \
                 messageId per recipient for dingtalk_update_message and dingtalk_recall_message; \
                 set updatable=true when the message will be updated in place later."
            }
            Self::SendRich => {
                "Send a rich DingTalk message: mode=markdown (markdown, optional title), \
                 mode=interactive (card: a StandardCard's cardData, object or JSON string) or \
                 mode=template (msgKey: a card template id, msgParam: its parameters). Returns a \
                 messageId per recipient."
            }
            Self::UpdateMessage => {
                "Change a message sent earlier, by its messageId. Cards are updated in place; a \
                 plain message is recalled and sent again (the result says degraded=true) unless \
                 degrade=fail. mode=text (content), markdown (markdown, title), interactive (card) \
                 or template (msgKey, msgParam)."
            }
            Self::RecallMessage => {
                "Withdraw a message sent earlier, by its messageId, from every recipient it \
                 reached."
            }
            Self::ListUsers => {
                "List the members of the DingTalk organization (userId and name), optionally only \
                 those whose name contains keyword. Page with pageSize and the pageToken of the \
                 previous answer. Needs the app's contact read permission."
            }
            Self::ListChats => {
                "List the group chats the robot has received messages from (chat_id and title); \
                 a chat_id is a recipient_id for recipient_type=chat_id."
            }
            Self::SendFile => {
                "Send a file to users or group chats: by url (a host the gateway allows) or by \
                 mediaId (a DingTalk media id). Images (image/* or .png/.jpg/.jpeg/.gif/.bmp) go \
                 as image messages, everything else as file messages; at most 10 MiB."
            }
        }
    }

    /// The JSON Schema of the tool's arguments (generated once).
    pub fn input_schema(&self) -> &'static Map<String, Value> {
        static SCHEMAS: OnceLock<Vec<Map<String, Value>>> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| {
            Self::ALL
                .iter()
                .map(|tool| match tool {
                    Self::SendText => schema_of::<SendTextArgs>(),
                    Self::SendRich => schema_of::<SendRichArgs>(),
                    Self::UpdateMessage => schema_of::<UpdateMessageArgs>(),
                    Self::RecallMessage => schema_of::<RecallMessageArgs>(),
                    Self::ListUsers => schema_of::<ListUsersArgs>(),
                    Self::ListChats => schema_of::<ListChatsArgs>(),
                    Self::SendFile => schema_of::<SendFileArgs>(),
                })
                .collect()
        });
        let index = Self::ALL
            .iter()
            .position(|tool| tool == self)
            .expect("every tool is in ALL");
        &schemas[index]
    }

    /// The names of the tool's parameters (the schema's `properties`).
    pub fn parameters(&self) -> Vec<&'static str> {
        self.input_schema()
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| properties.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// A self-contained object schema (sub-schemas inlined, no `$schema`), closed to unknown
/// parameters: the arguments reader refuses them too.
fn schema_of<T: JsonSchema>() -> Map<String, Value> {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let schema: Schema = generator.into_root_schema_for::<T>();
    let mut value = Value::from(schema);
    drop_null_alternatives(&mut value);
    let Value::Object(mut object) = value else {
        unreachable!("an arguments type is a JSON object")
    };
    object.remove("title");
    object.insert("additionalProperties".to_owned(), Value::Bool(false));
    object
}

/// Removes the `null` alternative schemars gives every `Option` field, recursively: an absent
/// parameter is simply left out, and a plain type per parameter is what models fill best. (An
/// explicit `null` is still read as absent.)
fn drop_null_alternatives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            let null = serde_json::json!({"type": "null"});
            if let Some(Value::Array(alternatives)) = map.get_mut("anyOf") {
                alternatives.retain(|alternative| *alternative != null);
                if alternatives.len() == 1 {
                    if let Value::Object(only) = alternatives.remove(0) {
                        map.remove("anyOf");
                        for (key, item) in only {
                            map.entry(key).or_insert(item);
                        }
                    }
                }
            }
            map.values_mut().for_each(drop_null_alternatives);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}

/// Which integration (DingTalk app) acts. Defaults: the call's `state`
/// (`dingtalk_integration_id`), then the connection's `integration_id` query parameter.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct IntegrationArg {
    /// The integration id (DingTalk app) to act with. Defaults to state.dingtalk_integration_id,
    /// then to the connection's integration_id.
    #[serde(default)]
    pub integration_id: Option<String>,
}

/// Who receives a message. Defaults: the call's `state` (`dingtalkRecipientId`,
/// `dingtalk_recipient_type`), then the connection's query parameters.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct TargetArgs {
    #[serde(flatten)]
    pub integration: IntegrationArg,
    /// How recipient_id / recipient_ids are to be read. Default: the type that comes with the
    /// defaulted recipient, else user_id.
    #[serde(default)]
    pub recipient_type: Option<ToolRecipientType>,
    /// One recipient (a userId, unionId, openId or group chat id); may hold {{state.x}}.
    /// Defaults to state.dingtalkRecipientId, then to the connection's recipient_id.
    #[serde(default)]
    pub recipient_id: Option<String>,
    /// Several recipients of the same type (at most 200); the result has one entry per
    /// recipient.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub recipient_ids: Option<Vec<String>>,
}

/// What every call may add.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct CallOptions {
    /// Values for {{state.x}} variables in recipient ids and text fields; its
    /// dingtalk_integration_id, dingtalkRecipientId and dingtalk_recipient_type keys (the run's
    /// facts) are the default target.
    #[serde(default)]
    pub state: Option<Map<String, Value>>,
    /// How long to wait for the outcome, in milliseconds (100 to 120000, default 10000).
    #[serde(default, rename = "timeoutMs")]
    #[schemars(range(min = 100, max = 120000))]
    pub timeout_ms: Option<u64>,
}

/// The recipient types a tool call may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolRecipientType {
    // A userId (staff id): a 1:1 robot message.
    UserId,
    // A unionId.
    UnionId,
    // An openId.
    OpenId,
    // A group's openConversationId (cid…).
    ChatId,
}

impl From<ToolRecipientType> for RecipientType {
    fn from(kind: ToolRecipientType) -> Self {
        match kind {
            ToolRecipientType::UserId => Self::UserId,
            ToolRecipientType::UnionId => Self::UnionId,
            ToolRecipientType::OpenId => Self::OpenId,
            ToolRecipientType::ChatId => Self::ChatId,
        }
    }
}

/// `dingtalk_send_text_notification`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SendTextArgs {
    /// The text to send; may hold {{state.x}}.
    pub content: String,
    /// Send as a card so that dingtalk_update_message changes it in place.
    #[serde(default)]
    pub updatable: bool,
    #[serde(flatten)]
    pub target: TargetArgs,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// The modes of `dingtalk_send_rich_notification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RichMode {
    // `markdown` (+ `title`).
    Markdown,
    // `card`.
    Interactive,
    // `msgKey` + `msgParam`.
    Template,
}

/// `dingtalk_send_rich_notification`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SendRichArgs {
    /// markdown = rich text; interactive = a card; template = a card template (msgKey, msgParam).
    pub mode: RichMode,
    /// The markdown (mode=markdown); may hold {{state.x}}.
    #[serde(default)]
    pub markdown: Option<String>,
    /// The notification title (mode=markdown); defaults to the first line of markdown.
    #[serde(default)]
    pub title: Option<String>,
    /// The card's data, {config, header, contents} (mode=interactive): an object or a JSON string.
    #[serde(default)]
    pub card: Option<JsonObject>,
    /// The card template id (mode=template).
    #[serde(default, rename = "msgKey")]
    pub msg_key: Option<String>,
    /// The template's parameters (mode=template): an object or a JSON string.
    #[serde(default, rename = "msgParam")]
    pub msg_param: Option<JsonObject>,
    /// Markdown only: send as a card so that dingtalk_update_message changes it in place
    /// (interactive and template messages are cards anyway).
    #[serde(default)]
    pub updatable: bool,
    #[serde(flatten)]
    pub target: TargetArgs,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// The modes of `dingtalk_update_message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateMode {
    // `content`.
    Text,
    // `markdown` (+ `title`).
    Markdown,
    // `card`.
    Interactive,
    // `msgKey` + `msgParam`.
    Template,
}

/// What to do when the message cannot be updated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DegradeChoice {
    // Recall it and send the new content (the result says degraded=true).
    #[default]
    Resend,
    // Fail with not_updatable.
    Fail,
}

/// `dingtalk_update_message`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UpdateMessageArgs {
    /// The messageId a send tool returned.
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// Which content field holds the new content.
    pub mode: UpdateMode,
    /// The new text (mode=text); may hold {{state.x}}.
    #[serde(default)]
    pub content: Option<String>,
    /// The new markdown (mode=markdown); may hold {{state.x}}.
    #[serde(default)]
    pub markdown: Option<String>,
    /// The new title (mode=markdown).
    #[serde(default)]
    pub title: Option<String>,
    /// The new card data (mode=interactive): an object or a JSON string.
    #[serde(default)]
    pub card: Option<JsonObject>,
    /// The card template id (mode=template).
    #[serde(default, rename = "msgKey")]
    pub msg_key: Option<String>,
    /// The template's new parameters (mode=template): an object or a JSON string.
    #[serde(default, rename = "msgParam")]
    pub msg_param: Option<JsonObject>,
    /// A plain (non-card) message: resend (recall + send again, the default) or fail.
    #[serde(default)]
    pub degrade: Option<DegradeChoice>,
    #[serde(flatten)]
    pub integration: IntegrationArg,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// `dingtalk_recall_message`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RecallMessageArgs {
    /// The messageId a send tool returned.
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(flatten)]
    pub integration: IntegrationArg,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// `dingtalk_list_users`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ListUsersArgs {
    /// Only users whose name contains this (case-insensitive).
    #[serde(default)]
    pub keyword: Option<String>,
    /// Users per page, 1 to 100 (default 20).
    #[serde(default, rename = "pageSize")]
    #[schemars(range(min = 1, max = 100))]
    pub page_size: Option<u32>,
    /// The nextPageToken of the previous page.
    #[serde(default, rename = "pageToken")]
    pub page_token: Option<String>,
    #[serde(flatten)]
    pub integration: IntegrationArg,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// `dingtalk_list_chats`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ListChatsArgs {
    #[serde(flatten)]
    pub integration: IntegrationArg,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// `dingtalk_send_file`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SendFileArgs {
    /// Where the notifier downloads the file (its host must be on MEDIA_URL_ALLOWLIST).
    #[serde(default)]
    pub url: Option<String>,
    /// A DingTalk media id of an uploaded file, instead of url.
    #[serde(default, rename = "mediaId")]
    pub media_id: Option<String>,
    /// The file name shown to the recipient.
    #[serde(default)]
    pub name: Option<String>,
    /// The MIME type; image/* is sent as an image message.
    #[serde(default, rename = "mimeType")]
    pub mime_type: Option<String>,
    /// The file's size in bytes, when known: above 10 MiB the call is refused at once.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(flatten)]
    pub target: TargetArgs,
    #[serde(flatten)]
    pub options: CallOptions,
}

/// A JSON object given either as an object or as a JSON string holding one (models often
/// produce the string form).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Object(map) => Ok(Self(map)),
            Value::String(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => Ok(Self(map)),
                Ok(_) => Err(de::Error::custom("the JSON string does not hold an object")),
                Err(err) => Err(de::Error::custom(format!(
                    "the string is not valid JSON: {err}"
                ))),
            },
            _ => Err(de::Error::custom(
                "expected a JSON object or a string holding one",
            )),
        }
    }
}

impl JsonSchema for JsonObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "object"},
                {"type": "string", "description": "a JSON object, as a string"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(tool: ToolName) -> Vec<&'static str> {
        let mut names = tool.parameters();
        names.sort_unstable();
        names
    }

    fn sorted(mut names: Vec<&'static str>) -> Vec<&'static str> {
        names.sort_unstable();
        names
    }

    const TARGET: [&str; 4] = [
        "integration_id",
        "recipient_type",
        "recipient_id",
        "recipient_ids",
    ];
    const OPTIONS: [&str; 2] = ["state", "timeoutMs"];

    fn with(own: &[&'static str], common: &[&'static str]) -> Vec<&'static str> {
        sorted(own.iter().chain(common).chain(&OPTIONS).copied().collect())
    }

    #[test]
    fn names_are_the_seeds_and_parse_back() {
        let names: Vec<&str> = ToolName::ALL.iter().map(ToolName::as_str).collect();
        assert_eq!(
            names,
            [
                "dingtalk_send_text_notification",
                "dingtalk_send_rich_notification",
                "dingtalk_update_message",
                "dingtalk_recall_message",
                "dingtalk_list_users",
                "dingtalk_list_chats",
                "dingtalk_send_file",
            ]
        );
        for tool in ToolName::ALL {
            assert_eq!(ToolName::parse(tool.as_str()), Some(tool));
        }
        assert_eq!(ToolName::parse("dingtalk_send"), None);
    }

    #[test]
    fn every_schema_lists_exactly_the_documented_parameters() {
        let integration = ["integration_id"];
        assert_eq!(
            properties(ToolName::SendText),
            with(&["content", "updatable"], &TARGET)
        );
        assert_eq!(
            properties(ToolName::SendRich),
            with(
                &[
                    "mode",
                    "markdown",
                    "title",
                    "card",
                    "msgKey",
                    "msgParam",
                    "updatable"
                ],
                &TARGET
            )
        );
        assert_eq!(
            properties(ToolName::UpdateMessage),
            with(
                &[
                    "messageId",
                    "mode",
                    "content",
                    "markdown",
                    "title",
                    "card",
                    "msgKey",
                    "msgParam",
                    "degrade"
                ],
                &integration
            )
        );
        assert_eq!(
            properties(ToolName::RecallMessage),
            with(&["messageId"], &integration)
        );
        assert_eq!(
            properties(ToolName::ListUsers),
            with(&["keyword", "pageSize", "pageToken"], &integration)
        );
        assert_eq!(properties(ToolName::ListChats), with(&[], &integration));
        assert_eq!(
            properties(ToolName::SendFile),
            with(&["url", "mediaId", "name", "mimeType", "size"], &TARGET)
        );
    }

    #[test]
    fn schemas_are_closed_self_contained_objects_with_their_required_fields() {
        let required = |tool: ToolName| -> Vec<String> {
            tool.input_schema()
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        for tool in ToolName::ALL {
            let schema = tool.input_schema();
            assert_eq!(schema["type"], "object", "{}", tool.as_str());
            assert_eq!(schema["additionalProperties"], false);
            let text = Value::Object(schema.clone()).to_string();
            assert!(!text.contains("$ref"), "{}: {text}", tool.as_str());
        }
        assert_eq!(required(ToolName::SendText), ["content"]);
        assert_eq!(required(ToolName::SendRich), ["mode"]);
        let mut update = required(ToolName::UpdateMessage);
        update.sort();
        assert_eq!(update, ["messageId", "mode"]);
        assert_eq!(required(ToolName::RecallMessage), ["messageId"]);
        assert!(required(ToolName::ListUsers).is_empty());
        let rich = ToolName::SendRich.input_schema();
        assert_eq!(
            rich["properties"]["mode"]["enum"],
            serde_json::json!(["markdown", "interactive", "template"])
        );
        assert_eq!(
            ToolName::UpdateMessage.input_schema()["properties"]["mode"]["enum"],
            serde_json::json!(["text", "markdown", "interactive", "template"])
        );
        assert_eq!(
            ToolName::SendText.input_schema()["properties"]["recipient_type"]["enum"],
            serde_json::json!(["user_id", "union_id", "open_id", "chat_id"])
        );
        let page_size = &ToolName::ListUsers.input_schema()["properties"]["pageSize"];
        assert_eq!(page_size["minimum"], 1);
        assert_eq!(page_size["maximum"], 100);
    }

    #[test]
    fn an_object_argument_may_come_as_a_json_string() {
        let parsed: JsonObject = serde_json::from_value(serde_json::json!(r#"{"a": 1}"#)).unwrap();
        assert_eq!(parsed.0["a"], 1);
        let parsed: JsonObject = serde_json::from_value(serde_json::json!({"b": 2})).unwrap();
        assert_eq!(parsed.0["b"], 2);
        for bad in [
            serde_json::json!("[1]"),
            serde_json::json!("{"),
            serde_json::json!(3),
        ] {
            assert!(serde_json::from_value::<JsonObject>(bad).is_err());
        }
    }
}
