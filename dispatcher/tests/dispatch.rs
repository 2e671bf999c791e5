//! The dispatcher end to end: events on a real JetStream → a real HTTP + SSE expert (the fake)
//! → commands on the bus, with bindings and claims in a real Redis.

mod support;

use std::time::Duration;

use common::bus::command::{Operation, RecipientType};
use common::bus::dlq_headers;
use common::registry::ConversationKey;
use fake_expert::{Behavior, Reply};
use serde_json::json;
use support::{final_text, message, of_event, private, text_of, World};

#[tokio::test]
async fn a_private_message_is_answered_by_the_fallback_expert_with_the_conversations_facts() {
    let world = World::start().await;
    world.integration("acme", Some("fallback-x"), None).await;
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hello"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hello");

    let runs = world.expert.runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.assistant_id, "fallback-x");
    assert_eq!(run.input, "hello");
    assert_eq!(run.metadata["dingtalk_event_id"], "acme:m1");
    for facts in [&run.metadata, &run.configurable] {
        assert_eq!(facts["dingtalk_integration_id"], "acme");
        assert_eq!(facts["dingtalk_conversation_id"], "cid-u1");
        assert_eq!(facts["dingtalk_conversation_type"], "private");
        assert_eq!(facts["dingtalk_sender_staff_id"], "u1");
        assert_eq!(facts["dingtalk_sender_nick"], "Li");
        assert_eq!(facts["dingtalkRecipientId"], "u1");
    }
    let commands = world.commands().await;
    let Operation::Send(send) = &commands[0].op else {
        panic!("the first command is not a send: {commands:?}")
    };
    assert_eq!(send.recipients[0].kind, RecipientType::UserId);
    assert_eq!(send.recipients[0].id, "u1");
    assert!(send.mentions.is_none());

    let key = ConversationKey::new("acme".parse().unwrap(), "cid-u1", "u1").unwrap();
    let binding = world.registry.get_binding(&key).await.unwrap().unwrap();
    assert_eq!(binding.thread_id.as_str(), run.thread_id);
    assert_eq!(binding.xpert_id.as_str(), "fallback-x");
}

#[tokio::test]
async fn the_trigger_wins_over_the_fallback_and_the_binding_over_both() {
    let world = World::start().await;
    world.integration("acme", Some("fallback-x"), None).await;
    world
        .registry
        .set_trigger(&"acme".parse().unwrap(), "trigger-x".parse().unwrap())
        .await
        .unwrap();
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "one"), None)
        .await;
    world.answer("acme:m1").await;
    world
        .registry
        .set_trigger(&"acme".parse().unwrap(), "trigger-y".parse().unwrap())
        .await
        .unwrap();
    world
        .publish(&private("acme", "m2", "u1", "two"), None)
        .await;
    world.answer("acme:m2").await;
    world
        .publish(&private("acme", "m3", "u2", "three"), None)
        .await;
    world.answer("acme:m3").await;

    let assistants: Vec<String> = world
        .expert
        .runs()
        .into_iter()
        .map(|r| r.assistant_id)
        .collect();
    // u1's conversation stays with the expert it was bound to; u2 gets the new trigger.
    assert_eq!(assistants, ["trigger-x", "trigger-x", "trigger-y"]);
}

#[tokio::test]
async fn an_integration_without_an_expert_gets_the_localized_not_set_up_reply() {
    let world = World::start().await;
    world.integration("acme", None, Some("en")).await;
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hello"), None)
        .await;
    let text = world.answer("acme:m1").await;
    assert!(text.contains("not set up"), "{text}");
    assert!(world.expert.runs().is_empty());
}

#[tokio::test]
async fn turns_reuse_the_thread_and_new_starts_another_with_a_confirmation() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[]).await;

    world.publish(&private("acme", "m1", "u1", "a"), None).await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: a");
    world.publish(&private("acme", "m2", "u1", "b"), None).await;
    assert_eq!(world.answer("acme:m2").await, "echo #2: b");
    world
        .publish(&private("acme", "m3", "u1", "/new"), None)
        .await;
    assert_eq!(world.answer("acme:m3").await, "好的，已开始新的对话。");
    world.publish(&private("acme", "m4", "u1", "c"), None).await;
    assert_eq!(world.answer("acme:m4").await, "echo #1: c");
    world
        .publish(&private("acme", "m5", "u1", "新对话"), None)
        .await;
    world.answer("acme:m5").await;

    let threads: Vec<String> = world
        .expert
        .runs()
        .into_iter()
        .map(|r| r.thread_id)
        .collect();
    assert_eq!(threads[0], threads[1]);
    assert_ne!(threads[1], threads[2]);
    assert_eq!(world.expert.threads_created(), 2);
}

#[tokio::test]
async fn group_messages_count_only_with_a_mention_and_every_group_is_recorded() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[]).await;

    let quiet = message("acme", "g1", ("cid-g", "group"), "u1", "chatter", false);
    world.publish(&quiet, None).await;
    let asked = message("acme", "g2", ("cid-g", "group"), "u1", "question", true);
    world.publish(&asked, None).await;
    assert_eq!(world.answer("acme:g2").await, "echo #1: question");

    assert_eq!(world.expert.runs().len(), 1);
    assert!(of_event(&world.commands().await, "acme:g1").is_empty());
    let commands = world.commands().await;
    let Operation::Send(send) = &of_event(&commands, "acme:g2")[0].op else {
        panic!("not a send")
    };
    assert_eq!(send.recipients[0].kind, RecipientType::ChatId);
    assert_eq!(send.recipients[0].id, "cid-g");
    assert_eq!(send.mentions.as_ref().unwrap().user_ids, ["u1"]);
    assert_eq!(
        world.expert.runs()[0].metadata["dingtalkRecipientId"],
        "cid-g"
    );

    let client = redis::Client::open(world.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let record: String = redis::cmd("HGET")
        .arg("dtg:chats:acme")
        .arg("cid-g")
        .query_async(&mut conn)
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["title"], "ops");
    assert!(record["last_seen"].is_string());
}

