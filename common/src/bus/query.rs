//! Queries answered by the notifier over NATS request/reply (`dingtalk.query.{integration_id}.{name}`).
//! Not stored in a stream: a query is cheap to repeat.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Request name of [`ListUsersRequest`].
pub const LIST_USERS: &str = "list_users";
/// Request name of list chats (empty request body or `{}`).
pub const LIST_CHATS: &str = "list_chats";

/// `list_users`: members of a department, optionally filtered by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListUsersRequest {
    /// The department (1 = the organization's root).
    #[serde(default = "root_department")]
    pub dept_id: i64,
    /// Where to continue (the previous reply's `next_cursor`).
    #[serde(default)]
    pub cursor: i64,
    /// Page size, 1 to 100.
    #[serde(default = "default_page_size")]
    pub size: u32,
    /// Only users whose name contains this (walks sub-departments, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<String>,
}

fn root_department() -> i64 {
    1
}

fn default_page_size() -> u32 {
    20
}

/// Reply to `list_users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListUsersReply {
    /// One page of users.
    pub users: Vec<User>,
    /// Pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<i64>,
    /// Whether more pages follow.
    pub has_more: bool,
}

/// An organization member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    /// The userId (staff id).
    pub user_id: String,
    /// Display name.
    pub name: String,
    /// Further fields DingTalk returned (department ids, title, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Reply to `list_chats`: the groups the robot has received messages from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListChatsReply {
    /// Known groups, most recently active first.
    pub chats: Vec<Chat>,
}

/// A group the robot is in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Chat {
    /// The openConversationId (`cid…`), usable as a `chat_id` recipient.
    pub chat_id: String,
    /// The group's name when last seen.
    pub title: String,
    /// When the robot last received a message from it.
    pub last_seen: Timestamp,
}

/// Reply of any query that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueryError {
    /// What went wrong.
    pub error: QueryErrorBody,
}

/// The error inside [`QueryError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueryErrorBody {
    /// Stable code (ours or DingTalk's, e.g. `60011`).
    pub code: String,
    /// What went wrong and how to fix it (e.g. the permission to grant).
    pub message: String,
}
