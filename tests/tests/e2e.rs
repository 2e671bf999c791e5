//! End to end: the three services as processes over their own NATS and Redis, DingTalk played by
//! the simulator over HTTP (callbacks in, API calls out), the fake expert over HTTP + SSE. Every
//! assertion reads what DingTalk (the simulator), the expert or the bus recorded.

use std::time::Duration;

use dingtalk_sim::client::{check_url, user_modified, EventSigner};
use dingtalk_sim::{Api, CallFilter, Directory, StreamPush};
use futures::StreamExt;
use gateway_tests::stack::{
    eventually, Options, Stack, AES_KEY, APP_KEY, APP_SECRET, CALLBACK_TOKEN, INTEGRATION,
};
use serde_json::{json, Value};

const REPLY: Duration = Duration::from_secs(60);

async fn stack() -> Stack {
    Stack::start(Options::new(env!("CARGO_BIN_EXE_gateway-service"))).await
}

/// The runs the expert saw for messages containing `text`: (assistant, thread).
fn runs_with(stack: &Stack, text: &str) -> Vec<(String, String)> {
    stack
        .expert
        .runs()
        .into_iter()
        .filter(|r| r.input.contains(text))
        .map(|r| (r.assistant_id, r.thread_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_is_answered_in_dingtalk_and_the_next_continues_the_thread() {
    let stack = stack().await;
    let first = stack.message("hello gateway");
    let answer = stack.send(&first).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        stack.reply(&first, REPLY).await.as_deref(),
        Some("echo #1: hello gateway"),
        "{}",
        stack.logs()
    );
    // The reply went to the sender's 1:1 chat, as a card the gateway can update.
    let card = stack
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .find(|c| c.card_biz_id == format!("{INTEGRATION}:{}:reply", first.msg_id))
        .expect("the reply card");
    assert_eq!(card.target, "user001");

    let second = stack.message("and again");
    assert_eq!(stack.send(&second).await.status, 200);
    assert_eq!(
        stack.reply(&second, REPLY).await.as_deref(),
        Some("echo #2: and again"),
        "{}",
        stack.logs()
    );
    let one = runs_with(&stack, "hello gateway");
    let two = runs_with(&stack, "and again");
    assert_eq!(one.len(), 1, "the expert ran once for the first message");
    assert_eq!(two.len(), 1, "the expert ran once for the second message");
    assert_eq!(
        one[0].1, two[0].1,
        "the second message continues the thread"
    );
}

/// The same private chat with the integration in Stream mode: no callback reaches the ingress,
/// DingTalk (the simulator) pushes the messages over the WebSocket the ingress opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_stream_mode_a_private_message_pushed_over_the_stream_is_answered_and_the_next_continues_the_thread(
) {
    let stack = stack().await;
    stack
        .admin(
            reqwest::Method::PUT,
            &format!("/api/dingtalk/integrations/{INTEGRATION}"),
            &json!({"name": "End to end", "client_id": APP_KEY, "client_secret": APP_SECRET,
                "callback_token": CALLBACK_TOKEN, "callback_aes_key": AES_KEY,
                "preferred_language": "en", "connection_mode": "stream"}),
        )
        .await;
    let connected = eventually(REPLY, || async {
        let open = stack.sim.state().stream_connections();
        open.iter()
            .any(|c| c.app_key == APP_KEY && !c.disconnecting)
            .then_some(())
    })
    .await;
    assert!(
        connected.is_some(),
        "no stream connection: {}",
        stack.logs()
    );
    // One way in per integration: the webhook closes in Stream mode (once the ingress's
    // registry cache has the change; probes come from another user, whose chat is apart).
    let refused = eventually(REPLY, || async {
        let probe = stack
            .message("probe over http")
            .from_user("user002", "Han Meimei");
        let answer = stack.send(&probe).await;
        (answer.status == 403).then_some(answer.body)
    })
    .await;
    assert!(refused.is_some(), "the webhook stays open in Stream mode");

    let push = |message: &dingtalk_sim::client::RobotMessage| {
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis(),
        )
        .expect("ms fit");
        stack
            .sim
            .state()
            .stream_push(StreamPush::RobotMessage {
                app_key: APP_KEY.to_owned(),
                data: message.to_json(now_ms),
            })
            .expect("the simulator takes the push")
    };
    let first = stack.message("hello over the stream");
    let origin = push(&first);
    assert_eq!(
        stack.reply(&first, REPLY).await.as_deref(),
        Some("echo #1: hello over the stream"),
        "{}",
        stack.logs()
    );
    let card = stack
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .find(|c| c.card_biz_id == format!("{INTEGRATION}:{}:reply", first.msg_id))
        .expect("the reply card");
    assert_eq!(card.target, "user001");
    // The frame was acked on the socket (after the bus took it).
    assert!(stack
        .sim
        .state()
        .stream_acks()
        .iter()
        .any(|a| a.origin.as_deref() == Some(origin.as_str()) && a.settled));

    let second = stack.message("and again over the stream");
    push(&second);
    assert_eq!(
        stack.reply(&second, REPLY).await.as_deref(),
        Some("echo #2: and again over the stream"),
        "{}",
        stack.logs()
    );
    let one = runs_with(&stack, "hello over the stream");
    let two = runs_with(&stack, "and again over the stream");
    assert_eq!(one.len(), 1, "the expert ran once for the first message");
    assert_eq!(two.len(), 1, "the expert ran once for the second message");
    assert_eq!(
        one[0].1, two[0].1,
        "the second message continues the thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_is_answered_only_when_it_mentions_the_bot_and_the_answer_mentions_the_sender(
) {
    let stack = stack().await;
    let mut quiet = stack
        .message("just chatting")
        .in_group(Directory::OPS_GROUP, "ops");
    quiet.at_robot = false;
    assert_eq!(stack.send(&quiet).await.status, 200);
    let asked = stack
        .message("bot, status?")
        .in_group(Directory::OPS_GROUP, "ops")
        .from_user("user002", "Han Meimei");
    assert_eq!(stack.send(&asked).await.status, 200);

    assert_eq!(
        stack.reply(&asked, REPLY).await.as_deref(),
        Some("echo #1: bot, status?"),
        "{}",
        stack.logs()
    );
    let sends = stack
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardSend));
    let reply = sends
        .iter()
        .find(|c| c.body["cardBizId"] == format!("{INTEGRATION}:{}:reply", asked.msg_id))
        .expect("the reply was sent as a card");
    assert_eq!(reply.body["openConversationId"], Directory::OPS_GROUP);
    let at: Value = serde_json::from_str(
        reply.body["sendOptions"]["atUserListJson"]
            .as_str()
            .expect("the reply mentions someone"),
    )
    .unwrap();
    assert_eq!(at[0]["userId"], "user002", "the reply mentions the sender");

    // Messages of one conversation are handled in order: the one without @bot came first and is
    // finished by now, without a run or a reply.
    assert!(runs_with(&stack, "just chatting").is_empty());
    assert_eq!(stack.reply(&quiet, Duration::from_secs(2)).await, None);
    assert_eq!(sends.len(), 1, "one card in the group: {sends:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_binding_beats_trigger_binding_beats_fallback_and_new_starts_over() {
    let stack = stack().await;
    // user001: the trigger binding wins over the fallback expert.
    let first = stack.message("first");
    stack.send(&first).await;
    assert_eq!(
        stack.reply(&first, REPLY).await.as_deref(),
        Some("echo #1: first"),
        "{}",
        stack.logs()
    );
    assert_eq!(runs_with(&stack, "first")[0].0, "trigger-expert");

    // The trigger now names another expert: user001's conversation stays with its expert.
    stack
        .admin(
            reqwest::Method::PUT,
            &format!("/api/dingtalk/integrations/{INTEGRATION}/trigger"),
            &json!({"xpert_id": "other-expert"}),
        )
        .await;
    let second = stack.message("second");
    stack.send(&second).await;
    assert_eq!(
        stack.reply(&second, REPLY).await.as_deref(),
        Some("echo #2: second"),
        "{}",
        stack.logs()
    );
    let second_run = runs_with(&stack, "second");
    assert_eq!(
        second_run[0].0, "trigger-expert",
        "the conversation binding wins"
    );
    assert_eq!(second_run[0].1, runs_with(&stack, "first")[0].1);

    // /new ends the binding: the next message goes to the trigger's expert, on a new thread.
    let reset = stack.message("/new");
    stack.send(&reset).await;
    assert!(
        stack.reply(&reset, REPLY).await.is_some(),
        "/new is confirmed"
    );
    assert!(runs_with(&stack, "/new").is_empty(), "/new is not a run");
    let third = stack.message("third");
    stack.send(&third).await;
    assert_eq!(
        stack.reply(&third, REPLY).await.as_deref(),
        Some("echo #1: third"),
        "{}",
        stack.logs()
    );
    let third_run = runs_with(&stack, "third");
    assert_eq!(third_run[0].0, "other-expert");
    assert_ne!(third_run[0].1, second_run[0].1, "a fresh thread");

    // Without a trigger binding, a new conversation goes to the fallback expert.
    stack
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/dingtalk/integrations/{INTEGRATION}/trigger"),
            &Value::Null,
        )
        .await;
    let other = stack.message("from user003").from_user("user003", "Wang");
    // The registry cache is invalidated over Redis pub/sub; its TTL (1 s here) bounds a miss.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.send(&other).await;
    assert_eq!(
        stack.reply(&other, REPLY).await.as_deref(),
        Some("echo #1: from user003"),
        "{}",
        stack.logs()
    );
    assert_eq!(runs_with(&stack, "from user003")[0].0, "fallback-expert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_system_gets_one_result_for_each_send_update_and_recall() {
    let stack = stack().await;
    let nats = stack.nats_client().await;
    let mut results = nats
        .subscribe(format!("dingtalk.results.{INTEGRATION}.>"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats.clone());
    let publish = |command: Value| {
        let js = js.clone();
        async move {
            let subject = format!(
                "dingtalk.commands.{INTEGRATION}.{}",
                command["op"].as_str().unwrap()
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", command["id"].as_str().unwrap());
            js.publish_with_headers(subject, headers, command.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let base = json!({"v": 1, "integration_id": INTEGRATION});
    let with = |extra: Value| {
        let mut command = base.clone();
        command
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        command
    };
    publish(with(json!({"id": "notice-1", "op": "send",
        "recipients": [{"type": "user_id", "id": "user001"}],
        "message": {"type": "markdown", "title": "Build", "text": "build 7 started"}, "updatable": true})))
    .await;
    publish(with(
        json!({"id": "notice-1-done", "op": "update", "target": "notice-1",
        "message": {"type": "markdown", "title": "Build", "text": "build 7 passed"}}),
    ))
    .await;
    // A plain 1:1 message to recall (recalling an updatable 1:1 card is a known simulator gap).
    publish(with(json!({"id": "oops", "op": "send",
        "recipients": [{"type": "user_id", "id": "user002"}],
        "message": {"type": "text", "text": "sent by mistake"}})))
    .await;
    publish(with(
        json!({"id": "oops-recall", "op": "recall", "target": "oops"}),
    ))
    .await;

    let mut seen: Vec<Value> = Vec::new();
    let collect = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 4 {
            let message = results.next().await.expect("results keep coming");
            seen.push(serde_json::from_slice(&message.payload).unwrap());
        }
    })
    .await;
    assert!(collect.is_ok(), "results: {seen:#?}\n{}", stack.logs());
    // No second result for any of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(100), results.next()).await
    {
        seen.push(serde_json::from_slice(&message.payload).unwrap());
    }
    let mut ids: Vec<&str> = seen
        .iter()
        .map(|r| r["command_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["notice-1", "notice-1-done", "oops", "oops-recall"]);
    for result in &seen {
        assert_eq!(result["status"], "ok", "{result:#}");
    }

    let card = stack
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .find(|c| c.card_biz_id == "notice-1")
        .expect("the card");
    assert_eq!(card.card_data["contents"][0]["text"], "build 7 passed");
    let recalled = stack
        .sim
        .state()
        .messages()
        .into_iter()
        .find(|m| m.content["content"] == "sent by mistake")
        .expect("the plain message");
    assert!(recalled.recalled, "the message was recalled in DingTalk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_event_callbacks_are_acked_with_the_encrypted_success() {
    let stack = stack().await;
    let signer = EventSigner::new(CALLBACK_TOKEN, AES_KEY, APP_KEY).unwrap();
    let check = stack
        .client
        .send_event(&stack.webhook_url(), &signer, &check_url())
        .await
        .unwrap();
    assert_eq!(check.answer.status, 200, "{}", check.answer.body);
    assert_eq!(check.reply.as_deref(), Ok("success"));

    let nats = stack.nats_client().await;
    let js = async_nats::jetstream::new(nats);
    let event = user_modified(
        &Directory::seeded().corp_id,
        &["user004"],
        time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
    );
    let sent = stack
        .client
        .send_event(&stack.webhook_url(), &signer, &event)
        .await
        .unwrap();
    assert_eq!(sent.answer.status, 200, "{}", sent.answer.body);
    assert_eq!(sent.reply.as_deref(), Ok("success"));

    // The contact event is on the bus for other consumers; check_url is not.
    let subject = format!("dingtalk.events.{INTEGRATION}.event");
    let stored = eventually(Duration::from_secs(10), || {
        let js = js.clone();
        let subject = subject.clone();
        async move {
            let mut stream = js.get_stream("DINGTALK_EVENTS").await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.messages > 0).then_some(())?;
            let message = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok()?;
            serde_json::from_slice::<Value>(&message.payload).ok()
        }
    })
    .await
    .expect("the contact event was published");
    assert_eq!(stored["kind"], "event");
    assert!(stored.to_string().contains("user004"), "{stored:#}");
    let mut stream = js.get_stream("DINGTALK_EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "check_url is answered, not published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_reports_how_full_redis_is() {
    let stack = stack().await;
    let mut redis = redis::Client::open(stack.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("300mb")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for service in &stack.services {
        let url = format!("http://{}/metrics", service.metrics_addr());
        // Sampled every 15 s: the limit set above shows by the second sample.
        let found = eventually(Duration::from_secs(20), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let text = http.get(&url).send().await.ok()?.text().await.ok()?;
                let used = text
                    .lines()
                    .find_map(|l| l.strip_prefix("dingtalk_gateway_redis_used_memory_bytes "))?
                    .parse::<f64>()
                    .ok()?;
                text.contains("dingtalk_gateway_redis_max_memory_bytes 314572800")
                    .then_some(used)
            }
        })
        .await;
        let used = found.unwrap_or_else(|| {
            panic!(
                "{} does not report Redis's memory and limit",
                service.kind.name()
            )
        });
        assert!(used > 0.0, "{}: {used}", service.kind.name());
    }
}