#[tokio::test]
async fn an_expert_streaming_50_chunks_over_5s_yields_one_send_at_most_six_updates_and_the_whole_answer(
) {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let answer: String = (0..50).map(|i| format!("w{i} ")).collect();
    world.expert.set_default(Behavior {
        reply: Reply::Text(answer.clone()),
        chunks: 50,
        chunk_delay: Duration::from_millis(100),
        ..Behavior::default()
    });
    let _d = world.dispatcher(&[("STREAM_UPDATE_INTERVAL", "1s")]).await;

    world
        .publish(&private("acme", "m1", "u1", "talk"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, answer);

    let commands = world.commands().await;
    let sends: Vec<_> = commands
        .iter()
        .filter(|c| matches!(c.op, Operation::Send(_)))
        .collect();
    let updates: Vec<_> = commands
        .iter()
        .filter(|c| matches!(c.op, Operation::Update(_)))
        .collect();
    assert_eq!(sends.len(), 1, "{commands:#?}");
    let Operation::Send(send) = &sends[0].op else {
        unreachable!()
    };
    assert!(send.updatable);
    assert_eq!(text_of(&send.message), "思考中…");
    assert!(
        (2..=6).contains(&updates.len()),
        "{} updates",
        updates.len()
    );
    // Every update shows a prefix of the answer, growing.
    let mut shown = 0;
    for update in &updates {
        let Operation::Update(u) = &update.op else {
            unreachable!()
        };
        assert_eq!(u.target, "acme:m1:reply");
        let text = text_of(&u.message);
        assert!(answer.starts_with(text.trim_end()), "{text}");
        assert!(text.len() >= shown);
        shown = text.len();
    }
}

#[tokio::test]
async fn an_expert_that_does_not_stream_gets_one_send() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.set_default(Behavior::not_streaming());
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hi");
    let commands = world.commands().await;
    assert_eq!(commands.len(), 1, "{commands:#?}");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_later_success_answers() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior::status(503));
    world.expert.script(Behavior::status(502));
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hi");
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn after_the_last_try_the_user_gets_an_apology_and_the_event_a_dead_letter() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    for _ in 0..3 {
        world.expert.script(Behavior::status(500));
    }
    let _d = world.dispatcher(&[("EXPERT_MAX_ATTEMPTS", "3")]).await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    let text = world.answer("acme:m1").await;
    assert!(text.starts_with("Sorry"), "{text}");

    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let (subject, headers, body) = &letters[0];
    assert_eq!(subject, "dingtalk.dlq.dispatcher.acme");
    assert_eq!(
        headers.get(dlq_headers::ORIGINAL_SUBJECT).unwrap().as_str(),
        "dingtalk.events.acme.message"
    );
    assert!(headers
        .get(dlq_headers::REASON)
        .unwrap()
        .as_str()
        .starts_with("expert_5xx:"));
    assert_eq!(headers.get(dlq_headers::ATTEMPTS).unwrap().as_str(), "1");
    let original: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(original["id"], "acme:m1");
}

#[tokio::test]
async fn a_run_given_up_on_is_cancelled_so_the_conversation_goes_on() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    world.expert.script(Behavior {
        delay: Duration::from_secs(60),
        ..Behavior::default()
    });
    let _d = world
        .dispatcher(&[("EXPERT_TIMEOUT", "1s"), ("EXPERT_MAX_ATTEMPTS", "1")])
        .await;
    world
        .publish(&private("acme", "m1", "u1", "slow"), None)
        .await;
    assert!(world.answer("acme:m1").await.starts_with("Sorry"));
    // The run would go on for a minute, keeping the thread busy: it is stopped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.expert.statuses_for_event("acme:m1") != ["interrupted"] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            world.expert.statuses_for_event("acme:m1")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world
        .publish(&private("acme", "m2", "u1", "next"), None)
        .await;
    assert!(world.answer("acme:m2").await.ends_with(": next"));
}

#[tokio::test]
async fn a_stream_cut_before_the_run_ends_is_joined_not_taken_for_the_answer() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior {
        reply: Reply::Text("one two three four five".into()),
        chunks: 5,
        chunk_delay: Duration::from_millis(200),
        cut_stream_after: Some(2),
        ..Behavior::default()
    });
    let _d = world.dispatcher(&[]).await;
    world
        .publish(&private("acme", "m1", "u1", "count"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "one two three four five");
    assert_eq!(world.expert.runs_for_event("acme:m1"), 1);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior::status(422));
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(
        world.answer("acme:m1").await,
        "抱歉，专家暂时无法回答，请稍后再试。"
    );
    // A retry would have reached the default behaviour and started a run.
    assert!(world.expert.runs().is_empty());
    let letters = world.dead_letters().await;
    assert!(letters[0]
        .1
        .get(dlq_headers::REASON)
        .unwrap()
        .as_str()
        .starts_with("expert_4xx:"));
}

#[tokio::test]
async fn an_apology_whose_dead_letter_fails_is_parked_later_and_never_run_again() {
    use common::bus::streams;
    use common::config::StreamSettings;

    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior::status(422));
    let _d = world.dispatcher(&[]).await;
    // No DLQ stream (the dispatcher provisions it on start): the first dead letter finds no
    // responder.
    world.js.delete_stream(streams::DLQ).await.unwrap();

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(
        world.answer("acme:m1").await,
        "抱歉，专家暂时无法回答，请稍后再试。"
    );
    // The dead letter failed right after the apology; the DLQ comes back, normally before the
    // event's redelivery (2 s after the failure), which only parks it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let told = of_event(&world.commands().await, "acme:m1").len();
    streams::provision(&world.js, &StreamSettings::default())
        .await
        .unwrap();
    let letters = world.wait_dead_letters(Duration::from_secs(15)).await;
    assert_eq!(letters.len(), 1);
    let reason = letters[0].1.get(dlq_headers::REASON).unwrap().as_str();
    assert!(reason.starts_with("expert_4xx: "), "{reason}");
    // Stored by a later delivery (the second, unless the DLQ came back after it).
    let attempts: u32 = letters[0]
        .1
        .get(dlq_headers::ATTEMPTS)
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    assert!(attempts >= 2, "{attempts}");
    // A run again would have reached the default behaviour (an echo) and answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(world.expert.runs().is_empty());
    let commands = world.commands().await;
    assert_eq!(
        final_text(&commands, "acme:m1").unwrap(),
        "抱歉，专家暂时无法回答，请稍后再试。"
    );
    assert_eq!(of_event(&commands, "acme:m1").len(), told, "{commands:#?}");
}

