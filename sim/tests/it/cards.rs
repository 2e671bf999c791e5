//! StandardCards (PROTOCOL §4.5), card instances, streaming and callback registration (§4.6,
//! §4.7, §4.6b).

use dingtalk_sim::{Api, Directory};
use serde_json::{json, Value};

use crate::helpers::{TestSim, APP_KEY};

fn standard_card_data() -> String {
    json!({"config": {"autoLayout": true},
           "header": {"title": {"type": "text", "text": "Deploy"}},
           "contents": [{"type": "markdown", "text": "**ok**", "id": "m1"}]})
    .to_string()
}

fn standard_send(biz_id: &str) -> Value {
    json!({"cardTemplateId": "StandardCard", "cardBizId": biz_id, "robotCode": APP_KEY,
           "cardData": standard_card_data(), "openConversationId": Directory::OPS_GROUP})
}

fn instance(out_track_id: &str) -> Value {
    json!({"cardTemplateId": "tpl.schema", "outTrackId": out_track_id,
           "cardData": {"cardParamMap": {"title": "t", "flowStatus": "1"}},
           "callbackType": "STREAM"})
}

fn group_delivery(out_track_id: &str) -> Value {
    json!({"outTrackId": out_track_id, "userIdType": 1,
           "openSpaceId": format!("dtv1.card//IM_GROUP.{}", Directory::OPS_GROUP),
           "imGroupOpenDeliverModel": {"robotCode": APP_KEY}})
}

#[tokio::test]
async fn standard_card_is_sent_to_a_group_and_updated_by_card_biz_id() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let sent = t
        .post_new(Api::StandardCardSend.path(), &token, standard_send("biz-1"))
        .await;
    assert!(sent.assert_ok()["processQueryKey"].is_string());
    let updated_data = json!({"contents": [{"type": "markdown", "text": "done"}]}).to_string();
    t.put_new(
        Api::StandardCardUpdate.path(),
        &token,
        json!({"cardBizId": "biz-1", "cardData": updated_data,
               "updateOptions": {"updateCardDataByKey": false}}),
    )
    .await
    .assert_ok();
    let cards = t.sim.state().standard_cards();
    assert_eq!(cards[0].updates, 1);
    assert_eq!(cards[0].card_data["contents"][0]["text"], "done");
}

#[tokio::test]
async fn standard_card_is_sent_one_to_one_through_single_chat_receiver() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-2");
    body.as_object_mut().unwrap().remove("openConversationId");
    body["singleChatReceiver"] = json!(json!({"userId": "user002"}).to_string());
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_ok();
    assert_eq!(t.sim.state().standard_cards()[0].target, "user002");
}

#[tokio::test]
async fn a_standard_card_is_a_robot_message_that_group_recall_withdraws() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let sent = t
        .post_new(Api::StandardCardSend.path(), &token, standard_send("biz-r"))
        .await;
    let key = sent.assert_ok()["processQueryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = t.sim.state().messages()[0].clone();
    assert_eq!(message.process_query_key, key);
    assert_eq!(message.kind, "StandardCard");
    assert_eq!(message.content["contents"][0]["text"], "**ok**");
    // A 1:1 recall does not reach a group card; the group recall does.
    let wrong = t
        .post_new(
            Api::RobotBatchRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "processQueryKeys": [key]}),
        )
        .await;
    assert!(wrong.assert_ok()["failedResult"][&key].is_string());
    let recalled = t
        .post_new(
            Api::GroupRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "openConversationId": Directory::OPS_GROUP,
                   "processQueryKeys": [key]}),
        )
        .await;
    assert_eq!(recalled.assert_ok()["successResult"], json!([key]));
    assert!(t.sim.state().messages()[0].recalled);
}

#[tokio::test]
async fn standard_card_with_card_data_as_an_object_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-3");
    body["cardData"] = json!({"contents": []});
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::StandardCardSend, 1, "JSON-encoded string");
}

#[tokio::test]
async fn standard_card_with_card_data_that_is_not_json_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-4");
    body["cardData"] = json!("{not json");
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::StandardCardSend, 1, "not valid JSON");
}

