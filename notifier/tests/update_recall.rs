//! `op: update` and `op: recall`: order, supersession, waiting for the target, degraded resend,
//! and the card callback registration that card sends trigger.

mod support;

use std::time::Duration;

use common::bus::result::Status;
use dingtalk_sim::{Api, CallFilter, Directory, Fault, FaultCount, FaultKind};
use serde_json::{json, Value};
use support::{send, text, Bed, Options, APP_A};

fn update(id: &str, target: &str, text: &str) -> Value {
    json!({"v": 1, "id": id, "integration_id": "acme", "op": "update", "target": target,
           "message": {"type": "markdown", "title": "Status", "text": text}})
}

fn recall(id: &str, target: &str) -> Value {
    json!({"v": 1, "id": id, "integration_id": "acme", "op": "recall", "target": target})
}

fn card_text(bed: &Bed, card_biz_id: &str) -> (String, u32) {
    let card = bed
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .find(|c| c.card_biz_id == card_biz_id)
        .expect("card sent");
    (
        card.card_data["contents"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned(),
        card.updates,
    )
}

#[tokio::test]
async fn an_updatable_send_is_a_card_that_an_update_changes_in_place() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-up",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("building…"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    assert_eq!(
        bed.result("c-up").await.card_biz_id.as_deref(),
        Some("c-up")
    );
    bed.publish(&update("c-up-1", "c-up", "built")).await;
    let result = bed.result("c-up-1").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert!(!result.degraded);
    assert_eq!(result.targets[0].recipient.id, "user001");
    assert_eq!(card_text(&bed, "c-up"), ("built".to_owned(), 1));
    let updates = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardUpdate));
    assert_eq!(updates[0].body["cardBizId"], "c-up");
}

#[tokio::test]
async fn updates_wait_for_their_target_apply_in_order_and_older_queued_ones_are_superseded() {
    let bed = Bed::start().await;
    // The send is slow: every update is published while it is still running.
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 800 }).on(Api::StandardCardSend))
        .unwrap();
    let mut command = send(
        "c-stream",
        "acme",
        json!([{"type": "chat_id", "id": Directory::OPS_GROUP}]),
        text("…"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 1..=5 {
        bed.publish(&update(
            &format!("c-stream-{n}"),
            "c-stream",
            &format!("token {n}"),
        ))
        .await;
    }
    assert_eq!(bed.result("c-stream").await.status, Status::Ok);
    let statuses: Vec<Status> = futures::future::join_all((1..=5).map(|n| {
        let bed = &bed;
        async move { bed.result(&format!("c-stream-{n}")).await.status }
    }))
    .await;
    assert_eq!(statuses[4], Status::Ok, "the newest update applies");
    assert!(
        statuses[..4].iter().all(|s| *s == Status::Superseded),
        "{statuses:?}"
    );
    let (text, updates) = card_text(&bed, "c-stream");
    assert_eq!(text, "token 5");
    assert_eq!(updates, 1, "superseded updates never reached DingTalk");

    // Once the target is done, updates apply one by one in publication order.
    for n in 6..=8 {
        bed.publish(&update(
            &format!("c-stream-{n}"),
            "c-stream",
            &format!("token {n}"),
        ))
        .await;
        let status = bed.result(&format!("c-stream-{n}")).await.status;
        assert_eq!(status, Status::Ok);
    }
    assert_eq!(card_text(&bed, "c-stream").0, "token 8");
}

#[tokio::test]
async fn updating_a_plain_message_fails_not_updatable_unless_it_degrades_to_resend() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-plain",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("v1"),
    ))
    .await;
    let sent = bed.result("c-plain").await;
    let first_key = sent.process_query_key.clone().unwrap();
    bed.publish(&update("c-plain-1", "c-plain", "v2")).await;
    let result = bed.result("c-plain-1").await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(result.error.unwrap().code, "not_updatable");

    let mut degrade = update("c-plain-2", "c-plain", "v2");
    degrade["degrade"] = json!("resend");
    bed.publish(&degrade).await;
    let result = bed.result("c-plain-2").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert!(result.degraded);
    let messages = bed.sim.state().messages();
    let old = messages
        .iter()
        .find(|m| m.process_query_key == first_key)
        .unwrap();
    assert!(old.recalled, "the old message was recalled");
    let resent: Vec<_> = messages
        .iter()
        .filter(|m| m.content["text"] == "v2")
        .collect();
    assert_eq!(resent.len(), 1, "and the new content sent once");
    assert!(!resent[0].recalled);

    // A recall of the original now withdraws the resent message.
    bed.publish(&recall("c-plain-recall", "c-plain")).await;
    assert_eq!(bed.result("c-plain-recall").await.status, Status::Ok);
    let again = bed.sim.state().messages();
    assert!(
        again
            .iter()
            .find(|m| m.content["text"] == "v2")
            .unwrap()
            .recalled
    );
}

