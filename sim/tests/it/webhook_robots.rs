//! Custom group robots (PROTOCOL §4.9) and session webhooks (§2.3).

use common::crypto::robot_sign;
use dingtalk_sim::client::RobotMessage;
use dingtalk_sim::{Api, Directory, Recipient, Session};
use serde_json::{json, Value};

use crate::helpers::{config, TestSim, APP_KEY, KEYWORD_ROBOT_TOKEN, ROBOT_SECRET, ROBOT_TOKEN};

fn text(content: &str) -> Value {
    json!({"msgtype": "text", "text": {"content": content},
           "at": {"atMobiles": [], "atUserIds": ["user001"], "isAtAll": false}})
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl TestSim {
    /// Posts to the signed custom robot with a correct signature.
    async fn robot_send(&self, body: &Value) -> crate::helpers::Answer {
        let timestamp = now_ms().to_string();
        let sign = robot_sign(ROBOT_SECRET, &timestamp);
        self.robot_send_with(
            &[
                ("access_token", ROBOT_TOKEN),
                ("timestamp", &timestamp),
                ("sign", &sign),
            ],
            body,
        )
        .await
    }

    async fn robot_send_with(
        &self,
        query: &[(&str, &str)],
        body: &Value,
    ) -> crate::helpers::Answer {
        self.send(
            self.http
                .post(self.url("/robot/send"))
                .query(query)
                .json(body),
        )
        .await
    }
}

#[tokio::test]
async fn signed_custom_robot_message_is_accepted() {
    let t = TestSim::start().await;
    t.robot_send(&text("disk full")).await.assert_old_ok();
    let messages = t.sim.state().messages();
    assert_eq!(
        messages[0].recipient,
        Recipient::CustomRobot {
            access_token: ROBOT_TOKEN.into()
        }
    );
    assert_eq!(messages[0].kind, "text");
}

#[tokio::test]
async fn custom_robot_markdown_link_action_and_feed_cards_are_accepted() {
    let t = TestSim::start().await;
    for body in [
        json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "## x"}}),
        json!({"msgtype": "link", "link": {"title": "t", "text": "x", "messageUrl": "https://e.x"}}),
        json!({"msgtype": "actionCard", "actionCard": {"title": "t", "text": "x",
               "singleTitle": "open", "singleURL": "https://e.x"}}),
        json!({"msgtype": "feedCard", "feedCard": {"links": [
               {"title": "t", "messageURL": "https://e.x", "picURL": "https://e.x/p.png"}]}}),
    ] {
        t.robot_send(&body).await.assert_old_ok();
    }
}

#[tokio::test]
async fn custom_robot_with_a_bad_sign_is_310000() {
    let t = TestSim::start().await;
    let timestamp = now_ms().to_string();
    let wrong = robot_sign("SECwrong", &timestamp);
    t.robot_send_with(
        &[
            ("access_token", ROBOT_TOKEN),
            ("timestamp", &timestamp),
            ("sign", &wrong),
        ],
        &text("x"),
    )
    .await
    .assert_errcode(310000);
    t.robot_send_with(&[("access_token", ROBOT_TOKEN)], &text("x"))
        .await
        .assert_errcode(310000);
    t.assert_only_refused(Api::CustomRobotSend, 2, "sign not match");
}

#[tokio::test]
async fn custom_robot_with_a_stale_timestamp_is_310000() {
    let t = TestSim::start().await;
    let stale = (now_ms() - 2 * 3_600_000).to_string();
    let sign = robot_sign(ROBOT_SECRET, &stale);
    t.robot_send_with(
        &[
            ("access_token", ROBOT_TOKEN),
            ("timestamp", &stale),
            ("sign", &sign),
        ],
        &text("x"),
    )
    .await
    .assert_errcode(310000);
}

#[tokio::test]
async fn custom_robot_with_an_unknown_token_is_300001() {
    let t = TestSim::start().await;
    t.robot_send_with(&[("access_token", "nope")], &text("x"))
        .await
        .assert_errcode(300001);
    t.robot_send_with(&[], &text("x"))
        .await
        .assert_errcode(300001);
    t.assert_only_refused(Api::CustomRobotSend, 2, "token is not exist");
}

#[tokio::test]
async fn custom_robot_21st_message_in_a_minute_is_130101() {
    let t = TestSim::start().await;
    for i in 0..20 {
        t.robot_send(&text(&format!("m{i}"))).await.assert_old_ok();
    }
    t.robot_send(&text("one too many"))
        .await
        .assert_errcode(130101);
    t.robot_send(&text("still throttled"))
        .await
        .assert_errcode(130101);
    assert_eq!(t.accepted(Api::CustomRobotSend).len(), 20);
    assert_eq!(t.refused(Api::CustomRobotSend).len(), 2);
}