#[tokio::test]
async fn a_thread_the_expert_forgot_is_created_again_once() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[]).await;

    world.publish(&private("acme", "m1", "u1", "a"), None).await;
    world.answer("acme:m1").await;
    let thread = world.expert.runs()[0].thread_id.clone();
    world.expert.forget_thread(&thread);
    world.publish(&private("acme", "m2", "u1", "b"), None).await;
    assert_eq!(world.answer("acme:m2").await, "echo #1: b");
    assert_eq!(world.expert.threads_created(), 2);
    assert_eq!(world.expert.runs()[0].thread_id, thread);
}

#[tokio::test]
async fn an_expert_the_server_does_not_know_is_named_not_taken_for_a_lost_thread() {
    let world = World::start().await;
    world.integration("acme", Some("ghost"), None).await;
    world.expert.forget_assistant("ghost");
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(
        world.answer("acme:m1").await,
        "抱歉，专家暂时无法回答，请稍后再试。"
    );
    assert!(world.expert.runs().is_empty());
    let letters = world.wait_dead_letters(Duration::from_secs(10)).await;
    let reason = letters[0].1.get(dlq_headers::REASON).unwrap().as_str();
    assert!(reason.starts_with("expert_not_found:"), "{reason}");
    assert!(reason.contains("\"ghost\""), "{reason}");
}

#[tokio::test]
async fn a_conversation_whose_expert_is_gone_starts_over_with_the_integrations_expert() {
    let world = World::start().await;
    world.integration("acme", Some("fallback-x"), None).await;
    let acme: common::registry::IntegrationId = "acme".parse().unwrap();
    world
        .registry
        .set_trigger(&acme, "old-x".parse().unwrap())
        .await
        .unwrap();
    let _d = world.dispatcher(&[]).await;
    assert_eq!(world.say("m1", "u1", "hi").await, "echo #1: hi");
    assert_eq!(world.say("m2", "u2", "hi").await, "echo #1: hi");
    let lost = world.expert.runs()[1].thread_id.clone();

    // The expert is replaced: the old one deleted at the server, the trigger moved on. u2's
    // thread is gone too (a server wiped): the 404 for the thread created again still names
    // the expert.
    world.expert.forget_assistant("old-x");
    world.expert.forget_thread(&lost);
    world
        .registry
        .set_trigger(&acme, "new-x".parse().unwrap())
        .await
        .unwrap();
    let notice = "这个对话原来的专家已不可用，已由当前的专家开始新的对话。";
    for (id, who) in [("m3", "u1"), ("m4", "u2")] {
        assert_eq!(
            world.say(id, who, "again").await,
            format!("{notice}\n\necho #1: again")
        );
        let binding = world.registry.get_binding(&conversation_of(who)).await;
        assert_eq!(binding.unwrap().unwrap().xpert_id.as_str(), "new-x");
    }
    // (u2's first run went with its thread.)
    let runs = world.expert.runs();
    let new: Vec<_> = runs.iter().filter(|r| r.assistant_id == "new-x").collect();
    assert_eq!((runs.len(), new.len()), (3, 2));
    assert_ne!(new[0].thread_id, runs[0].thread_id);
}

#[tokio::test]
async fn a_reply_that_failed_leaves_its_question_to_be_shown_again() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    world.expert.script(Behavior {
        interrupt: Some(
            json!({"action_requests": [{"name": "t", "args": {}, "description": "Email Li"}]}),
        ),
        ..Behavior::default()
    });
    world.expert.script(Behavior::status(503));
    let _d = world.dispatcher(&[("EXPERT_MAX_ATTEMPTS", "1")]).await;
    world.say("m1", "u1", "mail Li").await;
    assert!(world.say("m2", "u1", "yes").await.starts_with("Sorry"));
    // The question still waits; "hello" must not reject it unseen.
    let shown = world.say("m3", "u1", "hello").await;
    assert!(
        shown.starts_with("The expert is still waiting for your answer to this:\n\nEmail Li"),
        "{shown}"
    );
    assert_eq!(world.expert.runs().len(), 1);
}

#[tokio::test]
async fn the_api_key_goes_in_the_configured_header() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.require_api_key("authorization", "Bearer k1");
    let _d = world
        .dispatcher(&[
            ("EXPERT_API_KEY", "Bearer k1"),
            ("EXPERT_API_KEY_HEADER", "authorization"),
        ])
        .await;

    world
        .publish(&private("acme", "m1", "u1", "hi"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hi");
    assert_eq!(world.expert.runs()[0].api_key.as_deref(), Some("Bearer k1"));
}

#[tokio::test]
async fn an_external_contact_is_answered_once_through_the_session_webhook() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[("THINKING_DELAY", "0s")]).await;

    let mut event = private("acme", "m1", "u1", "hi");
    event["sender"].as_object_mut().unwrap().remove("staff_id");
    world.publish(&event, None).await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hi");
    let commands = world.commands().await;
    assert_eq!(
        commands.len(),
        1,
        "a session webhook takes no card: {commands:#?}"
    );
    let Operation::Send(send) = &commands[0].op else {
        panic!("not a send")
    };
    assert_eq!(send.recipients[0].kind, RecipientType::SessionWebhook);
}