#[tokio::test]
async fn a_degraded_update_whose_recall_fails_for_now_does_not_send_the_new_content_beside_the_old()
{
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-stay",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("v1"),
    ))
    .await;
    assert_eq!(bed.result("c-stay").await.status, Status::Ok);
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::Http500)
                .on(Api::RobotBatchRecall)
                .times(FaultCount::Always),
        )
        .unwrap();
    let mut degrade = update("c-stay-1", "c-stay", "v2");
    degrade["degrade"] = json!("resend");
    bed.publish(&degrade).await;
    let result = bed.result("c-stay-1").await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    assert!(
        result.targets[0].error.as_ref().unwrap().retryable,
        "{result:?}"
    );
    // v1 still stands, alone.
    let messages = bed.sim.state().messages();
    assert!(messages.iter().all(|m| m.content["text"] != "v2"));
    assert!(messages
        .iter()
        .any(|m| m.content["content"] == "v1" && !m.recalled));
}

#[tokio::test]
async fn an_update_that_degrades_to_resend_delivers_although_its_target_reached_no_one() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::RobotBatchSend))
        .unwrap();
    bed.publish(&send(
        "c-lost",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("v1"),
    ))
    .await;
    assert_eq!(bed.result("c-lost").await.status, Status::Failed);

    // Nothing to change in place: a plain update says so.
    bed.publish(&update("c-lost-1", "c-lost", "v2")).await;
    let result = bed.result("c-lost-1").await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(result.error.unwrap().code, "target_failed");

    // One that may degrade delivers its content as a new message instead.
    let mut degrade = update("c-lost-2", "c-lost", "v3");
    degrade["degrade"] = json!("resend");
    bed.publish(&degrade).await;
    let result = bed.result("c-lost-2").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert!(result.degraded);
    let sent: Vec<_> = bed
        .sim
        .state()
        .messages()
        .into_iter()
        .filter(|m| m.content["text"] == "v3")
        .collect();
    assert_eq!(sent.len(), 1, "the new content went out once");

    // Later commands act on the message that went out.
    bed.publish(&recall("c-lost-recall", "c-lost")).await;
    assert_eq!(bed.result("c-lost-recall").await.status, Status::Ok);
    assert!(bed
        .sim
        .state()
        .messages()
        .iter()
        .any(|m| m.content["text"] == "v3" && m.recalled));
}

#[tokio::test]
async fn recall_withdraws_one_to_one_and_group_messages_by_their_process_query_keys() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-r",
        "acme",
        json!([{"type": "user_id", "id": "user001"}, {"type": "user_id", "id": "user002"}, {"type": "chat_id", "id": Directory::OPS_GROUP}]),
        text("oops"),
    ))
    .await;
    assert_eq!(bed.result("c-r").await.status, Status::Ok);
    bed.publish(&recall("c-r-recall", "c-r")).await;
    let result = bed.result("c-r-recall").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(result.targets.len(), 3);
    assert!(result.targets.iter().all(|t| t.ok));
    let one_to_one = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::RobotBatchRecall));
    assert_eq!(one_to_one.len(), 1);
    assert_eq!(
        one_to_one[0].body["processQueryKeys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let group = bed.sim.state().calls(&CallFilter::api(Api::GroupRecall));
    assert_eq!(group[0].body["openConversationId"], Directory::OPS_GROUP);
    assert!(bed
        .sim
        .state()
        .messages()
        .iter()
        .filter(|m| m.content["content"] == "oops")
        .all(|m| m.recalled));
}

#[tokio::test]
async fn recall_withdraws_standard_cards_sent_to_users_and_groups() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-cards",
        "acme",
        json!([{"type": "user_id", "id": "user001"}, {"type": "user_id", "id": "user002"},
               {"type": "chat_id", "id": Directory::OPS_GROUP}]),
        text("deploying"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    let sent = bed.result("c-cards").await;
    assert_eq!(sent.status, Status::Ok, "{sent:?}");
    // One card per recipient, each named in its target with DingTalk's key for it.
    let ids: Vec<&str> = sent
        .targets
        .iter()
        .map(|t| t.card_biz_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["c-cards", "c-cards:1", "c-cards:2"]);
    let cards = bed.sim.state().standard_cards();
    for target in &sent.targets {
        let card = cards
            .iter()
            .find(|c| Some(c.card_biz_id.as_str()) == target.card_biz_id.as_deref())
            .unwrap();
        assert_eq!(card.target, target.recipient.id);
        assert_eq!(
            target.process_query_key.as_deref(),
            Some(card.process_query_key.as_str())
        );
    }

    bed.publish(&recall("c-cards-recall", "c-cards")).await;
    let result = bed.result("c-cards-recall").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert!(result.targets.iter().all(|t| t.ok), "{result:?}");
    let one_to_one = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::RobotBatchRecall));
    assert_eq!(one_to_one.len(), 1, "both 1:1 cards in one batchRecall");
    assert_eq!(
        one_to_one[0].body["processQueryKeys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let group = bed.sim.state().calls(&CallFilter::api(Api::GroupRecall));
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].body["openConversationId"], Directory::OPS_GROUP);
    let keys: Vec<String> = cards.iter().map(|c| c.process_query_key.clone()).collect();
    let recalled: Vec<bool> = bed
        .sim
        .state()
        .messages()
        .iter()
        .filter(|m| keys.contains(&m.process_query_key))
        .map(|m| m.recalled)
        .collect();
    assert_eq!(recalled, [true, true, true]);
}

