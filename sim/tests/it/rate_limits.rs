//! The per-(app, API) QPS limit (PROTOCOL §6.3), counted per wall-clock second.

use dingtalk_sim::Api;
use serde_json::json;

use crate::helpers::{
    at_start_of_next_second, config, text_param, TestSim, APP_KEY, OTHER_APP_KEY, OTHER_APP_SECRET,
};

const LIMIT: u32 = 3;

async fn limited() -> TestSim {
    let mut config = config();
    config.limits.qps_per_app_api = LIMIT;
    TestSim::start_with(config).await
}

fn group_send(robot: &str) -> serde_json::Value {
    json!({"robotCode": robot, "openConversationId": dingtalk_sim::Directory::OPS_GROUP,
           "msgKey": "sampleText", "msgParam": text_param("hi")})
}

#[tokio::test]
async fn calls_over_the_qps_limit_within_one_second_get_403_qps_limit_then_pass_next_second() {
    let t = limited().await;
    let token = t.new_token().await;
    at_start_of_next_second().await;
    for _ in 0..LIMIT {
        t.post_new(Api::GroupSend.path(), &token, group_send(APP_KEY))
            .await
            .assert_ok();
    }
    let over = t
        .post_new(Api::GroupSend.path(), &token, group_send(APP_KEY))
        .await;
    over.assert_new_error(403, "QpsLimit");
    assert_eq!(over.body["code"], "Forbidden.AccessDenied.QpsLimitForApi");
    at_start_of_next_second().await;
    t.post_new(Api::GroupSend.path(), &token, group_send(APP_KEY))
        .await
        .assert_ok();
    assert_eq!(t.accepted(Api::GroupSend).len(), LIMIT as usize + 1);
    assert_eq!(t.refused(Api::GroupSend).len(), 1);
}

#[tokio::test]
async fn the_limit_is_per_api_and_per_app() {
    let t = limited().await;
    let token = t.new_token().await;
    let other = t.new_token_for(OTHER_APP_KEY, OTHER_APP_SECRET).await;
    at_start_of_next_second().await;
    for _ in 0..LIMIT {
        t.post_new(Api::GroupSend.path(), &token, group_send(APP_KEY))
            .await
            .assert_ok();
    }
    t.post_new(Api::GroupSend.path(), &token, group_send(APP_KEY))
        .await
        .assert_new_error(403, "QpsLimit");
    t.post_new(
        Api::RobotBatchSend.path(),
        &token,
        json!({"robotCode": APP_KEY, "userIds": ["user001"], "msgKey": "sampleText",
               "msgParam": text_param("hi")}),
    )
    .await
    .assert_ok();
    t.post_new(Api::GroupSend.path(), &other, group_send(OTHER_APP_KEY))
        .await
        .assert_ok();
}

#[tokio::test]
async fn old_api_calls_over_the_limit_get_errcode_90018() {
    let t = limited().await;
    let token = t.old_token().await;
    at_start_of_next_second().await;
    for _ in 0..LIMIT {
        t.post_old(Api::DepartmentListSub.path(), &token, json!({}))
            .await
            .assert_old_ok();
    }
    t.post_old(Api::DepartmentListSub.path(), &token, json!({}))
        .await
        .assert_errcode(90018);
}