#[tokio::test]
async fn an_answer_that_outlives_the_session_webhook_is_not_sent() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior {
        delay: Duration::from_millis(2500),
        ..Behavior::default()
    });
    let _d = world.dispatcher(&[("THINKING_DELAY", "0s")]).await;

    let mut event = private("acme", "m1", "u1", "hi");
    event["sender"].as_object_mut().unwrap().remove("staff_id");
    let expires = common::bus::Timestamp::from_unix_millis(
        common::bus::Timestamp::now().unix_millis() + 1500,
    )
    .unwrap();
    event["reply"]["expires_at"] = serde_json::to_value(expires).unwrap();
    world.publish(&event, None).await;

    // The run happens and the event is settled, but nothing is sent to the dead webhook.
    let mut redis = redis::Client::open(world.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let claim: Option<String> = redis::cmd("GET")
            .arg("dtg:dispatch:claim:acme:m1")
            .query_async(&mut redis)
            .await
            .unwrap();
        if claim.as_deref() == Some("done") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(world.expert.runs().len(), 1);
    let commands = world.commands().await;
    assert!(
        of_event(&commands, "acme:m1").is_empty(),
        "sent to an expired session webhook: {commands:#?}"
    );
}

#[tokio::test]
async fn a_card_action_reaches_the_bound_expert_and_the_end_button_resets() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[]).await;

    world
        .publish(&private("acme", "m1", "u1", "show me"), None)
        .await;
    world.answer("acme:m1").await;
    let card = |id: &str, action: &str| {
        json!({"v": 1, "id": format!("acme:{id}"), "integration_id": "acme", "kind": "card_action",
            "received_at": "2026-11-25T10:01:00Z", "card": {"out_track_id": "acme:m1:reply"},
            "action": {"id": action, "params": {"choice": "yes"}}, "user": {"staff_id": "u1"},
            "conversation": {"id": "cid-u1", "type": "private"}})
    };
    world.publish(&card("c1", "confirm"), None).await;
    let text = world.answer("acme:c1").await;
    assert!(
        text.starts_with("echo #2: ") && text.contains("confirm"),
        "{text}"
    );
    world.publish(&card("c2", "end_conversation"), None).await;
    assert_eq!(world.answer("acme:c2").await, "好的，已开始新的对话。");
    world
        .publish(&private("acme", "m2", "u1", "again"), None)
        .await;
    assert_eq!(world.answer("acme:m2").await, "echo #1: again");
    let runs = world.expert.runs();
    assert_eq!(runs[0].thread_id, runs[1].thread_id);
    assert_ne!(runs[1].thread_id, runs[2].thread_id);
}

#[tokio::test]
async fn a_replay_after_the_duplicate_window_gets_no_second_reply() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let _d = world.dispatcher(&[]).await;

    let event = private("acme", "m1", "u1", "hi");
    world.publish(&event, None).await;
    world.answer("acme:m1").await;
    let before = world.commands().await.len();
    // JetStream forgot the id (another Nats-Msg-Id stands for a window that has passed).
    world.publish(&event, Some("replayed-later")).await;
    world
        .publish(&private("acme", "m2", "u1", "next"), None)
        .await;
    assert_eq!(world.answer("acme:m2").await, "echo #2: next");
    assert_eq!(world.expert.runs_for_event("acme:m1"), 1);
    let commands = world.commands().await;
    assert_eq!(of_event(&commands, "acme:m1").len(), before);
}

#[tokio::test]
async fn a_dispatcher_killed_mid_run_still_answers_exactly_once() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.set_default(Behavior {
        chunks: 3,
        chunk_delay: Duration::from_millis(800),
        ..Behavior::default()
    });
    let overrides = [("THINKING_DELAY", "0s")];
    let mut first = world.dispatcher(&overrides).await;

    world
        .publish(&private("acme", "m1", "u1", "hello"), None)
        .await;
    // The card is out, so the run is under way.
    world
        .wait_commands(Duration::from_secs(10), |c| {
            !of_event(c, "acme:m1").is_empty()
        })
        .await;
    first.kill();
    let _second = world.dispatcher(&overrides).await;

    assert_eq!(world.answer("acme:m1").await, "echo #1: hello");
    assert_eq!(world.expert.runs_for_event("acme:m1"), 1);
    let commands = world.commands().await;
    let sends = of_event(&commands, "acme:m1")
        .into_iter()
        .filter(|c| matches!(c.op, Operation::Send(_)))
        .count();
    assert_eq!(sends, 1, "{commands:#?}");
    let finals = commands.iter().filter(|c| c.id == "acme:m1:final").count();
    assert_eq!(finals, 1);
}

#[tokio::test]
async fn a_redelivered_event_joins_the_run_instead_of_calling_the_expert_again() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.set_default(Behavior {
        delay: Duration::from_millis(1500),
        ..Behavior::default()
    });
    let mut first = world.dispatcher(&[]).await;
    world
        .publish(&private("acme", "m1", "u1", "hello"), None)
        .await;
    // Killed once the run exists, before any answer reached the bus.
    world.run_started().await;
    first.kill();
    let _second = world.dispatcher(&[]).await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: hello");
    assert_eq!(world.expert.runs().len(), 1);
}

#[tokio::test]
async fn without_run_listing_a_redelivery_runs_again_at_least_once() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.disable_run_listing();
    world.expert.set_default(Behavior {
        delay: Duration::from_millis(1500),
        ..Behavior::default()
    });
    let mut first = world.dispatcher(&[]).await;
    world
        .publish(&private("acme", "m1", "u1", "hello"), None)
        .await;
    world.run_started().await;
    first.kill();
    let _second = world.dispatcher(&[]).await;
    world.answer("acme:m1").await;
    assert_eq!(world.expert.runs_for_event("acme:m1"), 2);
}

#[tokio::test]
async fn order_within_a_conversation_holds_across_two_replicas() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    for i in 0..20u64 {
        world.expert.script(Behavior {
            chunks: 1,
            delay: Duration::from_millis((i * 37) % 60),
            ..Behavior::default()
        });
    }
    let _a = world.dispatcher(&[("DISPATCHER_CONCURRENCY", "4")]).await;
    let _b = world.dispatcher(&[("DISPATCHER_CONCURRENCY", "4")]).await;

    for i in 0..20 {
        world
            .publish(
                &private("acme", &format!("m{i:02}"), "u1", &format!("n{i}")),
                None,
            )
            .await;
    }
    // And another conversation in between, which must not wait for the first.
    world
        .publish(&private("acme", "other", "u2", "x"), None)
        .await;
    for i in 0..20 {
        let text = world.answer(&format!("acme:m{i:02}")).await;
        assert_eq!(text, format!("echo #{}: n{i}", i + 1));
    }
    let inputs: Vec<String> = world
        .expert
        .runs()
        .into_iter()
        .filter(|r| r.metadata["dingtalk_conversation_id"] == "cid-u1")
        .map(|r| r.input)
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    assert_eq!(inputs, expected);
    assert!(final_text(&world.commands().await, "acme:other").is_some());
}

