//! Pure translation, free of I/O: a tool call's arguments (plus the connection's defaults) into
//! one bus command or query, and the bus's answer into the tool's result.

use std::time::Duration;

use common::bus::command::{
    Command, Degrade, MediaSource, Operation, OutboundMessage, Recall, Recipient, RecipientType,
    Send, Update,
};
use common::bus::query::{ListChatsReply, ListUsersReply, ListUsersRequest, QueryErrorBody};
use common::bus::result::{CommandResult, ResultError, Status};
use common::bus::V1;
use common::registry::IntegrationId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::catalog::{
    CallOptions, DegradeChoice, IntegrationArg, JsonObject, ListChatsArgs, ListUsersArgs,
    RecallMessageArgs, RichMode, SendFileArgs, SendRichArgs, SendTextArgs, TargetArgs, ToolName,
    ToolRecipientType, UpdateMessageArgs, UpdateMode, DEFAULT_TIMEOUT_MS, MAX_FILE_BYTES,
    TIMEOUT_MS_RANGE,
};
use crate::placeholders::Filler;

/// The `state` key holding the run's integration (the dispatcher's run facts).
pub const STATE_INTEGRATION: &str = "dingtalk_integration_id";
/// The most recipients one tool call may list in `recipient_ids`.
pub const MAX_RECIPIENT_IDS: usize = 200;
/// The most an integration id's placeholders may add, and the most of a bad one quoted back.
const MAX_INTEGRATION_ID_BYTES: usize = IntegrationId::MAX_LEN;
/// The `state` key holding the conversation's recipient id.
pub const STATE_RECIPIENT_ID: &str = "dingtalkRecipientId";
/// The `state` key saying how to read [`STATE_RECIPIENT_ID`].
pub const STATE_RECIPIENT_TYPE: &str = "dingtalk_recipient_type";

/// Defaults set on the connection, as query parameters of the URL the client was configured
/// with (`/mcp?integration_id=acme&recipient_type=chat_id&recipient_id=cid…`), so that an expert
/// serving one conversation or one team need not repeat them in every call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConnectionDefaults {
    /// The integration.
    #[serde(default)]
    pub integration_id: Option<String>,
    /// How `recipient_id` is to be read.
    #[serde(default)]
    pub recipient_type: Option<ToolRecipientType>,
    /// The recipient.
    #[serde(default)]
    pub recipient_id: Option<String>,
}

/// A failed call, in words the caller (a model, often) can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolError {
    /// Stable code: ours (`invalid_arguments`, `unknown_tool`, `timeout`, `unavailable`, …), the
    /// bus's (`unknown_integration`, `missing_variable`, `media_too_large`, …) or DingTalk's
    /// (`60011`, …).
    pub code: String,
    /// What went wrong and what would fix it.
    pub message: String,
    /// The bus command this call published, when it got that far: its result can be looked up
    /// later on `dingtalk.results.{integration_id}.{op}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Whether calling again (it publishes a new command) may help.
    #[serde(default)]
    pub retryable: bool,
}

impl ToolError {
    /// An error that no retry fixes.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            command_id: None,
            retryable: false,
        }
    }

    /// Bad or missing arguments.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_arguments", message)
    }

    /// Names the command the error is about.
    pub fn with_command(mut self, command_id: &str) -> Self {
        self.command_id = Some(command_id.to_owned());
        self
    }

    /// Marks the error as worth retrying.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// The outcome for one recipient, in the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultItem {
    /// `{recipient_type}:{recipient_id}`, placeholders filled.
    pub target: String,
    /// Whether DingTalk accepted it.
    pub success: bool,
    /// What `dingtalk_update_message` and `dingtalk_recall_message` take.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Why not (`code: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A tool's answer, in the seed's shape, plus `error` when the call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The tool's name.
    pub tool: String,
    /// The integration that acted (empty when none could be determined).
    pub integration_id: String,
    /// Recipients reached (list tools: 1 when answered).
    pub success_count: usize,
    /// Recipients not reached.
    pub failure_count: usize,
    /// One entry per recipient.
    pub results: Vec<ResultItem>,
    /// Details: the command id and status, or the list a list tool asked for.
    pub data: Value,
    /// Why the call failed; absent on success (a partly delivered send succeeds, see `results`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
}

impl ToolResult {
    /// A call that failed before (or instead of) a bus answer.
    pub fn failed(tool: &str, integration_id: &str, error: ToolError) -> Self {
        let data = match &error.command_id {
            Some(id) => json!({"commandId": id}),
            None => json!({}),
        };
        Self {
            tool: tool.to_owned(),
            integration_id: integration_id.to_owned(),
            success_count: 0,
            failure_count: 0,
            results: Vec::new(),
            data,
            error: Some(error),
        }
    }
}

