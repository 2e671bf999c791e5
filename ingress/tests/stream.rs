//! Stream mode end to end: the real ingress against the simulator's Stream gateway over real
//! WebSockets, with its own nats-server and redis-server. Frames reach the bus as the HTTP
//! path's events, are acked only after JetStream's ack, and survive disconnects, silent
//! sockets, a NATS outage and a killed replica.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use common::bus::event::Event;
use common::bus::streams::EVENTS;
use common::crypto;
use dingtalk_sim::{
    AppCredentials, ConnectionControl, RunningSim, SimConfig, Simulator, StreamPush, StreamSettings,
};
use reqwest::Method;
use serde_json::{json, Value};
use support::TestApp;

const APP_KEY: &str = "dingstreamapp";
const SECRET: &str = "streamAppSecret123";

/// Generous: tests must pass on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(30);

async fn sim() -> RunningSim {
    sim_with(StreamSettings::default()).await
}

async fn sim_with(stream: StreamSettings) -> RunningSim {
    let mut config = SimConfig::local().with_app(AppCredentials::new(APP_KEY, SECRET));
    config.stream = StreamSettings {
        ping_interval: Duration::from_millis(300),
        redelivery_timeout: Duration::from_secs(2),
        disconnect_grace: Duration::from_secs(3),
        ..stream
    };
    Simulator::start(config)
        .await
        .expect("the simulator starts")
}

/// The connection's id once it has stayed the only one for `quiet`.
async fn steady_connection(sim: &RunningSim, quiet: Duration) -> String {
    let first = connections(sim, 1).await.remove(0);
    tokio::time::sleep(quiet).await;
    assert_eq!(connections(sim, 1).await.remove(0), first, "replaced");
    first
}