#[tokio::test]
async fn a_head_waiting_for_an_expert_slot_keeps_its_place_in_the_conversation() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    // One slot per replica, and a stall guard of ack wait × (max deliveries + 1) = 2 s.
    let overrides = [
        ("DISPATCHER_CONCURRENCY", "1"),
        ("DISPATCHER_ACK_WAIT", "1s"),
        ("DISPATCHER_MAX_DELIVER", "1"),
    ];
    // u1's queue starts with an entry nobody will ever answer: u1's first message waits for its
    // turn (holding no slot) until the stall guard drops that entry after 2 s.
    let key = ConversationKey::new("acme".parse().unwrap(), "cid-u1", "u1").unwrap();
    let queue = dispatcher::ordering::queue_key(&key);
    let mut redis = redis::Client::open(world.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZADD")
        .arg(&queue)
        .arg(0)
        .arg("acme:lost")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let _a = world.dispatcher(&overrides).await;
    world
        .publish(&private("acme", "h1", "u1", "first"), None)
        .await;
    let start = std::time::Instant::now();
    while redis::cmd("ZSCORE")
        .arg(&queue)
        .arg("acme:h1")
        .query_async::<Option<f64>>(&mut redis)
        .await
        .unwrap()
        .is_none()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "h1 never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile another conversation takes replica A's only slot for 6 s, so once its turn
    // comes, h1 waits for that slot.
    world.expert.script(Behavior {
        delay: Duration::from_secs(6),
        ..Behavior::not_streaming()
    });
    world
        .publish(&private("acme", "s1", "u9", "slow"), None)
        .await;
    world.run_started().await;
    // u1's second message goes to replica B: A pulls nothing while its slot is busy, once the
    // pull it may have started before s1 took the slot has expired (500 ms). B sees h1 at the
    // head for longer than its stall guard, but h1 is waiting, not lost.
    let _b = world.dispatcher(&overrides).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    world
        .publish(&private("acme", "h2", "u1", "second"), None)
        .await;

    assert_eq!(world.answer("acme:h1").await, "echo #1: first");
    assert_eq!(world.answer("acme:h2").await, "echo #2: second");
    let inputs: Vec<String> = world
        .expert
        .runs()
        .into_iter()
        .filter(|r| r.metadata["dingtalk_conversation_id"] == "cid-u1")
        .map(|r| r.input)
        .collect();
    assert_eq!(inputs, ["first", "second"]);
}

#[tokio::test]
async fn a_replica_dying_between_pulling_and_registering_does_not_break_the_order() {
    use dispatcher::consumer::{durable, ConsumerSettings};
    use dispatcher::ordering::{FetchLock, Ordering};
    use futures::StreamExt;

    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    // A replica that takes the fetch lock, receives m1 and stops before registering it: the
    // same consumer, the same lock, nothing else.
    let config = dispatcher::Config::from_env(&world.env(&[])).unwrap();
    let settings = ConsumerSettings {
        name: config.consumer.clone(),
        concurrency: config.concurrency,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
    };
    let consumer = durable(&world.js, &settings).await.unwrap();
    let redis = redis::Client::open(world.redis.url()).unwrap();
    let dead = Ordering::new(
        redis::aio::ConnectionManager::new(redis).await.unwrap(),
        "dead-replica",
    );
    assert_eq!(
        dead.lock_fetch(Duration::from_millis(300)).await.unwrap(),
        FetchLock::Taken
    );
    world
        .publish(&private("acme", "m1", "u1", "first"), None)
        .await;
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let received = batch.next().await.unwrap().unwrap();
    assert_eq!(received.info().unwrap().delivered, 1);
    drop(batch);

    // The next message of the conversation arrives while the first waits for its redelivery.
    world
        .publish(&private("acme", "m2", "u1", "second"), None)
        .await;
    let _replica = world.dispatcher(&[]).await;

    assert_eq!(world.answer("acme:m1").await, "echo #1: first");
    assert_eq!(world.answer("acme:m2").await, "echo #2: second");
    let inputs: Vec<String> = world.expert.runs().into_iter().map(|r| r.input).collect();
    assert_eq!(inputs, ["first", "second"]);
}