#[tokio::test]
async fn an_update_of_an_unknown_target_fails_after_waiting() {
    let bed = Bed::with(Options {
        target_wait: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await;
    bed.publish(&recall("c-r-none", "never-sent")).await;
    // It waits for the target (the send may still be queued) for the target wait; the result
    // is not published meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(bed.results_of("c-r-none").is_empty());
    let result = bed.result("c-r-none").await;
    assert_eq!(result.error.unwrap().code, "unknown_target");
}

#[tokio::test]
async fn the_first_card_registers_the_callback_url_once() {
    let bed = Bed::with(Options {
        public_base_url: Some("https://bot.example.com".into()),
        ..Options::default()
    })
    .await;
    for n in 0..3 {
        let mut command = send(
            &format!("c-cb-{n}"),
            "acme",
            json!([{"type": "user_id", "id": "user001"}]),
            text("hi"),
        );
        command["updatable"] = json!(true);
        bed.publish(&command).await;
        assert_eq!(bed.result(&format!("c-cb-{n}")).await.status, Status::Ok);
    }
    bed.publish(&send(
        "c-cb-tpl",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        json!({"type": "template", "template_id": "tpl.schema", "params": {"a": "b"}}),
    ))
    .await;
    assert_eq!(bed.result("c-cb-tpl").await.status, Status::Ok);
    let registrations = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::CardCallbackRegister));
    assert_eq!(registrations.len(), 1, "registered once");
    assert_eq!(
        registrations[0].body["callbackUrl"],
        "https://bot.example.com/api/dingtalk/webhook/acme/card"
    );
    assert_eq!(
        registrations[0].body["callbackRouteKey"],
        "dingtalk-gateway-acme"
    );
    let instance = bed.sim.state().card_instance(APP_A, "c-cb-tpl").unwrap();
    assert_eq!(instance.callback_type.as_deref(), Some("HTTP"));
    // StandardCards also name the URL themselves (`callbackUrl`, the field their API documents).
    let standard = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardSend));
    assert_eq!(standard.len(), 3);
    assert!(standard
        .iter()
        .all(|call| call.body["callbackUrl"]
            == "https://bot.example.com/api/dingtalk/webhook/acme/card"));
    // Plain messages never register anything.
    bed.publish(&send(
        "c-cb-plain",
        "beta",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    ))
    .await;
    bed.result("c-cb-plain").await;
    assert_eq!(
        bed.sim
            .state()
            .calls(&CallFilter::api(Api::CardCallbackRegister))
            .len(),
        1
    );
}

#[tokio::test]
async fn a_card_whose_callback_registration_fails_still_names_its_callback_url() {
    let bed = Bed::with(Options {
        public_base_url: Some("https://bot.example.com".into()),
        ..Options::default()
    })
    .await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::CardCallbackRegister))
        .unwrap();
    let mut command = send(
        "c-unreg",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    assert_eq!(bed.result("c-unreg").await.status, Status::Ok);
    assert!(bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::CardCallbackRegister))
        .is_empty());
    let standard = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardSend));
    assert_eq!(
        standard[0].body["callbackUrl"],
        "https://bot.example.com/api/dingtalk/webhook/acme/card"
    );
}