/// What one call asks of the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish this command and wait for its result.
    Command(Box<Command>),
    /// Ask `list_users`.
    ListUsers(ListUsersRequest),
    /// Ask `list_chats`.
    ListChats,
}

/// A call translated: which integration, what to ask, how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The tool.
    pub tool: ToolName,
    /// The integration (checked against the registry before anything is published).
    pub integration: IntegrationId,
    /// The bus work.
    pub action: Action,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// A translation failure, with the integration when it was already known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The integration, if resolved.
    pub integration: String,
    /// What is wrong.
    pub error: ToolError,
}

impl From<ToolError> for PlanError {
    fn from(error: ToolError) -> Self {
        Self {
            integration: String::new(),
            error,
        }
    }
}

/// Translates one call. `command_id` is the fresh id the command (if any) will carry.
pub fn plan(
    tool: ToolName,
    arguments: Value,
    defaults: &ConnectionDefaults,
    command_id: &str,
) -> Result<Planned, PlanError> {
    match tool {
        ToolName::SendText => {
            let args: SendTextArgs = read(tool, arguments)?;
            let message = OutboundMessage::Text {
                text: required_text("content", Some(args.content))?,
            };
            send(
                tool,
                &args.target,
                &args.options,
                defaults,
                command_id,
                message,
                args.updatable,
            )
        }
        ToolName::SendRich => {
            let args: SendRichArgs = read(tool, arguments)?;
            let (mode, updatable) = (args.mode, args.updatable);
            let message = match mode {
                RichMode::Markdown => markdown(args.markdown, args.title)?,
                RichMode::Interactive => interactive(args.card)?,
                RichMode::Template => template(args.msg_key, args.msg_param)?,
            };
            send(
                tool,
                &args.target,
                &args.options,
                defaults,
                command_id,
                message,
                updatable,
            )
        }
        ToolName::SendFile => {
            let args: SendFileArgs = read(tool, arguments)?;
            let message = file_message(&args)?;
            send(
                tool,
                &args.target,
                &args.options,
                defaults,
                command_id,
                message,
                false,
            )
        }
        ToolName::UpdateMessage => {
            let args: UpdateMessageArgs = read(tool, arguments)?;
            let target = message_id(&args.message_id)?;
            let message = match args.mode {
                UpdateMode::Text => OutboundMessage::Text {
                    text: required_text("content", args.content)?,
                },
                UpdateMode::Markdown => markdown(args.markdown, args.title)?,
                UpdateMode::Interactive => interactive(args.card)?,
                UpdateMode::Template => template(args.msg_key, args.msg_param)?,
            };
            let degrade = match args.degrade.unwrap_or_default() {
                DegradeChoice::Resend => Some(Degrade::Resend),
                DegradeChoice::Fail => None,
            };
            let (integration, timeout) = common_parts(&args.integration, &args.options, defaults)?;
            let command = Command {
                v: V1,
                id: command_id.to_owned(),
                integration_id: integration.clone(),
                op: Operation::Update(Update {
                    target,
                    message,
                    degrade,
                    state: args.options.state,
                }),
            };
            Ok(Planned {
                tool,
                integration,
                action: Action::Command(Box::new(command)),
                timeout,
            })
        }
        ToolName::RecallMessage => {
            let args: RecallMessageArgs = read(tool, arguments)?;
            let target = message_id(&args.message_id)?;
            let (integration, timeout) = common_parts(&args.integration, &args.options, defaults)?;
            let command = Command {
                v: V1,
                id: command_id.to_owned(),
                integration_id: integration.clone(),
                op: Operation::Recall(Recall { target }),
            };
            Ok(Planned {
                tool,
                integration,
                action: Action::Command(Box::new(command)),
                timeout,
            })
        }
        ToolName::ListUsers => {
            let args: ListUsersArgs = read(tool, arguments)?;
            let size = args.page_size.unwrap_or(20);
            if !(1..=100).contains(&size) {
                return Err(
                    ToolError::invalid(format!("pageSize must be 1 to 100, not {size}")).into(),
                );
            }
            let cursor = match args.page_token.as_deref().map(str::trim) {
                None | Some("") => 0,
                Some(token) => token.parse::<i64>().ok().filter(|c| *c >= 0).ok_or_else(|| {
                    ToolError::invalid(format!(
                        "pageToken {token:?} is not one this tool returned (use the nextPageToken of the previous page, or leave it out for the first page)"
                    ))
                })?,
            };
            let keyword = args
                .keyword
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty());
            let (integration, timeout) = common_parts(&args.integration, &args.options, defaults)?;
            Ok(Planned {
                tool,
                integration,
                action: Action::ListUsers(ListUsersRequest {
                    dept_id: 1,
                    cursor,
                    size,
                    keyword,
                }),
                timeout,
            })
        }
        ToolName::ListChats => {
            let args: ListChatsArgs = read(tool, arguments)?;
            let (integration, timeout) = common_parts(&args.integration, &args.options, defaults)?;
            Ok(Planned {
                tool,
                integration,
                action: Action::ListChats,
                timeout,
            })
        }
    }
}