#[tokio::test]
async fn a_pull_cut_short_stays_open_until_the_next_holder_recovers_it() {
    use dispatcher::ordering::{FetchLock, Interrupted, Ordering, PullEnd};

    let redis = test_harness::RedisServer::start().await;
    let connection = || async {
        let client = redis::Client::open(redis.url()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    };
    let stopping = Ordering::new(connection().await, "stopping");
    let next = Ordering::new(connection().await, "next");
    let ttl = Duration::from_secs(5);

    assert_eq!(stopping.lock_fetch(ttl).await.unwrap(), FetchLock::Taken);
    // Shut down while its batch was being read: what JetStream delivered after sequence 7 may
    // never have been registered.
    stopping.unlock_fetch(7, PullEnd::Cut).await.unwrap();
    assert_eq!(
        next.lock_fetch(ttl).await.unwrap(),
        FetchLock::Interrupted(Interrupted {
            holder: "stopping".to_owned(),
            cursor: 7,
        })
    );
    next.unlock_fetch(9, PullEnd::Complete).await.unwrap();
    assert_eq!(stopping.lock_fetch(ttl).await.unwrap(), FetchLock::Taken);
}

#[tokio::test]
async fn throttling_reported_by_the_notifier_thins_out_updates_but_not_the_final_answer() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    let answer: String = (0..50).map(|i| format!("w{i} ")).collect();
    world.expert.set_default(Behavior {
        reply: Reply::Text(answer.clone()),
        chunks: 50,
        chunk_delay: Duration::from_millis(100),
        ..Behavior::default()
    });
    let _d = world.dispatcher(&[("STREAM_UPDATE_INTERVAL", "1s")]).await;
    // Let the dispatcher subscribe to results, then report throttling as the notifier would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let throttled = json!({"v": 1, "command_id": "acme:m0:update:3", "integration_id": "acme",
        "op": "update", "status": "failed", "finished_at": "2026-11-25T10:00:00Z",
        "error": {"code": "throttled", "message": "slow down", "retryable": true}});
    world
        .js
        .publish("dingtalk.results.acme.update", throttled.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    world
        .publish(&private("acme", "m1", "u1", "talk"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, answer);
    let commands = world.commands().await;
    let intermediate = commands
        .iter()
        .filter(|c| matches!(c.op, Operation::Update(_)) && c.id != "acme:m1:final")
        .count();
    // The interval doubled to 2 s: at most two updates in 5 s instead of five.
    assert!(
        (1..=2).contains(&intermediate),
        "{intermediate} updates: {commands:#?}"
    );
}

#[tokio::test]
async fn an_event_out_of_deliveries_is_dead_lettered_and_frees_its_conversation() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.script(Behavior {
        delay: Duration::from_secs(30),
        ..Behavior::default()
    });
    // One delivery only: the replica holding the event dies, nobody gets it again.
    let overrides = [("DISPATCHER_MAX_DELIVER", "1"), ("THINKING_DELAY", "0s")];
    let mut first = world.dispatcher(&overrides).await;
    world
        .publish(&private("acme", "m1", "u1", "stuck"), None)
        .await;
    world
        .wait_commands(Duration::from_secs(10), |c| {
            !of_event(c, "acme:m1").is_empty()
        })
        .await;
    first.kill();
    let _second = world.dispatcher(&overrides).await;

    let letters = world.wait_dead_letters(Duration::from_secs(15)).await;
    let (subject, headers, body) = &letters[0];
    assert_eq!(subject, "dingtalk.dlq.dispatcher.acme");
    assert!(headers
        .get(dlq_headers::REASON)
        .unwrap()
        .as_str()
        .starts_with("max_deliveries:"));
    let original: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(original["id"], "acme:m1");
    // The conversation is not blocked behind the dead event.
    world
        .publish(&private("acme", "m2", "u1", "next"), None)
        .await;
    assert!(world.answer("acme:m2").await.ends_with(": next"));
    // Dead-lettered counts as settled: the callback replayed after the duplicate window does
    // not run the expert again (the DLQ replay, under a new id, is the operator's call).
    world.publish(&original, Some("replayed-later")).await;
    world
        .publish(&private("acme", "m3", "u1", "after"), None)
        .await;
    assert!(world.answer("acme:m3").await.ends_with(": after"));
    assert_eq!(world.expert.runs_for_event("acme:m1"), 1);
}

#[tokio::test]
async fn an_answer_slower_than_the_ack_wait_is_kept_alive_not_redelivered() {
    let world = World::start().await;
    world.integration("acme", Some("x"), None).await;
    world.expert.set_default(Behavior {
        delay: Duration::from_secs(5),
        ..Behavior::not_streaming()
    });
    // Progress every third of the 2 s ack wait keeps the 5 s run's event ours.
    let _d = world.dispatcher(&[("DISPATCHER_ACK_WAIT", "2s")]).await;

    world
        .publish(&private("acme", "m1", "u1", "slow"), None)
        .await;
    assert_eq!(world.answer("acme:m1").await, "echo #1: slow");
    assert_eq!(world.expert.runs().len(), 1);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = world
        .js
        .get_stream("DINGTALK_EVENTS")
        .await
        .unwrap()
        .get_consumer("dispatcher")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    // One delivery in all: a redelivery would have counted a second.
    assert_eq!(info.delivered.consumer_sequence, 1, "{info:?}");
}

/// A world in English with one dispatcher, whose expert runs the first message as `script`
/// says.
async fn asking(script: Behavior) -> (World, support::Replica) {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    let dispatcher = world.dispatcher(&[]).await;
    world.expert.script(script);
    (world, dispatcher)
}

fn conversation_of(staff_id: &str) -> ConversationKey {
    ConversationKey::new("acme".parse().unwrap(), format!("cid-{staff_id}"), staff_id).unwrap()
}

#[tokio::test]
async fn an_expert_that_stops_to_ask_is_answered_by_the_next_message() {
    let (world, _d) = asking(Behavior {
        reply: Reply::Text("I will email Li the report.".into()),
        interrupt: Some(json!({
            "action_requests": [{"name": "send_email", "args": {"to": "li"}, "description": "Email the Q3 report to Li"}],
            "review_configs": [{"action_name": "send_email", "allowed_decisions": ["approve", "reject"]}]
        })),
        ..Behavior::default()
    })
    .await;

    let asked = world.say("m1", "u1", "mail Li the Q3 report").await;
    assert!(
        asked.starts_with(
            "I will email Li the report.\n\nEmail the Q3 report to Li\n\n```json\n{\n  \"to\": \"li\"\n}\n```\n\nReply \"yes\""
        ),
        "{asked}"
    );
    let thread = world.expert.runs()[0].thread_id.clone();
    let waiting = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await;
    let waiting = waiting.unwrap().unwrap();
    assert_eq!(waiting.thread_id.as_str(), thread);
    assert_eq!(waiting.asked_by, "acme:m1");
    // The interrupt's id and a hash of what it asks.
    assert_eq!(waiting.interrupts.len(), 1);
    let id = format!("int-{}#", world.expert.runs()[0].run_id);
    assert!(waiting.interrupts[0].starts_with(&id), "{waiting:?}");

    // The reply answers the question: a resume of the same thread, not a new message.
    assert_eq!(
        world.say("m2", "u1", "Yes").await,
        r#"echo #2: resumed with {"decisions":[{"type":"approve"}]}"#
    );
    let runs = world.expert.runs();
    assert_eq!(runs[1].thread_id, thread);
    assert_eq!(
        runs[1].resume,
        Some(json!({"decisions": [{"type": "approve"}]}))
    );
    assert_eq!(runs[1].metadata["dingtalk_event_id"], "acme:m2");
    let waiting = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await;
    assert_eq!(waiting.unwrap(), None);

    // Nothing waits any more: the next message is a message.
    assert_eq!(world.say("m3", "u1", "thanks").await, "echo #3: thanks");
    assert_eq!(world.expert.runs()[2].resume, None);
}

