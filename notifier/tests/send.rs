//! `op: send` to every recipient type, against the simulator over HTTP: what DingTalk receives
//! and the one result the caller gets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use common::bus::result::Status;
use common::cards::CardSpace;
use dingtalk_sim::{
    Api, CallFilter, CustomRobotConfig, Directory, Fault, FaultCount, FaultKind, Session, User,
};
use notifier::records::Forget;
use serde_json::{json, Value};
use support::{file_server, send, text, Bed, Options, APP_A};

fn calls(bed: &Bed, api: Api) -> Vec<Value> {
    bed.sim
        .state()
        .calls(&CallFilter::api(api))
        .into_iter()
        .map(|c| c.body)
        .collect()
}

fn user(userid: &str) -> User {
    User {
        userid: userid.to_owned(),
        unionid: format!("union-{userid}"),
        name: format!("Name {userid}"),
        mobile: String::new(),
        email: String::new(),
        title: String::new(),
        dept_ids: vec![1],
        admin: false,
        boss: false,
        active: true,
    }
}

#[tokio::test]
async fn forty_five_user_ids_are_three_batch_sends_with_per_recipient_results() {
    let bed = Bed::start().await;
    let mut directory = Directory::seeded();
    directory
        .users
        .extend((0..43).map(|i| user(&format!("staff{i:02}"))));
    bed.sim.state().set_directory(directory);
    let mut ids: Vec<String> = (0..43).map(|i| format!("staff{i:02}")).collect();
    ids.insert(10, "ghost-1".to_owned());
    ids.push("ghost-2".to_owned());
    let recipients: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "user_id", "id": id}))
        .collect();
    bed.publish(&send(
        "c45",
        "acme",
        json!(recipients),
        text("deploy finished"),
    ))
    .await;
    let result = bed.result("c45").await;
    assert_eq!(result.status, Status::Ok);
    assert_eq!(result.targets.len(), 45);
    let failed: Vec<&str> = result
        .targets
        .iter()
        .filter(|t| !t.ok)
        .map(|t| t.recipient.id.as_str())
        .collect();
    assert_eq!(failed, ["ghost-1", "ghost-2"]);
    assert!(result
        .targets
        .iter()
        .filter(|t| !t.ok)
        .all(|t| t.error.as_ref().unwrap().code == "invalidStaffIdList"));
    assert!(result.process_query_key.is_some());
    let sends = calls(&bed, Api::RobotBatchSend);
    let sizes: Vec<usize> = sends
        .iter()
        .map(|b| b["userIds"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [20, 20, 5]);
    for body in &sends {
        assert_eq!(body["robotCode"], APP_A);
        assert_eq!(body["msgKey"], "sampleText");
        assert_eq!(
            body["msgParam"], r#"{"content":"deploy finished"}"#,
            "msgParam is a JSON string"
        );
    }
}

#[tokio::test]
async fn a_chat_id_gets_a_group_send_and_a_group_without_the_robot_fails_alone() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-group",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}, {"type": "chat_id", "id": Directory::NO_ROBOT_GROUP}]),
        json!({"type": "markdown", "title": "Deploy", "text": "## done"}),
    ))
    .await;
    let result = bed.result("c-group").await;
    assert_eq!(result.status, Status::Ok);
    assert!(result.targets[0].ok);
    assert!(!result.targets[1].ok);
    let group_sends = calls(&bed, Api::GroupSend);
    assert_eq!(
        group_sends.len(),
        1,
        "the refused group is not counted as accepted"
    );
    assert_eq!(group_sends[0]["openConversationId"], Directory::OPS_GROUP);
    assert_eq!(group_sends[0]["msgKey"], "sampleMarkdown");
    assert_eq!(
        group_sends[0]["msgParam"],
        r###"{"text":"## done","title":"Deploy"}"###
    );
}