#[tokio::test]
async fn custom_robot_limit_is_configurable_and_per_robot() {
    let mut config = config();
    config.limits.custom_robot_per_minute = 2;
    let t = TestSim::start_with(config).await;
    t.robot_send(&text("1")).await.assert_old_ok();
    t.robot_send(&text("2")).await.assert_old_ok();
    t.robot_send(&text("3")).await.assert_errcode(130101);
    t.robot_send_with(
        &[("access_token", KEYWORD_ROBOT_TOKEN)],
        &text("alert: other robot"),
    )
    .await
    .assert_old_ok();
}

#[tokio::test]
async fn custom_robot_body_over_20000_bytes_is_460101() {
    let t = TestSim::start().await;
    t.robot_send(&text(&"x".repeat(20_000)))
        .await
        .assert_errcode(460101);
    t.assert_only_refused(Api::CustomRobotSend, 1, "too long");
}

#[tokio::test]
async fn custom_robot_message_missing_its_fields_is_refused() {
    let t = TestSim::start().await;
    t.robot_send(&json!({"msgtype": "markdown", "markdown": {"title": "t"}}))
        .await
        .assert_errcode(400402);
    t.robot_send(&json!({"msgtype": "image"}))
        .await
        .assert_errcode(400402);
    t.robot_send(&json!({"text": {"content": "no msgtype"}}))
        .await
        .assert_errcode(400402);
    t.assert_only_refused(Api::CustomRobotSend, 3, "msgtype");
}

#[tokio::test]
async fn custom_robot_body_that_is_not_json_is_40035() {
    let t = TestSim::start().await;
    let timestamp = now_ms().to_string();
    let sign = robot_sign(ROBOT_SECRET, &timestamp);
    let answer = t
        .send(
            t.http
                .post(t.url("/robot/send"))
                .query(&[
                    ("access_token", ROBOT_TOKEN),
                    ("timestamp", &timestamp),
                    ("sign", &sign),
                ])
                .body("msgtype=text"),
        )
        .await;
    answer.assert_errcode(40035);
}

#[tokio::test]
async fn custom_robot_message_without_its_keyword_is_310000() {
    let t = TestSim::start().await;
    t.robot_send_with(&[("access_token", KEYWORD_ROBOT_TOKEN)], &text("hello"))
        .await
        .assert_errcode(310000);
    t.robot_send_with(
        &[("access_token", KEYWORD_ROBOT_TOKEN)],
        &text("alert: hello"),
    )
    .await
    .assert_old_ok();
}

#[tokio::test]
async fn session_webhook_reply_reaches_the_callbacks_conversation() {
    let t = TestSim::start().await;
    let message = RobotMessage::text(APP_KEY, "hi", &t.base).in_group(Directory::OPS_GROUP, "ops");
    let webhook = message.to_json(now_ms())["sessionWebhook"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(webhook.starts_with(&format!("{}/robot/sendBySession?session=", t.base)));
    let answer = t
        .send(t.http.post(&webhook).json(&json!({
            "msgtype": "markdown", "markdown": {"title": "re", "text": "**pong**"},
            "at": {"atUserIds": ["user001"]}})))
        .await;
    answer.assert_old_ok();
    let messages = t.sim.state().messages();
    assert_eq!(
        messages[0].recipient,
        Recipient::Session {
            conversation_id: Directory::OPS_GROUP.into()
        }
    );
    assert_eq!(
        t.accepted(Api::SessionSend)[0].app.as_deref(),
        Some(APP_KEY)
    );
}

#[tokio::test]
async fn expired_or_forged_session_webhooks_are_300001() {
    let t = TestSim::start().await;
    let expired = Session {
        conversation_id: "cid==".into(),
        robot_code: APP_KEY.into(),
        expires_at_ms: now_ms() - 1,
    };
    t.send(t.http.post(expired.webhook_url(&t.base)).json(&text("x")))
        .await
        .assert_errcode(300001);
    t.send(
        t.http
            .post(t.url("/robot/sendBySession"))
            .query(&[("session", "s1")])
            .json(&text("x")),
    )
    .await
    .assert_errcode(300001);
    t.assert_only_refused(Api::SessionSend, 2, "session is not exist");
}

#[tokio::test]
async fn session_webhook_refuses_malformed_messages() {
    let t = TestSim::start().await;
    let session = Session {
        conversation_id: "cid==".into(),
        robot_code: APP_KEY.into(),
        expires_at_ms: now_ms() + 60_000,
    };
    t.send(
        t.http
            .post(session.webhook_url(&t.base))
            .json(&json!({"msgtype": "text", "text": {}})),
    )
    .await
    .assert_errcode(400402);
}