#[tokio::test]
async fn a_question_answered_elsewhere_or_left_with_new_no_longer_takes_the_next_message() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    let _d = world.dispatcher(&[]).await;
    let asks = || Behavior {
        interrupt: Some(json!({"question": "Which day?"})),
        ..Behavior::default()
    };
    world.expert.script(asks());
    assert_eq!(
        world.say("m1", "u1", "plan a trip").await,
        "echo #1: plan a trip\n\nWhich day?"
    );
    let thread = world.expert.runs()[0].thread_id.clone();
    assert!(world.expert.pending_interrupt(&thread).is_some());

    // Answered in the expert's own UI meanwhile: the thread is asked before it is resumed.
    world.expert.answer_elsewhere(&thread);
    assert_eq!(world.say("m2", "u1", "Friday").await, "echo #2: Friday");
    assert_eq!(world.expert.runs()[1].resume, None);
    let waiting = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await;
    assert_eq!(waiting.unwrap(), None);

    // A reset leaves the question behind with its thread.
    world.expert.script(asks());
    world.say("m3", "u1", "another trip").await;
    world.say("m4", "u1", "/new").await;
    let waiting = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await;
    assert_eq!(waiting.unwrap(), None);
    assert_eq!(world.say("m5", "u1", "Monday").await, "echo #1: Monday");
    let runs = world.expert.runs();
    assert_eq!(runs[3].resume, None);
    assert_ne!(runs[3].thread_id, thread);
}

#[tokio::test]
async fn a_question_asked_while_the_dispatcher_died_is_shown_by_its_successor() {
    // `/join` returns only the interrupt (LangGraph), or only the messages: either way the
    // successor shows what the run said and what it asks, and the reply resumes it.
    for join_shows_interrupts in [true, false] {
        let world = World::start().await;
        world.integration("acme", Some("x"), Some("en")).await;
        world.expert.join_shows_interrupts(join_shows_interrupts);
        world.expert.script(Behavior {
            delay: Duration::from_millis(1500),
            interrupt: Some(json!("Which day?")),
            ..Behavior::default()
        });
        let mut first = world.dispatcher(&[]).await;
        world
            .publish(&private("acme", "m1", "u1", "plan a trip"), None)
            .await;
        world.run_started().await;
        first.kill();
        let _second = world.dispatcher(&[]).await;
        assert_eq!(
            world.answer("acme:m1").await,
            "echo #1: plan a trip\n\nWhich day?",
            "join shows interrupts: {join_shows_interrupts}"
        );
        assert_eq!(world.expert.runs().len(), 1);
        assert_eq!(
            world.say("m2", "u1", "Friday").await,
            "echo #2: resumed with Friday"
        );
    }
}

#[tokio::test]
async fn a_reply_whose_run_was_cancelled_leaves_nothing_to_answer() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    world.expert.script(Behavior {
        interrupt: Some(json!("Which day?")),
        ..Behavior::default()
    });
    // The resume run outlives EXPERT_TIMEOUT and is cancelled mid-step: LangGraph leaves the
    // thread `interrupted`, with no interrupt to answer.
    world.expert.script(Behavior {
        delay: Duration::from_secs(60),
        ..Behavior::default()
    });
    let _d = world
        .dispatcher(&[("EXPERT_TIMEOUT", "1s"), ("EXPERT_MAX_ATTEMPTS", "1")])
        .await;
    world.say("m1", "u1", "plan a trip").await;
    assert!(world.say("m2", "u1", "Friday").await.starts_with("Sorry"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.expert.statuses_for_event("acme:m2") != ["interrupted"] {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(world.say("m3", "u1", "hello").await, "echo #2: hello");
    assert_eq!(world.expert.runs()[2].resume, None);
}

#[tokio::test]
async fn a_reply_the_question_does_not_allow_is_not_sent_and_the_question_stands() {
    let (world, _d) = asking(Behavior {
        reply: Reply::Text("Ready to email Li.".into()),
        interrupt: Some(json!({
            "action_requests": [{"name": "send_email", "args": {"to": "li"}, "description": "Email Li"}],
            "review_configs": [{"action_name": "send_email", "allowed_decisions": ["approve", "edit"]}]
        })),
        ..Behavior::default()
    })
    .await;
    assert_eq!(
        world.say("m1", "u1", "mail Li").await,
        "Ready to email Li.\n\nEmail Li\n\n```json\n{\n  \"to\": \"li\"\n}\n```\n\nReply \"yes\" to go ahead."
    );
    // Rejecting is not allowed: the middleware would fail the run on it.
    assert_eq!(
        world.say("m2", "u1", "no").await,
        "That reply does not fit this question.\n\nEmail Li\n\n```json\n{\n  \"to\": \"li\"\n}\n```\n\nReply \"yes\" to go ahead."
    );
    assert_eq!(world.expert.runs().len(), 1);
    world.say("m3", "u1", "ok").await;
    let runs = world.expert.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].resume,
        Some(json!({"decisions": [{"type": "approve"}]}))
    );
}

