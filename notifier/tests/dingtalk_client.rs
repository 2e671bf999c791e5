//! The DingTalk client against the simulator over real HTTP, with a real Redis per test.
//!
//! Each test starts its own simulator and `redis-server` on free ports; "replicas" are
//! separate `DingTalk` instances with their own Redis connection and in-process caches.

use std::time::{Duration, Instant};

use common::config::DingTalkEndpoints;
use common::secret::Secret;
use dingtalk_sim::{
    Api as SimApi, AppCredentials, CallFilter, CustomRobotConfig, Fault, FaultCount, FaultKind,
    RunningSim, Session, SimConfig, Simulator,
};
use notifier::dingtalk::{
    Api, ApiCall, App, Budget, CallBody, DingTalk, DingTalkError, DingTalkOptions, Target,
};
use serde_json::{json, Value};
use test_harness::RedisServer;

const APP_KEY: &str = "dingA";
const APP_SECRET: &str = "secretA";
const GROUP: &str = "cidSimOps00000000000000==";

struct World {
    sim: RunningSim,
    redis: RedisServer,
}

impl World {
    async fn start() -> World {
        World::with(SimConfig::local()).await
    }

    async fn with(config: SimConfig) -> World {
        let sim = Simulator::start(config.with_app(AppCredentials::new(APP_KEY, APP_SECRET)))
            .await
            .expect("simulator starts");
        let redis = RedisServer::start().await;
        World { sim, redis }
    }

    /// One replica: its own HTTP client, Redis connection and caches.
    async fn replica(&self, options: DingTalkOptions) -> DingTalk {
        let redis = common::redis::connect(&self.redis.url())
            .await
            .expect("redis connects");
        let base = self.sim.base_url();
        DingTalk::new(
            reqwest::Client::new(),
            DingTalkEndpoints {
                api_url: base.clone(),
                oapi_url: base,
            },
            redis,
            options,
        )
    }

    async fn client(&self) -> DingTalk {
        self.replica(fast()).await
    }

    fn accepted(&self, api: SimApi) -> usize {
        self.sim.state().calls(&CallFilter::api(api)).len()
    }

    fn rejected(&self, api: SimApi) -> usize {
        self.sim.state().rejected(&CallFilter::api(api)).len()
    }

    fn fault(&self, fault: Fault) {
        self.sim.state().add_fault(fault).expect("fault registered");
    }

