//! Token endpoints and token checks (PROTOCOL §3, §6.1).

use std::time::Duration;

use dingtalk_sim::{Api, TOKEN_HEADER};
use serde_json::json;

use crate::helpers::{config, text_param, TestSim, APP_KEY, APP_SECRET};

fn batch_send_body() -> serde_json::Value {
    json!({"robotCode": APP_KEY, "userIds": ["user001"], "msgKey": "sampleText",
           "msgParam": text_param("hi")})
}

#[tokio::test]
async fn new_api_token_is_issued_for_valid_credentials_with_a_7200s_lifetime() {
    let t = TestSim::start().await;
    let answer = t
        .send(t.http.post(t.url("/v1.0/oauth2/accessToken")).json(&json!({
            "appKey": APP_KEY, "appSecret": APP_SECRET
        })))
        .await;
    let body = answer.assert_ok();
    assert!(body["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["expireIn"], 7200);
}

#[tokio::test]
async fn repeated_token_fetch_within_validity_returns_the_same_token() {
    let t = TestSim::start().await;
    assert_eq!(t.new_token().await, t.new_token().await);
}

#[tokio::test]
async fn new_api_token_with_wrong_secret_is_refused() {
    let t = TestSim::start().await;
    let answer = t
        .send(t.http.post(t.url("/v1.0/oauth2/accessToken")).json(&json!({
            "appKey": APP_KEY, "appSecret": "wrong"
        })))
        .await;
    answer.assert_new_error(400, "invalidClientIdOrSecret");
    t.assert_only_refused(Api::NewToken, 1, "appSecret");
}

#[tokio::test]
async fn new_api_token_without_app_secret_is_a_missing_parameter() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .post(t.url("/v1.0/oauth2/accessToken"))
                .json(&json!({ "appKey": APP_KEY })),
        )
        .await;
    answer.assert_new_error(400, "MissingappSecret");
    t.assert_only_refused(Api::NewToken, 1, "appSecret is mandatory");
}

#[tokio::test]
async fn new_api_token_with_a_form_encoded_body_is_refused_because_json_is_mandatory() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .post(t.url("/v1.0/oauth2/accessToken"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("appKey={APP_KEY}&appSecret={APP_SECRET}")),
        )
        .await;
    answer.assert_new_error(400, "MissingBody");
    t.assert_only_refused(Api::NewToken, 1, "body is mandatory");
}

#[tokio::test]
async fn recorded_token_calls_never_keep_the_secret() {
    let t = TestSim::start().await;
    t.new_token().await;
    let recorded = t.accepted(Api::NewToken);
    assert_eq!(recorded[0].body["appSecret"], "***");
}

#[tokio::test]
async fn old_api_token_is_issued_by_gettoken() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .get(t.url("/gettoken"))
                .query(&[("appkey", APP_KEY), ("appsecret", APP_SECRET)]),
        )
        .await;
    let body = answer.assert_old_ok();
    assert_eq!(body["errmsg"], "ok");
    assert_eq!(body["expires_in"], 7200);
    assert!(body["access_token"].is_string());
}

#[tokio::test]
async fn gettoken_with_wrong_secret_or_missing_appkey_is_an_errcode() {
    let t = TestSim::start().await;
    t.send(
        t.http
            .get(t.url("/gettoken"))
            .query(&[("appkey", APP_KEY), ("appsecret", "x")]),
    )
    .await
    .assert_errcode(40089);
    t.send(
        t.http
            .get(t.url("/gettoken"))
            .query(&[("appsecret", APP_SECRET)]),
    )
    .await
    .assert_errcode(40035);
    t.assert_only_refused(Api::OldToken, 2, "appkey is mandatory");
}

#[tokio::test]
async fn new_api_call_without_token_header_is_400_invalid_authentication() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .post(t.url(Api::RobotBatchSend.path()))
                .json(&batch_send_body()),
        )
        .await;
    answer.assert_new_error(400, "InvalidAuthentication");
    t.assert_only_refused(Api::RobotBatchSend, 1, "missing");
}

#[tokio::test]
async fn new_api_call_with_unknown_token_is_400_invalid_authentication() {
    let t = TestSim::start().await;
    t.post_new(Api::RobotBatchSend.path(), "not-a-token", batch_send_body())
        .await
        .assert_new_error(400, "InvalidAuthentication");
    t.assert_only_refused(Api::RobotBatchSend, 1, "invalid access_token");
}

#[tokio::test]
async fn expired_tokens_are_refused_on_both_apis_and_a_new_one_is_issued() {
    let mut config = config();
    config.limits.token_lifetime = Duration::from_millis(1_000);
    let t = TestSim::start_with(config).await;
    let new = t.new_token().await;
    let old = t.old_token().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let answer = t
        .post_new(Api::RobotBatchSend.path(), &new, batch_send_body())
        .await;
    answer.assert_new_error(400, "InvalidAuthentication");
    assert!(answer.body["message"].as_str().unwrap().contains("expired"));
    t.post_old(
        Api::UserGetByUnionId.path(),
        &old,
        json!({"unionid": "union-user001"}),
    )
    .await
    .assert_errcode(42001);
    let fresh = t.new_token().await;
    assert_ne!(fresh, new);
    t.post_new(Api::RobotBatchSend.path(), &fresh, batch_send_body())
        .await
        .assert_ok();
}

#[tokio::test]
async fn the_two_token_kinds_are_not_interchangeable() {
    let t = TestSim::start().await;
    let new = t.new_token().await;
    let old = t.old_token().await;
    t.post_old(
        Api::UserGetByUnionId.path(),
        &new,
        json!({"unionid": "union-user001"}),
    )
    .await
    .assert_errcode(40014);
    t.post_new(Api::RobotBatchSend.path(), &old, batch_send_body())
        .await
        .assert_new_error(400, "InvalidAuthentication");
}

#[tokio::test]
async fn old_api_call_without_access_token_is_40014() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .post(t.url(Api::UserGetByUnionId.path()))
                .header(TOKEN_HEADER, t.new_token().await)
                .json(&json!({"unionid": "union-user001"})),
        )
        .await;
    answer.assert_errcode(40014);
}
