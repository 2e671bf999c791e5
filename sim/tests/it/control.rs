//! The control API and the 404 fallback.

use dingtalk_sim::Api;
use serde_json::json;

use crate::helpers::{text_param, TestSim};

#[tokio::test]
async fn an_app_registered_at_runtime_can_fetch_tokens_and_send_as_its_robot() {
    let t = TestSim::start().await;
    let answer = t
        .control(
            "/_sim/apps",
            json!({"appKey": "dingnew", "appSecret": "s3", "robotCode": "robotnew"}),
        )
        .await;
    assert_eq!(answer.assert_ok()["robotCode"], "robotnew");
    let token = t.new_token_for("dingnew", "s3").await;
    t.post_new(
        Api::RobotBatchSend.path(),
        &token,
        json!({"robotCode": "robotnew", "userIds": ["user001"], "msgKey": "sampleText",
               "msgParam": text_param("hi")}),
    )
    .await
    .assert_ok();
    let apps = t.send(t.http.get(t.url("/_sim/apps"))).await;
    assert!(apps.assert_ok()["appKeys"]
        .as_array()
        .unwrap()
        .contains(&json!("dingnew")));
}

#[tokio::test]
async fn malformed_app_registration_is_refused() {
    let t = TestSim::start().await;
    let answer = t.control("/_sim/apps", json!({"appKey": "x"})).await;
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn a_group_added_with_the_robot_accepts_group_sends() {
    let t = TestSim::start().await;
    t.control(
        "/_sim/groups",
        json!({"openConversationId": "cidNew==", "title": "new",
               "robots": {"kind": "only", "robotCodes": [crate::helpers::APP_KEY]}}),
    )
    .await
    .assert_ok();
    let token = t.new_token().await;
    t.post_new(
        Api::GroupSend.path(),
        &token,
        json!({"robotCode": crate::helpers::APP_KEY, "openConversationId": "cidNew==",
               "msgKey": "sampleText", "msgParam": text_param("hi")}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn the_directory_can_be_read_and_replaced() {
    let t = TestSim::start().await;
    let answer = t.send(t.http.get(t.url("/_sim/directory"))).await;
    let mut directory = answer.assert_ok().clone();
    assert_eq!(directory["departments"][0]["deptId"], 1);
    directory["users"] =
        json!([{"userid": "solo", "unionid": "u-solo", "name": "Solo", "deptIds": [1]}]);
    t.send(t.http.put(t.url("/_sim/directory")).json(&directory))
        .await
        .assert_ok();
    let token = t.old_token().await;
    let list = t
        .post_old(
            Api::UserListSimple.path(),
            &token,
            json!({"dept_id": 1, "cursor": 0, "size": 10}),
        )
        .await;
    assert_eq!(
        list.assert_old_ok()["result"]["list"],
        json!([{"userid": "solo", "name": "Solo"}])
    );
}

#[tokio::test]
async fn a_custom_robot_registered_at_runtime_accepts_messages() {
    let t = TestSim::start().await;
    t.control("/_sim/custom-robots", json!({"accessToken": "fresh"}))
        .await
        .assert_ok();
    t.send(
        t.http
            .post(t.url("/robot/send"))
            .query(&[("access_token", "fresh")])
            .json(&json!({"msgtype": "text", "text": {"content": "x"}})),
    )
    .await
    .assert_old_ok();
}

#[tokio::test]
async fn unknown_paths_get_404_in_the_shape_of_their_host() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new("/v1.0/robot/nothing", &token, json!({}))
        .await
        .assert_new_error(404, "InvalidAction.NotFound");
    let old = t.post_old("/topapi/nothing", "x", json!({})).await;
    assert_eq!(old.status, 404);
    assert_eq!(old.body["errcode"], 404);
}

#[tokio::test]
async fn a_known_path_with_the_wrong_method_is_404() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.put_new(Api::RobotBatchSend.path(), &token, json!({}))
        .await
        .assert_new_error(404, "NotFound");
}

#[tokio::test]
async fn health_answers_ok() {
    let t = TestSim::start().await;
    let answer = t.http.get(t.url("/_sim/health")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}
