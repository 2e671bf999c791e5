//! App robot messages (PROTOCOL §4.1–§4.4).

use dingtalk_sim::{Api, Directory, Recipient};
use serde_json::{json, Value};

use crate::helpers::{text_param, TestSim, APP_KEY};

fn batch_send(user_ids: Value) -> Value {
    json!({"robotCode": APP_KEY, "userIds": user_ids, "msgKey": "sampleText",
           "msgParam": text_param("hi")})
}

fn group_send(group: &str) -> Value {
    json!({"robotCode": APP_KEY, "openConversationId": group, "msgKey": "sampleMarkdown",
           "msgParam": json!({"title": "t", "text": "## hi"}).to_string()})
}

/// Sends a 1:1 message and returns its processQueryKey.
async fn sent_key(t: &TestSim, token: &str) -> String {
    let answer = t
        .post_new(
            Api::RobotBatchSend.path(),
            token,
            batch_send(json!(["user001"])),
        )
        .await;
    answer.assert_ok()["processQueryKey"]
        .as_str()
        .expect("key")
        .to_owned()
}

#[tokio::test]
async fn batch_send_delivers_to_known_users_and_lists_unknown_ones_as_invalid() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .post_new(
            Api::RobotBatchSend.path(),
            &token,
            batch_send(json!(["user001", "user002", "ghost"])),
        )
        .await;
    let body = answer.assert_ok();
    assert!(body["processQueryKey"].is_string());
    assert_eq!(body["invalidStaffIdList"], json!(["ghost"]));
    assert_eq!(body["flowControlledStaffIdList"], json!([]));
    let messages = t.sim.state().messages();
    assert_eq!(
        messages[0].recipient,
        Recipient::OneToOne {
            user_ids: vec!["user001".into(), "user002".into()]
        }
    );
    assert_eq!(messages[0].content["content"], "hi");
}

#[tokio::test]
async fn batch_send_without_robot_code_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!(["user001"]));
    body.as_object_mut().unwrap().remove("robotCode");
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "MissingrobotCode");
    t.assert_only_refused(Api::RobotBatchSend, 1, "robotCode is mandatory");
}

#[tokio::test]
async fn batch_send_without_user_ids_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!([]));
    body.as_object_mut().unwrap().remove("userIds");
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "MissinguserIds");
    t.assert_only_refused(Api::RobotBatchSend, 1, "userIds");
}

#[tokio::test]
async fn batch_send_with_21_user_ids_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let ids: Vec<String> = (0..21).map(|i| format!("user{i:03}")).collect();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send(json!(ids)))
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::RobotBatchSend, 1, "at most 20");
}

#[tokio::test]
async fn batch_send_with_20_user_ids_is_accepted() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let ids: Vec<String> = (0..20).map(|i| format!("user{i:03}")).collect();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send(json!(ids)))
        .await
        .assert_ok();
}

#[tokio::test]
async fn batch_send_with_msg_param_as_an_object_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!(["user001"]));
    body["msgParam"] = json!({"content": "hi"});
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::RobotBatchSend, 1, "JSON-encoded string");
}

#[tokio::test]
async fn batch_send_with_an_unknown_msg_key_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!(["user001"]));
    body["msgKey"] = json!("sampleActionCard1");
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::RobotBatchSend, 1, "unknown msgKey");
}

#[tokio::test]
async fn msg_param_missing_a_field_of_its_msg_key_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!(["user001"]));
    body["msgKey"] = json!("sampleMarkdown");
    body["msgParam"] = json!(json!({"text": "only text"}).to_string());
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::RobotBatchSend, 1, "\"title\"");
}

#[tokio::test]
async fn batch_send_with_another_apps_robot_code_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = batch_send(json!(["user001"]));
    body["robotCode"] = json!("dingotherapp");
    t.post_new(Api::RobotBatchSend.path(), &token, body)
        .await
        .assert_new_error(400, "resource.not.found");
    t.assert_only_refused(Api::RobotBatchSend, 1, "robotCode");
}

