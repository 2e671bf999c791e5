//! Queries over core NATS request/reply: `dingtalk.query.{integration_id}.list_users` and
//! `.list_chats`, answered by any replica (queue group `notifier`), at most
//! `NOTIFIER_CONCURRENCY` at once per replica.
//!
//! `list_users` pages through one department (`topapi/v2/user/list`); with a `keyword` it walks
//! the department tree breadth-first from `dept_id`, keeping members whose name contains the
//! keyword (case-insensitive), within [`MAX_WALK_CALLS`] DingTalk calls — a large org is
//! searched partially rather than slowly. `list_chats` reads the groups the dispatcher recorded.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use common::bus::query::{
    ListChatsReply, ListUsersReply, ListUsersRequest, QueryError, QueryErrorBody, User, LIST_CHATS,
    LIST_USERS,
};
use common::registry::{IntegrationId, Registry};
use common::shutdown::Shutdown;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::answers;
use crate::calls;
use crate::dingtalk::{App, DingTalk, Target};
use crate::metrics;
use crate::records::Records;

/// The queue group replicas share.
pub const QUEUE_GROUP: &str = "notifier";
/// DingTalk calls one keyword search may make.
pub const MAX_WALK_CALLS: usize = 100;
/// Largest page DingTalk serves (and we accept).
const MAX_PAGE: u32 = 100;
/// Largest cursor DingTalk accepts (PROTOCOL §5).
const MAX_CURSOR: i64 = 100_000;

/// The subscriptions of both queries.
pub type Requests = futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>;

/// Answers queries.
#[derive(Clone)]
pub struct Queries {
    dingtalk: DingTalk,
    registry: Registry,
    records: Records,
}

