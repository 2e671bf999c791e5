//! `gatewayctl dlq` against a real nats-server and redis-server (the harness, free ports): the
//! notifier's records decide what may run again, and a replay changes nothing in a dry run.

use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use common::bus::result::CommandResult;
use common::bus::streams::{COMMANDS, DLQ, EVENTS};
use common::bus::{dlq_headers, streams, MSG_ID_HEADER};
use common::config::StreamSettings;
use gatewayctl::dlq::{self, Filter, Verdict};
use notifier::records::{Forget, Records};
use test_harness::{NatsServer, RedisServer};
use time::OffsetDateTime;

/// A short duplicate window, so dead letters a second old may be replayed.
const WINDOW: Duration = Duration::from_secs(1);

struct Bus {
    _nats: NatsServer,
    _redis: RedisServer,
    js: Context,
    records: Records,
}

async fn bus() -> Bus {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let settings = StreamSettings {
        duplicate_window: WINDOW,
        ..StreamSettings::default()
    };
    streams::provision(&js, &settings).await.unwrap();
    let records = Records::new(common::redis::connect(&redis.url()).await.unwrap());
    Bus {
        _nats: nats,
        _redis: redis,
        js,
        records,
    }
}

async fn dead_letter(js: &Context, stage: &str, integration: &str, original: &str, body: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(dlq_headers::ORIGINAL_SUBJECT, original);
    headers.insert(
        dlq_headers::REASON,
        "robot_not_in_group: add the robot to the group",
    );
    headers.insert(dlq_headers::ATTEMPTS, "1");
    headers.insert(
        MSG_ID_HEADER,
        format!("dlq:{stage}:{original}:{body}").as_str(),
    );
    headers.insert("X-Request-Id", "req-7");
    js.publish_with_headers(
        format!("dingtalk.dlq.{stage}.{integration}"),
        headers,
        body.to_owned().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

fn result(command_id: &str, status: &str, ok: bool) -> CommandResult {
    serde_json::from_value(serde_json::json!({
        "v": 1, "command_id": command_id, "integration_id": "acme", "op": "send", "status": status,
        "targets": [{"recipient": {"type": "user_id", "id": "u1"}, "ok": ok,
                     "error": {"code": "robot_not_in_group", "message": "x", "retryable": false}}],
        "finished_at": "2026-11-25T10:00:00Z"
    }))
    .unwrap()
}

fn command(id: &str) -> String {
    serde_json::json!({"v": 1, "id": id, "integration_id": "acme", "op": "send",
        "recipients": [{"type": "user_id", "id": "u1"}], "message": {"type": "text", "text": "hi"}})
    .to_string()
}

async fn messages(js: &Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test]
async fn replay_reruns_the_failed_command_skips_the_delivered_one_and_renames_the_event() {
    let bus = bus().await;
    let js = &bus.js;
    bus.records
        .finish("acme", &result("c-failed", "failed", false), None)
        .await
        .unwrap();
    bus.records
        .finish("acme", &result("c-delivered", "ok", true), None)
        .await
        .unwrap();
    dead_letter(
        js,
        "notifier",
        "acme",
        "dingtalk.commands.acme.send",
        &command("c-failed"),
    )
    .await;
    dead_letter(
        js,
        "notifier",
        "acme",
        "dingtalk.commands.acme.send",
        &command("c-delivered"),
    )
    .await;
    let event = r#"{"v":1,"id":"acme:m1","integration_id":"acme","kind":"message"}"#;
    dead_letter(
        js,
        "dispatcher",
        "acme",
        "dingtalk.events.acme.message",
        event,
    )
    .await;
    dead_letter(
        js,
        "notifier",
        "other",
        "dingtalk.commands.other.send",
        &command("c-other"),
    )
    .await;
    tokio::time::sleep(WINDOW + Duration::from_millis(200)).await;

    let acme = Filter {
        integration: Some("acme".into()),
        ..Filter::default()
    };

    // A dry run decides and changes nothing.
    let planned = dlq::replay(js, &bus.records, &acme, 100, true)
        .await
        .unwrap();
    let verdicts: Vec<_> = planned.iter().map(|r| (r.sequence, &r.verdict)).collect();
    assert_eq!(planned.len(), 3, "{verdicts:?}");
    assert!(
        matches!(planned[0].verdict, Verdict::Replay { .. }),
        "{verdicts:?}"
    );
    assert!(
        matches!(&planned[1].verdict, Verdict::Skip(why) if why.contains("delivered")),
        "{verdicts:?}"
    );
    assert!(
        matches!(planned[2].verdict, Verdict::Replay { .. }),
        "{verdicts:?}"
    );
    assert!(planned.iter().all(|r| !r.published));
    assert_eq!(messages(js, COMMANDS).await, 0);
    assert_eq!(messages(js, EVENTS).await, 0);
    assert_eq!(messages(js, DLQ).await, 4);
    assert_eq!(
        bus.records.replay_state("acme", "c-failed").await.unwrap(),
        Forget::Forgettable
    );

    // The real run.
    let done = dlq::replay(js, &bus.records, &acme, 100, false)
        .await
        .unwrap();
    assert_eq!(done.iter().filter(|r| r.published).count(), 2);

    let commands = js.get_stream(COMMANDS).await.unwrap();
    let rerun = commands
        .get_last_raw_message_by_subject("dingtalk.commands.acme.send")
        .await
        .unwrap();
    assert_eq!(rerun.payload.as_ref(), command("c-failed").as_bytes());
    let headers = &rerun.headers;
    let msg_id = headers.get(MSG_ID_HEADER).unwrap().as_str();
    assert!(
        msg_id.starts_with("replay:") && msg_id.ends_with(":c-failed"),
        "{msg_id}"
    );
    assert_eq!(headers.get("X-Request-Id").unwrap().as_str(), "req-7");
    assert!(headers.get(dlq_headers::REASON).is_none());
    assert_eq!(
        messages(js, COMMANDS).await,
        1,
        "the delivered command was sent again"
    );
    // Its failed result is forgotten, so the notifier executes it afresh.
    assert_eq!(
        bus.records.replay_state("acme", "c-failed").await.unwrap(),
        Forget::Absent
    );
    assert!(bus
        .records
        .result("acme", "c-delivered")
        .await
        .unwrap()
        .is_some());

    let events = js.get_stream(EVENTS).await.unwrap();
    let replayed = events
        .get_last_raw_message_by_subject("dingtalk.events.acme.message")
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&replayed.payload).unwrap();
    let new_id = body["id"].as_str().unwrap();
    assert!(new_id.starts_with("acme:m1:replay:"), "{new_id}");
    assert_eq!(
        replayed.headers.get(MSG_ID_HEADER).unwrap().as_str(),
        new_id
    );

    // Replayed dead letters leave the DLQ; the skipped one and the other integration's stay.
    let left = dlq::read(js, &Filter::default(), 100).await.unwrap();
    let ids: Vec<_> = left.iter().filter_map(|l| l.body_id()).collect();
    assert_eq!(ids, ["c-delivered", "c-other"]);

    // A second run finds nothing more to send.
    let again = dlq::replay(js, &bus.records, &acme, 100, false)
        .await
        .unwrap();
    assert!(again.iter().all(|r| !r.published), "{again:?}");
    assert_eq!(messages(js, COMMANDS).await, 1);
    assert_eq!(messages(js, EVENTS).await, 1);
}

#[tokio::test]
async fn list_filters_by_stage_reason_and_time() {
    let bus = bus().await;
    let js = &bus.js;
    dead_letter(
        js,
        "notifier",
        "acme",
        "dingtalk.commands.acme.send",
        &command("c1"),
    )
    .await;
    dead_letter(
        js,
        "dispatcher",
        "acme",
        "dingtalk.events.acme.message",
        r#"{"id":"acme:m1"}"#,
    )
    .await;

    let all = dlq::read(js, &Filter::default(), 100).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].stage, "notifier");
    assert_eq!(all[0].reason_code(), "robot_not_in_group");
    assert_eq!(all[0].attempts, Some(1));
    assert!(all[0].summary().contains("id=c1"), "{}", all[0].summary());

    let dispatcher = Filter {
        stage: Some("dispatcher".into()),
        ..Filter::default()
    };
    let only = dlq::read(js, &dispatcher, 100).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].body_id().as_deref(), Some("acme:m1"));

    let later = Filter {
        since: Some(OffsetDateTime::now_utc() + Duration::from_secs(60)),
        ..Filter::default()
    };
    assert!(dlq::read(js, &later, 100).await.unwrap().is_empty());
    let before = Filter {
        until: Some(OffsetDateTime::now_utc() - Duration::from_secs(3600)),
        ..Filter::default()
    };
    assert!(dlq::read(js, &before, 100).await.unwrap().is_empty());
    let malformed = Filter {
        reason: Some("malformed".into()),
        ..Filter::default()
    };
    assert!(dlq::read(js, &malformed, 100).await.unwrap().is_empty());
    assert_eq!(dlq::read(js, &Filter::default(), 1).await.unwrap().len(), 1);
}