#[tokio::test]
async fn mentions_in_a_group_go_out_as_a_standard_card_with_at_user_list_json() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-mention",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}]),
        json!({"type": "markdown", "title": "On call", "text": "please look"}),
    );
    command["mentions"] = json!({"user_ids": ["user001"], "all": false});
    bed.publish(&command).await;
    let result = bed.result("c-mention").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(result.card_biz_id.as_deref(), Some("c-mention"));
    let cards = calls(&bed, Api::StandardCardSend);
    assert_eq!(cards.len(), 1);
    let card = &cards[0];
    assert_eq!(card["cardBizId"], "c-mention");
    assert_eq!(card["openConversationId"], Directory::OPS_GROUP);
    assert_eq!(card["callbackRouteKey"], "dingtalk-gateway-acme");
    let at: Value =
        serde_json::from_str(card["sendOptions"]["atUserListJson"].as_str().unwrap()).unwrap();
    assert_eq!(at[0]["userId"], "user001");
    let data: Value = serde_json::from_str(card["cardData"].as_str().unwrap()).unwrap();
    assert_eq!(data["contents"][0]["type"], "markdown");
    assert_eq!(data["contents"][0]["text"], "please look");
    assert!(calls(&bed, Api::GroupSend).is_empty());
}

#[tokio::test]
async fn a_union_id_of_an_external_contact_fails_clearly_and_the_others_are_sent() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-ext",
        "acme",
        json!([{"type": "union_id", "id": "union-ext001"}, {"type": "union_id", "id": "union-user001"}]),
        text("hello partner"),
    ))
    .await;
    let result = bed.result("c-ext").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let error = result.targets[0]
        .error
        .as_ref()
        .expect("the contact failed");
    assert_eq!(error.code, "external_contact", "{result:?}");
    assert!(!error.retryable);
    assert!(result.targets[1].ok);
    // Only the employee was in the batch.
    let sent = calls(&bed, Api::RobotBatchSend);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["userIds"], json!(["user001"]));
}

#[tokio::test]
async fn a_union_id_is_resolved_once_then_sent_one_to_one() {
    let bed = Bed::start().await;
    for id in ["c-union-1", "c-union-2"] {
        bed.publish(&send(
            id,
            "acme",
            json!([{"type": "union_id", "id": "union-user002"}, {"type": "union_id", "id": "union-nobody"}]),
            text("hi"),
        ))
        .await;
        let result = bed.result(id).await;
        assert_eq!(result.status, Status::Ok);
        assert_eq!(
            result.targets[0].recipient.id, "union-user002",
            "the result names the recipient as given"
        );
        assert!(result.targets[0].ok);
        assert_eq!(
            result.targets[1].error.as_ref().unwrap().code,
            "unknown_union_id"
        );
    }
    let lookups = calls(&bed, Api::UserGetByUnionId);
    let known: Vec<&Value> = lookups
        .iter()
        .filter(|b| b["unionid"] == "union-user002")
        .collect();
    assert_eq!(known.len(), 1, "cached in Redis after the first lookup");
    let sends = calls(&bed, Api::RobotBatchSend);
    assert_eq!(sends.len(), 2);
    assert!(sends.iter().all(|b| b["userIds"] == json!(["user002"])));
}

#[tokio::test]
async fn open_ids_travel_as_open_ids_on_batch_send() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-open",
        "acme",
        json!([{"type": "open_id", "id": "open-1"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-open").await;
    // The simulator follows the official SDK, which has no `openIds`: DingTalk's refusal is the
    // recipient's failure (PROTOCOL §8.4: UNVERIFIED).
    assert_eq!(result.status, Status::Failed);
    assert!(!result.targets[0].ok);
    let refused = bed
        .sim
        .state()
        .rejected(&CallFilter::api(Api::RobotBatchSend));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].body["openIds"], json!(["open-1"]));
    assert!(refused[0].body.get("userIds").is_none());
}