#[tokio::test]
async fn batch_send_with_lower_case_oto_path_is_404() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        "/v1.0/robot/otoMessages/batchSend",
        &token,
        batch_send(json!(["user001"])),
    )
    .await
    .assert_new_error(404, "NotFound");
    assert!(t.accepted(Api::RobotBatchSend).is_empty());
    assert!(t.sim.state().messages().is_empty());
}

#[tokio::test]
async fn batch_recall_with_upper_case_oto_path_is_404() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let key = sent_key(&t, &token).await;
    t.post_new(
        "/v1.0/robot/oToMessages/batchRecall",
        &token,
        json!({"robotCode": APP_KEY, "processQueryKeys": [key]}),
    )
    .await
    .assert_new_error(404, "NotFound");
    assert!(!t.sim.state().messages()[0].recalled);
}

#[tokio::test]
async fn batch_recall_recalls_known_keys_and_reports_unknown_ones_in_failed_result() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let key = sent_key(&t, &token).await;
    let answer = t
        .post_new(
            Api::RobotBatchRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "processQueryKeys": [key, "nope"]}),
        )
        .await;
    let body = answer.assert_ok();
    assert_eq!(body["successResult"], json!([key]));
    assert!(body["failedResult"]["nope"].is_string());
    assert!(t.sim.state().messages()[0].recalled);
    let again = t
        .post_new(
            Api::RobotBatchRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "processQueryKeys": [key]}),
        )
        .await;
    assert!(again.assert_ok()["failedResult"][&key]
        .as_str()
        .unwrap()
        .contains("already recalled"));
}

#[tokio::test]
async fn batch_recall_without_keys_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::RobotBatchRecall.path(),
        &token,
        json!({"robotCode": APP_KEY}),
    )
    .await
    .assert_new_error(400, "MissingprocessQueryKeys");
    t.assert_only_refused(Api::RobotBatchRecall, 1, "processQueryKeys");
}

#[tokio::test]
async fn read_status_lists_each_recipient() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let key = sent_key(&t, &token).await;
    let answer = t
        .send(
            t.http
                .get(t.url(Api::RobotReadStatus.path()))
                .header(dingtalk_sim::TOKEN_HEADER, &token)
                .query(&[("robotCode", APP_KEY), ("processQueryKey", key.as_str())]),
        )
        .await;
    let body = answer.assert_ok();
    assert_eq!(body["sendStatus"], "SUCCESS");
    assert_eq!(body["messageReadInfoList"][0]["userId"], "user001");
    assert_eq!(body["messageReadInfoList"][0]["name"], "Li Lei");
}

#[tokio::test]
async fn read_status_of_an_unknown_key_or_without_a_key_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let get = |query: Vec<(&'static str, &'static str)>| {
        t.http
            .get(t.url(Api::RobotReadStatus.path()))
            .header(dingtalk_sim::TOKEN_HEADER, &token)
            .query(&query)
    };
    t.send(get(vec![
        ("robotCode", APP_KEY),
        ("processQueryKey", "nope"),
    ]))
    .await
    .assert_new_error(400, "resource.not.found");
    t.send(get(vec![("robotCode", APP_KEY)]))
        .await
        .assert_new_error(400, "MissingprocessQueryKey");
    t.assert_only_refused(Api::RobotReadStatus, 2, "processQueryKey");
}

#[tokio::test]
async fn read_status_with_lower_case_oto_path_is_404() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .send(
            t.http
                .get(t.url("/v1.0/robot/otoMessages/readStatus"))
                .header(dingtalk_sim::TOKEN_HEADER, &token)
                .query(&[("robotCode", APP_KEY), ("processQueryKey", "k")]),
        )
        .await;
    answer.assert_new_error(404, "NotFound");
}

#[tokio::test]
async fn group_send_reaches_a_group_the_robot_is_in() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .post_new(
            Api::GroupSend.path(),
            &token,
            group_send(Directory::OPS_GROUP),
        )
        .await;
    assert!(answer.assert_ok()["processQueryKey"].is_string());
    assert_eq!(
        t.sim.state().messages()[0].recipient,
        Recipient::Group {
            open_conversation_id: Directory::OPS_GROUP.into()
        }
    );
}

