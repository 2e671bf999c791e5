//! The call record and its inspect endpoints.

use dingtalk_sim::{Api, CallFilter};
use serde_json::json;

use crate::helpers::{config, text_param, TestSim, APP_KEY, OTHER_APP_KEY, OTHER_APP_SECRET};

#[tokio::test]
async fn accepted_calls_are_recorded_in_order_with_app_api_and_body() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let body = json!({"robotCode": APP_KEY, "userIds": ["user001"], "msgKey": "sampleText",
                      "msgParam": text_param("first")});
    t.post_new(Api::RobotBatchSend.path(), &token, body.clone())
        .await
        .assert_ok();
    let answer = t
        .send(
            t.http
                .get(t.url("/_sim/calls"))
                .query(&[("api", "robot.batchSend")]),
        )
        .await;
    let calls = answer.assert_ok()["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["api"], "robot.batchSend");
    assert_eq!(calls[0]["app"], APP_KEY);
    assert_eq!(calls[0]["body"], body);
    assert_eq!(calls[0]["status"], 200);
    let all = t.sim.state().calls(&CallFilter::all());
    assert_eq!(
        all.iter().map(|c| c.api).collect::<Vec<_>>(),
        vec![Api::NewToken, Api::RobotBatchSend]
    );
    assert!(all[0].seq < all[1].seq);
}

#[tokio::test]
async fn rejected_calls_are_recorded_separately_with_their_reason() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::RobotBatchSend.path(),
        &token,
        json!({"robotCode": APP_KEY}),
    )
    .await
    .assert_new_error(400, "MissinguserIds");
    let answer = t.send(t.http.get(t.url("/_sim/rejected"))).await;
    let calls = answer.assert_ok()["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"], 400);
    assert!(calls[0]["reason"].as_str().unwrap().contains("userIds"));
    assert!(t.accepted(Api::RobotBatchSend).is_empty());
}

#[tokio::test]
async fn calls_filter_by_app() {
    let t = TestSim::start().await;
    t.new_token().await;
    t.new_token_for(OTHER_APP_KEY, OTHER_APP_SECRET).await;
    let answer = t
        .send(
            t.http
                .get(t.url("/_sim/calls"))
                .query(&[("app", OTHER_APP_KEY)]),
        )
        .await;
    let calls = answer.assert_ok()["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["app"], OTHER_APP_KEY);
    let bad = t
        .send(t.http.get(t.url("/_sim/calls")).query(&[("api", "nope")]))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn delete_calls_resets_the_record() {
    let t = TestSim::start().await;
    t.new_token().await;
    t.send(t.http.delete(t.url("/_sim/calls")))
        .await
        .assert_ok();
    assert!(t.sim.state().calls(&CallFilter::all()).is_empty());
}

#[tokio::test]
async fn the_record_keeps_only_the_newest_calls_up_to_its_cap() {
    let mut config = config();
    config.limits.max_recorded_calls = 3;
    let t = TestSim::start_with(config).await;
    for _ in 0..5 {
        t.new_token().await;
    }
    let answer = t.send(t.http.get(t.url("/_sim/calls"))).await;
    let body = answer.assert_ok();
    assert_eq!(body["calls"].as_array().unwrap().len(), 3);
    assert_eq!(body["dropped"], 2);
    assert_eq!(body["calls"][0]["seq"], 3);
}