#[tokio::test]
async fn standard_card_without_a_target_or_with_both_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut neither = standard_send("biz-5");
    neither
        .as_object_mut()
        .unwrap()
        .remove("openConversationId");
    t.post_new(Api::StandardCardSend.path(), &token, neither)
        .await
        .assert_new_error(400, "MissingopenConversationId");
    let mut both = standard_send("biz-6");
    both["singleChatReceiver"] = json!(json!({"userId": "user002"}).to_string());
    t.post_new(Api::StandardCardSend.path(), &token, both)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::StandardCardSend, 2, "not both");
}

#[tokio::test]
async fn standard_card_biz_id_cannot_be_sent_twice() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::StandardCardSend.path(), &token, standard_send("biz-7"))
        .await
        .assert_ok();
    t.post_new(Api::StandardCardSend.path(), &token, standard_send("biz-7"))
        .await
        .assert_new_error(400, "invalidParameter");
}

#[tokio::test]
async fn standard_card_update_of_an_unknown_card_biz_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.put_new(
        Api::StandardCardUpdate.path(),
        &token,
        json!({"cardBizId": "never-sent", "cardData": standard_card_data()}),
    )
    .await
    .assert_new_error(400, "resource.not.found");
    t.assert_only_refused(Api::StandardCardUpdate, 1, "cardBizId");
}

#[tokio::test]
async fn standard_card_to_a_group_without_the_robot_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-8");
    body["openConversationId"] = json!(Directory::NO_ROBOT_GROUP);
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_new_error(400, "robot.notInGroup");
}

#[tokio::test]
async fn card_instance_is_created_delivered_updated_and_streamed() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-1"))
        .await
        .assert_ok();
    let delivered = t
        .post_new(Api::CardDeliver.path(), &token, group_delivery("track-1"))
        .await;
    let result = &delivered.assert_ok()["result"][0];
    assert_eq!(result["spaceType"], "IM_GROUP");
    assert_eq!(result["success"], true);
    t.put_new(
        Api::CardUpdate.path(),
        &token,
        json!({"outTrackId": "track-1", "cardData": {"cardParamMap": {"flowStatus": "2"}},
               "cardUpdateOptions": {"updateCardDataByKey": true}}),
    )
    .await
    .assert_ok();
    for (content, full) in [("Hel", false), ("lo", false), ("Hello!", true)] {
        t.put_new(
            Api::CardStreaming.path(),
            &token,
            json!({"outTrackId": "track-1", "guid": content, "key": "msgContent",
                   "content": content, "isFull": full, "isFinalize": full, "isError": false}),
        )
        .await
        .assert_ok();
    }
    let card = t.sim.state().card_instance(APP_KEY, "track-1").unwrap();
    assert_eq!(card.card_param_map["title"], "t");
    assert_eq!(card.card_param_map["flowStatus"], "2");
    assert_eq!(card.deliveries.len(), 1);
    let stream = &card.streams["msgContent"];
    assert_eq!(
        (stream.content.as_str(), stream.finalized, stream.updates),
        ("Hello!", true, 3)
    );
}

#[tokio::test]
async fn card_update_without_by_key_replaces_the_param_map() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-2"))
        .await
        .assert_ok();
    t.put_new(
        Api::CardUpdate.path(),
        &token,
        json!({"outTrackId": "track-2", "cardData": {"cardParamMap": {"flowStatus": "3"}}}),
    )
    .await
    .assert_ok();
    let card = t.sim.state().card_instance(APP_KEY, "track-2").unwrap();
    assert!(card.card_param_map.get("title").is_none());
}

#[tokio::test]
async fn card_param_map_with_a_non_string_value_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = instance("track-3");
    body["cardData"]["cardParamMap"]["count"] = json!(3);
    t.post_new(Api::CardCreate.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::CardCreate, 1, "must be a string");
    let mut nested = instance("track-3");
    nested["cardData"]["cardParamMap"]["list"] = json!(["a"]);
    t.post_new(Api::CardCreate.path(), &token, nested)
        .await
        .assert_new_error(400, "invalidParameter");
}