    async fn redis_get(&self, args: &[&str]) -> redis::Value {
        let mut conn = common::redis::connect(&self.redis.url()).await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

/// Default options, with short server retries so tests stay quick.
fn fast() -> DingTalkOptions {
    DingTalkOptions {
        server_retry_base: Duration::from_millis(20),
        ..DingTalkOptions::default()
    }
}

fn app(qps: u32) -> Target {
    Target::App(App {
        integration_id: "acme".into(),
        client_id: APP_KEY.into(),
        client_secret: Secret::new(APP_SECRET),
        robot_code: APP_KEY.into(),
        qps_limit: qps,
    })
}

fn group_send(text: &str) -> ApiCall {
    ApiCall::json(
        Api::GroupSend,
        json!({
            "robotCode": APP_KEY,
            "openConversationId": GROUP,
            "msgKey": "sampleText",
            "msgParam": json!({"content": text}).to_string(),
        }),
    )
}

fn batch_send(text: &str) -> ApiCall {
    ApiCall::json(
        Api::BatchSend,
        json!({
            "robotCode": APP_KEY,
            "userIds": ["user001"],
            "msgKey": "sampleText",
            "msgParam": json!({"content": text}).to_string(),
        }),
    )
}

fn list_simple() -> ApiCall {
    ApiCall::json(
        Api::ListSimple,
        json!({"dept_id": 1, "cursor": 0, "size": 10}),
    )
}

#[tokio::test]
async fn token_is_fetched_once_and_cached_in_redis() {
    let world = World::start().await;
    let client = world.client().await;
    for i in 0..5 {
        client
            .call(&app(20), group_send(&format!("hi {i}")))
            .await
            .unwrap();
    }
    assert_eq!(world.accepted(SimApi::NewToken), 1);
    assert_eq!(world.accepted(SimApi::GroupSend), 5);
    let stored = world
        .redis_get(&["HGET", "dtg:token:acme:dingA:new", "token"])
        .await;
    assert!(matches!(stored, redis::Value::BulkString(_)), "{stored:?}");
    // A new process finds it in Redis.
    let other = world.client().await;
    other
        .call(&app(20), group_send("from another replica"))
        .await
        .unwrap();
    assert_eq!(world.accepted(SimApi::NewToken), 1);
}

#[tokio::test]
async fn two_replicas_refresh_a_missing_token_once() {
    let world = World::start().await;
    let (a, b) = (world.client().await, world.client().await);
    let mut calls = Vec::new();
    for i in 0..8 {
        let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.push(tokio::spawn(async move {
            replica.call(&app(20), group_send(&format!("hi {i}"))).await
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        world.accepted(SimApi::NewToken),
        1,
        "single-flight across replicas"
    );
    assert_eq!(world.accepted(SimApi::GroupSend), 8);
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let mut config = SimConfig::local();
    config.limits.token_lifetime = Duration::from_secs(4);
    let world = World::with(config).await;
    let client = world.client().await;
    client.call(&app(20), group_send("first")).await.unwrap();
    // The margin (5 min) exceeds the lifetime, so refreshing starts at half-life (2 s).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    client.call(&app(20), group_send("second")).await.unwrap();
    assert_eq!(world.accepted(SimApi::NewToken), 2);
    assert_eq!(
        world.rejected(SimApi::GroupSend),
        0,
        "never sent an expired token"
    );
}

#[tokio::test]
async fn a_lapsed_lock_of_a_crashed_replica_is_taken_over() {
    let world = World::start().await;
    // A replica took the lock and died before writing a token.
    let _: redis::Value = world
        .redis_get(&["SET", "dtg:token-lock:acme:dingA:new", "dead", "PX", "600"])
        .await;
    let client = world.client().await;
    let started = Instant::now();
    client
        .call(&app(20), group_send("after the lock lapses"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for the holder"
    );
    assert_eq!(world.accepted(SimApi::NewToken), 1);
}

#[tokio::test]
async fn old_and_new_api_tokens_are_separate() {
    let world = World::start().await;
    let client = world.client().await;
    client.call(&app(20), group_send("new api")).await.unwrap();
    let answer = client.call(&app(20), list_simple()).await.unwrap();
    assert_eq!(answer["errcode"], 0);
    assert!(answer["result"]["list"].is_array(), "{answer}");
    client.call(&app(20), list_simple()).await.unwrap();
    assert_eq!(world.accepted(SimApi::NewToken), 1);
    assert_eq!(world.accepted(SimApi::OldToken), 1);
}

#[tokio::test]
async fn expired_token_mid_run_is_refreshed_once_and_the_call_succeeds() {
    let world = World::start().await;
    let (a, b) = (world.client().await, world.client().await);
    a.call(&app(20), group_send("before")).await.unwrap();
    b.call(&app(20), group_send("before")).await.unwrap();
    world.fault(Fault::once(FaultKind::ExpireTokens));
    a.call(&app(20), group_send("after, a")).await.unwrap();
    // The other replica still holds the expired token in its process cache: it is refused
    // once, then finds the fresh token in Redis without fetching again.
    b.call(&app(20), group_send("after, b")).await.unwrap();
    assert_eq!(world.accepted(SimApi::NewToken), 2);
    assert_eq!(world.accepted(SimApi::GroupSend), 4);
    assert_eq!(world.rejected(SimApi::GroupSend), 2);
}

#[tokio::test]
async fn a_token_refused_twice_is_token_invalid() {
    let world = World::start().await;
    let client = world.client().await;
    let wrong = Target::App(App {
        integration_id: "wrong".into(),
        client_id: APP_KEY.into(),
        client_secret: Secret::new("not-the-secret"),
        robot_code: APP_KEY.into(),
        qps_limit: 20,
    });
    let err = client.call(&wrong, group_send("x")).await.unwrap_err();
    assert!(matches!(err, DingTalkError::TokenInvalid { .. }), "{err:?}");
    assert!(!err.retryable());
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert_eq!(
        world.accepted(SimApi::GroupSend) + world.rejected(SimApi::GroupSend),
        0
    );
}

#[tokio::test]
async fn throttled_answer_backs_off_and_succeeds_without_duplicate() {
    let world = World::start().await;
    let client = world.client().await;
    world.fault(Fault::once(FaultKind::QpsLimit).on(SimApi::GroupSend));
    let started = Instant::now();
    let answer = client.call(&app(20), group_send("once")).await.unwrap();
    assert!(answer["processQueryKey"].is_string(), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "backed off"
    );
    assert_eq!(world.accepted(SimApi::GroupSend), 1, "one accepted call");
    assert_eq!(world.rejected(SimApi::GroupSend), 1);
    assert_eq!(
        world.sim.state().messages().len(),
        1,
        "no duplicate message"
    );
}

#[tokio::test]
async fn throttling_beyond_the_wait_budget_is_reported_with_a_retry_time() {
    let world = World::start().await;
    let client = world
        .replica(DingTalkOptions {
            max_throttle_wait: Duration::from_millis(2000),
            ..fast()
        })
        .await;
    world.fault(
        Fault::once(FaultKind::QpsLimit)
            .on(SimApi::GroupSend)
            .times(FaultCount::Always),
    );
    let err = client
        .call(&app(20), group_send("never"))
        .await
        .unwrap_err();
    let DingTalkError::Throttled { retry_after, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(*retry_after >= Duration::from_secs(1), "{retry_after:?}");
    assert!(err.retryable());
    // The backoffs are 1 s and 2 s, each scaled by a jitter in [0.75, 1.25): the first (at most
    // 1.25 s) fits the 2 s budget, the two together (at least 2.25 s) never do. Two attempts,
    // the second refused too.
    assert_eq!(world.rejected(SimApi::GroupSend), 2);
}

#[tokio::test]
async fn permission_60011_names_the_permission_to_grant() {
    let world = World::start().await;
    let client = world.client().await;
    world.fault(Fault::once(FaultKind::Permission60011).on(SimApi::UserListSimple));
    let err = client.call(&app(20), list_simple()).await.unwrap_err();
    let DingTalkError::Permission { code, message } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(code, "60011");
    assert!(message.contains("qyapi_get_department_member"), "{message}");
    assert!(!err.retryable());
    assert_eq!(world.rejected(SimApi::UserListSimple), 1, "not retried");
}

#[tokio::test]
async fn server_errors_on_an_idempotent_api_are_retried() {
    let world = World::start().await;
    let client = world.client().await;
    world.fault(
        Fault::once(FaultKind::Http500)
            .on(SimApi::UserListSimple)
            .times(FaultCount::Times(2)),
    );
    client.call(&app(20), list_simple()).await.unwrap();
    assert_eq!(world.rejected(SimApi::UserListSimple), 2);
    assert_eq!(world.accepted(SimApi::UserListSimple), 1);
}

#[tokio::test]
async fn system_errors_on_an_idempotent_api_stop_after_three_retries() {
    let world = World::start().await;
    let client = world.client().await;
    world.fault(
        Fault::once(FaultKind::SystemError)
            .on(SimApi::UserListSimple)
            .times(FaultCount::Always),
    );
    let err = client.call(&app(20), list_simple()).await.unwrap_err();
    assert!(matches!(err, DingTalkError::Server { .. }), "{err:?}");
    assert!(err.retryable());
    assert_eq!(
        world.rejected(SimApi::UserListSimple),
        4,
        "one call and three retries"
    );
}

#[tokio::test]
async fn server_error_on_batch_send_is_not_retried() {
    let world = World::start().await;
    let client = world.client().await;
    world.fault(Fault::once(FaultKind::Http500).on(SimApi::RobotBatchSend));
    let err = client
        .call(&app(20), batch_send("maybe"))
        .await
        .unwrap_err();
    assert!(matches!(err, DingTalkError::Unknown { .. }), "{err:?}");
    assert!(
        !err.retryable(),
        "an unknown outcome must not be blindly re-sent"
    );
    assert_eq!(
        world.rejected(SimApi::RobotBatchSend),
        1,
        "exactly one attempt"
    );
    assert_eq!(world.accepted(SimApi::RobotBatchSend), 0);
}

#[tokio::test]
async fn a_timed_out_batch_send_is_an_unknown_outcome() {
    let world = World::start().await;
    let client = world
        .replica(DingTalkOptions {
            call_timeout: Duration::from_millis(300),
            ..fast()
        })
        .await;
    client
        .call(&app(20), group_send("warm the token"))
        .await
        .unwrap();
    world.fault(Fault::once(FaultKind::Slow { ms: 1000 }).on(SimApi::RobotBatchSend));
    let started = Instant::now();
    let err = client.call(&app(20), batch_send("slow")).await.unwrap_err();
    assert!(matches!(err, DingTalkError::Unknown { .. }), "{err:?}");
    assert!(!err.retryable());
    // One attempt of 300 ms: the request may have been delivered, so it is not sent again.
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn parameter_errors_are_rejected_without_retry() {
    let world = World::start().await;
    let client = world.client().await;
    let call = ApiCall::json(Api::GroupSend, json!({"robotCode": APP_KEY}));
    let err = client.call(&app(20), call).await.unwrap_err();
    assert!(matches!(err, DingTalkError::Rejected { .. }), "{err:?}");
    assert_eq!(world.rejected(SimApi::GroupSend), 1);
}

/// Every window `[t, t + 1 s)` that starts at a recorded call holds at most `limit` calls;
/// these windows include the fullest one, so this checks every one-second window.
fn max_calls_in_one_second(mut at_ms: Vec<i64>) -> usize {
    at_ms.sort_unstable();
    (0..at_ms.len())
        .map(|i| {
            at_ms[i..]
                .iter()
                .take_while(|&&t| t < at_ms[i] + 1000)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The most calls in one wall-clock second `[n s, (n + 1) s)`, as DingTalk counts them.
fn max_calls_in_a_wall_clock_second(at_ms: &[i64]) -> usize {
    let mut per_second = std::collections::HashMap::<i64, usize>::new();
    for t in at_ms {
        *per_second.entry(t.div_euclid(1000)).or_default() += 1;
    }
    per_second.into_values().max().unwrap_or(0)
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

async fn sleep_until_ms_into_second(ms: i64) {
    let into = now_ms().rem_euclid(1000);
    let wait = (ms - into).rem_euclid(1000);
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
}

#[tokio::test]
async fn limiter_keeps_every_one_second_window_within_the_limit_across_replicas() {
    const QPS: u32 = 20;
    const PER_REPLICA: usize = 50;
    let world = World::start().await;
    let replicas = [
        world.client().await,
        world.client().await,
        world.client().await,
    ];
    // Warm the token so the measured run is only sends.
    replicas[0]
        .call(&app(QPS), group_send("warm"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    world.sim.state().clear_calls();
    // Start 800 ms into a wall-clock second, so the first burst straddles a boundary: a
    // fixed-window limiter would let twice the limit through within 1000 ms here.
    sleep_until_ms_into_second(800).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for i in 0..PER_REPLICA {
            let replica = replica.clone();
            tasks.push(tokio::spawn(async move {
                replica
                    .call(&app(QPS), group_send(&format!("{r}-{i}")))
                    .await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let calls = world.sim.state().calls(&CallFilter::api(SimApi::GroupSend));
    assert_eq!(calls.len(), 3 * PER_REPLICA);
    assert_eq!(
        world.rejected(SimApi::GroupSend),
        0,
        "DingTalk never throttled us"
    );
    let at_ms: Vec<i64> = calls.iter().map(|c| c.at_ms).collect();
    let fullest = max_calls_in_one_second(at_ms.clone());
    assert!(fullest <= QPS as usize, "{fullest} calls within one second");
    assert!(max_calls_in_a_wall_clock_second(&at_ms) <= QPS as usize);
    // 150 calls at 20 per 1.1 s: the last batch starts after 7 windows.
    assert!(elapsed >= Duration::from_secs(7), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(12), "{elapsed:?}");
}

#[tokio::test]
async fn try_acquire_from_many_tasks_never_exceeds_the_limit_in_any_second() {
    const QPS: u32 = 10;
    let world = World::start().await;
    let replicas = [
        world.client().await,
        world.client().await,
        world.client().await,
    ];
    sleep_until_ms_into_second(900).await;
    let deadline = Instant::now() + Duration::from_millis(3500);
    let mut tasks = Vec::new();
    for replica in &replicas {
        for _ in 0..4 {
            let replica = replica.clone();
            tasks.push(tokio::spawn(async move {
                let mut taken = Vec::new();
                while Instant::now() < deadline {
                    match replica.try_acquire(&app(QPS), Api::UserList).await {
                        Ok(()) => taken.push(now_ms()),
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                }
                taken
            }));
        }
    }
    let mut taken = Vec::new();
    for task in tasks {
        taken.extend(task.await.unwrap());
    }
    let fullest = max_calls_in_one_second(taken.clone());
    assert!(
        fullest <= QPS as usize,
        "{fullest} permits within one second"
    );
    // 3.5 s at 10 per 1.1 s: four windows started, the fourth maybe partly.
    assert!((31..=40).contains(&taken.len()), "{} permits", taken.len());
}

#[tokio::test]
async fn the_ip_budget_is_shared_by_every_app_and_api() {
    let world = World::start().await;
    let client = world
        .replica(DingTalkOptions {
            ip_budget: Budget {
                calls: 5,
                per: Duration::from_secs(20),
            },
            ..fast()
        })
        .await;
    let other = Target::App(App {
        integration_id: "other".into(),
        client_id: "dingB".into(),
        client_secret: Secret::new("secretB"),
        robot_code: "dingB".into(),
        qps_limit: 20,
    });
    for (target, api) in [
        (app(20), Api::GroupSend),
        (app(20), Api::BatchSend),
        (app(20), Api::ListSimple),
        (other.clone(), Api::GroupSend),
        (other.clone(), Api::UserList),
    ] {
        assert_eq!(client.try_acquire(&target, api).await, Ok(()), "{api}");
    }
    let wait = client
        .try_acquire(&other, Api::DeptListSub)
        .await
        .unwrap_err();
    assert!(wait > Duration::from_secs(19), "{wait:?}");
}

#[tokio::test]
async fn try_acquire_never_waits_and_its_permit_serves_the_next_call() {
    let world = World::start().await;
    let client = world.client().await;
    client
        .call(&app(1), group_send("warm the token"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(client.try_acquire(&app(1), Api::GroupSend).await, Ok(()));
    let started = Instant::now();
    client
        .call(&app(1), group_send("uses the permit"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let wait = client
        .try_acquire(&app(1), Api::GroupSend)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "never waits"
    );
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_millis(1100),
        "{wait:?}"
    );
    // Other APIs of the same app have their own budget.
    assert_eq!(client.try_acquire(&app(1), Api::BatchSend).await, Ok(()));
}

#[tokio::test]
async fn custom_robot_21st_message_in_a_minute_is_throttled_locally() {
    let world = World::with(SimConfig::local().with_custom_robot(CustomRobotConfig {
        access_token: "robot-token".into(),
        secret: Some(Secret::new("SECrobot")),
        keywords: Vec::new(),
    }))
    .await;
    let client = world.client().await;
    let robot = Target::CustomRobot {
        access_token: Secret::new("robot-token"),
        secret: Some(Secret::new("SECrobot")),
    };
    let text = |i: usize| {
        ApiCall::json(
            Api::CustomRobotSend,
            json!({"msgtype": "text", "text": {"content": format!("alert {i}")}}),
        )
    };
    for i in 0..20 {
        let answer = client.call(&robot, text(i)).await.unwrap();
        assert_eq!(answer["errcode"], 0);
    }
    let started = Instant::now();
    let err = client.call(&robot, text(20)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not held for a minute"
    );
    let DingTalkError::Throttled { retry_after, .. } = err else {
        panic!("{err:?}");
    };
    assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
    assert_eq!(
        world.accepted(SimApi::CustomRobotSend),
        20,
        "signed sends accepted"
    );
    assert_eq!(
        world.rejected(SimApi::CustomRobotSend),
        0,
        "the 21st never left"
    );
}

#[tokio::test]
async fn custom_robot_with_a_wrong_secret_is_rejected() {
    let world = World::with(SimConfig::local().with_custom_robot(CustomRobotConfig {
        access_token: "robot-token".into(),
        secret: Some(Secret::new("SECrobot")),
        keywords: Vec::new(),
    }))
    .await;
    let client = world.client().await;
    let robot = Target::CustomRobot {
        access_token: Secret::new("robot-token"),
        secret: Some(Secret::new("SECwrong")),
    };
    let call = ApiCall::json(
        Api::CustomRobotSend,
        json!({"msgtype": "text", "text": {"content": "x"}}),
    );
    let err = client.call(&robot, call).await.unwrap_err();
    assert!(
        matches!(&err, DingTalkError::Rejected { code, .. } if code == "310000"),
        "{err:?}"
    );
}

#[tokio::test]
async fn session_webhook_reply_needs_no_token() {
    let world = World::start().await;
    let client = world.client().await;
    let session = Session {
        conversation_id: GROUP.into(),
        robot_code: APP_KEY.into(),
        expires_at_ms: i64::MAX / 2,
    };
    let target = Target::SessionWebhook {
        url: session.webhook_url(&world.sim.base_url()),
    };
    let call = ApiCall::json(
        Api::SessionWebhookSend,
        json!({"msgtype": "text", "text": {"content": "pong"}}),
    );
    let answer = client.call(&target, call).await.unwrap();
    assert_eq!(answer["errcode"], 0);
    assert_eq!(world.accepted(SimApi::SessionSend), 1);
    assert_eq!(
        world.accepted(SimApi::NewToken) + world.accepted(SimApi::OldToken),
        0
    );
}

#[tokio::test]
async fn media_upload_sends_the_file_as_multipart() {
    let world = World::start().await;
    let client = world.client().await;
    let png = bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\nnot really");
    let call = ApiCall {
        api: Api::MediaUpload,
        body: CallBody::Multipart {
            field: "media".into(),
            file_name: "chart.png".into(),
            mime: "image/png".into(),
            bytes: png.clone(),
        },
        query: vec![("type".into(), "image".into())],
    };
    let answer = client.call(&app(20), call).await.unwrap();
    let media_id = answer["media_id"].as_str().expect("media_id");
    let stored = world.sim.state().media(media_id).expect("stored");
    assert_eq!(stored.bytes, png);
    assert_eq!(world.accepted(SimApi::OldToken), 1);
}

#[tokio::test]
async fn api_usage_is_counted_per_integration_per_day_and_month() {
    let world = World::start().await;
    let client = world.client().await;
    for i in 0..3 {
        client
            .call(&app(20), group_send(&format!("{i}")))
            .await
            .unwrap();
    }
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let month = format!("{:04}{:02}", now.year(), u8::from(now.month()));
    let day = format!("{month}{:02}", now.day());
    // Three sends and one token fetch.
    for period in [&day, &month] {
        let count = world
            .redis_get(&["GET", &format!("dtg:usage:acme:{period}")])
            .await;
        assert_eq!(count, redis::Value::BulkString(b"4".to_vec()), "{period}");
    }
    // What every replica reports is read again from Redis: another replica's calls show, and
    // a new month (its counters not there yet) reads 0 rather than the old month's total.
    let other = world.client().await;
    assert!(other.refresh_usage().await.is_empty(), "it counted nothing");
    world
        .redis_get(&["SET", &format!("dtg:usage:acme:{day}"), "9"])
        .await;
    assert_eq!(client.refresh_usage().await, [("acme".to_owned(), 9, 4)]);
    world
        .redis_get(&[
            "DEL",
            &format!("dtg:usage:acme:{day}"),
            &format!("dtg:usage:acme:{month}"),
        ])
        .await;
    assert_eq!(client.refresh_usage().await, [("acme".to_owned(), 0, 0)]);
}

#[tokio::test]
async fn an_unreachable_dingtalk_issues_no_token_so_the_call_is_not_sent_and_may_be_retried() {
    let redis = RedisServer::start().await;
    let conn = common::redis::connect(&redis.url()).await.unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = DingTalk::new(
        reqwest::Client::new(),
        DingTalkEndpoints {
            api_url: url.clone(),
            oapi_url: url,
        },
        conn,
        fast(),
    );
    let err = client.call(&app(20), group_send("x")).await.unwrap_err();
    assert!(err.retryable(), "{err:?}");
    assert!(
        matches!(&err, DingTalkError::Unavailable { detail, .. } if detail.contains("access token")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_answer_body_is_returned_as_json() {
    let world = World::start().await;
    let client = world.client().await;
    let answer: Value = client.call(&app(20), batch_send("hello")).await.unwrap();
    assert!(answer["processQueryKey"].is_string(), "{answer}");
    let query = ApiCall::get(
        Api::ReadStatus,
        vec![
            ("robotCode".into(), APP_KEY.into()),
            (
                "processQueryKey".into(),
                answer["processQueryKey"].as_str().unwrap().into(),
            ),
        ],
    );
    let status = client.call(&app(20), query).await.unwrap();
    assert!(status["messageReadInfoList"].is_array(), "{status}");
}

/// An answer that redirects elsewhere is not followed: the access token header would go along.
#[tokio::test]
async fn a_redirect_is_not_followed_so_the_token_stays_with_dingtalk() {
    use axum::routing::{any, post};
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = reached.clone();
    let elsewhere = axum::Router::new().fallback(any(move || {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "{}" }
    }));
    let elsewhere_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_url = format!("http://{}/steal", elsewhere_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(elsewhere_listener, elsewhere).await });
    let dingtalk = axum::Router::new()
        .route(
            "/v1.0/oauth2/accessToken",
            post(|| async { axum::Json(json!({"accessToken": "tok-secret", "expireIn": 7200})) }),
        )
        .route(
            "/v1.0/robot/groupMessages/send",
            post(move || {
                let to = elsewhere_url.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, dingtalk).await });
    let redis = RedisServer::start().await;
    let client = DingTalk::new(
        notifier::dingtalk::http_client().unwrap(),
        DingTalkEndpoints {
            api_url: url.clone(),
            oapi_url: url,
        },
        common::redis::connect(&redis.url()).await.unwrap(),
        fast(),
    );
    let answer = client.call(&app(20), group_send("x")).await;
    assert!(
        matches!(&answer, Err(DingTalkError::Rejected { code, .. }) if code == "http_307"),
        "{answer:?}"
    );
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// A token inside its refresh margin keeps serving while DingTalk will not issue a new one:
/// one refresh is tried, calls do not queue behind it, and the next try waits.
#[tokio::test]
async fn a_failing_early_refresh_is_tried_once_and_calls_keep_the_current_token() {
    let mut config = SimConfig::local();
    // Refreshing starts at half the token's life: after 3 s.
    config.limits.token_lifetime = Duration::from_secs(6);
    let world = World::with(config).await;
    let client = world.client().await;
    client.call(&app(100), group_send("first")).await.unwrap();
    assert_eq!(world.accepted(SimApi::NewToken), 1);
    world.fault(
        Fault::once(FaultKind::Http500)
            .on(SimApi::NewToken)
            .times(FaultCount::Always),
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let target = app(100);
    let calls: Vec<_> = (0..8)
        .map(|n| client.call(&target, group_send(&format!("during {n}"))))
        .collect();
    for answer in futures::future::join_all(calls).await {
        answer.expect("served with the current token");
    }
    client.call(&app(100), group_send("after")).await.unwrap();
    // One refresh: its first attempt and the client's three server retries.
    assert_eq!(world.rejected(SimApi::NewToken), 4);
}