/// Reads a tool's arguments: a JSON object holding only the tool's parameters, each of its
/// type. Unknown parameters are refused by name rather than ignored (a misspelt `recipent_id`
/// must not silently send to the default recipient).
fn read<T: DeserializeOwned>(tool: ToolName, arguments: Value) -> Result<T, ToolError> {
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        Value::Object(map) => Value::Object(map),
        other => {
            return Err(ToolError::invalid(format!(
                "the arguments must be a JSON object, not {other}"
            )))
        }
    };
    let known = tool.parameters();
    let unknown: Vec<&str> = arguments
        .as_object()
        .expect("checked above")
        .keys()
        .map(String::as_str)
        .filter(|key| !known.contains(key))
        .collect();
    if !unknown.is_empty() {
        return Err(ToolError::invalid(format!(
            "unknown parameter(s) {unknown:?} for {}; its parameters are {known:?}",
            tool.as_str()
        )));
    }
    serde_json::from_value(arguments).map_err(|err| {
        ToolError::invalid(format!(
            "the arguments of {} are invalid: {err}",
            tool.as_str()
        ))
    })
}

/// Builds a send command to the resolved recipients.
fn send(
    tool: ToolName,
    target: &TargetArgs,
    options: &CallOptions,
    defaults: &ConnectionDefaults,
    command_id: &str,
    message: OutboundMessage,
    updatable: bool,
) -> Result<Planned, PlanError> {
    let (integration, timeout) = common_parts(&target.integration, options, defaults)?;
    let recipients =
        recipients(target, options.state.as_ref(), defaults).map_err(|error| PlanError {
            integration: integration.to_string(),
            error,
        })?;
    let command = Command {
        v: V1,
        id: command_id.to_owned(),
        integration_id: integration.clone(),
        op: Operation::Send(Send {
            recipients,
            mentions: None,
            message,
            updatable,
            state: options.state.clone(),
        }),
    };
    Ok(Planned {
        tool,
        integration,
        action: Action::Command(Box::new(command)),
        timeout,
    })
}

/// The integration and the timeout, which every call has.
fn common_parts(
    integration: &IntegrationArg,
    options: &CallOptions,
    defaults: &ConnectionDefaults,
) -> Result<(IntegrationId, Duration), ToolError> {
    let timeout_ms = options.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !TIMEOUT_MS_RANGE.contains(&timeout_ms) {
        return Err(ToolError::invalid(format!(
            "timeoutMs must be {} to {}, not {timeout_ms}",
            TIMEOUT_MS_RANGE.start(),
            TIMEOUT_MS_RANGE.end()
        )));
    }
    let state = options.state.as_ref();
    let raw = non_empty(integration.integration_id.as_deref())
        .or_else(|| state_string(state, STATE_INTEGRATION))
        .or_else(|| non_empty(defaults.integration_id.as_deref()))
        .ok_or_else(|| {
            ToolError::invalid(format!(
                "no integration: pass integration_id, or state.{STATE_INTEGRATION}, or configure the connection with ?integration_id="
            ))
        })?;
    // An integration id is short: its placeholders may add little, and a value that is no id
    // is not quoted back whole.
    let mut filler = Filler::with_limit(state, MAX_INTEGRATION_ID_BYTES);
    let filled = filler.text("integration_id", &raw);
    filler
        .finish()
        .map_err(|err| ToolError::new(err.code(), err.to_string()))?;
    let integration = filled.parse::<IntegrationId>().map_err(|err| {
        let shown: String = filled.chars().take(MAX_INTEGRATION_ID_BYTES).collect();
        ToolError::new(
            "unknown_integration",
            format!("{shown:?} is not an integration id: {err}"),
        )
    })?;
    Ok((integration, Duration::from_millis(timeout_ms)))
}