#[tokio::test]
async fn a_webhook_recipient_posts_to_the_custom_robot_and_long_bodies_are_split() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .register_custom_robot(CustomRobotConfig {
            access_token: "robot-token-1".into(),
            secret: None,
            keywords: Vec::new(),
        })
        .unwrap();
    bed.publish(&send(
        "c-hook",
        "acme",
        json!([{"type": "webhook", "id": "robot-token-1"}]),
        json!({"type": "markdown", "title": "Alert", "text": "**disk full**"}),
    ))
    .await;
    let result = bed.result("c-hook").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let posts = calls(&bed, Api::CustomRobotSend);
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0],
        json!({"msgtype": "markdown", "markdown": {"title": "Alert", "text": "**disk full**"}})
    );

    let long = "a line of a very long alert\n".repeat(1500);
    bed.publish(&send(
        "c-hook-long",
        "acme",
        json!([{"type": "webhook", "id": "robot-token-1"}]),
        text(&long),
    ))
    .await;
    let result = bed.result("c-hook-long").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let posts = calls(&bed, Api::CustomRobotSend);
    assert_eq!(posts.len(), 4, "42,000 bytes in three bodies under 20,000");
    let joined: String = posts[1..]
        .iter()
        .map(|b| b["text"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(joined, long);
    assert!(posts.iter().all(|b| b.to_string().len() <= 20_000));

    bed.publish(&send(
        "c-hook-unknown",
        "acme",
        json!([{"type": "webhook", "id": "no-such-robot"}]),
        text("x"),
    ))
    .await;
    let result = bed.result("c-hook-unknown").await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(result.error.unwrap().code, "300001");
}

#[tokio::test]
async fn signed_custom_robots_get_a_valid_sign_and_a_wrong_or_missing_secret_fails_clearly() {
    use common::registry::{CustomRobotSpec, IntegrationId};
    use common::secret::Secret;
    let bed = Bed::start().await;
    for token in ["robot-signed", "robot-wrong", "robot-unlisted"] {
        bed.sim
            .state()
            .register_custom_robot(CustomRobotConfig {
                access_token: token.into(),
                secret: Some(Secret::new(format!("SEC-{token}"))),
                keywords: Vec::new(),
            })
            .unwrap();
    }
    let id: IntegrationId = "acme".parse().unwrap();
    let mut spec = bed
        .registry
        .get_integration(&id)
        .await
        .unwrap()
        .unwrap()
        .to_spec();
    spec.custom_robots = Some(vec![
        CustomRobotSpec {
            access_token: Secret::new("robot-signed"),
            secret: Secret::new("SEC-robot-signed"),
        },
        CustomRobotSpec {
            access_token: Secret::new("robot-wrong"),
            secret: Secret::new("SEC-not-this-one"),
        },
    ]);
    bed.registry.put_integration(spec).await.unwrap();

    bed.publish(&send(
        "c-signed",
        "acme",
        json!([{"type": "webhook", "id": "robot-signed"}]),
        text("signed alert"),
    ))
    .await;
    let result = bed.result("c-signed").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(calls(&bed, Api::CustomRobotSend).len(), 1);

    for (command, token, says) in [
        ("c-wrong-sign", "robot-wrong", "that secret is wrong"),
        ("c-no-sign", "robot-unlisted", "sent unsigned"),
    ] {
        bed.publish(&send(
            command,
            "acme",
            json!([{"type": "webhook", "id": token}]),
            text("alert"),
        ))
        .await;
        let result = bed.result(command).await;
        assert_eq!(result.status, Status::Failed, "{result:?}");
        let error = result.error.unwrap();
        assert_eq!(error.code, "310000");
        assert!(!error.retryable);
        assert!(error.message.contains(says), "{}", error.message);
        assert!(error.message.contains("sign"), "{}", error.message);
        assert!(
            !error.message.contains("SEC-"),
            "no secret in results: {}",
            error.message
        );
        assert_eq!(bed.dead_letters_of(command).len(), 1);
    }
    let refused = bed
        .sim
        .state()
        .rejected(&CallFilter::api(Api::CustomRobotSend));
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(
        calls(&bed, Api::CustomRobotSend).len(),
        1,
        "nothing else got through"
    );
}

#[tokio::test]
async fn session_webhooks_only_on_dingtalks_host_and_expired_ones_fail_clearly() {
    let bed = Bed::start().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let session = |expires_at_ms| Session {
        conversation_id: "cidSession==".into(),
        robot_code: APP_A.into(),
        expires_at_ms,
    };
    let live = session(now + 3_600_000).webhook_url(&bed.sim.base_url());
    let expired = session(now - 1_000).webhook_url(&bed.sim.base_url());
    bed.publish(&send(
        "c-session",
        "acme",
        json!([
            {"type": "session_webhook", "id": live},
            {"type": "session_webhook", "id": expired},
            {"type": "session_webhook", "id": "http://169.254.169.254/robot/sendBySession?session=x"}
        ]),
        text("thanks, on it"),
    ))
    .await;
    let result = bed.result("c-session").await;
    assert_eq!(result.status, Status::Ok);
    assert!(result.targets[0].ok);
    assert_eq!(
        result.targets[1].error.as_ref().unwrap().code,
        "session_webhook_expired"
    );
    assert_eq!(
        result.targets[2].error.as_ref().unwrap().code,
        "session_webhook_refused"
    );
    let posts = calls(&bed, Api::SessionSend);
    assert_eq!(
        posts,
        [json!({"msgtype": "text", "text": {"content": "thanks, on it"}})]
    );
}

#[tokio::test]
async fn state_placeholders_fill_recipient_ids_and_message_strings() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-state",
        "acme",
        json!([{"type": "user_id", "id": "{{state.dingtalkRecipientId}}"}]),
        text("Order {{state.order.id}} shipped"),
    );
    command["state"] = json!({"dingtalkRecipientId": "user003", "order": {"id": 7731}});
    bed.publish(&command).await;
    let result = bed.result("c-state").await;
    assert_eq!(result.status, Status::Ok);
    assert_eq!(result.targets[0].recipient.id, "user003");
    let sends = calls(&bed, Api::RobotBatchSend);
    assert_eq!(sends[0]["userIds"], json!(["user003"]));
    assert_eq!(sends[0]["msgParam"], r#"{"content":"Order 7731 shipped"}"#);
}