/// A query's failure: `{error: {code, message}}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFailure {
    /// Stable code.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl QueryFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl Queries {
    /// Queries over the service's connections.
    pub fn new(dingtalk: DingTalk, registry: Registry, records: Records) -> Self {
        Self {
            dingtalk,
            registry,
            records,
        }
    }

    /// Subscribes to both queries in the queue group (before [`Queries::serve`], so that a
    /// started notifier answers at once).
    pub async fn subscribe(
        nats: &async_nats::Client,
    ) -> Result<Requests, async_nats::SubscribeError> {
        let users = nats
            .queue_subscribe(
                format!("dingtalk.query.*.{LIST_USERS}"),
                QUEUE_GROUP.to_owned(),
            )
            .await?;
        let chats = nats
            .queue_subscribe(
                format!("dingtalk.query.*.{LIST_CHATS}"),
                QUEUE_GROUP.to_owned(),
            )
            .await?;
        Ok(futures::stream::select(users, chats))
    }

    /// Serves the subscribed queries until `shutdown`; in-flight answers finish first.
    pub async fn serve(
        self,
        nats: async_nats::Client,
        mut requests: Requests,
        concurrency: usize,
        shutdown: Shutdown,
    ) {
        let semaphore = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = shutdown.wait() => break,
                permit = Arc::clone(&semaphore).acquire_owned() => permit.expect("never closed"),
            };
            let request = tokio::select! {
                () = shutdown.wait() => break,
                request = requests.next() => request,
            };
            let Some(request) = request else { break };
            let Some(reply_to) = request.reply.clone() else {
                continue;
            };
            let queries = self.clone();
            let nats = nats.clone();
            tasks.spawn(async move {
                let body = queries.answer(&request.subject, &request.payload).await;
                if let Err(err) = nats.publish(reply_to, body).await {
                    tracing::warn!(%err, "cannot answer a query");
                }
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// The reply body of one request.
    pub async fn answer(&self, subject: &str, payload: &[u8]) -> Bytes {
        let mut tokens = subject.split('.');
        let (integration, name) = match (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) {
            (Some("dingtalk"), Some("query"), Some(integration), Some(name), None) => {
                (integration, name)
            }
            _ => ("", ""),
        };
        let (label, reply) = match name {
            LIST_USERS => (
                LIST_USERS,
                self.list_users(integration, payload)
                    .await
                    .map(|r| to_json(&r)),
            ),
            LIST_CHATS => (
                LIST_CHATS,
                self.list_chats(integration).await.map(|r| to_json(&r)),
            ),
            _ => (
                "unknown",
                Err(QueryFailure::new(
                    "unknown_query",
                    format!("no query on {subject}; queries are {LIST_USERS} and {LIST_CHATS}"),
                )),
            ),
        };
        metrics::query(label, reply.is_ok());
        match reply {
            Ok(body) => body,
            Err(failure) => to_json(&QueryError {
                error: QueryErrorBody {
                    code: failure.code,
                    message: failure.message,
                },
            }),
        }
    }

    async fn app(&self, integration: &str) -> Result<Target, QueryFailure> {
        let id: IntegrationId = integration.parse().map_err(|err| {
            QueryFailure::new(
                "unknown_integration",
                format!("{integration:?} is not an integration id: {err}"),
            )
        })?;
        match self.registry.get_integration(&id).await {
            Ok(Some(integration)) => Ok(Target::App(App::from_integration(&integration))),
            Ok(None) => Err(QueryFailure::new(
                "unknown_integration",
                format!("no integration {id} is registered"),
            )),
            Err(err) => Err(QueryFailure::new(
                "unavailable",
                format!("the registry is unavailable: {err}"),
            )),
        }
    }

    async fn list_chats(&self, integration: &str) -> Result<ListChatsReply, QueryFailure> {
        self.app(integration).await?;
        let chats = self.records.chats(integration).await.map_err(|err| {
            QueryFailure::new("unavailable", format!("Redis is unavailable: {err}"))
        })?;
        Ok(ListChatsReply { chats })
    }

    async fn list_users(
        &self,
        integration: &str,
        payload: &[u8],
    ) -> Result<ListUsersReply, QueryFailure> {
        let request = parse_request(payload)?;
        let app = self.app(integration).await?;
        match request
            .keyword
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            None => {
                let page = self
                    .page(&app, request.dept_id, request.cursor, request.size)
                    .await?;
                Ok(ListUsersReply {
                    users: page.users,
                    next_cursor: page.has_more.then_some(page.next_cursor),
                    has_more: page.has_more,
                })
            }
            Some(keyword) => self.search(&app, &request, keyword).await,
        }
    }

    /// One page of one department's members.
    async fn page(
        &self,
        app: &Target,
        dept_id: i64,
        cursor: i64,
        size: u32,
    ) -> Result<Page, QueryFailure> {
        let answer = self
            .dingtalk
            .call(app, calls::user_list(dept_id, cursor, size))
            .await
            .map_err(|err| {
                let (code, message) = answers::contact_error(&err);
                QueryFailure { code, message }
            })?;
        Ok(parse_page(&answer, cursor))
    }

    /// Members whose name contains `keyword`, walking sub-departments breadth-first.
    async fn search(
        &self,
        app: &Target,
        request: &ListUsersRequest,
        keyword: &str,
    ) -> Result<ListUsersReply, QueryFailure> {
        let needle = keyword.to_lowercase();
        let wanted = usize::try_from(request.cursor).unwrap_or(0) + request.size as usize + 1;
        let mut matches: Vec<User> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut departments: VecDeque<i64> = VecDeque::from([request.dept_id]);
        let mut visited: HashSet<i64> = HashSet::new();
        let mut calls_left = MAX_WALK_CALLS;
        'walk: while let Some(dept_id) = departments.pop_front() {
            if !visited.insert(dept_id) {
                continue;
            }
            let mut cursor = 0;
            loop {
                if calls_left == 0 || matches.len() >= wanted {
                    break 'walk;
                }
                calls_left -= 1;
                let page = self.page(app, dept_id, cursor, MAX_PAGE).await?;
                for user in page.users {
                    if user.name.to_lowercase().contains(&needle)
                        && seen.insert(user.user_id.clone())
                    {
                        matches.push(user);
                    }
                }
                if !page.has_more {
                    break;
                }
                cursor = page.next_cursor;
            }
            if calls_left == 0 {
                break;
            }
            calls_left -= 1;
            let answer = self
                .dingtalk
                .call(app, calls::dept_list_sub(dept_id))
                .await
                .map_err(|err| {
                    let (code, message) = answers::contact_error(&err);
                    QueryFailure { code, message }
                })?;
            departments.extend(sub_departments(&answer));
        }
        let start = usize::try_from(request.cursor)
            .unwrap_or(0)
            .min(matches.len());
        let end = (start + request.size as usize).min(matches.len());
        let has_more = matches.len() > end;
        Ok(ListUsersReply {
            users: matches.drain(start..end).collect(),
            next_cursor: has_more.then_some(end as i64),
            has_more,
        })
    }
}