#[tokio::test]
async fn without_a_public_base_url_cards_are_sent_and_nothing_is_registered() {
    let bed = Bed::start().await;
    let mut command = send(
        "c-nourl",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("hi"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    assert_eq!(bed.result("c-nourl").await.status, Status::Ok);
    let standard = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardSend));
    assert!(standard[0].body.get("callbackUrl").is_none());
    assert!(bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::CardCallbackRegister))
        .is_empty());
}

#[tokio::test]
async fn a_slow_update_keeps_its_target_until_done_so_a_newer_one_never_lands_first() {
    // Leases of 2 s; the first update's DingTalk call takes 3 s.
    let bed = Bed::with(Options {
        ack_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let mut command = send(
        "c-slow",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("…"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    assert_eq!(bed.result("c-slow").await.status, Status::Ok);
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 3000 }).on(Api::StandardCardUpdate))
        .unwrap();
    bed.publish(&update("c-slow-1", "c-slow", "older")).await;
    let started = std::time::Instant::now();
    while bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardUpdate))
        .is_empty()
        && bed.sim.state().faults().len() == 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no update call"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bed.publish(&update("c-slow-2", "c-slow", "newer")).await;
    assert_eq!(bed.result("c-slow-1").await.status, Status::Ok);
    assert_eq!(bed.result("c-slow-2").await.status, Status::Ok);
    assert_eq!(card_text(&bed, "c-slow"), ("newer".to_owned(), 2));
}

#[tokio::test]
async fn a_recall_during_a_degraded_update_withdraws_the_message_the_update_sent() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-race",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("v1"),
    ))
    .await;
    assert_eq!(bed.result("c-race").await.status, Status::Ok);
    // The update's resend takes 2 s; the recall is published while it runs.
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 2000 }).on(Api::RobotBatchSend))
        .unwrap();
    let mut degrade = update("c-race-1", "c-race", "v2");
    degrade["degrade"] = json!("resend");
    bed.publish(&degrade).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bed.publish(&recall("c-race-recall", "c-race")).await;
    let updated = bed.result("c-race-1").await;
    assert_eq!(updated.status, Status::Ok, "{updated:?}");
    let recalled = bed.result("c-race-recall").await;
    assert_eq!(recalled.status, Status::Ok, "{recalled:?}");
    let messages = bed.sim.state().messages();
    assert_eq!(messages.len(), 2, "v1, then v2");
    assert!(
        messages.iter().all(|m| m.recalled),
        "nothing is left standing: {messages:?}"
    );
}

#[tokio::test]
async fn after_a_backlog_an_update_waits_for_its_target_from_its_own_first_delivery() {
    let mut bed = Bed::with(Options {
        target_wait: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .await;
    bed.kill_notifier().await;
    let mut command = send(
        "c-backlog",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("…"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    bed.publish(&update("c-backlog-1", "c-backlog", "done"))
        .await;
    // Both are older than the wait by the time the notifier is back, and the send is slow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 1000 }).on(Api::StandardCardSend))
        .unwrap();
    bed.start_notifier().await;
    assert_eq!(bed.result("c-backlog").await.status, Status::Ok);
    let result = bed.result("c-backlog-1").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(card_text(&bed, "c-backlog").0, "done");
}

#[tokio::test]
async fn an_update_waits_as_long_as_its_target_is_deferred() {
    let bed = Bed::with(Options {
        target_wait: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::QpsLimit)
                .on(Api::StandardCardSend)
                .times(dingtalk_sim::FaultCount::Always),
        )
        .unwrap();
    let mut command = send(
        "c-deferred",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("…"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    bed.publish(&update("c-deferred-1", "c-deferred", "done"))
        .await;
    // Throttled for three times the update's wait: the send is deferred, not lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(bed.results_of("c-deferred-1").is_empty(), "gave up waiting");
    bed.sim.state().clear_faults();
    assert_eq!(bed.result("c-deferred").await.status, Status::Ok);
    let result = bed.result("c-deferred-1").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(card_text(&bed, "c-deferred").0, "done");
}

#[tokio::test]
async fn recalling_a_message_twice_succeeds_twice() {
    let bed = Bed::start().await;
    bed.publish(&send(
        "c-twice",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("oops"),
    ))
    .await;
    assert_eq!(bed.result("c-twice").await.status, Status::Ok);
    for id in ["c-twice-r1", "c-twice-r2"] {
        bed.publish(&recall(id, "c-twice")).await;
        let result = bed.result(id).await;
        assert_eq!(result.status, Status::Ok, "{id}: {result:?}");
    }
    assert!(bed.sim.state().messages()[0].recalled);
}