#[tokio::test]
async fn a_template_card_whose_creation_answer_was_lost_is_still_delivered_once() {
    let bed = Bed::start().await;
    // DingTalk creates the card, but its answer is lost (500): the creation is in doubt.
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::AnswerLost).on(Api::CardCreate))
        .unwrap();
    bed.publish(&send(
        "c-tpl-lost",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}]),
        json!({"type": "template", "template_id": "tpl-123.schema", "params": {"title": "Build"}}),
    ))
    .await;
    let result = bed.result("c-tpl-lost").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let instance = bed
        .sim
        .state()
        .card_instance(APP_A, "c-tpl-lost")
        .expect("card instance created");
    assert_eq!(instance.deliveries.len(), 1);
}

#[tokio::test]
async fn a_batch_dingtalk_refuses_for_one_unknown_user_still_reaches_the_others() {
    let mut options = Options::default();
    options.sim.limits.refuse_batch_with_unknown_staff = true;
    let bed = Bed::with(options).await;
    bed.publish(&send(
        "c-ghost",
        "acme",
        json!([{"type": "user_id", "id": "user001"}, {"type": "user_id", "id": "ghost-9"},
               {"type": "user_id", "id": "user002"}]),
        text("all hands"),
    ))
    .await;
    let result = bed.result("c-ghost").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let failed: Vec<(&str, &str)> = result
        .targets
        .iter()
        .filter(|t| !t.ok)
        .map(|t| {
            (
                t.recipient.id.as_str(),
                t.error.as_ref().unwrap().code.as_str(),
            )
        })
        .collect();
    assert_eq!(failed, [("ghost-9", "staffId.notExisted")]);
    // The refused batch, then one send each.
    let sizes: Vec<usize> = calls(&bed, Api::RobotBatchSend)
        .iter()
        .map(|b| b["userIds"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1, 1], "accepted calls");
    let delivered = bed
        .sim
        .state()
        .messages()
        .iter()
        .filter(|m| m.content["content"] == "all hands")
        .count();
    assert_eq!(delivered, 2);
}

