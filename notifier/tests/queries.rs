//! `dingtalk.query.{integration_id}.list_users` and `.list_chats` over NATS request/reply.

mod support;

use std::time::Duration;

use common::bus::query::{ListChatsReply, ListUsersReply, QueryError};
use dingtalk_sim::{Api, CallFilter, Fault, FaultKind};
use futures::StreamExt;
use serde_json::{json, Value};
use support::Bed;

async fn ask(bed: &Bed, subject: &str, request: Value) -> Value {
    let reply = bed
        .client
        .request(subject.to_owned(), request.to_string().into())
        .await
        .expect("the notifier answers");
    serde_json::from_slice(&reply.payload).unwrap()
}

fn ids(reply: &ListUsersReply) -> Vec<&str> {
    reply.users.iter().map(|u| u.user_id.as_str()).collect()
}

#[tokio::test]
async fn list_users_pages_through_a_department() {
    let bed = Bed::start().await;
    let first: ListUsersReply = serde_json::from_value(
        ask(
            &bed,
            "dingtalk.query.acme.list_users",
            json!({"dept_id": 2, "size": 1}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(ids(&first), ["user001"]);
    assert_eq!(first.users[0].name, "Li Lei");
    assert_eq!(first.users[0].extra["dept_id_list"], json!([2]));
    assert!(first.has_more);
    let next: ListUsersReply = serde_json::from_value(
        ask(
            &bed,
            "dingtalk.query.acme.list_users",
            json!({"dept_id": 2, "size": 1, "cursor": first.next_cursor}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(ids(&next), ["user002"]);
    assert!(!next.has_more);
    assert_eq!(next.next_cursor, None);
    let root: ListUsersReply =
        serde_json::from_value(ask(&bed, "dingtalk.query.acme.list_users", json!({})).await)
            .unwrap();
    assert_eq!(ids(&root), ["manager001"]);
}

#[tokio::test]
async fn a_keyword_filters_by_name_while_walking_sub_departments() {
    let bed = Bed::start().await;
    let reply: ListUsersReply = serde_json::from_value(
        ask(
            &bed,
            "dingtalk.query.acme.list_users",
            json!({"keyword": "wang"}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        ids(&reply),
        ["user004"],
        "Wang Fang sits in Platform (1 → 2 → 4)"
    );
    let reply: ListUsersReply = serde_json::from_value(
        ask(
            &bed,
            "dingtalk.query.acme.list_users",
            json!({"keyword": "e", "size": 2}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(reply.users.len(), 2);
    assert!(reply.has_more);
    assert_eq!(reply.next_cursor, Some(2));
}

#[tokio::test]
async fn a_missing_contact_permission_answers_60011_naming_it() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::UserList))
        .unwrap();
    let reply: QueryError =
        serde_json::from_value(ask(&bed, "dingtalk.query.acme.list_users", json!({})).await)
            .unwrap();
    assert_eq!(reply.error.code, "60011");
    assert!(
        reply.error.message.contains("qyapi_get_department_member"),
        "{}",
        reply.error.message
    );
    let bad: QueryError = serde_json::from_value(
        ask(&bed, "dingtalk.query.acme.list_users", json!({"size": 500})).await,
    )
    .unwrap();
    assert_eq!(bad.error.code, "invalid_request");
    let unknown: QueryError =
        serde_json::from_value(ask(&bed, "dingtalk.query.ghost.list_users", json!({})).await)
            .unwrap();
    assert_eq!(unknown.error.code, "unknown_integration");
}

#[tokio::test]
async fn list_chats_answers_from_the_groups_the_dispatcher_recorded() {
    let bed = Bed::start().await;
    let mut redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg("dtg:chats:acme")
        .arg("cidOld==")
        .arg(r#"{"title":"old","last_seen":"2026-11-01T10:00:00Z"}"#)
        .arg("cidNew==")
        .arg(r#"{"title":"ops","last_seen":"2026-11-25T10:00:00Z"}"#)
        .query_async(&mut redis)
        .await
        .unwrap();
    let reply: ListChatsReply =
        serde_json::from_value(ask(&bed, "dingtalk.query.acme.list_chats", json!({})).await)
            .unwrap();
    let chats: Vec<(&str, &str)> = reply
        .chats
        .iter()
        .map(|c| (c.chat_id.as_str(), c.title.as_str()))
        .collect();
    assert_eq!(chats, [("cidNew==", "ops"), ("cidOld==", "old")]);
    let empty: ListChatsReply =
        serde_json::from_value(ask(&bed, "dingtalk.query.beta.list_chats", json!({})).await)
            .unwrap();
    assert!(empty.chats.is_empty());
}

#[tokio::test]
async fn two_replicas_answer_each_query_exactly_once() {
    let bed = Bed::start().await;
    let _second = bed.another_replica().await;
    let inbox = bed.client.new_inbox();
    let mut replies = bed.client.subscribe(inbox.clone()).await.unwrap();
    const EACH: usize = 20;
    for n in 0..EACH {
        bed.client
            .publish_with_reply(
                "dingtalk.query.acme.list_users",
                inbox.clone(),
                json!({"dept_id": 2, "size": 1 + n % 2}).to_string().into(),
            )
            .await
            .unwrap();
        bed.client
            .publish_with_reply("dingtalk.query.acme.list_chats", inbox.clone(), "{}".into())
            .await
            .unwrap();
    }
    bed.client.flush().await.unwrap();
    let (mut users, mut chats) = (0, 0);
    // Every reply, then a quiet second in which a second answer to any request would arrive.
    while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
        let body: Value = serde_json::from_slice(&reply.payload).unwrap();
        if body.get("users").is_some() {
            users += 1;
        } else if body.get("chats").is_some() {
            chats += 1;
        } else {
            panic!("unexpected reply {body}");
        }
        if users + chats == 2 * EACH {
            bed.settle().await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            if let Ok(Some(extra)) =
                tokio::time::timeout(Duration::from_millis(10), replies.next()).await
            {
                panic!(
                    "a query was answered twice: {}",
                    String::from_utf8_lossy(&extra.payload)
                );
            }
            break;
        }
    }
    assert_eq!((users, chats), (EACH, EACH));
    assert_eq!(
        bed.sim.state().calls(&CallFilter::api(Api::UserList)).len(),
        EACH,
        "each list_users query called DingTalk once"
    );
}
