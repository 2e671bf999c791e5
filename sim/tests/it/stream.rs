//! The Stream gateway with a bare WebSocket client: credentials, single-use tickets, frames in
//! DingTalk's format, and redelivery of unacked frames under a new message id.

use std::time::Duration;

use dingtalk_sim::{StreamPush, StreamSettings};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_websockets::{ClientBuilder, Message};

use crate::helpers::{config, TestSim, APP_KEY, APP_SECRET};

type Socket =
    tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<tokio::net::TcpStream>>;

async fn sim() -> TestSim {
    let mut config = config();
    config.stream = StreamSettings {
        ping_interval: Duration::from_secs(30),
        redelivery_timeout: Duration::from_millis(500),
        ..StreamSettings::default()
    };
    TestSim::start_with(config).await
}

async fn open(sim: &TestSim, secret: &str) -> reqwest::Response {
    sim.http
        .post(format!("{}/v1.0/gateway/connections/open", sim.base))
        .json(&json!({"clientId": APP_KEY, "clientSecret": secret,
            "subscriptions": [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]}))
        .send()
        .await
        .unwrap()
}

async fn ticket_url(sim: &TestSim) -> String {
    let answer: Value = open(sim, APP_SECRET).await.json().await.unwrap();
    format!(
        "{}?ticket={}",
        answer["endpoint"].as_str().unwrap(),
        answer["ticket"].as_str().unwrap()
    )
}

async fn connect(url: &str) -> Socket {
    ClientBuilder::new()
        .uri(url)
        .unwrap()
        .connect()
        .await
        .unwrap()
        .0
}

async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("no socket error");
        if let Some(text) = message.as_text() {
            return serde_json::from_str(text).unwrap();
        }
    }
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_auth_failed() {
    let sim = sim().await;
    let answer = open(&sim, "wrong").await;
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["code"], "authFailed");
}

#[tokio::test]
async fn a_ticket_opens_one_connection_only() {
    let sim = sim().await;
    let url = ticket_url(&sim).await;
    let _first = connect(&url).await;
    let mut second = connect(&url).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), second.next())
        .await
        .unwrap();
    match closed {
        Some(Ok(message)) => assert!(message.is_close(), "{message:?}"),
        other => assert!(other.is_none() || matches!(other, Some(Err(_)))),
    }
    assert_eq!(sim.sim.state().stream_connections().len(), 1);
}

#[tokio::test]
async fn an_unacked_frame_is_redelivered_under_a_new_message_id_until_acked() {
    let sim = sim().await;
    let mut socket = connect(&ticket_url(&sim).await).await;
    let origin = sim
        .sim
        .state()
        .stream_push(StreamPush::RobotMessage {
            app_key: APP_KEY.into(),
            data: json!({"msgId": "m1", "text": {"content": "hi"}}),
        })
        .unwrap();
    let first = next_frame(&mut socket).await;
    assert_eq!(first["type"], "CALLBACK");
    assert_eq!(first["headers"]["topic"], "/v1.0/im/bot/messages/get");
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["msgId"], "m1");
    // Not acked: DingTalk sends it again with another messageId.
    let again = next_frame(&mut socket).await;
    assert_eq!(again["data"], first["data"]);
    assert_ne!(again["headers"]["messageId"], first["headers"]["messageId"]);
    let ack = json!({"code": 200, "headers": {"contentType": "application/json",
        "messageId": again["headers"]["messageId"]}, "message": "OK", "data": "{\"response\":{}}"});
    socket.send(Message::text(ack.to_string())).await.unwrap();
    for _ in 0..100 {
        if sim.sim.state().stream_pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.sim.state().stream_pending(), 0);
    let acks = sim.sim.state().stream_acks();
    assert!(acks
        .iter()
        .any(|a| a.origin.as_deref() == Some(origin.as_str()) && a.settled));
}