/// One page as DingTalk answered it.
#[derive(Debug, Clone, PartialEq)]
struct Page {
    users: Vec<User>,
    has_more: bool,
    next_cursor: i64,
}

/// Reads `{result: {list: [{userid, name, …}], has_more, next_cursor}}`.
fn parse_page(answer: &Value, cursor: i64) -> Page {
    let result = answer.get("result").unwrap_or(&Value::Null);
    let users: Vec<User> = result
        .get("list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let mut fields = item.as_object()?.clone();
            let user_id = fields.remove("userid")?.as_str()?.to_owned();
            let name = fields
                .remove("name")
                .and_then(|n| n.as_str().map(str::to_owned))
                .unwrap_or_default();
            Some(User {
                user_id,
                name,
                extra: fields,
            })
        })
        .collect();
    let has_more = result
        .get("has_more")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let next_cursor = result
        .get("next_cursor")
        .and_then(Value::as_i64)
        .unwrap_or(cursor + users.len() as i64);
    Page {
        users,
        has_more,
        next_cursor,
    }
}

/// The ids of `{result: [{dept_id, …}]}`.
fn sub_departments(answer: &Value) -> Vec<i64> {
    answer
        .get("result")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|dept| dept.get("dept_id").and_then(Value::as_i64))
        .collect()
}

/// Reads a `list_users` request (an empty body means all defaults) and checks its bounds.
fn parse_request(payload: &[u8]) -> Result<ListUsersRequest, QueryFailure> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    let request: ListUsersRequest = serde_json::from_slice(payload).map_err(|err| {
        QueryFailure::new(
            "invalid_request",
            format!("the list_users request cannot be read: {err}"),
        )
    })?;
    if !(1..=MAX_PAGE).contains(&request.size) {
        return Err(QueryFailure::new(
            "invalid_request",
            format!("size must be 1 to {MAX_PAGE}, got {}", request.size),
        ));
    }
    if !(0..=MAX_CURSOR).contains(&request.cursor) {
        return Err(QueryFailure::new(
            "invalid_request",
            format!("cursor must be 0 to {MAX_CURSOR}, got {}", request.cursor),
        ));
    }
    if request.dept_id < 1 {
        return Err(QueryFailure::new(
            "invalid_request",
            format!(
                "dept_id must be at least 1 (the root), got {}",
                request.dept_id
            ),
        ));
    }
    Ok(request)
}

fn to_json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("query replies serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_request_takes_the_documented_defaults() {
        let request = parse_request(b"").unwrap();
        assert_eq!(
            (
                request.dept_id,
                request.cursor,
                request.size,
                request.keyword
            ),
            (1, 0, 20, None)
        );
        assert_eq!(
            parse_request(br#"{"size": 0}"#).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            parse_request(br#"{"size": 101}"#).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            parse_request(br#"{"dept_id": 0}"#).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(parse_request(b"nope").unwrap_err().code, "invalid_request");
    }

    #[test]
    fn a_page_keeps_dingtalks_extra_fields() {
        let page = parse_page(
            &json!({"errcode": 0, "result": {"has_more": true, "next_cursor": 20,
                "list": [{"userid": "u1", "name": "Li Lei", "dept_id_list": [2]}, {"name": "no id"}]}}),
            0,
        );
        assert_eq!(page.users.len(), 1);
        assert_eq!(page.users[0].user_id, "u1");
        assert_eq!(page.users[0].extra["dept_id_list"], json!([2]));
        assert!(page.has_more);
        assert_eq!(page.next_cursor, 20);
        assert_eq!(
            sub_departments(&json!({"result": [{"dept_id": 2}, {"dept_id": 3}]})),
            [2, 3]
        );
    }
}