#[tokio::test]
async fn group_send_to_a_group_without_the_robot_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::GroupSend.path(),
        &token,
        group_send(Directory::NO_ROBOT_GROUP),
    )
    .await
    .assert_new_error(400, "robot.notInGroup");
    t.assert_only_refused(Api::GroupSend, 1, "is not in group");
}

#[tokio::test]
async fn group_send_to_an_unknown_group_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::GroupSend.path(), &token, group_send("cidNope=="))
        .await
        .assert_new_error(400, "resource.not.found");
    t.assert_only_refused(Api::GroupSend, 1, "openConversationId");
}

#[tokio::test]
async fn group_send_without_open_conversation_id_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut body = group_send("x");
    body.as_object_mut().unwrap().remove("openConversationId");
    t.post_new(Api::GroupSend.path(), &token, body)
        .await
        .assert_new_error(400, "MissingopenConversationId");
}

#[tokio::test]
async fn group_recall_recalls_in_the_right_group_only() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .post_new(
            Api::GroupSend.path(),
            &token,
            group_send(Directory::OPS_GROUP),
        )
        .await;
    let key = answer.assert_ok()["processQueryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = t
        .post_new(
            Api::GroupRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "openConversationId": "cidOther==", "processQueryKeys": [key]}),
        )
        .await;
    assert!(wrong.assert_ok()["failedResult"][&key].is_string());
    let right = t
        .post_new(
            Api::GroupRecall.path(),
            &token,
            json!({"robotCode": APP_KEY, "openConversationId": Directory::OPS_GROUP, "processQueryKeys": [key]}),
        )
        .await;
    assert_eq!(right.assert_ok()["successResult"], json!([key]));
}

#[tokio::test]
async fn read_status_without_robot_code_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .send(
            t.http
                .get(t.url(Api::RobotReadStatus.path()))
                .header(dingtalk_sim::TOKEN_HEADER, &token)
                .query(&[("processQueryKey", "k")]),
        )
        .await;
    answer.assert_new_error(400, "MissingrobotCode");
}

#[tokio::test]
async fn batch_send_with_an_empty_or_non_string_user_id_list_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send(json!([])))
        .await
        .assert_new_error(400, "invalidParameter");
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send(json!([7])))
        .await
        .assert_new_error(400, "invalidParameter");
    t.post_new(
        Api::RobotBatchSend.path(),
        &token,
        batch_send(json!("user001")),
    )
    .await
    .assert_new_error(400, "invalidParameter");
    t.assert_only_refused(Api::RobotBatchSend, 3, "array of strings");
}

#[tokio::test]
async fn batch_send_without_msg_key_or_msg_param_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let mut no_key = batch_send(json!(["user001"]));
    no_key.as_object_mut().unwrap().remove("msgKey");
    t.post_new(Api::RobotBatchSend.path(), &token, no_key)
        .await
        .assert_new_error(400, "MissingmsgKey");
    let mut no_param = batch_send(json!(["user001"]));
    no_param.as_object_mut().unwrap().remove("msgParam");
    t.post_new(Api::RobotBatchSend.path(), &token, no_param)
        .await
        .assert_new_error(400, "MissingmsgParam");
}

#[tokio::test]
async fn batch_send_with_a_body_that_is_not_json_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let answer = t
        .send(
            t.http
                .post(t.url(Api::RobotBatchSend.path()))
                .header(dingtalk_sim::TOKEN_HEADER, &token)
                .body("robotCode=x"),
        )
        .await;
    answer.assert_new_error(400, "MissingBody");
    t.assert_only_refused(Api::RobotBatchSend, 1, "not JSON");
}

#[tokio::test]
async fn group_recall_without_open_conversation_id_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::GroupRecall.path(),
        &token,
        json!({"robotCode": APP_KEY, "processQueryKeys": ["k"]}),
    )
    .await
    .assert_new_error(400, "MissingopenConversationId");
}