#[tokio::test]
async fn card_create_without_card_param_map_or_out_track_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut no_map = instance("track-4");
    no_map["cardData"] = json!({});
    t.post_new(Api::CardCreate.path(), &token, no_map)
        .await
        .assert_new_error(400, "MissingcardData.cardParamMap");
    let mut no_id = instance("x");
    no_id.as_object_mut().unwrap().remove("outTrackId");
    t.post_new(Api::CardCreate.path(), &token, no_id)
        .await
        .assert_new_error(400, "MissingoutTrackId");
    t.assert_only_refused(Api::CardCreate, 2, "outTrackId");
}

#[tokio::test]
async fn card_create_with_an_unknown_callback_type_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = instance("track-5");
    body["callbackType"] = json!("WEBHOOK");
    t.post_new(Api::CardCreate.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
}

#[tokio::test]
async fn http_callback_cards_need_a_registered_route() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = instance("track-6");
    body["callbackType"] = json!("HTTP");
    body["callbackRouteKey"] = json!("route-1");
    t.post_new(Api::CardCreate.path(), &token, body.clone())
        .await
        .assert_new_error(400, "invalidParameter");
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        json!({"callbackRouteKey": "route-1", "callbackUrl": "http://127.0.0.1:1/cards",
               "apiSecret": "s", "forceUpdate": true}),
    )
    .await
    .assert_ok();
    t.post_new(Api::CardCreate.path(), &token, body)
        .await
        .assert_ok();
}

#[tokio::test]
async fn callback_route_cannot_move_without_force_update_and_needs_an_http_url() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let register = |url: &str, force: bool| json!({"callbackRouteKey": "route-2", "callbackUrl": url, "forceUpdate": force});
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        register("https://a.example/cb", false),
    )
    .await
    .assert_ok();
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        register("https://b.example/cb", false),
    )
    .await
    .assert_new_error(400, "invalidParameter");
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        register("https://b.example/cb", true),
    )
    .await
    .assert_ok();
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        register("ftp://c.example", true),
    )
    .await
    .assert_new_error(400, "invalidParameter");
}

#[tokio::test]
async fn card_create_twice_with_one_out_track_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-7"))
        .await
        .assert_ok();
    t.post_new(Api::CardCreate.path(), &token, instance("track-7"))
        .await
        .assert_new_error(400, "invalidParameter");
}

#[tokio::test]
async fn deliver_with_a_malformed_open_space_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-8"))
        .await
        .assert_ok();
    for bad in [
        "IM_GROUP.cid==",
        "dtv1.card//CHANNEL.x",
        "dtv1.card//IM_GROUP.",
    ] {
        let mut body = group_delivery("track-8");
        body["openSpaceId"] = json!(bad);
        t.post_new(Api::CardDeliver.path(), &token, body)
            .await
            .assert_new_error(400, "invalidParameter");
    }
    t.assert_only_refused(Api::CardDeliver, 3, "openSpaceId");
}

#[tokio::test]
async fn deliver_to_a_group_without_its_deliver_model_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-9"))
        .await
        .assert_ok();
    let mut body = group_delivery("track-9");
    body.as_object_mut()
        .unwrap()
        .remove("imGroupOpenDeliverModel");
    t.post_new(Api::CardDeliver.path(), &token, body)
        .await
        .assert_new_error(400, "MissingimGroupOpenDeliverModel");
}

#[tokio::test]
async fn deliver_of_an_unknown_out_track_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::CardDeliver.path(),
        &token,
        group_delivery("never-created"),
    )
    .await
    .assert_new_error(400, "resource.not.found");
}

#[tokio::test]
async fn deliver_reports_per_space_failures_for_unknown_users_and_robotless_groups() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-10"))
        .await
        .assert_ok();
    let body = json!({"outTrackId": "track-10",
        "openSpaceId": format!("dtv1.card//IM_ROBOT.user001;IM_ROBOT.ghost;IM_GROUP.{}", Directory::NO_ROBOT_GROUP),
        "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": APP_KEY},
        "imGroupOpenDeliverModel": {"robotCode": APP_KEY}});
    let answer = t.post_new(Api::CardDeliver.path(), &token, body).await;
    let results = answer.assert_ok()["result"].as_array().unwrap().clone();
    let outcomes: Vec<bool> = results.iter().map(|r| r["success"] == true).collect();
    assert_eq!(outcomes, vec![true, false, false]);
}