/// The recipients: explicit ids, else the run's conversation from `state`, else the
/// connection's recipient. The type comes with the ids unless `recipient_type` is given. A
/// connection's `recipient_type` is its `recipient_id`'s type; only a connection that names no
/// recipient sets, with it, the type of the ids its calls pass (a group's `chat_id` must not turn
/// an explicit user id into a chat id).
fn recipients(
    target: &TargetArgs,
    state: Option<&Map<String, Value>>,
    defaults: &ConnectionDefaults,
) -> Result<Vec<Recipient>, ToolError> {
    let listed = target.recipient_ids.as_ref().map_or(0, Vec::len);
    if listed > MAX_RECIPIENT_IDS {
        return Err(ToolError::invalid(format!(
            "recipient_ids lists {listed} recipients; one call reaches at most {MAX_RECIPIENT_IDS} (publish a send command on the bus for more)"
        )));
    }
    let mut explicit: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Some(id) = non_empty(target.recipient_id.as_deref()) {
        seen.insert(id.clone());
        explicit.push(id);
    }
    for id in target.recipient_ids.iter().flatten() {
        match non_empty(Some(id)) {
            Some(id) if seen.insert(id.clone()) => explicit.push(id),
            Some(_) => {}
            None => {
                return Err(ToolError::invalid(
                    "recipient_ids must not contain empty ids",
                ))
            }
        }
    }
    let given_type = target.recipient_type.map(RecipientType::from);
    let (ids, kind) = if !explicit.is_empty() {
        let connection_wide = match non_empty(defaults.recipient_id.as_deref()) {
            Some(_) => None,
            None => defaults.recipient_type.map(RecipientType::from),
        };
        let kind = given_type
            .or(connection_wide)
            .unwrap_or(RecipientType::UserId);
        (explicit, kind)
    } else if let Some(id) = state_string(state, STATE_RECIPIENT_ID) {
        let kind = match given_type {
            Some(kind) => kind,
            None => match state_string(state, STATE_RECIPIENT_TYPE) {
                Some(name) => state_recipient_type(&name)?,
                None => RecipientType::UserId,
            },
        };
        (vec![id], kind)
    } else if let Some(id) = non_empty(defaults.recipient_id.as_deref()) {
        let kind = given_type
            .or(defaults.recipient_type.map(RecipientType::from))
            .unwrap_or(RecipientType::UserId);
        (vec![id], kind)
    } else {
        return Err(ToolError::invalid(format!(
            "no recipient: pass recipient_id or recipient_ids, or state.{STATE_RECIPIENT_ID} (the run's conversation), or configure the connection with ?recipient_id="
        )));
    };
    Ok(ids.into_iter().map(|id| Recipient { kind, id }).collect())
}

/// The dispatcher's `dingtalk_recipient_type`: a recipient type the dispatcher writes (a
/// conversation with an external contact is answered through its `session_webhook`). Never
/// `webhook`: a custom robot's access token from a run's state would let a caller post to any
/// robot it knows the token of.
fn state_recipient_type(name: &str) -> Result<RecipientType, ToolError> {
    match serde_json::from_value(Value::String(name.to_owned())) {
        Ok(RecipientType::Webhook) | Err(_) => Err(ToolError::invalid(format!(
            "state.{STATE_RECIPIENT_TYPE} is {name:?}; expected user_id, union_id, open_id, chat_id or session_webhook"
        ))),
        Ok(kind) => Ok(kind),
    }
}

fn state_string(state: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    non_empty(state?.get(key)?.as_str())
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn required_text(field: &str, value: Option<String>) -> Result<String, ToolError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ToolError::invalid(format!("{field} is required and must not be empty")))
}

fn message_id(value: &str) -> Result<String, ToolError> {
    non_empty(Some(value)).ok_or_else(|| {
        ToolError::invalid("messageId is required: the messageId a send tool returned")
    })
}

fn markdown(text: Option<String>, title: Option<String>) -> Result<OutboundMessage, ToolError> {
    Ok(OutboundMessage::Markdown {
        title: title.filter(|t| !t.trim().is_empty()),
        text: required_text("markdown (mode=markdown)", text)?,
    })
}

fn interactive(card: Option<JsonObject>) -> Result<OutboundMessage, ToolError> {
    let card = card.ok_or_else(|| ToolError::invalid("card is required for mode=interactive"))?;
    Ok(OutboundMessage::Interactive {
        card: Value::Object(card.0),
    })
}

fn template(key: Option<String>, params: Option<JsonObject>) -> Result<OutboundMessage, ToolError> {
    Ok(OutboundMessage::Template {
        template_id: required_text("msgKey (mode=template)", key)?,
        params: params.map(|p| p.0).unwrap_or_default(),
    })
}

/// Extensions DingTalk shows as an image message.
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "gif", "bmp"];

