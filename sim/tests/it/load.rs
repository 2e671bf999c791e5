//! The load generator: rate, bounded duration, and DingTalk-style redelivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::secret::Secret;
use dingtalk_sim::client::{
    run_load, CallbackClient, EventSigner, LoadPlan, LoadTarget, RobotMessage,
};
use serde_json::Value;

use crate::helpers::{APP_KEY, APP_SECRET};

/// Deliveries seen per msgId (or event id).
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A receiver that answers 503 to the first delivery of each message and 200 afterwards
/// (or always `fixed`, when given).
async fn flaky_receiver(fixed: Option<StatusCode>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/in",
            post(move |State(seen): State<Seen>, body: Bytes| async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = body["msgId"]
                    .as_str()
                    .or(body["encrypt"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                let mut seen = seen.lock().unwrap();
                let count = seen.entry(id).or_default();
                *count += 1;
                match fixed {
                    Some(status) => status,
                    None if *count == 1 => StatusCode::SERVICE_UNAVAILABLE,
                    None => StatusCode::OK,
                }
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/in"), seen)
}

fn robot_target(url: String) -> LoadTarget {
    LoadTarget::RobotMessages {
        url,
        app_secret: Secret::new(APP_SECRET),
        template: RobotMessage::text(APP_KEY, "", "http://sim.invalid"),
    }
}

fn quick_plan(rate: u32, millis: u64) -> LoadPlan {
    LoadPlan {
        rate_per_s: rate,
        duration: Duration::from_millis(millis),
        max_attempts: 3,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_in_flight: 64,
    }
}

fn client() -> CallbackClient {
    CallbackClient::new(Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn a_503_answer_is_redelivered_with_the_same_msg_id() {
    let (url, seen) = flaky_receiver(None).await;
    let report = run_load(&client(), robot_target(url), quick_plan(100, 200))
        .await
        .unwrap();
    assert_eq!(report.sent, 20);
    assert_eq!(report.acked, 20);
    assert_eq!(report.redelivered, 20);
    assert_eq!(report.failed, 0);
    assert_eq!(report.statuses["503"], 20);
    assert_eq!(report.statuses["200"], 20);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20, "each message has its own msgId");
    assert!(seen.values().all(|&deliveries| deliveries == 2), "{seen:?}");
    assert_eq!(report.latency.samples, 40);
}

#[tokio::test]
async fn a_receiver_that_always_fails_exhausts_the_attempts() {
    let (url, seen) = flaky_receiver(Some(StatusCode::INTERNAL_SERVER_ERROR)).await;
    let report = run_load(&client(), robot_target(url), quick_plan(50, 100))
        .await
        .unwrap();
    assert_eq!(report.sent, 5);
    assert_eq!((report.acked, report.failed), (0, 5));
    assert_eq!(report.redelivered, 10);
    assert!(seen.lock().unwrap().values().all(|&d| d == 3));
}

#[tokio::test]
async fn an_unreachable_receiver_counts_as_transport_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    drop(listener);
    let mut plan = quick_plan(20, 100);
    plan.max_attempts = 1;
    let report = run_load(&client(), robot_target(url), plan).await.unwrap();
    assert_eq!(report.failed, report.sent);
    assert_eq!(report.statuses["error"], report.sent);
}

#[tokio::test]
async fn event_load_seals_each_event() {
    let (url, seen) = flaky_receiver(Some(StatusCode::OK)).await;
    let target = LoadTarget::Events {
        url,
        signer: EventSigner::new(
            "tok",
            "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij",
            APP_KEY,
        )
        .unwrap(),
    };
    let report = run_load(&client(), target, quick_plan(50, 100))
        .await
        .unwrap();
    assert_eq!((report.sent, report.acked), (5, 5));
    assert_eq!(seen.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn an_unusable_plan_is_refused() {
    let mut plan = quick_plan(0, 100);
    assert!(
        run_load(&client(), robot_target("http://x".into()), plan.clone())
            .await
            .is_err()
    );
    plan.rate_per_s = 1;
    plan.max_attempts = 0;
    assert!(run_load(&client(), robot_target("http://x".into()), plan)
        .await
        .is_err());
}