#[tokio::test]
async fn create_and_deliver_does_both_at_once() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = instance("track-11");
    body["openSpaceId"] = json!("dtv1.card//IM_ROBOT.user003");
    body["imRobotOpenDeliverModel"] = json!({"spaceType": "IM_ROBOT"});
    let answer = t
        .post_new(Api::CardCreateAndDeliver.path(), &token, body)
        .await;
    let result = &answer.assert_ok()["result"];
    assert_eq!(result["outTrackId"], "track-11");
    assert_eq!(result["deliverResults"][0]["success"], true);
    let card = t.sim.state().card_instance(APP_KEY, "track-11").unwrap();
    assert_eq!(card.deliveries[0].space_id, "user003");
}

#[tokio::test]
async fn streaming_and_update_of_an_unknown_card_are_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.put_new(
        Api::CardStreaming.path(),
        &token,
        json!({"outTrackId": "nope", "guid": "g", "key": "msgContent", "content": "x", "isFull": true}),
    )
    .await
    .assert_new_error(400, "resource.not.found");
    t.put_new(
        Api::CardUpdate.path(),
        &token,
        json!({"outTrackId": "nope", "cardData": {"cardParamMap": {}}}),
    )
    .await
    .assert_new_error(400, "resource.not.found");
}

#[tokio::test]
async fn streaming_without_guid_or_with_non_string_content_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-12"))
        .await
        .assert_ok();
    t.put_new(
        Api::CardStreaming.path(),
        &token,
        json!({"outTrackId": "track-12", "key": "msgContent", "content": "x"}),
    )
    .await
    .assert_new_error(400, "Missingguid");
    t.put_new(
        Api::CardStreaming.path(),
        &token,
        json!({"outTrackId": "track-12", "guid": "g", "key": "msgContent", "content": 5}),
    )
    .await
    .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::CardStreaming, 2, "content");
}

#[tokio::test]
async fn standard_card_to_an_unknown_user_or_a_receiver_without_user_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    for receiver in [json!({"userId": "ghost"}), json!({"unionId": "x"})] {
        let mut body = standard_send("biz-9");
        body.as_object_mut().unwrap().remove("openConversationId");
        body["singleChatReceiver"] = json!(receiver.to_string());
        let answer = t.post_new(Api::StandardCardSend.path(), &token, body).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
    }
    t.assert_only_refused(Api::StandardCardSend, 2, "singleChatReceiver");
}

#[tokio::test]
async fn standard_card_contents_must_be_typed_items() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-10");
    body["cardData"] = json!(json!({"contents": [{"text": "no type"}]}).to_string());
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::StandardCardSend, 1, "contents");
}

#[tokio::test]
async fn standard_card_send_options_json_fields_must_be_json_strings() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = standard_send("biz-11");
    body["sendOptions"] = json!({"atUserListJson": "[{not json"});
    t.post_new(Api::StandardCardSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    let mut typed = standard_send("biz-12");
    typed["sendOptions"] = json!({"atUserListJson": [{"userId": "user001"}]});
    t.post_new(Api::StandardCardSend.path(), &token, typed)
        .await
        .assert_new_error(400, "invalidParameter");
    let mut fine = standard_send("biz-13");
    fine["sendOptions"] = json!({"atAll": false,
        "atUserListJson": json!([{"nickName": "Li", "userId": "user001"}]).to_string()});
    t.post_new(Api::StandardCardSend.path(), &token, fine)
        .await
        .assert_ok();
}

#[tokio::test]
async fn standard_card_update_with_card_data_as_an_object_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::StandardCardSend.path(),
        &token,
        standard_send("biz-14"),
    )
    .await
    .assert_ok();
    t.put_new(
        Api::StandardCardUpdate.path(),
        &token,
        json!({"cardBizId": "biz-14", "cardData": {"contents": []}}),
    )
    .await
    .assert_new_error(400, "invalidParameter");
    assert_eq!(t.sim.state().standard_cards()[0].updates, 0);
}

