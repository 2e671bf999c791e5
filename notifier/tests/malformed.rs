//! Commands that cannot be executed get one `failed` result and one dead letter at once, are
//! acked, and never reach DingTalk — no crash, no redelivery storm.

mod support;

use common::bus::dlq_headers;
use common::bus::result::Status;
use dingtalk_sim::CallFilter;
use serde_json::json;
use support::{send, text, Bed};

#[tokio::test]
async fn malformed_commands_get_a_failed_result_and_a_dead_letter_and_are_acked() {
    let bed = Bed::start().await;
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("bad-json", "dingtalk.commands.acme.send", b"{not json".to_vec()),
        (
            "unknown-op",
            "dingtalk.commands.acme.delete",
            json!({"v": 1, "id": "unknown-op", "integration_id": "acme", "op": "delete", "target": "x"})
                .to_string()
                .into_bytes(),
        ),
        (
            "bad-recipient",
            "dingtalk.commands.acme.send",
            send("bad-recipient", "acme", json!([{"type": "email", "id": "a@b.c"}]), text("hi"))
                .to_string()
                .into_bytes(),
        ),
        (
            "empty-recipient",
            "dingtalk.commands.acme.send",
            send("empty-recipient", "acme", json!([{"type": "user_id", "id": " "}]), text("hi"))
                .to_string()
                .into_bytes(),
        ),
        (
            "wrong-version",
            "dingtalk.commands.acme.send",
            json!({"v": 2, "id": "wrong-version", "integration_id": "acme", "op": "send"}).to_string().into_bytes(),
        ),
    ];
    for (id, subject, body) in &cases {
        bed.publish_raw(subject, body, Some(id)).await;
    }
    for (id, subject, body) in &cases {
        let result = bed.result(id).await;
        assert_eq!(result.status, Status::Failed, "{id}");
        let error = result.error.as_ref().unwrap();
        assert_eq!(error.code, "malformed", "{id}");
        assert!(!error.retryable, "{id}");
        assert_eq!(result.integration_id, "acme");
        let dead = bed.dead_letters_of(id);
        assert_eq!(dead.len(), 1, "{id}: one dead letter");
        assert_eq!(&dead[0].payload, body, "{id}: the original body, unchanged");
        assert_eq!(dead[0].subject, "dingtalk.dlq.notifier.acme");
        assert_eq!(
            dead[0].header(dlq_headers::ORIGINAL_SUBJECT).as_deref(),
            Some(*subject)
        );
        assert!(dead[0]
            .header(dlq_headers::REASON)
            .unwrap()
            .starts_with("malformed: "));
        assert_eq!(dead[0].header(dlq_headers::ATTEMPTS).as_deref(), Some("1"));
    }
    // The unreadable body was answered under its Nats-Msg-Id, on the subject's tokens.
    let bad_json = bed.result("bad-json").await;
    assert_eq!(bad_json.op.map(|op| op.as_str()), Some("send"));
    let unknown_op = bed.result("unknown-op").await;
    assert!(unknown_op.op.is_none());
    assert!(bed
        .results
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.subject == "dingtalk.results.acme.delete"));
    bed.settle().await;
    let (ack_pending, redelivered, pending) = bed.consumer_state().await;
    assert_eq!(
        (ack_pending, redelivered, pending),
        (0, 0, 0),
        "all acked once"
    );
    assert!(
        bed.sim.state().calls(&CallFilter::all()).is_empty(),
        "nothing reached DingTalk"
    );
}

#[tokio::test]
async fn an_unknown_integration_is_a_failed_result_and_a_dead_letter() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-ghost",
        "ghost",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-ghost").await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(result.error.unwrap().code, "unknown_integration");
    assert_eq!(bed.dead_letters_of("c-ghost").len(), 1);
    assert_eq!(
        bed.dead_letters_of("c-ghost")[0].subject,
        "dingtalk.dlq.notifier.ghost"
    );
}

#[tokio::test]
async fn a_body_published_on_another_integrations_subject_is_refused() {
    let bed = Bed::start().await;
    let command = send(
        "c-cross",
        "beta",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    );
    bed.publish_raw(
        "dingtalk.commands.acme.send",
        command.to_string().as_bytes(),
        Some("c-cross"),
    )
    .await;
    let result = bed.result("c-cross").await;
    assert_eq!(result.error.unwrap().code, "malformed");
    assert!(bed.sim.state().calls(&CallFilter::all()).is_empty());
}

#[tokio::test]
async fn a_missing_template_variable_fails_the_command_and_sends_nothing() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-missing",
        "acme",
        json!([{"type": "user_id", "id": "{{state.dingtalkRecipientId}}"}]),
        text("Hello {{state.name}}"),
    );
    command["state"] = json!({"dingtalkRecipientId": "user001"});
    bed.publish(&command).await;
    let result = bed.result("c-missing").await;
    assert_eq!(result.status, Status::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "missing_variable");
    assert!(
        error.message.contains("{{state.name}}"),
        "{}",
        error.message
    );
    assert_eq!(bed.dead_letters_of("c-missing").len(), 1);
    assert!(bed.sim.state().calls(&CallFilter::all()).is_empty());
}

#[tokio::test]
async fn a_command_whose_stored_result_is_unreadable_is_answered_and_not_run_again() {
    let bed = Bed::start().await;
    let client = redis::Client::open(bed.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HSET")
        .arg("dtg:ntf:cmd:acme:c-garbled")
        .arg("result")
        .arg("{\"v\": 1, \"status\": ")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    bed.publish(&send(
        "c-garbled",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-garbled").await;
    assert_eq!(result.status, Status::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "result_unreadable", "{}", error.message);
    assert!(!error.retryable);
    bed.settle().await;
    let (ack_pending, redelivered, pending) = bed.consumer_state().await;
    assert_eq!((ack_pending, redelivered, pending), (0, 0, 0), "acked once");
    assert!(bed.sim.state().calls(&CallFilter::all()).is_empty());
}