fn file_message(args: &SendFileArgs) -> Result<OutboundMessage, ToolError> {
    if let Some(size) = args.size.filter(|size| *size > MAX_FILE_BYTES) {
        return Err(ToolError::new(
            "media_too_large",
            format!(
                "the file is {size} bytes; at most {MAX_FILE_BYTES} bytes (10 MiB) can be sent"
            ),
        ));
    }
    let url = non_empty(args.url.as_deref());
    let media_id = non_empty(args.media_id.as_deref());
    if url.is_some() == media_id.is_some() {
        return Err(ToolError::invalid(
            "exactly one of url and mediaId is required",
        ));
    }
    let name = non_empty(args.name.as_deref());
    let shown = name.clone().or_else(|| url.as_deref().map(last_segment));
    let is_image = match non_empty(args.mime_type.as_deref()) {
        Some(mime) => mime.to_ascii_lowercase().starts_with("image/"),
        None => shown.as_deref().is_some_and(|name| {
            name.rsplit_once('.').is_some_and(|(_, ext)| {
                IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
            })
        }),
    };
    let source = MediaSource {
        media_id,
        url,
        name,
    };
    Ok(if is_image {
        OutboundMessage::Image(source)
    } else {
        OutboundMessage::File(source)
    })
}

/// The last path segment of a URL, without its query.
fn last_segment(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// The tool's answer to a command result.
pub fn command_answer(planned: &Planned, result: &CommandResult) -> ToolResult {
    let Action::Command(command) = &planned.action else {
        unreachable!("only commands have command results")
    };
    // Update and recall act on (and keep) the messageId of the original send.
    let message_id = match &command.op {
        Operation::Send(_) => command.id.clone(),
        Operation::Update(update) => update.target.clone(),
        Operation::Recall(recall) => recall.target.clone(),
    };
    let results: Vec<ResultItem> = result
        .targets
        .iter()
        .map(|target| ResultItem {
            target: format!(
                "{}:{}",
                recipient_type_name(target.recipient.kind),
                target.recipient.id
            ),
            success: target.ok,
            message_id: target.ok.then(|| message_id.clone()),
            error: target.error.as_ref().map(describe),
        })
        .collect();
    let success_count = results.iter().filter(|r| r.success).count();
    let failure_count = results.len() - success_count;
    let mut data = json!({
        "commandId": result.command_id,
        "messageId": message_id,
        "status": result.status,
        "degraded": result.degraded,
    });
    if let Some(card) = &result.card_biz_id {
        data["cardBizId"] = json!(card);
    }
    let error = match result.status {
        Status::Ok => None,
        Status::Superseded => Some(ToolError::new(
            "superseded",
            format!("a newer update of {message_id} arrived before this one was applied; the newer content stands"),
        )),
        Status::Failed => {
            let cause = result
                .error
                .clone()
                .or_else(|| result.targets.iter().find_map(|t| t.error.clone()))
                .unwrap_or_else(|| ResultError {
                    code: "failed".to_owned(),
                    message: "the notifier reports a failure without a reason".to_owned(),
                    retryable: false,
                });
            Some(ToolError {
                code: cause.code.clone(),
                message: describe(&cause),
                command_id: Some(result.command_id.clone()),
                retryable: cause.retryable,
            })
        }
    };
    ToolResult {
        tool: planned.tool.as_str().to_owned(),
        integration_id: planned.integration.to_string(),
        success_count,
        failure_count,
        results,
        data,
        error,
    }
}

/// `code: message`, with hints for the codes a caller can act on.
fn describe(error: &ResultError) -> String {
    let hint = match error.code.as_str() {
        "60011" | "Forbidden.AccessDenied.AccessTokenPermissionDenied" => " (missing permission, DingTalk error 60011: grant the permission named above to the app in the DingTalk developer console)",
        "flowControlledStaffIdList" | "qps_limit" => " (throttled by DingTalk; the notifier already retried; try again later)",
        _ if error.retryable => " (retryable: calling again may succeed)",
        _ => "",
    };
    format!("{}: {}{hint}", error.code, error.message)
}

fn recipient_type_name(kind: RecipientType) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The answer of `list_users`: the users in `data`, and the token of the next page.
pub fn users_answer(planned: &Planned, reply: ListUsersReply) -> ToolResult {
    let next = reply
        .next_cursor
        .filter(|_| reply.has_more)
        .map(|c| c.to_string());
    listed(
        planned,
        json!({"users": reply.users, "hasMore": reply.has_more, "nextPageToken": next}),
    )
}

/// The answer of `list_chats`.
pub fn chats_answer(planned: &Planned, reply: ListChatsReply) -> ToolResult {
    listed(planned, json!({"chats": reply.chats}))
}

fn listed(planned: &Planned, data: Value) -> ToolResult {
    ToolResult {
        tool: planned.tool.as_str().to_owned(),
        integration_id: planned.integration.to_string(),
        success_count: 1,
        failure_count: 0,
        results: Vec::new(),
        data,
        error: None,
    }
}

/// A query's error reply as a tool error.
pub fn query_error(body: QueryErrorBody) -> ToolError {
    let error = ResultError {
        code: body.code,
        message: body.message,
        retryable: false,
    };
    ToolError::new(&error.code, describe(&error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::bus::result::TargetResult;
    use common::bus::Timestamp;

    fn planned(tool: ToolName, arguments: Value) -> Result<Planned, PlanError> {
        plan(tool, arguments, &ConnectionDefaults::default(), "cmd-1")
    }

    fn command(planned: &Planned) -> &Command {
        match &planned.action {
            Action::Command(command) => command,
            other => panic!("not a command: {other:?}"),
        }
    }

    fn send_of(planned: &Planned) -> &Send {
        match &command(planned).op {
            Operation::Send(send) => send,
            other => panic!("not a send: {other:?}"),
        }
    }

    #[test]
    fn text_goes_out_as_a_plain_message_to_the_named_recipient() {
        let p = planned(
            ToolName::SendText,
            json!({"content": "hi", "integration_id": "acme", "recipient_id": "u1"}),
        )
        .unwrap();
        assert_eq!(p.integration.as_str(), "acme");
        assert_eq!(p.timeout, Duration::from_secs(10));
        let command = command(&p);
        assert_eq!(command.id, "cmd-1");
        assert!(command.problems().is_empty());
        let send = send_of(&p);
        assert_eq!(
            send.recipients,
            [Recipient {
                kind: RecipientType::UserId,
                id: "u1".into()
            }]
        );
        assert_eq!(send.message, OutboundMessage::Text { text: "hi".into() });
        assert!(!send.updatable);
    }

    #[test]
    fn a_state_cannot_name_a_custom_robot_webhook_as_the_recipient() {
        let state = json!({"dingtalk_integration_id": "acme", "dingtalkRecipientId": "robot-token",
            "dingtalk_recipient_type": "webhook"});
        let err = planned(ToolName::SendText, json!({"content": "x", "state": state})).unwrap_err();
        assert_eq!(err.error.code, "invalid_arguments");
        assert!(err.error.message.contains("expected user_id"), "{err:?}");
    }

    #[test]
    fn the_target_defaults_to_the_runs_state_then_to_the_connection() {
        let state = json!({"dingtalk_integration_id": "beta", "dingtalkRecipientId": "cid9", "dingtalk_recipient_type": "chat_id"});
        let connection = ConnectionDefaults {
            integration_id: Some("acme".into()),
            recipient_type: Some(ToolRecipientType::UserId),
            recipient_id: Some("u7".into()),
        };
        let p = plan(
            ToolName::SendText,
            json!({"content": "hi", "state": state}),
            &connection,
            "c",
        )
        .unwrap();
        assert_eq!(p.integration.as_str(), "beta");
        assert_eq!(
            send_of(&p).recipients,
            [Recipient {
                kind: RecipientType::ChatId,
                id: "cid9".into()
            }]
        );
        let p = plan(
            ToolName::SendText,
            json!({"content": "hi"}),
            &connection,
            "c",
        )
        .unwrap();
        assert_eq!(p.integration.as_str(), "acme");
        assert_eq!(send_of(&p).recipients[0].id, "u7");
        let p = plan(
            ToolName::SendText,
            json!({"content": "hi", "recipient_ids": ["a", "b", "a"], "recipient_type": "union_id"}),
            &connection,
            "c",
        )
        .unwrap();
        let recipients = &send_of(&p).recipients;
        assert_eq!(recipients.len(), 2);
        assert!(recipients.iter().all(|r| r.kind == RecipientType::UnionId));
    }

    #[test]
    fn a_connections_recipient_type_belongs_to_its_recipient_not_to_the_calls_ids() {
        let team = ConnectionDefaults {
            integration_id: Some("acme".into()),
            recipient_type: Some(ToolRecipientType::ChatId),
            recipient_id: Some("cidTeam".into()),
        };
        let p = plan(
            ToolName::SendText,
            json!({"content": "hi", "recipient_id": "u1"}),
            &team,
            "c",
        )
        .unwrap();
        assert_eq!(
            send_of(&p).recipients,
            [Recipient {
                kind: RecipientType::UserId,
                id: "u1".into()
            }]
        );
        // Without a recipient of its own, the connection's type is the calls' default.
        let union_ids = ConnectionDefaults {
            recipient_id: None,
            recipient_type: Some(ToolRecipientType::UnionId),
            ..team
        };
        let p = plan(
            ToolName::SendText,
            json!({"content": "hi", "recipient_ids": ["x1", "x2"]}),
            &union_ids,
            "c",
        )
        .unwrap();
        assert!(send_of(&p)
            .recipients
            .iter()
            .all(|r| r.kind == RecipientType::UnionId));
    }

    #[test]
    fn missing_integration_or_recipient_is_a_clear_error() {
        let err = planned(ToolName::SendText, json!({"content": "hi"})).unwrap_err();
        assert_eq!(err.error.code, "invalid_arguments");
        assert!(err.error.message.contains("integration_id"), "{err:?}");
        let err = planned(
            ToolName::SendText,
            json!({"content": "hi", "integration_id": "acme"}),
        )
        .unwrap_err();
        assert!(err.error.message.contains("no recipient"), "{err:?}");
        assert_eq!(err.integration, "acme");
        let err = planned(
            ToolName::SendText,
            json!({"content": "hi", "integration_id": "a.b", "recipient_id": "u"}),
        )
        .unwrap_err();
        assert_eq!(err.error.code, "unknown_integration");
    }

    #[test]
    fn unknown_parameters_and_wrong_types_are_refused_by_name() {
        let err = planned(
            ToolName::SendText,
            json!({"content": "hi", "recipent_id": "u1", "integration_id": "acme"}),
        )
        .unwrap_err();
        assert!(err.error.message.contains("recipent_id"), "{err:?}");
        let err = planned(ToolName::SendText, json!({"content": 3})).unwrap_err();
        assert!(err.error.message.contains("invalid type"), "{err:?}");
        let err = planned(ToolName::RecallMessage, json!("x")).unwrap_err();
        assert!(err.error.message.contains("JSON object"), "{err:?}");
    }

    #[test]
    fn rich_modes_map_onto_the_bus_messages() {
        let base = json!({"integration_id": "acme", "recipient_id": "u1"});
        let with = |extra: Value| {
            let mut args = base.clone();
            args.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            planned(ToolName::SendRich, args)
        };
        let p = with(json!({"mode": "markdown", "markdown": "## Done\nok", "updatable": true}))
            .unwrap();
        assert_eq!(
            send_of(&p).message,
            OutboundMessage::Markdown {
                title: None,
                text: "## Done\nok".into()
            }
        );
        assert!(send_of(&p).updatable);
        let p = with(json!({"mode": "interactive", "card": "{\"contents\": []}"})).unwrap();
        assert_eq!(
            send_of(&p).message,
            OutboundMessage::Interactive {
                card: json!({"contents": []})
            }
        );
        let p = with(json!({"mode": "template", "msgKey": "tpl.1", "msgParam": {"a": 1}})).unwrap();
        let OutboundMessage::Template {
            template_id,
            params,
        } = &send_of(&p).message
        else {
            panic!("not a template")
        };
        assert_eq!(template_id, "tpl.1");
        assert_eq!(params["a"], 1);
        let err = with(json!({"mode": "markdown"})).unwrap_err();
        assert!(err.error.message.contains("markdown"), "{err:?}");
        let err = with(json!({"mode": "interactive", "card": "not json"})).unwrap_err();
        assert!(err.error.message.contains("not valid JSON"), "{err:?}");
        let err = with(json!({"mode": "template"})).unwrap_err();
        assert!(err.error.message.contains("msgKey"), "{err:?}");
    }

    #[test]
    fn update_degrades_to_resend_unless_told_to_fail() {
        let p = planned(
            ToolName::UpdateMessage,
            json!({"messageId": "m1", "mode": "text", "content": "v2", "integration_id": "acme"}),
        )
        .unwrap();
        let Operation::Update(update) = &command(&p).op else {
            panic!("not an update")
        };
        assert_eq!(update.target, "m1");
        assert_eq!(update.degrade, Some(Degrade::Resend));
        let p = planned(
            ToolName::UpdateMessage,
            json!({"messageId": "m1", "mode": "markdown", "markdown": "# v2", "degrade": "fail", "integration_id": "acme"}),
        )
        .unwrap();
        let Operation::Update(update) = &command(&p).op else {
            panic!("not an update")
        };
        assert_eq!(update.degrade, None);
        let err = planned(
            ToolName::UpdateMessage,
            json!({"messageId": " ", "mode": "text", "content": "x", "integration_id": "acme"}),
        )
        .unwrap_err();
        assert!(err.error.message.contains("messageId"));
    }

    #[test]
    fn list_users_maps_page_size_and_token_onto_the_query() {
        let p = planned(
            ToolName::ListUsers,
            json!({"keyword": " li ", "pageSize": 5, "pageToken": "40", "integration_id": "acme"}),
        )
        .unwrap();
        assert_eq!(
            p.action,
            Action::ListUsers(ListUsersRequest {
                dept_id: 1,
                cursor: 40,
                size: 5,
                keyword: Some("li".into())
            })
        );
        for bad in [
            json!({"pageSize": 0}),
            json!({"pageSize": 101}),
            json!({"pageToken": "x"}),
        ] {
            let mut args = bad.clone();
            args["integration_id"] = json!("acme");
            assert_eq!(
                planned(ToolName::ListUsers, args).unwrap_err().error.code,
                "invalid_arguments",
                "{bad}"
            );
        }
    }

    #[test]
    fn files_are_images_or_files_and_oversized_ones_are_refused_at_once() {
        let file = |extra: Value| {
            let mut args = json!({"integration_id": "acme", "recipient_id": "u1"});
            args.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            planned(ToolName::SendFile, args).map(|p| send_of(&p).message.clone())
        };
        assert!(matches!(
            file(json!({"url": "https://f.example.com/a/chart.PNG?x=1"})).unwrap(),
            OutboundMessage::Image(_)
        ));
        assert!(matches!(
            file(json!({"mediaId": "@m1", "mimeType": "image/jpeg"})).unwrap(),
            OutboundMessage::Image(_)
        ));
        assert!(matches!(
            file(json!({"url": "https://f.example.com/report.pdf", "name": "Q3.pdf"})).unwrap(),
            OutboundMessage::File(_)
        ));
        let err =
            file(json!({"url": "https://f.example.com/big.zip", "size": 10 * 1024 * 1024 + 1}))
                .unwrap_err();
        assert_eq!(err.error.code, "media_too_large");
        assert!(err.error.message.contains("10 MiB"));
        let err = file(json!({})).unwrap_err();
        assert!(err.error.message.contains("url and mediaId"));
    }

    #[test]
    fn timeouts_are_bounded() {
        let err = planned(
            ToolName::ListChats,
            json!({"integration_id": "acme", "timeoutMs": 50}),
        )
        .unwrap_err();
        assert!(err.error.message.contains("timeoutMs"));
        let p = planned(
            ToolName::ListChats,
            json!({"integration_id": "acme", "timeoutMs": 250}),
        )
        .unwrap();
        assert_eq!(p.timeout, Duration::from_millis(250));
    }

    #[test]
    fn a_result_becomes_the_seeds_shape_with_one_entry_per_recipient() {
        let p = planned(
            ToolName::SendText,
            json!({"content": "hi", "integration_id": "acme", "recipient_ids": ["u1", "u2"]}),
        )
        .unwrap();
        let result = CommandResult {
            v: V1,
            command_id: "cmd-1".into(),
            integration_id: "acme".into(),
            op: None,
            status: Status::Ok,
            process_query_key: None,
            card_biz_id: None,
            targets: vec![
                TargetResult {
                    recipient: Recipient {
                        kind: RecipientType::UserId,
                        id: "u1".into(),
                    },
                    ok: true,
                    error: None,
                    process_query_key: None,
                    card_biz_id: None,
                },
                TargetResult {
                    recipient: Recipient {
                        kind: RecipientType::UserId,
                        id: "u2".into(),
                    },
                    ok: false,
                    error: Some(ResultError {
                        code: "60011".into(),
                        message: "the app lacks qyapi_x".into(),
                        retryable: false,
                    }),
                    process_query_key: None,
                    card_biz_id: None,
                },
            ],
            degraded: false,
            error: None,
            finished_at: Timestamp::now(),
        };
        let answer = command_answer(&p, &result);
        let value = serde_json::to_value(&answer).unwrap();
        assert_eq!(value["tool"], "dingtalk_send_text_notification");
        assert_eq!(value["integrationId"], "acme");
        assert_eq!(value["successCount"], 1);
        assert_eq!(value["failureCount"], 1);
        assert_eq!(
            value["results"][0],
            json!({"target": "user_id:u1", "success": true, "messageId": "cmd-1"})
        );
        assert_eq!(value["results"][1]["messageId"], Value::Null);
        assert!(value["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("60011"));
        assert_eq!(value["data"]["commandId"], "cmd-1");
        assert!(value.get("error").is_none());
    }
}