/// `GET /api/dingtalk/integrations/{id}/stream`.
async fn stream_status(app: &TestApp, id: &str) -> Value {
    app.admin(
        Method::GET,
        &format!("/api/dingtalk/integrations/{id}/stream"),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// An ingress serving integration `acme` in Stream mode, and its connection's id.
async fn serving(sim: &RunningSim) -> (TestApp, String) {
    let app = ingress(sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    let connection = connections(sim, 1).await.remove(0);
    (app, connection)
}

async fn redis(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ingress(sim: &RunningSim, extra: &[(&str, &str)]) -> TestApp {
    let url = sim.base_url();
    let mut env = vec![
        ("DINGTALK_API_URL", url.as_str()),
        ("STREAM_IDLE_TIMEOUT", "2s"),
        ("STREAM_LEASE_TTL", "1500ms"),
        ("STREAM_CONNECTIONS_PER_APP", "1"),
    ];
    env.extend_from_slice(extra);
    support::spawn_app_with(&env).await
}

async fn put(app: &TestApp, id: &str, mode: &str, secret: &str) {
    let answer = app
        .admin(Method::PUT, &format!("/api/dingtalk/integrations/{id}"))
        .json(&json!({"name": id, "client_id": APP_KEY, "client_secret": secret, "connection_mode": mode,
            "callback_token": "123456", "callback_aes_key": "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij"}))
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "{}",
        answer.text().await.unwrap()
    );
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connections(sim: &RunningSim, n: usize) -> Vec<String> {
    eventually("stream connections open", async || {
        let open: Vec<String> = sim
            .state()
            .stream_connections()
            .into_iter()
            .filter(|c| !c.disconnecting)
            .map(|c| c.id)
            .collect();
        (open.len() == n).then_some(open)
    })
    .await
}

/// Every event stored in the events stream, in order.
async fn stored(app: &TestApp) -> Vec<Event> {
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(EVENTS).await else {
        return Vec::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut events = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            events.push(serde_json::from_slice(&message.payload).unwrap());
        }
    }
    events
}

async fn events_with(app: &TestApp, n: usize, key: &str) -> Vec<Event> {
    eventually("events stored", async || {
        let found: Vec<Event> = stored(app)
            .await
            .into_iter()
            .filter(|e| e.id.ends_with(key))
            .collect();
        (found.len() >= n).then_some(found)
    })
    .await
}

fn robot_message(msg_id: &str) -> Value {
    json!({"msgId": msg_id, "msgtype": "text", "text": {"content": " hi "}, "conversationId": "cidS==",
        "conversationType": "1", "senderId": "$:LWCP_v1:$u1", "senderStaffId": "staff1", "senderNick": "Wang",
        "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": APP_KEY, "createAt": 1_700_000_000_000_i64,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s9",
        "sessionWebhookExpiredTime": 1_700_005_400_000_i64})
}

fn push_robot(sim: &RunningSim, msg_id: &str) -> String {
    sim.state()
        .stream_push(StreamPush::RobotMessage {
            app_key: APP_KEY.into(),
            data: robot_message(msg_id),
        })
        .unwrap()
}

fn settled(sim: &RunningSim, origin: &str) -> bool {
    sim.state()
        .stream_acks()
        .iter()
        .any(|a| a.origin.as_deref() == Some(origin) && a.settled)
}

/// The event without what names its integration and when it arrived.
fn comparable(event: &Event) -> Value {
    let mut value = serde_json::to_value(event).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("id");
    object.remove("integration_id");
    object.remove("received_at");
    value
}

#[tokio::test]
async fn a_frame_larger_than_a_callback_may_be_is_refused_not_published() {
    let sim = sim().await;
    let (app, _) = serving(&sim).await;
    let mut message = robot_message("msgHuge");
    message["text"]["content"] = json!("x".repeat(300 * 1024));
    let origin = sim
        .state()
        .stream_push(StreamPush::RobotMessage {
            app_key: APP_KEY.into(),
            data: message,
        })
        .unwrap();
    let ack = eventually("an answer to the huge frame", async || {
        sim.state()
            .stream_acks()
            .into_iter()
            .find(|a| a.origin.as_deref() == Some(origin.as_str()))
    })
    .await;
    assert_eq!(ack.code, 400, "{ack:?}");
    // A normal message after it is published; the huge one never was.
    let next = push_robot(&sim, "msgAfterHuge");
    eventually("the next message settled", async || {
        settled(&sim, &next).then_some(())
    })
    .await;
    let events = stored(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn robot_card_and_event_frames_become_the_events_the_http_path_publishes() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "streamed", "stream", SECRET).await;
    put(&app, "hooked", "http", SECRET).await;
    connections(&sim, 1).await;

    let robot = robot_message("msgSameAsHttp");
    let card = json!({"type": "actionCallback", "outTrackId": "track-1", "corpId": "dingcorp",
        "userId": "staff1", "userIdType": 1, "spaceType": "IM_GROUP", "spaceId": "cidG==",
        "content": "{\"cardPrivateData\":{\"actionIds\":[\"confirm\"],\"params\":{\"action\":\"confirm\"}}}",
        "extension": "{}"});
    let event = json!({"EventType": "user_add_org", "EventId": "ev-contact-1", "UserId": ["staff9"],
        "CorpId": "dingcorp", "TimeStamp": "1700000000000"});
    let state = sim.state();
    let origins = [
        state
            .stream_push(StreamPush::RobotMessage {
                app_key: APP_KEY.into(),
                data: robot.clone(),
            })
            .unwrap(),
        state
            .stream_push(StreamPush::CardCallback {
                app_key: APP_KEY.into(),
                data: card.clone(),
            })
            .unwrap(),
        state
            .stream_push(StreamPush::Event {
                app_key: APP_KEY.into(),
                event_type: "user_add_org".into(),
                event_id: "ev-contact-1".into(),
                corp_id: "dingcorp".into(),
                data: event.clone(),
            })
            .unwrap(),
    ];
    for origin in &origins {
        eventually("frame acked", async || settled(&sim, origin).then_some(())).await;
    }

    // The same payloads over HTTP to the HTTP integration.
    let webhook = format!("{}/api/dingtalk/webhook/hooked", app.public_url);
    let ts = (time::OffsetDateTime::now_utc().unix_timestamp() * 1000).to_string();
    let answer = app
        .http
        .post(&webhook)
        .header("timestamp", &ts)
        .header("sign", crypto::robot_sign(SECRET, &ts))
        .body(robot.to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Unsigned over HTTP: believed because the gateway sent that card to that group.
    common::cards::remember(
        &mut redis(&app).await,
        "hooked",
        "track-1",
        &common::cards::SentCard {
            spaces: vec![common::cards::CardSpace::Group("cidG==".into())],
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let answer = app
        .http
        .post(format!("{webhook}/card"))
        .body(card.to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let events = stored(&app).await;
    let of = |integration: &str, key: &str| {
        events
            .iter()
            .find(|e| e.id.starts_with(&format!("{integration}:")) && e.id.ends_with(key))
            .unwrap_or_else(|| panic!("no {integration} event {key} in {events:?}"))
    };
    let streamed = of("streamed", "msgSameAsHttp");
    assert_eq!(streamed.id, "streamed:msgSameAsHttp");
    assert_eq!(
        comparable(streamed),
        comparable(of("hooked", "msgSameAsHttp"))
    );
    let card_key = ingress::normalize::content_key(card.to_string().as_bytes());
    assert_eq!(
        comparable(of("streamed", &card_key)),
        comparable(of("hooked", &card_key))
    );
    // The HTTP event path needs the app's AES key; compare with what it normalizes instead.
    let http_event = ingress::normalize::subscription_event(&event.to_string()).unwrap();
    let streamed_event = of("streamed", "ev-contact-1");
    assert_eq!(
        serde_json::to_value(&streamed_event.body).unwrap(),
        serde_json::to_value(&http_event.body).unwrap()
    );
}

#[tokio::test]
async fn system_pings_are_answered_with_their_data() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    let answer = eventually("a ping answered", async || {
        sim.state()
            .stream_acks()
            .into_iter()
            .find(|a| a.origin.is_none() && a.data.contains("opaque"))
    })
    .await;
    assert_eq!(answer.code, 200);
}

#[tokio::test]
async fn a_disconnect_loses_no_message_pushed_during_the_switch() {
    let sim = sim().await;
    let (app, old) = serving(&sim).await;
    assert!(sim
        .state()
        .stream_control(&old, ConnectionControl::Disconnect));
    let mut origins = Vec::new();
    for n in 0..20 {
        origins.push(push_robot(&sim, &format!("msgSwitch{n}")));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The replacement came up while the old one was still open.
    let new = connections(&sim, 1).await.remove(0);
    assert_ne!(new, old);
    for origin in &origins {
        eventually("every pushed frame acked", async || {
            settled(&sim, origin).then_some(())
        })
        .await;
    }
    let events = events_with(&app, 20, "").await;
    for n in 0..20 {
        let id = format!("acme:msgSwitch{n}");
        assert_eq!(events.iter().filter(|e| e.id == id).count(), 1, "{id}");
    }
}

#[tokio::test]
async fn a_replaced_connection_counts_once_in_the_connections_gauge() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    let gauge = async || {
        let metrics = app
            .anonymous(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("dingtalk_gateway_ingress_stream_connections "))
            .map(|v| v.trim().to_owned())
    };
    // The first scrape installs the process-wide recorder.
    gauge().await;
    put(&app, "acme", "stream", SECRET).await;
    let old = connections(&sim, 1).await.remove(0);
    assert_eq!(gauge().await.as_deref(), Some("1"));
    assert!(sim
        .state()
        .stream_control(&old, ConnectionControl::Disconnect));
    eventually("the replacement up, the old one gone", async || {
        let open = sim.state().stream_connections();
        (open.len() == 1 && open[0].id != old).then_some(())
    })
    .await;
    assert_eq!(gauge().await.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_connection_closed_while_its_replacement_cannot_open_shows_as_connecting() {
    let sim = sim().await;
    let (app, old) = serving(&sim).await;
    // The app's secret changes at DingTalk: the serving socket lives on, new ones are refused.
    sim.state()
        .register_app(AppCredentials::new(APP_KEY, "rotated-secret-0"))
        .unwrap();
    assert!(sim
        .state()
        .stream_control(&old, ConnectionControl::Disconnect));
    // DingTalk closes the old socket after its grace period (3 s); no replacement came up.
    eventually("the slot no longer says connected", async || {
        let status = stream_status(&app, "acme").await;
        (sim.state().stream_connections().is_empty()
            && status["connections"][0]["state"] == "connecting")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_peer_closing_every_socket_at_once_is_asked_with_a_growing_pause() {
    // Tickets that expire at once: every handshake succeeds, then the simulator closes the
    // socket (policy violation), as a peer refusing the ticket or a proxy would.
    let sim = sim_with(StreamSettings {
        ticket_ttl: Duration::ZERO,
        ..StreamSettings::default()
    })
    .await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    eventually("a first open", async || {
        (!sim.state().stream_opens().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Pauses of about 1, 2 and 4 s: four opens in 8 s, not one a second.
    let opens = sim.state().stream_opens().len();
    assert!(opens <= 5, "{opens} opens in 8 s");
}

#[tokio::test]
async fn a_peer_asking_every_new_socket_to_disconnect_is_asked_with_a_growing_pause() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    // A draining gateway: every socket is told to go as soon as it is up.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        for connection in sim.state().stream_connections() {
            if !connection.disconnecting {
                sim.state()
                    .stream_control(&connection.id, ConnectionControl::Disconnect);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pauses of about 1, 2 and 4 s before the replacements: not one open per round trip.
    let opens = sim.state().stream_opens().len();
    assert!(opens <= 6, "{opens} opens in 8 s");
}

#[tokio::test]
async fn a_replaced_socket_that_closed_is_no_longer_counted() {
    let sim = sim().await;
    let (app, old) = serving(&sim).await;
    assert!(sim
        .state()
        .stream_control(&old, ConnectionControl::Disconnect));
    eventually("one socket again", async || {
        let sockets = stream_status(&app, "acme").await["connections"][0]["sockets"].as_u64();
        let open = sim.state().stream_connections();
        (open.len() == 1 && open[0].id != old && sockets == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replaced_sockets_do_not_pile_up_in_their_slot() {
    let sim = sim().await;
    let app = ingress(&sim, &[("STREAM_MAX_AGE", "300ms")]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    eventually("ten replacements", async || {
        (sim.state().stream_opens().len() >= 10).then_some(())
    })
    .await;
    let sockets = stream_status(&app, "acme").await["connections"][0]["sockets"]
        .as_u64()
        .expect("sockets");
    assert!((1..=2).contains(&sockets), "{sockets} sockets held");
}

#[tokio::test]
async fn saving_an_integration_without_new_credentials_leaves_its_connection_alone() {
    let sim = sim().await;
    let (app, serving) = serving(&sim).await;
    let answer = app
        .admin(Method::PUT, "/api/dingtalk/integrations/acme")
        .json(
            &json!({"name": "Acme renamed", "client_id": APP_KEY, "client_secret": SECRET,
            "connection_mode": "stream", "xpert_id": "x-1", "preferred_language": "en"}),
        )
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    assert_eq!(
        steady_connection(&sim, Duration::from_secs(2)).await,
        serving
    );
}

#[tokio::test]
async fn a_redis_that_forgets_the_leases_does_not_drop_a_serving_connection() {
    let sim = sim().await;
    let (app, serving) = serving(&sim).await;
    // Redis restarted without persistence: the lease and the replica set are gone.
    let mut redis = redis(&app).await;
    redis::cmd("DEL")
        .arg("dtg:stream:lease:acme:0")
        .arg("dtg:stream:replicas")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        steady_connection(&sim, Duration::from_secs(2)).await,
        serving
    );
    let holder: Option<String> = redis::cmd("GET")
        .arg("dtg:stream:lease:acme:0")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(holder.is_some(), "the lease was taken again");
}

#[tokio::test]
async fn replicas_keep_their_connections_when_redis_forgets_every_lease_and_replica() {
    let sim = sim().await;
    let url = sim.base_url();
    let env = |name: &'static str| {
        [
            ("DINGTALK_API_URL", url.as_str()),
            ("STREAM_IDLE_TIMEOUT", "2s"),
            ("STREAM_LEASE_TTL", "1500ms"),
            ("STREAM_CONNECTIONS_PER_APP", "2"),
            ("STREAM_REPLICA_ID", name),
        ]
    };
    let first = support::spawn_app_with(&env("one")).await;
    let _second = support::spawn_replica(&first.nats.url(), &first.redis.url(), &env("two")).await;
    for n in 0..4 {
        put(&first, &format!("app{n}"), "stream", SECRET).await;
    }
    // Both replicas renew only slots they hold; wait until the leases settled on both: every
    // slot held by its preferred replica, and the same connections a second later (a slot
    // still moving would be taken by its preferred replica the moment Redis forgets it).
    let mut redis = redis(&first).await;
    let replicas = ["one".to_owned(), "two".to_owned()];
    let mut previous: Vec<String> = Vec::new();
    let before = eventually("leases settled on their preferred replicas", async || {
        let mut open = connections(&sim, 8).await;
        open.sort();
        let mut settled = open == previous;
        for n in 0..4 {
            let id: common::registry::IntegrationId = format!("app{n}").parse().unwrap();
            for slot in 0..2 {
                let holder: Option<String> = redis::cmd("GET")
                    .arg(ingress::stream::lease::lease_key(&id, slot))
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                let preferred = ingress::stream::lease::owner(&id, slot, &replicas);
                settled &= holder.as_ref() == preferred;
            }
        }
        previous = open.clone();
        if !settled {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        settled.then_some(open)
    })
    .await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("dtg:stream:lease:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 8);
    keys.push("dtg:stream:replicas".to_owned());
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut after = connections(&sim, 8).await;
    after.sort();
    assert_eq!(after, before, "connections were replaced");
}

#[tokio::test]
async fn a_stopped_replica_leaves_no_status_claiming_its_connections() {
    let sim = sim().await;
    let mut app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    let mut redis = redis(&app).await;
    let statuses = async |redis: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        redis::cmd("KEYS")
            .arg("dtg:stream:slot:*")
            .query_async(redis)
            .await
            .unwrap()
    };
    eventually("the slot's status written", async || {
        (!statuses(&mut redis).await.is_empty()).then_some(())
    })
    .await;
    app.stop().await;
    // The admin API shows the slot unassigned, not connected to a replica that is gone.
    assert_eq!(statuses(&mut redis).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_unreadable_integration_record_costs_only_its_own_app() {
    let sim = sim().await;
    let mut first = ingress(&sim, &[]).await;
    put(&first, "broken", "stream", SECRET).await;
    put(&first, "acme", "stream", SECRET).await;
    connections(&sim, 2).await;
    first.stop().await;
    connections(&sim, 0).await;
    let mut redis = redis(&first).await;
    redis::cmd("SET")
        .arg("dtg:integration:broken")
        .arg("{\"id\": \"broken\", \"not\": \"a record\"}")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    // A replica starting now reads the registry with one record it cannot decode.
    let url = sim.base_url();
    let _second = support::spawn_replica(
        &first.nats.url(),
        &first.redis.url(),
        &[
            ("DINGTALK_API_URL", url.as_str()),
            ("STREAM_LEASE_TTL", "1500ms"),
            ("STREAM_CONNECTIONS_PER_APP", "1"),
        ],
    )
    .await;
    connections(&sim, 1).await;
}

#[tokio::test]
async fn a_failing_lease_renewal_keeps_the_connection() {
    let sim = sim().await;
    let (app, serving) = serving(&sim).await;
    // Renewals (Lua scripts) fail while everything else works.
    let mut redis = redis(&app).await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-eval")
        .arg("-evalsha")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        steady_connection(&sim, Duration::from_secs(3)).await,
        serving
    );
}

#[tokio::test]
async fn a_silent_connection_is_replaced_and_its_message_published_once() {
    let sim = sim().await;
    let (app, silent) = serving(&sim).await;
    sim.state()
        .stream_control(&silent, ConnectionControl::Silence);
    let origin = push_robot(&sim, "msgIntoTheVoid");
    eventually("a replacement connection", async || {
        sim.state()
            .stream_connections()
            .iter()
            .any(|c| c.id != silent && !c.silent)
            .then_some(())
    })
    .await;
    eventually("the message redelivered and acked", async || {
        settled(&sim, &origin).then_some(())
    })
    .await;
    eventually("the silent connection closed", async || {
        (!sim
            .state()
            .stream_connections()
            .iter()
            .any(|c| c.id == silent))
        .then_some(())
    })
    .await;
    let events = events_with(&app, 1, "msgIntoTheVoid").await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_frame_is_not_acked_while_nats_is_down_and_is_published_once_after() {
    let sim = sim().await;
    let mut app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    app.nats.stop().await;
    let origin = push_robot(&sim, "msgDuringOutage");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!settled(&sim, &origin), "acked while NATS was down");
    assert!(sim
        .state()
        .stream_acks()
        .iter()
        .all(|a| a.origin.as_deref() != Some(origin.as_str())));
    app.nats.restart().await;
    eventually("acked once NATS is back", async || {
        settled(&sim, &origin).then_some(())
    })
    .await;
    let events = events_with(&app, 1, "msgDuringOutage").await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_redelivery_under_a_new_frame_id_is_published_once() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
    // DingTalk redelivering the same message: same payload, a different headers.messageId.
    let first = push_robot(&sim, "msgTwice");
    let second = push_robot(&sim, "msgTwice");
    for origin in [&first, &second] {
        eventually("both deliveries acked", async || {
            settled(&sim, origin).then_some(())
        })
        .await;
    }
    let acks = sim.state().stream_acks();
    let ids: Vec<&str> = acks
        .iter()
        .filter(|a| a.settled && a.origin.is_some())
        .map(|a| a.message_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events_with(&app, 1, "msgTwice").await.len(), 1);
}

#[tokio::test]
async fn bad_credentials_back_off_and_show_in_the_status() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "stream", "not-the-secret").await;
    eventually("an open refused", async || {
        sim.state()
            .stream_opens()
            .iter()
            .any(|o| !o.accepted)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = sim
        .state()
        .stream_opens()
        .iter()
        .filter(|o| !o.accepted)
        .count();
    assert!(refused <= 2, "{refused} opens in 5 s: the connector spins");
    let status = stream_status(&app, "acme").await;
    assert_eq!(status["connection_mode"], "stream");
    assert_eq!(status["connections"][0]["state"], "connecting", "{status}");
    let error = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("authFailed"), "{status}");
    assert!(!status.to_string().contains("not-the-secret"), "{status}");
    // Fixing the secret through the admin API restarts the slot at once.
    put(&app, "acme", "stream", SECRET).await;
    connections(&sim, 1).await;
}

#[tokio::test]
async fn switching_between_http_and_stream_needs_no_restart() {
    let sim = sim().await;
    let app = ingress(&sim, &[]).await;
    put(&app, "acme", "http", SECRET).await;
    let webhook = format!("{}/api/dingtalk/webhook/acme", app.public_url);
    let post = async |msg_id: &str| {
        let ts = (time::OffsetDateTime::now_utc().unix_timestamp() * 1000).to_string();
        app.http
            .post(&webhook)
            .header("timestamp", &ts)
            .header("sign", crypto::robot_sign(SECRET, &ts))
            .json(&robot_message(msg_id))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(post("msgHttp1").await, 200);
    put(&app, "acme", "stream", SECRET).await;
    assert_eq!(post("msgHttp2").await, 403);
    connections(&sim, 1).await;
    let origin = push_robot(&sim, "msgStream1");
    eventually("acked", async || settled(&sim, &origin).then_some(())).await;
    put(&app, "acme", "http", SECRET).await;
    connections(&sim, 0).await;
    assert_eq!(post("msgHttp3").await, 200);
    events_with(&app, 1, "msgHttp3").await;
}

#[tokio::test]
async fn a_replica_handing_over_slots_whose_sockets_close_slowly_keeps_its_place_and_its_other_slots(
) {
    // Every close takes DingTalk 400 ms to answer: handing over six slots one after the other
    // would take longer than the 900 ms lease TTL.
    let sim = sim_with(StreamSettings {
        close_answer_delay: Duration::from_millis(400),
        ..StreamSettings::default()
    })
    .await;
    let url = sim.base_url();
    let lease = [("STREAM_LEASE_TTL", "900ms"), ("STREAM_REPLICA_ID", "one")];
    let first = ingress(&sim, &lease).await;
    const APPS: usize = 12;
    for n in 0..APPS {
        put(&first, &format!("app{n}"), "stream", SECRET).await;
    }
    connections(&sim, APPS).await;
    let mut redis = redis(&first).await;
    let _second = support::spawn_replica(
        &first.nats.url(),
        &first.redis.url(),
        &[
            ("DINGTALK_API_URL", url.as_str()),
            ("STREAM_IDLE_TIMEOUT", "2s"),
            ("STREAM_LEASE_TTL", "900ms"),
            ("STREAM_CONNECTIONS_PER_APP", "1"),
            ("STREAM_REPLICA_ID", "two"),
        ],
    )
    .await;
    // Through the rebalance: the first replica stays in the replica set, and no app is ever
    // served twice (one connection per slot, as the leases promise).
    let started = std::time::Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let present: Option<f64> = redis::cmd("ZSCORE")
            .arg("dtg:stream:replicas")
            .arg("one")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            present.is_some(),
            "replica one was counted out during its handover"
        );
        most = most.max(sim.state().stream_connections().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most <= APPS, "{most} connections for {APPS} slots");
    let holders = async |id: String| -> Option<String> {
        let status = stream_status(&first, &id).await;
        let slot = &status["connections"][0];
        (slot["state"] == "connected").then(|| slot["replica"].as_str().unwrap().to_owned())
    };
    let mut by_two = 0;
    for n in 0..APPS {
        let holder = eventually("each slot connected", async || {
            holders(format!("app{n}")).await
        })
        .await;
        by_two += usize::from(holder == "two");
    }
    assert!(by_two > 0, "the second replica took its share");
}

#[tokio::test]
async fn two_replicas_share_the_leases_and_a_killed_one_is_replaced() {
    let sim = sim().await;
    let url = sim.base_url();
    let first = ingress(
        &sim,
        &[
            ("STREAM_CONNECTIONS_PER_APP", "2"),
            ("STREAM_REPLICA_ID", "one"),
        ],
    )
    .await;
    let redis_url = first.redis.url();
    let nats_url = first.nats.url();
    let mut second = support::spawn_replica(
        &nats_url,
        &redis_url,
        &[
            ("DINGTALK_API_URL", url.as_str()),
            ("STREAM_IDLE_TIMEOUT", "2s"),
            ("STREAM_LEASE_TTL", "1500ms"),
            ("STREAM_CONNECTIONS_PER_APP", "2"),
            ("STREAM_REPLICA_ID", "two"),
        ],
    )
    .await;
    for n in 0..4 {
        put(&first, &format!("app{n}"), "stream", SECRET).await;
    }
    connections(&sim, 8).await;
    let holders = async |app: &TestApp, id: &str| -> Vec<String> {
        let status = stream_status(app, id).await;
        status["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "connected")
            .map(|c| c["replica"].as_str().unwrap().to_owned())
            .collect()
    };
    for n in 0..4 {
        let mut replicas = eventually("both slots reported", async || {
            let h = holders(&first, &format!("app{n}")).await;
            (h.len() == 2).then_some(h)
        })
        .await;
        replicas.sort();
        assert_eq!(
            replicas,
            ["one", "two"],
            "app{n}: slots on different replicas"
        );
    }
    // The second replica dies without releasing anything.
    second.kill().await;
    for n in 0..4 {
        eventually("the survivor holds both slots", async || {
            let h = holders(&first, &format!("app{n}")).await;
            (h.len() == 2 && h.iter().all(|r| r == "one")).then_some(())
        })
        .await;
    }
    let origin = push_robot(&sim, "msgAfterKill");
    eventually("acked", async || settled(&sim, &origin).then_some(())).await;
}

#[tokio::test]
async fn a_joining_replica_that_wins_both_slots_of_an_app_takes_them_one_at_a_time_without_a_gap() {
    use common::registry::IntegrationId;
    use ingress::stream::lease::owner;

    let sim = sim().await;
    let url = sim.base_url();
    let env = |name: &'static str| {
        vec![
            ("DINGTALK_API_URL", url.clone()),
            ("STREAM_IDLE_TIMEOUT", "2s".to_owned()),
            ("STREAM_LEASE_TTL", "1500ms".to_owned()),
            ("STREAM_CONNECTIONS_PER_APP", "2".to_owned()),
            ("STREAM_REPLICA_ID", name.to_owned()),
        ]
    };
    let first = ingress(
        &sim,
        &[
            ("STREAM_CONNECTIONS_PER_APP", "2"),
            ("STREAM_REPLICA_ID", "one"),
        ],
    )
    .await;
    let (nats_url, redis_url) = (first.nats.url(), first.redis.url());
    let spawn = async |name: &'static str| {
        let env = env(name);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        support::spawn_replica(&nats_url, &redis_url, &pairs).await
    };
    let _second = spawn("two").await;
    put(&first, "acme", "stream", SECRET).await;
    let id = IntegrationId::try_from("acme".to_owned()).unwrap();
    // Slot → replica of the connected slots, as the admin API reports them.
    let holders = async || -> Vec<(u64, String)> {
        let status: Value = first
            .admin(Method::GET, "/api/dingtalk/integrations/acme/stream")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut held: Vec<(u64, String)> = status["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "connected")
            .map(|c| {
                (
                    c["slot"].as_u64().unwrap(),
                    c["replica"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        held.sort();
        held
    };
    let preferred = |replicas: &[String]| -> Vec<(u64, String)> {
        (0..2)
            .map(|slot| (slot as u64, owner(&id, slot, replicas).unwrap().clone()))
            .collect()
    };
    let two: Vec<String> = vec!["one".into(), "two".into()];
    let before = preferred(&two);
    eventually("both slots held as two replicas prefer", async || {
        (holders().await == before).then_some(())
    })
    .await;
    // A third replica name that is preferred over the current holders for both slots: the
    // rebalance moves both slots of the app.
    let third: &'static str = (0..1000)
        .map(|n| &*Box::leak(format!("three-{n}").into_boxed_str()))
        .find(|name| {
            let three = [two.clone(), vec![(*name).to_owned()]].concat();
            let after = preferred(&three);
            after.iter().zip(&before).all(|(a, b)| a.1 != b.1)
        })
        .expect("some name moves both slots");
    let three = [two.clone(), vec![third.to_owned()]].concat();
    let after = preferred(&three);
    let _third = spawn(third).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = sim
            .state()
            .stream_connections()
            .iter()
            .filter(|c| c.app_key == APP_KEY && !c.disconnecting)
            .count();
        assert!(
            open >= 1,
            "the app was left without a connection during the handover"
        );
        if holders().await == after {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: slots held as three replicas prefer ({after:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let origin = push_robot(&sim, "msgAfterHandover");
    eventually("acked", async || settled(&sim, &origin).then_some(())).await;
}
