//! Fault injection through the control API: every kind, with count, api and app filters.

use std::time::{Duration, Instant};

use dingtalk_sim::Api;
use serde_json::{json, Value};

use crate::helpers::{text_param, TestSim, APP_KEY, OTHER_APP_KEY, OTHER_APP_SECRET};

fn batch_send() -> Value {
    json!({"robotCode": APP_KEY, "userIds": ["user001", "user002"], "msgKey": "sampleText",
           "msgParam": text_param("hi")})
}

#[tokio::test]
async fn http_500_fault_fails_the_next_call_only() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.control(
        "/_sim/faults",
        json!({"api": "robot.batchSend", "kind": "http_500"}),
    )
    .await
    .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_new_error(500, "InternalError");
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_ok();
    assert!(t.refused(Api::RobotBatchSend)[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("injected"));
    assert_eq!(t.sim.state().messages().len(), 1);
}

#[tokio::test]
async fn system_error_fault_answers_in_each_apis_shape() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let old = t.old_token().await;
    t.control("/_sim/faults", json!({"kind": "system_error", "count": 2}))
        .await
        .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_new_error(400, "systemError");
    t.post_old(Api::DepartmentListSub.path(), &old, json!({}))
        .await
        .assert_errcode(-1);
    t.post_old(Api::DepartmentListSub.path(), &old, json!({}))
        .await
        .assert_old_ok();
}

#[tokio::test]
async fn permission_fault_is_403_on_the_new_api_and_60011_on_the_old() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let old = t.old_token().await;
    t.control(
        "/_sim/faults",
        json!({"kind": "permission_60011", "count": "always"}),
    )
    .await
    .assert_ok();
    let answer = t
        .post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await;
    answer.assert_new_error(403, "AccessTokenPermissionDenied");
    assert!(answer.body["accessdenieddetail"].is_object());
    t.post_old(
        Api::UserListSimple.path(),
        &old,
        json!({"dept_id": 1, "cursor": 0, "size": 10}),
    )
    .await
    .assert_errcode(60011);
    t.send(t.http.delete(t.url("/_sim/faults")))
        .await
        .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_ok();
}

#[tokio::test]
async fn expire_tokens_fault_expires_live_tokens_at_once() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let old = t.old_token().await;
    let answer = t
        .control("/_sim/faults", json!({"kind": "expire_tokens"}))
        .await;
    assert_eq!(answer.assert_ok()["expired"], 2);
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_new_error(400, "InvalidAuthentication");
    t.post_old(Api::DepartmentListSub.path(), &old, json!({}))
        .await
        .assert_errcode(42001);
    let fresh = t.new_token().await;
    assert_ne!(fresh, token);
    t.post_new(Api::RobotBatchSend.path(), &fresh, batch_send())
        .await
        .assert_ok();
}

#[tokio::test]
async fn expire_tokens_fault_can_target_one_app() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let other = t.new_token_for(OTHER_APP_KEY, OTHER_APP_SECRET).await;
    t.control(
        "/_sim/faults",
        json!({"kind": "expire_tokens", "app": OTHER_APP_KEY}),
    )
    .await
    .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_ok();
    let mut body = batch_send();
    body["robotCode"] = json!(OTHER_APP_KEY);
    t.post_new(Api::RobotBatchSend.path(), &other, body)
        .await
        .assert_new_error(400, "InvalidAuthentication");
}

#[tokio::test]
async fn slow_fault_delays_the_answer() {
    let t = TestSim::start().await;
    let old = t.old_token().await;
    t.control(
        "/_sim/faults",
        json!({"api": "department.listsub", "kind": "slow", "ms": 400}),
    )
    .await
    .assert_ok();
    let started = Instant::now();
    t.post_old(Api::DepartmentListSub.path(), &old, json!({}))
        .await
        .assert_old_ok();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    t.post_old(Api::DepartmentListSub.path(), &old, json!({}))
        .await
        .assert_old_ok();
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn flow_control_fault_reports_held_back_users() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.control(
        "/_sim/faults",
        json!({"kind": "flow_control", "userIds": ["user002"]}),
    )
    .await
    .assert_ok();
    let answer = t
        .post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await;
    let body = answer.assert_ok();
    assert_eq!(body["flowControlledStaffIdList"], json!(["user002"]));
    assert_eq!(body["invalidStaffIdList"], json!([]));
    let again = t
        .post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await;
    assert_eq!(again.assert_ok()["flowControlledStaffIdList"], json!([]));
}

#[tokio::test]
async fn qps_limit_fault_answers_403_qps_limit() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.control("/_sim/faults", json!({"kind": "qps_limit", "app": APP_KEY}))
        .await
        .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_new_error(403, "QpsLimit");
}

#[tokio::test]
async fn faults_for_another_app_or_api_leave_calls_alone() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.control(
        "/_sim/faults",
        json!({"kind": "http_500", "app": OTHER_APP_KEY, "count": "always"}),
    )
    .await
    .assert_ok();
    t.control(
        "/_sim/faults",
        json!({"kind": "http_500", "api": "card.create", "count": "always"}),
    )
    .await
    .assert_ok();
    t.post_new(Api::RobotBatchSend.path(), &token, batch_send())
        .await
        .assert_ok();
    let listed = t.send(t.http.get(t.url("/_sim/faults"))).await;
    let faults = listed.assert_ok()["faults"].as_array().unwrap().clone();
    assert_eq!(faults.len(), 2);
    assert_eq!(faults[1]["api"], "card.create");
    assert_eq!(faults[1]["remaining"], "always");
}

#[tokio::test]
async fn faults_apply_to_token_endpoints_and_custom_robots_too() {
    let t = TestSim::start().await;
    t.control(
        "/_sim/faults",
        json!({"api": "oauth2.accessToken", "kind": "http_500"}),
    )
    .await
    .assert_ok();
    let answer = t
        .send(t.http.post(t.url("/v1.0/oauth2/accessToken")).json(&json!({
            "appKey": APP_KEY, "appSecret": crate::helpers::APP_SECRET})))
        .await;
    answer.assert_new_error(500, "InternalError");
    t.control(
        "/_sim/faults",
        json!({"api": "robot.send", "kind": "system_error"}),
    )
    .await
    .assert_ok();
    t.send(
        t.http
            .post(t.url("/robot/send"))
            .query(&[("access_token", crate::helpers::KEYWORD_ROBOT_TOKEN)])
            .json(&json!({"msgtype": "text", "text": {"content": "alert"}})),
    )
    .await
    .assert_errcode(-1);
}

#[tokio::test]
async fn malformed_fault_rules_are_refused() {
    let t = TestSim::start().await;
    for bad in [
        json!({"kind": "explode"}),
        json!({"kind": "http_500", "api": "robot.nope"}),
        json!({"kind": "slow"}),
        json!({"kind": "http_500", "count": 0}),
    ] {
        let answer = t.control("/_sim/faults", bad.clone()).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.body["error"].is_string());
    }
    assert!(t.sim.state().faults().is_empty());
}