#[tokio::test]
async fn a_template_card_whose_existence_cannot_be_told_fails_retryably_not_for_good() {
    let bed = Bed::start().await;
    // Created, answer lost; the retry is refused as a duplicate; the check fails on its own.
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::AnswerLost).on(Api::CardCreate))
        .unwrap();
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::Http500)
                .on(Api::CardUpdate)
                .times(FaultCount::Always),
        )
        .unwrap();
    bed.publish(&send(
        "c-tpl-unknown",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}]),
        json!({"type": "template", "template_id": "tpl-123.schema", "params": {"title": "Build"}}),
    ))
    .await;
    let result = bed.result("c-tpl-unknown").await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    let error = result.error.as_ref().expect("an error");
    assert!(error.retryable, "{result:?}");
    assert!(bed.dead_letters_of("c-tpl-unknown").is_empty());
}

#[tokio::test]
async fn a_split_batch_is_not_put_off_once_a_single_send_may_have_gone_out() {
    let mut options = Options::default();
    options.sim.limits.refuse_batch_with_unknown_staff = true;
    // Longer than the client waits for a throttle: the ban puts the command off.
    options.ip_ban = Some(Duration::from_secs(60));
    let bed = Bed::with(options).await;
    // The batch is refused for ghost-9; then user001 alone is delivered but its answer lost,
    // ghost-9 alone is refused, and user002 alone meets an IP ban.
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::AnswerLost)
                .on(Api::RobotBatchSend)
                .after(1),
        )
        .unwrap();
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::IpBan)
                .on(Api::RobotBatchSend)
                .after(3),
        )
        .unwrap();
    bed.publish(&send(
        "c-split",
        "acme",
        json!([{"type": "user_id", "id": "user001"}, {"type": "user_id", "id": "ghost-9"},
               {"type": "user_id", "id": "user002"}]),
        text("split guard"),
    ))
    .await;
    // Put off, the step would run again and send user001 a second copy: it ends now instead.
    let result = bed.result_within("c-split", Duration::from_secs(15)).await;
    let last = &result.targets[2];
    assert_eq!(last.recipient.id, "user002");
    let error = last.error.as_ref().expect("user002 was throttled");
    assert_eq!(error.code, "throttled", "{result:?}");
    assert!(error.retryable);
    let delivered = bed
        .sim
        .state()
        .messages()
        .iter()
        .filter(|m| m.content["content"] == "split guard")
        .count();
    assert_eq!(delivered, 1, "user001's copy");
}