#[tokio::test]
async fn a_question_the_user_has_not_seen_is_shown_before_anything_answers_it() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    let _d = world.dispatcher(&[]).await;
    let review =
        |what: &str| json!({"action_requests": [{"name": "t", "args": {}, "description": what}]});
    world.expert.script(Behavior {
        interrupt: Some(review("Email Li")),
        ..Behavior::default()
    });
    world.say("m1", "u1", "mail Li").await;
    let thread = world.expert.runs()[0].thread_id.clone();

    // Answered in the expert's own UI, which then asks something else: "ok" must not approve
    // what the user never saw.
    world
        .expert
        .ask_elsewhere(&thread, review("Delete the Q3 folder"));
    let shown = world.say("m2", "u1", "ok").await;
    assert!(
        shown.starts_with(
            "The expert is still waiting for your answer to this:\n\nDelete the Q3 folder\n\nReply"
        ),
        "{shown}"
    );
    assert_eq!(world.expert.runs().len(), 1);
    world.say("m3", "u1", "no").await;
    assert_eq!(
        world.expert.runs()[1].resume,
        Some(json!({"decisions": [{"type": "reject"}]}))
    );

    // The binding expires while the expert waits: the thread, bound again, still waits, and
    // the next message shows the question instead of going in on top of it.
    world.expert.script(Behavior {
        interrupt: Some(review("Email Wang")),
        ..Behavior::default()
    });
    world.say("m4", "u1", "mail Wang").await;
    let key = conversation_of("u1").encoded();
    let mut redis = redis::Client::open(world.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(format!("dtg:conv:{key}"))
        .arg(format!("dtg:conv-wait:{key}"))
        .exec_async(&mut redis)
        .await
        .unwrap();
    let shown = world.say("m5", "u1", "hello").await;
    assert!(
        shown.starts_with("The expert is still waiting for your answer to this:\n\nEmail Wang"),
        "{shown}"
    );
    assert_eq!(world.expert.runs().len(), 3);
    world.say("m6", "u1", "yes").await;
    let runs = world.expert.runs();
    assert_eq!(runs[3].thread_id, thread);
    assert_eq!(
        runs[3].resume,
        Some(json!({"decisions": [{"type": "approve"}]}))
    );
}

#[tokio::test]
async fn a_redelivered_event_that_asked_shows_its_question_again_and_answers_nothing() {
    let (world, _d) = asking(Behavior {
        interrupt: Some(json!("Which day?")),
        ..Behavior::default()
    })
    .await;
    world.say("m1", "u1", "plan a trip").await;
    // As if m2 had shown this question and died before its ack, on a server that cannot list
    // runs: its redelivery must not take its own text for the answer.
    let mut question = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await
        .unwrap()
        .unwrap();
    question.asked_by = "acme:m2".into();
    world
        .registry
        .set_waiting_question(&conversation_of("u1"), Some(&question))
        .await
        .unwrap();
    // The answer it would have given: what the run said, and what it asks.
    assert_eq!(
        world.say("m2", "u1", "book it").await,
        "echo #1: plan a trip\n\nWhich day?"
    );
    assert_eq!(world.expert.runs().len(), 1);
}

#[tokio::test]
async fn a_card_button_answers_a_waiting_question_only_as_it_can() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    let _d = world.dispatcher(&[]).await;
    let press = |id: &str, action: &str| {
        json!({"v": 1, "id": format!("acme:{id}"), "integration_id": "acme", "kind": "card_action",
            "received_at": "2026-11-25T10:01:00Z", "card": {"out_track_id": "acme:m1:reply"},
            "action": {"id": action, "params": {"day": "Friday"}}, "user": {"staff_id": "u1"},
            "conversation": {"id": "cid-u1", "type": "private"}})
    };
    // A free question gets the press itself.
    world.expert.script(Behavior {
        interrupt: Some(json!("Which day?")),
        ..Behavior::default()
    });
    world.say("m1", "u1", "plan a trip").await;
    world.publish(&press("c1", "pick_day"), None).await;
    world.answer("acme:c1").await;
    assert_eq!(
        world.expert.runs()[1].resume,
        Some(json!({"card": "acme:m1:reply", "action": "pick_day", "params": {"day": "Friday"}}))
    );

    // A tool review is decided by an approve or reject button, not by any other.
    world.expert.script(Behavior {
        interrupt: Some(
            json!({"action_requests": [{"name": "t", "args": {}, "description": "Book it"}]}),
        ),
        ..Behavior::default()
    });
    world.say("m2", "u1", "book it").await;
    world.publish(&press("c2", "details"), None).await;
    assert!(world
        .answer("acme:c2")
        .await
        .starts_with("That reply does not fit this question.\n\nBook it"));
    assert_eq!(world.expert.runs().len(), 3);
    world.publish(&press("c3", "approve"), None).await;
    world.answer("acme:c3").await;
    assert_eq!(
        world.expert.runs()[3].resume,
        Some(json!({"decisions": [{"type": "approve"}]}))
    );
}

#[tokio::test]
async fn a_question_whose_thread_the_expert_lost_leaves_the_reply_a_message() {
    let (world, _d) = asking(Behavior {
        interrupt: Some(json!("Which day?")),
        ..Behavior::default()
    })
    .await;
    world.say("m1", "u1", "plan a trip").await;
    let thread = world.expert.runs()[0].thread_id.clone();
    world.expert.forget_thread(&thread);
    assert_eq!(world.say("m2", "u1", "Friday").await, "echo #1: Friday");
    assert_eq!(world.expert.runs()[0].resume, None);
    let waiting = world
        .registry
        .waiting_question(&conversation_of("u1"))
        .await;
    assert_eq!(waiting.unwrap(), None);
}

#[tokio::test]
async fn a_retried_reply_asks_the_thread_again_before_it_answers_anything() {
    let world = World::start().await;
    world.integration("acme", Some("x"), Some("en")).await;
    world.expert.disable_run_listing();
    let review =
        |what: &str| json!({"action_requests": [{"name": "t", "args": {}, "description": what}]});
    world.expert.script(Behavior {
        interrupt: Some(review("Email Li")),
        ..Behavior::default()
    });
    // The resume outlives EXPERT_TIMEOUT, goes on at the server and stops on a new question.
    world.expert.script(Behavior {
        delay: Duration::from_millis(1500),
        interrupt: Some(review("Delete the Q3 folder")),
        ..Behavior::default()
    });
    let _d = world
        .dispatcher(&[
            ("EXPERT_TIMEOUT", "1s"),
            ("EXPERT_MAX_ATTEMPTS", "2"),
            ("EXPERT_RETRY_BACKOFF", "2s"),
        ])
        .await;
    world.say("m1", "u1", "mail Li").await;
    let shown = world.say("m2", "u1", "yes").await;
    // The retry must not take "yes" to the question the user never saw.
    assert_eq!(world.expert.runs().len(), 2, "{shown}");
    assert!(
        shown.starts_with(
            "The expert is still waiting for your answer to this:\n\nDelete the Q3 folder"
        ),
        "{shown}"
    );
}