#[tokio::test]
async fn card_create_without_a_template_id_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = instance("track-13");
    body.as_object_mut().unwrap().remove("cardTemplateId");
    t.post_new(Api::CardCreate.path(), &token, body)
        .await
        .assert_new_error(400, "MissingcardTemplateId");
}

#[tokio::test]
async fn deliver_with_another_robot_or_an_unsupported_user_id_type_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-14"))
        .await
        .assert_ok();
    let mut other_robot = group_delivery("track-14");
    other_robot["imGroupOpenDeliverModel"]["robotCode"] = json!("dingotherapp");
    t.post_new(Api::CardDeliver.path(), &token, other_robot)
        .await
        .assert_new_error(400, "resource.not.found");
    let mut union_ids = group_delivery("track-14");
    union_ids["userIdType"] = json!(2);
    t.post_new(Api::CardDeliver.path(), &token, union_ids)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::CardDeliver, 2, "userIdType");
}

#[tokio::test]
async fn callback_registration_without_a_route_key_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::CardCallbackRegister.path(),
        &token,
        json!({"callbackUrl": "https://a.example/cb"}),
    )
    .await
    .assert_new_error(400, "MissingcallbackRouteKey");
}

#[tokio::test]
async fn streaming_without_key_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::CardCreate.path(), &token, instance("track-15"))
        .await
        .assert_ok();
    t.put_new(
        Api::CardStreaming.path(),
        &token,
        json!({"outTrackId": "track-15", "guid": "g", "content": "x"}),
    )
    .await
    .assert_new_error(400, "Missingkey");
}

/// A card showing `text` as the answer to `message` (its `cardBizId` names the message).
fn reply_card(message: &dingtalk_sim::client::RobotMessage, text: &str) -> Value {
    let mut card = standard_send(&format!("acme:{}:reply", message.msg_id));
    card["cardData"] = json!({"contents": [{"type": "markdown", "text": text}]})
        .to_string()
        .into();
    card
}

#[tokio::test]
async fn awaiting_a_reply_settles_on_the_answer_and_not_on_a_pending_placeholder() {
    use dingtalk_sim::client::{await_reply, RobotMessage};
    use std::time::Duration;

    let t = TestSim::start().await;
    let token = t.new_token().await;
    let settle = Duration::from_millis(300);
    let is_placeholder = |text: &str| text == "Thinking…";

    // A placeholder that stays: taken as the answer when nothing marks it as pending.
    let stays = RobotMessage::text(APP_KEY, "one", t.base.clone());
    t.post_new(
        Api::StandardCardSend.path(),
        &token,
        reply_card(&stays, "Thinking…"),
    )
    .await
    .assert_ok();
    let reply = await_reply(
        &t.http,
        &t.base,
        &stays,
        0,
        Duration::from_secs(10),
        settle,
        |_| false,
        |_| {},
    );
    assert_eq!(reply.await.unwrap().as_deref(), Some("Thinking…"));

    // Marked as pending, it is waited out until the answer replaces it, well after `settle`.
    let answered = RobotMessage::text(APP_KEY, "two", t.base.clone());
    t.post_new(
        Api::StandardCardSend.path(),
        &token,
        reply_card(&answered, "Thinking…"),
    )
    .await
    .assert_ok();
    let update = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let data = json!({"contents": [{"type": "markdown", "text": "echo: two"}]}).to_string();
        let biz_id = format!("acme:{}:reply", answered.msg_id);
        t.put_new(
            Api::StandardCardUpdate.path(),
            &token,
            json!({"cardBizId": biz_id, "cardData": data}),
        )
        .await
        .assert_ok();
    };
    let wait = await_reply(
        &t.http,
        &t.base,
        &answered,
        0,
        Duration::from_secs(10),
        settle,
        is_placeholder,
        |_| {},
    );
    let (reply, ()) = tokio::join!(wait, update);
    assert_eq!(reply.unwrap().as_deref(), Some("echo: two"));
}
