//! The simulator acting as DingTalk towards a receiver: signed robot messages, encrypted events
//! and card actions, checked with `common::crypto` on a tiny receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::crypto::{verify_robot_sign, AesKey, CallbackCrypto, ROBOT_SIGN_WINDOW};
use dingtalk_sim::client::{
    check_url, CallbackClient, CardAction, Content, EventSigner, RobotMessage,
};
use dingtalk_sim::{Api, Directory};
use serde_json::{json, Value};

use crate::helpers::{TestSim, APP_KEY, APP_SECRET};

const EVENT_TOKEN: &str = "event-token";
const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";

/// What the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    query: std::collections::HashMap<String, String>,
    body: Bytes,
}

type Inbox = Arc<Mutex<Vec<Seen>>>;

/// A receiver on a free port; robot messages and card actions are answered 200, events with
/// the encrypted success reply.
async fn receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    async fn capture(
        State(inbox): State<Inbox>,
        headers: HeaderMap,
        Query(query): Query<std::collections::HashMap<String, String>>,
        body: Bytes,
    ) -> Json<Value> {
        let reply = if query.contains_key("signature") {
            let crypto = CallbackCrypto::new(EVENT_TOKEN, AesKey::parse(AES_KEY).unwrap(), APP_KEY);
            serde_json::to_value(crypto.success_reply(&query["timestamp"], &query["nonce"]))
                .unwrap()
        } else {
            json!({})
        };
        inbox.lock().unwrap().push(Seen {
            headers,
            query,
            body,
        });
        Json(reply)
    }
    let app = Router::new()
        .route("/in", post(capture))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/in"), inbox)
}

fn client() -> CallbackClient {
    CallbackClient::new(Duration::from_secs(5)).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn robot_message_is_signed_so_that_common_crypto_verifies_it() {
    let (url, inbox) = receiver().await;
    let message = RobotMessage::text(APP_KEY, "hello", "http://sim.invalid")
        .in_group(Directory::OPS_GROUP, "ops");
    let answer = client()
        .send_robot_message(&url, APP_SECRET, &message)
        .await
        .unwrap();
    assert!(answer.is_ack());
    let seen = inbox.lock().unwrap()[0].clone();
    let timestamp = seen.headers["timestamp"].to_str().unwrap();
    let sign = seen.headers["sign"].to_str().unwrap();
    assert_eq!(
        verify_robot_sign(APP_SECRET, timestamp, sign, now_ms(), ROBOT_SIGN_WINDOW),
        Ok(())
    );
    assert!(
        verify_robot_sign("other-secret", timestamp, sign, now_ms(), ROBOT_SIGN_WINDOW).is_err()
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["msgId"], message.msg_id);
    assert_eq!(body["conversationType"], "2");
    assert_eq!(body["conversationId"], Directory::OPS_GROUP);
    assert_eq!(body["robotCode"], APP_KEY);
    assert_eq!(body["senderStaffId"], "user001");
}

#[tokio::test]
async fn the_session_webhook_of_a_sent_message_lets_the_receiver_reply_through_the_simulator() {
    let t = TestSim::start().await;
    let (url, inbox) = receiver().await;
    let message = RobotMessage::text(APP_KEY, "ping", &t.base);
    client()
        .send_robot_message(&url, APP_SECRET, &message)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&inbox.lock().unwrap()[0].body).unwrap();
    let webhook = body["sessionWebhook"].as_str().unwrap();
    t.send(
        t.http
            .post(webhook)
            .json(&json!({"msgtype": "text", "text": {"content": "pong"}})),
    )
    .await
    .assert_old_ok();
    assert_eq!(t.accepted(Api::SessionSend).len(), 1);
}

#[tokio::test]
async fn picture_message_carries_a_download_code_the_simulator_resolves() {
    let t = TestSim::start().await;
    let code = t
        .sim
        .state()
        .add_download("cat.png", Bytes::from_static(b"meow"));
    let message = RobotMessage::text(APP_KEY, "", &t.base).with_content(Content::Picture {
        download_code: code.clone(),
    });
    let body = message.to_json(now_ms());
    assert_eq!(body["msgtype"], "picture");
    assert_eq!(body["content"]["downloadCode"], code);
    let token = t.new_token().await;
    t.post_new(
        Api::MessageFileDownload.path(),
        &token,
        json!({"downloadCode": code, "robotCode": APP_KEY}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn event_callback_is_signed_and_encrypted_so_that_common_crypto_opens_it() {
    let (url, inbox) = receiver().await;
    let signer = EventSigner::new(EVENT_TOKEN, AES_KEY, APP_KEY).unwrap();
    let answer = client()
        .send_event(&url, &signer, &check_url())
        .await
        .unwrap();
    assert!(answer.answer.is_ack());
    assert_eq!(answer.reply, Ok("success".to_owned()));
    let seen = inbox.lock().unwrap()[0].clone();
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    let crypto = CallbackCrypto::new(EVENT_TOKEN, AesKey::parse(AES_KEY).unwrap(), APP_KEY);
    let plaintext = crypto
        .verify_and_decrypt(
            &seen.query["signature"],
            &seen.query["timestamp"],
            &seen.query["nonce"],
            body["encrypt"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&plaintext).unwrap(),
        check_url()
    );
    assert_eq!(seen.query["nonce"].len(), 8);
}

#[tokio::test]
async fn event_reply_that_is_not_the_encrypted_success_is_reported() {
    let app = Router::new().route("/in", post(|| async { "success" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let signer = EventSigner::new(EVENT_TOKEN, AES_KEY, APP_KEY).unwrap();
    let answer = client()
        .send_event(&format!("http://{addr}/in"), &signer, &check_url())
        .await
        .unwrap();
    assert!(answer.reply.is_err());
}

#[tokio::test]
async fn card_action_callback_carries_the_button_in_a_json_string() {
    let (url, inbox) = receiver().await;
    let action = CardAction::in_group("track-1", Directory::OPS_GROUP, "user003", "approve");
    assert!(client()
        .send_card_action(&url, &action)
        .await
        .unwrap()
        .is_ack());
    let body: Value = serde_json::from_slice(&inbox.lock().unwrap()[0].body).unwrap();
    assert_eq!(body["outTrackId"], "track-1");
    assert_eq!(body["userId"], "user003");
    let content: Value = serde_json::from_str(body["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["cardPrivateData"]["actionIds"], json!(["approve"]));
}