#[tokio::test]
async fn interactive_and_template_cards_are_sent_as_cards() {
    let bed = Bed::start().await;
    let card = json!({"config": {"autoLayout": true}, "header": {"title": {"type": "text", "text": "Approve?"}},
                      "contents": [{"type": "markdown", "text": "Expense #12", "id": "m1"}]});
    bed.publish(&send(
        "c-card",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        json!({"type": "interactive", "card": card}),
    ))
    .await;
    let result = bed.result("c-card").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let sent = calls(&bed, Api::StandardCardSend);
    assert_eq!(sent[0]["singleChatReceiver"], r#"{"userId":"user001"}"#);
    let data: Value = serde_json::from_str(sent[0]["cardData"].as_str().unwrap()).unwrap();
    assert_eq!(data, card);

    bed.publish(&send(
        "c-tpl",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}, {"type": "user_id", "id": "user002"}]),
        json!({"type": "template", "template_id": "tpl-123.schema", "params": {"title": "Build", "count": 3}}),
    ))
    .await;
    let result = bed.result("c-tpl").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert!(result.targets.iter().all(|t| t.ok));
    assert_eq!(result.card_biz_id.as_deref(), Some("c-tpl"));
    let instance = bed
        .sim
        .state()
        .card_instance(APP_A, "c-tpl")
        .expect("card instance created");
    assert_eq!(instance.card_param_map["count"], "3");
    assert_eq!(
        instance.callback_route_key.as_deref(),
        Some("dingtalk-gateway-acme")
    );
    assert_eq!(instance.deliveries.len(), 2);
    let deliver = calls(&bed, Api::CardDeliver);
    assert_eq!(
        deliver[0]["openSpaceId"],
        format!(
            "dtv1.card//IM_GROUP.{};IM_ROBOT.user002",
            Directory::OPS_GROUP
        )
    );

    // Both cards are on record where they went, for the ingress to check unsigned presses.
    let mut redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let standard = common::cards::lookup(&mut redis, "acme", "c-card")
        .await
        .unwrap()
        .expect("the StandardCard is remembered");
    assert_eq!(standard.spaces, [CardSpace::User("user001".into())]);
    let template = common::cards::lookup(&mut redis, "acme", "c-tpl")
        .await
        .unwrap()
        .expect("the template card is remembered");
    assert_eq!(
        template.spaces,
        [
            CardSpace::Group(Directory::OPS_GROUP.into()),
            CardSpace::User("user002".into())
        ]
    );
    assert!(common::cards::lookup(&mut redis, "beta", "c-card")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn flow_controlled_ids_are_sent_again_and_only_those() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::FlowControl {
                user_ids: vec!["user002".into()],
            })
            .on(Api::RobotBatchSend),
        )
        .unwrap();
    bed.publish(&send(
        "c-flow",
        "acme",
        json!([{"type": "user_id", "id": "user001"}, {"type": "user_id", "id": "user002"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-flow").await;
    assert_eq!(result.status, Status::Ok);
    assert!(result.targets.iter().all(|t| t.ok), "{result:?}");
    let sends = calls(&bed, Api::RobotBatchSend);
    let ids: Vec<&Value> = sends.iter().map(|b| &b["userIds"]).collect();
    assert_eq!(ids, [&json!(["user001", "user002"]), &json!(["user002"])]);
    let delivered: Vec<_> = bed
        .sim
        .state()
        .messages()
        .into_iter()
        .filter(|m| m.content["content"] == "hi")
        .collect();
    assert_eq!(delivered.len(), 2, "user001 once, user002 once");
}

#[tokio::test]
async fn a_missing_permission_fails_without_retry_and_is_dead_lettered() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::RobotBatchSend))
        .unwrap();
    bed.publish(&send(
        "c-perm",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-perm").await;
    assert_eq!(result.status, Status::Failed);
    let error = result.error.unwrap();
    assert!(!error.retryable);
    assert!(error.message.contains("permission"), "{}", error.message);
    assert_eq!(bed.dead_letters_of("c-perm").len(), 1);
    assert_eq!(
        bed.sim
            .state()
            .rejected(&CallFilter::api(Api::RobotBatchSend))
            .len(),
        1,
        "not retried"
    );
}

/// A command's Redis record (field → value), the milliseconds it still lives, and those of its
/// sent record (negative when there is none).
async fn record_of(
    bed: &Bed,
    command_id: &str,
) -> (std::collections::HashMap<String, String>, i64, i64) {
    let client = redis::Client::open(bed.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("dtg:ntf:cmd:acme:{command_id}");
    redis::pipe()
        .cmd("HGETALL")
        .arg(&key)
        .cmd("PTTL")
        .arg(&key)
        .cmd("PTTL")
        .arg(format!("dtg:ntf:sent:acme:{command_id}"))
        .query_async(&mut redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_finished_command_keeps_only_its_result_for_the_record_retention_unless_replayable() {
    let bed = Bed::with(Options {
        record_retention: Some("36h".to_owned()),
        ..Options::default()
    })
    .await;
    let retention_ms = 36 * 3600 * 1000;
    // A TTL read back within a minute of being set to the retention.
    let kept_for_retention = |ttl_ms: i64| (retention_ms - 60_000..=retention_ms).contains(&ttl_ms);
    bed.publish(&send(
        "c-kept",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    let result = bed.result("c-kept").await;
    assert_eq!(result.status, Status::Ok);
    let (fields, ttl, sent_ttl) = record_of(&bed, "c-kept").await;
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["result"],
        "the steps are gone once it reached someone"
    );
    let stored: common::bus::result::CommandResult =
        serde_json::from_str(&fields["result"]).unwrap();
    assert_eq!(stored, result, "the result published again for a repeat");
    assert!(
        kept_for_retention(ttl),
        "kept NOTIFIER_RECORD_RETENTION: {ttl} ms"
    );
    assert!(
        kept_for_retention(sent_ttl),
        "what it delivered is kept as long: {sent_ttl} ms"
    );

    // Failed without reaching anyone: the steps stay, so a replay can be judged.
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::RobotBatchSend))
        .unwrap();
    bed.publish(&send(
        "c-refused",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    assert_eq!(bed.result("c-refused").await.status, Status::Failed);
    let (fields, ttl, _) = record_of(&bed, "c-refused").await;
    assert!(fields.contains_key("result"), "{fields:?}");
    assert!(
        fields.keys().any(|field| field.starts_with("step:")),
        "the failed step is kept: {fields:?}"
    );
    assert!(kept_for_retention(ttl), "{ttl} ms");
}

#[tokio::test]
async fn files_are_fetched_from_allowed_hosts_uploaded_and_sent_as_sample_file() {
    let host = file_server(vec![
        ("report.pdf", b"%PDF-1.4 quarterly".to_vec()),
        ("huge.bin", vec![7u8; 10 * 1024 * 1024 + 1]),
    ])
    .await;
    // An allowed host where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bed = Bed::with(Options {
        media_allowlist: Some(format!("{host},{closed}")),
        ..Options::default()
    })
    .await;
    let file = |url: String| json!({"type": "file", "url": url});
    let to = json!([{"type": "user_id", "id": "user001"}]);
    bed.publish(&send(
        "c-file",
        "acme",
        to.clone(),
        file(format!("http://{host}/files/report.pdf")),
    ))
    .await;
    let result = bed.result("c-file").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let uploads = calls(&bed, Api::MediaUpload);
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0]["type"], "file");
    let send_body = &calls(&bed, Api::RobotBatchSend)[0];
    assert_eq!(send_body["msgKey"], "sampleFile");
    let param: Value = serde_json::from_str(send_body["msgParam"].as_str().unwrap()).unwrap();
    assert_eq!(param["fileName"], "report.pdf");
    assert_eq!(param["fileType"], "pdf");
    let media = bed
        .sim
        .state()
        .media(param["mediaId"].as_str().unwrap())
        .expect("uploaded");
    assert_eq!(media.bytes, Bytes::from_static(b"%PDF-1.4 quarterly"));

    bed.publish(&send(
        "c-huge",
        "acme",
        to.clone(),
        file(format!("http://{host}/files/huge.bin")),
    ))
    .await;
    assert_eq!(
        bed.result("c-huge").await.error.unwrap().code,
        "media_too_large"
    );
    bed.publish(&send(
        "c-foreign",
        "acme",
        to.clone(),
        file("http://example.org/files/report.pdf".into()),
    ))
    .await;
    assert_eq!(
        bed.result("c-foreign").await.error.unwrap().code,
        "media_url_refused"
    );
    bed.publish(&send(
        "c-down",
        "acme",
        to.clone(),
        file(format!(
            "http://{closed}/files/report.pdf?signature=TOPSECRET"
        )),
    ))
    .await;
    let error = bed.result("c-down").await.error.unwrap();
    assert_eq!(error.code, "media_fetch_failed");
    assert!(!error.message.contains("TOPSECRET"), "{}", error.message);
    assert_eq!(calls(&bed, Api::MediaUpload).len(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_robot_send_whose_answer_is_lost_is_not_sent_again() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Http500).on(Api::RobotBatchSend))
        .unwrap();
    bed.publish(&send(
        "c-500",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("maybe"),
    ))
    .await;
    let result = bed.result("c-500").await;
    assert_eq!(result.status, Status::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "outcome_unknown");
    assert!(error.retryable);
    assert!(
        bed.dead_letters_of("c-500").is_empty(),
        "retryable: not a dead letter"
    );
    let attempts = bed
        .sim
        .state()
        .rejected(&CallFilter::api(Api::RobotBatchSend))
        .len()
        + calls(&bed, Api::RobotBatchSend).len();
    assert_eq!(attempts, 1, "never re-sent blindly");
}

#[tokio::test]
async fn a_card_send_whose_answer_is_lost_is_checked_then_sent_once() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Http500).on(Api::StandardCardSend))
        .unwrap();
    let mut command = send(
        "c-card-500",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("card"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    let result = bed.result("c-card-500").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(
        bed.sim
            .state()
            .rejected(&CallFilter::api(Api::StandardCardUpdate))
            .len(),
        1,
        "probed: DingTalk did not know the cardBizId"
    );
    assert_eq!(calls(&bed, Api::StandardCardSend).len(), 1);
    let cards: Vec<_> = bed
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .filter(|c| c.card_biz_id == "c-card-500")
        .collect();
    assert_eq!(cards.len(), 1);
}

#[tokio::test]
async fn a_send_that_reached_no_one_can_be_forgotten_and_executes_again() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::RobotBatchSend))
        .unwrap();
    let command = send(
        "c-refused",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("after the fix"),
    );
    bed.publish(&command).await;
    assert_eq!(bed.result("c-refused").await.status, Status::Failed);
    let redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let records = notifier::records::Records::new(redis);
    // Its sent record (kept for a degraded update) does not count as a delivery.
    assert_eq!(
        records.replay_state("acme", "c-refused").await.unwrap(),
        Forget::Forgettable
    );
    assert_eq!(
        records.forget_failed("acme", "c-refused").await.unwrap(),
        Forget::Forgotten
    );
    assert_eq!(
        records.finished("acme", "c-refused").await.unwrap(),
        notifier::records::Finished::NotYet
    );
    // Published again (as a replay does, under a new message id), it is executed afresh.
    bed.publish_raw(
        "dingtalk.commands.acme.send",
        command.to_string().as_bytes(),
        Some("replay:1:c-refused"),
    )
    .await;
    // (Its new result is dropped by the results stream's duplicate window, which is why
    // `gatewayctl dlq replay` waits that long; DingTalk's record shows the execution.)
    let started = std::time::Instant::now();
    while records.replay_state("acme", "c-refused").await.unwrap() != Forget::Delivered {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not executed again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = bed
        .sim
        .state()
        .messages()
        .into_iter()
        .filter(|m| m.content["content"] == "after the fix")
        .count();
    assert_eq!(delivered, 1);
}

#[tokio::test]
async fn a_split_message_whose_later_part_is_refused_says_what_arrived_and_is_never_replayed() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .register_custom_robot(CustomRobotConfig {
            access_token: "robot-keyword".into(),
            secret: None,
            keywords: vec!["ALERT".into()],
        })
        .unwrap();
    // Only the first of its three bodies carries the robot's keyword.
    let long = format!("ALERT\n{}", "a line of a very long report\n".repeat(1500));
    bed.publish(&send(
        "c-parts",
        "acme",
        json!([{"type": "webhook", "id": "robot-keyword"}]),
        text(&long),
    ))
    .await;
    let result = bed.result("c-parts").await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    let error = result.targets[0].error.clone().unwrap();
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("part 2 of")
            && error.message.contains("parts 1 to 1 were delivered"),
        "{}",
        error.message
    );
    let redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let records = notifier::records::Records::new(redis);
    assert_eq!(
        records.replay_state("acme", "c-parts").await.unwrap(),
        Forget::Delivered,
        "part 1 arrived: a replay would repeat it"
    );
}
