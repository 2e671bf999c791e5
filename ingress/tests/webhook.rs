//! The public callback routes end to end: signed DingTalk callbacks over real HTTP → a real
//! JetStream stream; every refusal answered with its status and code; nothing acknowledged that
//! was not stored.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::bus::event::{Event, EventBody};
use common::bus::streams::{self, EVENTS};
use common::cards::{CardSpace, SentCard};
use common::config::StreamSettings;
use common::crypto::{self, AesKey, CallbackCrypto};
use common::ops;
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use common::shutdown::Shutdown;
use ingress::publish::Publisher;
use ingress::webhook::{self, WebhookState};
use serde_json::{json, Value};
use test_harness::{NatsServer, RedisServer};

const SECRET: &str = "testAppSecret123";
const TOKEN: &str = "123456";
const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
const APP_KEY: &str = "suite4xxxxxxxxxxxxxxx";

/// One ingress public router over its own NATS and Redis, with a clock the test controls.
struct App {
    nats: NatsServer,
    _redis: RedisServer,
    base: String,
    http: reqwest::Client,
    js: jetstream::Context,
    /// A fixed "now" in ms; 0 means the real clock.
    now: Arc<AtomicI64>,
    registry: Registry,
    /// The notifier's side of card records.
    redis: redis::aio::ConnectionManager,
    _shutdown: Shutdown,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn spawn_app(reply_prefix: Option<[u8; 16]>) -> App {
    spawn_app_with(reply_prefix, 64).await
}

async fn spawn_app_with(reply_prefix: Option<[u8; 16]>, max_in_flight: usize) -> App {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let client = async_nats::ConnectOptions::new()
        .connect(nats.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    // JetStream refuses streams whose caps exceed the free disk; tests store little.
    let settings = StreamSettings {
        max_bytes: 64 * 1024 * 1024,
        ..StreamSettings::default()
    };
    streams::provision(&js, &settings).await.unwrap();
    let registry = Registry::connect(
        &redis.url(),
        RegistryOptions::new(SecretsKeys::unencrypted()),
    )
    .await
    .unwrap();
    let spec: IntegrationSpec = serde_json::from_value(json!({
        "id": "acme", "client_id": APP_KEY, "client_secret": SECRET,
        "callback_token": TOKEN, "callback_aes_key": AES_KEY
    }))
    .unwrap();
    registry.put_integration(spec).await.unwrap();
    let now = Arc::new(AtomicI64::new(0));
    let clock_now = now.clone();
    let cards = common::redis::connect(&redis.url()).await.unwrap();
    let state = WebhookState {
        registry: registry.clone(),
        redis: cards.clone(),
        publisher: Publisher::new(js.clone(), Duration::from_millis(800)),
        max_skew: Duration::from_secs(24 * 3600),
        sign_window: crypto::ROBOT_SIGN_WINDOW,
        clock: Arc::new(move || match clock_now.load(Ordering::SeqCst) {
            0 => now_ms(),
            fixed => fixed,
        }),
        in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
        reply_prefix,
    };
    let shutdown = Shutdown::new();
    let listener = ops::serve(
        "127.0.0.1:0".parse().unwrap(),
        webhook::router(state),
        shutdown.clone(),
    )
    .await
    .unwrap();
    App {
        nats,
        _redis: redis,
        base: format!("http://{}", listener.addr),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        js,
        now,
        registry,
        redis: cards,
        _shutdown: shutdown,
    }
}

fn robot_message(msg_id: &str) -> Value {
    json!({"msgId": msg_id, "msgtype": "text", "text": {"content": " hello "}, "conversationId": "cidXYZ==",
        "conversationType": "2", "conversationTitle": "ops", "senderId": "$:LWCP_v1:$abc", "senderStaffId": "user123",
        "senderNick": "Li", "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": APP_KEY, "isInAtList": true,
        "createAt": 1_700_000_000_000_i64, "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s1",
        "sessionWebhookExpiredTime": 1_700_005_400_000_i64})
}

fn cipher() -> CallbackCrypto {
    CallbackCrypto::new(TOKEN, AesKey::parse(AES_KEY).unwrap(), APP_KEY)
}

impl App {
    /// Records a card as the notifier does before sending it.
    async fn sent_card(&mut self, out_track_id: &str, spaces: Vec<CardSpace>) {
        common::cards::remember(
            &mut self.redis,
            "acme",
            out_track_id,
            &SentCard { spaces },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }

    fn url(&self, integration: &str) -> String {
        format!("{}/api/dingtalk/webhook/{integration}", self.base)
    }

    async fn post_robot(
        &self,
        integration: &str,
        body: &Value,
        timestamp: i64,
        secret: &str,
    ) -> reqwest::Response {
        let ts = timestamp.to_string();
        self.http
            .post(self.url(integration))
            .header("timestamp", &ts)
            .header("sign", crypto::robot_sign(secret, &ts))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_encrypted(
        &self,
        plaintext: &str,
        timestamp: &str,
        nonce: &str,
    ) -> reqwest::Response {
        let encrypt = cipher().encrypt(plaintext);
        let signature = crypto::signature(TOKEN, timestamp, nonce, &encrypt);
        self.http
            .post(format!(
                "{}?signature={signature}&timestamp={timestamp}&nonce={nonce}",
                self.url("acme")
            ))
            .json(&json!({"encrypt": encrypt}))
            .send()
            .await
            .unwrap()
    }

    async fn stored(&self) -> Vec<(String, String, Event)> {
        let stream = self.js.get_stream(EVENTS).await.unwrap();
        let count = stream.get_info().await.unwrap().state.last_sequence;
        let mut events = Vec::new();
        for seq in 1..=count {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let msg_id = message
                .headers
                .get(common::bus::MSG_ID_HEADER)
                .unwrap()
                .to_string();
            events.push((
                message.subject.to_string(),
                msg_id,
                Event::from_slice(&message.payload).unwrap(),
            ));
        }
        events
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let (status, code, _) = error_of(response).await;
    (status, code)
}

/// The status, and the error body's `code` and `message`.
async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let field = |name: &str| body["error"][name].as_str().unwrap_or_default().to_owned();
    (status, field("code"), field("message"))
}

#[tokio::test]
async fn a_signed_robot_message_is_published_then_acknowledged() {
    let app = spawn_app(None).await;
    let response = app
        .post_robot("acme", &robot_message("msgABC"), now_ms(), SECRET)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"ok": true, "id": "acme:msgABC"}));

    let stored = app.stored().await;
    assert_eq!(stored.len(), 1);
    let (subject, msg_id, event) = &stored[0];
    assert_eq!(subject, "dingtalk.events.acme.message");
    assert_eq!(msg_id, "acme:msgABC");
    let EventBody::Message(message) = &event.body else {
        panic!("not a message")
    };
    assert_eq!(message.message.text, "hello");
    assert!(message.message.mentions_bot);
}

#[tokio::test]
async fn a_redelivered_robot_message_is_acked_but_not_republished() {
    let app = spawn_app(None).await;
    for _ in 0..3 {
        let response = app
            .post_robot("acme", &robot_message("msgDUP"), now_ms(), SECRET)
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.stored().await.len(), 1);
}

#[tokio::test]
async fn robot_messages_with_a_bad_or_missing_sign_are_refused() {
    let app = spawn_app(None).await;
    let wrong = app
        .post_robot("acme", &robot_message("m1"), now_ms(), "not-the-secret")
        .await;
    assert_eq!(error_code(wrong).await, (401, "bad_signature".into()));

    let stale = app
        .post_robot("acme", &robot_message("m2"), now_ms() - 3_600_001, SECRET)
        .await;
    assert_eq!(error_code(stale).await, (401, "stale_timestamp".into()));

    let unsigned = app
        .http
        .post(app.url("acme"))
        .json(&robot_message("m3"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(unsigned).await, (400, "missing_field".into()));
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn the_event_carries_the_callback_text_unchanged_as_raw() {
    let app = spawn_app(None).await;
    // DingTalk's own key order and spacing, an escape, and a field the gateway does not know.
    let mut base = robot_message("msgRAW");
    base.as_object_mut().unwrap().remove("senderNick");
    let body = format!(
        "{{ \"senderNick\" : \"Li\\u0020Lei\", \"future\": {{\"x\": [1, 2.5]}},{}\n",
        &base.to_string()[1..]
    );
    let ts = now_ms().to_string();
    let response = app
        .http
        .post(app.url("acme"))
        .header("timestamp", &ts)
        .header("sign", crypto::robot_sign(SECRET, &ts))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream = app.js.get_stream(EVENTS).await.unwrap();
    let stored = stream.get_raw_message(1).await.unwrap();
    let payload = String::from_utf8(stored.payload.to_vec()).unwrap();
    assert!(
        payload.contains(&format!("\"raw\":{}", body.trim())),
        "{payload}"
    );
    let EventBody::Message(message) = Event::from_slice(&stored.payload).unwrap().body else {
        panic!("not a message")
    };
    assert_eq!(message.sender.nick, "Li Lei");
    assert_eq!(message.raw.to_value().unwrap()["future"]["x"][1], 2.5);
}

#[tokio::test]
async fn unknown_integrations_and_broken_bodies_get_clear_errors() {
    let app = spawn_app(None).await;
    let unknown = app
        .post_robot("nobody", &robot_message("m1"), now_ms(), SECRET)
        .await;
    assert_eq!(
        error_code(unknown).await,
        (404, "unknown_integration".into())
    );
    let bad_id = app
        .post_robot("bad.id", &robot_message("m1"), now_ms(), SECRET)
        .await;
    assert_eq!(
        error_code(bad_id).await,
        (404, "unknown_integration".into())
    );

    let ts = now_ms().to_string();
    let broken = app
        .http
        .post(app.url("acme"))
        .header("timestamp", &ts)
        .header("sign", crypto::robot_sign(SECRET, &ts))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(broken).await, (400, "malformed".into()));

    let mut no_msg_id = robot_message("x");
    no_msg_id.as_object_mut().unwrap().remove("msgId");
    let shapeless = app.post_robot("acme", &no_msg_id, now_ms(), SECRET).await;
    let (status, code) = error_code(shapeless).await;
    assert_eq!((status, code.as_str()), (400, "malformed"));

    let huge = json!({"msgId": "big", "padding": "x".repeat(300 * 1024)});
    let too_large = app.post_robot("acme", &huge, now_ms(), SECRET).await;
    assert_eq!(error_code(too_large).await, (413, "body_too_large".into()));
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn disabled_or_stream_mode_integrations_refuse_http_callbacks() {
    let app = spawn_app(None).await;
    for (id, extra) in [
        ("quiet", json!({"http_callback_enabled": false})),
        ("streamed", json!({"connection_mode": "stream"})),
    ] {
        let mut spec = json!({"id": id, "client_id": APP_KEY, "client_secret": SECRET,
            "callback_token": TOKEN, "callback_aes_key": AES_KEY});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        app.registry
            .put_integration(serde_json::from_value(spec).unwrap())
            .await
            .unwrap();
        let response = app
            .post_robot(id, &robot_message("m1"), now_ms(), SECRET)
            .await;
        assert_eq!(
            error_code(response).await,
            (403, "callbacks_disabled".into()),
            "{id}"
        );
    }
}

#[tokio::test]
async fn check_url_is_answered_encrypted_and_publishes_nothing() {
    let app = spawn_app(None).await;
    let ts = now_ms().to_string();
    let response = app
        .post_encrypted(r#"{"EventType":"check_url"}"#, &ts, "WL4PK6yA")
        .await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["timeStamp"], ts.as_str());
    assert_eq!(reply["nonce"], "WL4PK6yA");
    let encrypt = reply["encrypt"].as_str().unwrap();
    let signature = reply["msg_signature"].as_str().unwrap();
    let plaintext = cipher()
        .verify_and_decrypt(signature, &ts, "WL4PK6yA", encrypt)
        .unwrap();
    assert_eq!(plaintext, "success");
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn the_encrypted_ack_matches_the_protocol_vector_byte_for_byte() {
    let app = spawn_app(Some(*b"1234567890123456")).await;
    app.now.store(1_445_827_045_067, Ordering::SeqCst);
    let response = app
        .post_encrypted(r#"{"EventType":"check_url"}"#, "1445827045067", "nEXhMP4r")
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    // PROTOCOL.md §1.7: V4's key, receiveId, timestamp, nonce and prefix, message "success" (D1).
    assert_eq!(
        body,
        r#"{"msg_signature":"73813ea128535f7945c17f81069c6b8045361375","timeStamp":"1445827045067","nonce":"nEXhMP4r","encrypt":"5DJFWzjRNOQk+5GSZxW+VpU/+Yf0KeplvXZ8LNdyQj5iN6tX2KSwwhy5oymzMpsFAiG4RS3L0/vY7TX4ZwLTFA=="}"#
    );
}

#[tokio::test]
async fn a_contact_event_is_published_with_its_event_type() {
    let app = spawn_app(None).await;
    let ts = now_ms().to_string();
    let event = r#"{"EventType":"user_add_org","UserId":["user456"],"CorpId":"dingcorp","EventId":"evt-1"}"#;
    let response = app.post_encrypted(event, &ts, "abcd1234").await;
    assert_eq!(response.status(), 200);
    let again = app.post_encrypted(event, &ts, "abcd1234").await;
    assert_eq!(again.status(), 200);
    let stored = app.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "dingtalk.events.acme.event");
    assert_eq!(stored[0].1, "acme:evt-1");
    let EventBody::Event(event) = &stored[0].2.body else {
        panic!("not an event")
    };
    assert_eq!(event.event_type, "user_add_org");
    assert_eq!(event.payload.to_value().unwrap()["UserId"][0], "user456");
}

#[tokio::test]
async fn encrypted_callbacks_are_refused_when_forged_stale_or_incomplete() {
    let app = spawn_app(None).await;
    let ts = now_ms().to_string();
    let encrypt = cipher().encrypt(r#"{"EventType":"user_add_org"}"#);
    let good = crypto::signature(TOKEN, &ts, "n1", &encrypt);
    let post = |query: String| {
        let url = format!("{}?{query}", app.url("acme"));
        let body = json!({"encrypt": encrypt});
        let http = app.http.clone();
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let forged = post(format!("signature={}&timestamp={ts}&nonce=n2", good)).await;
    assert_eq!(error_code(forged).await, (401, "bad_signature".into()));
    let missing = post(format!("signature={good}&timestamp={ts}")).await;
    assert_eq!(error_code(missing).await, (400, "missing_field".into()));
    // The other spellings of the parameters are accepted (PROTOCOL §1.1).
    let spelled = post(format!("msg_signature={good}&timeStamp={ts}&nonce=n1")).await;
    assert_eq!(spelled.status(), 200);

    let old = (now_ms() - 25 * 3_600_000).to_string();
    let stale_sig = crypto::signature(TOKEN, &old, "n1", &encrypt);
    let stale = post(format!("signature={stale_sig}&timestamp={old}&nonce=n1")).await;
    assert_eq!(error_code(stale).await, (401, "stale_timestamp".into()));

    // Encrypted for another app: the receiveId check refuses it.
    let other = CallbackCrypto::new(TOKEN, AesKey::parse(AES_KEY).unwrap(), "dingotherapp");
    let foreign = other.encrypt(r#"{"EventType":"user_add_org"}"#);
    let sig = crypto::signature(TOKEN, &ts, "n1", &foreign);
    let response = app
        .http
        .post(format!(
            "{}?signature={sig}&timestamp={ts}&nonce=n1",
            app.url("acme")
        ))
        .json(&json!({"encrypt": foreign}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "undecryptable".into()));
}

#[tokio::test]
async fn card_actions_are_published_from_both_routes_and_the_envelope() {
    let mut app = spawn_app(None).await;
    for id in ["cmd-42", "cmd-43"] {
        app.sent_card(id, vec![CardSpace::Group("cidXYZ==".into())])
            .await;
    }
    let card = json!({"type": "actionCallback", "outTrackId": "cmd-42", "userId": "user123", "spaceType": "IM_GROUP",
        "spaceId": "cidXYZ==", "content": "{\"cardPrivateData\":{\"actionIds\":[\"confirm\"],\"params\":{}}}"});
    let response = app
        .http
        .post(format!("{}/card", app.url("acme")))
        .json(&card)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut legacy_route = card.clone();
    legacy_route["outTrackId"] = json!("cmd-43");
    let response = app
        .http
        .post(app.url("acme"))
        .json(&legacy_route)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut enveloped = card.clone();
    enveloped["outTrackId"] = json!("cmd-44");
    let ts = now_ms().to_string();
    let response = app.post_encrypted(&enveloped.to_string(), &ts, "n9").await;
    assert_eq!(response.status(), 200);

    let stored = app.stored().await;
    let tracks: Vec<_> = stored
        .iter()
        .map(|(subject, _, event)| {
            assert_eq!(subject, "dingtalk.events.acme.card_action");
            let EventBody::CardAction(action) = &event.body else {
                panic!("not a card action")
            };
            action.card.out_track_id.clone()
        })
        .collect();
    assert_eq!(tracks, ["cmd-42", "cmd-43", "cmd-44"]);

    // Signed with the robot headers: they must verify.
    let ts = now_ms().to_string();
    let forged = app
        .http
        .post(format!("{}/card", app.url("acme")))
        .header("timestamp", &ts)
        .header("sign", crypto::robot_sign("wrong", &ts))
        .json(&card)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(forged).await, (401, "bad_signature".into()));
}

#[tokio::test]
async fn with_nats_down_callbacks_get_503_and_after_restart_nothing_is_lost() {
    let mut app = spawn_app(None).await;
    app.nats.stop().await;
    let response = app
        .post_robot("acme", &robot_message("msgOUTAGE"), now_ms(), SECRET)
        .await;
    assert_eq!(error_code(response).await.0, 503);

    app.nats.restart().await;
    // DingTalk redelivers what was not answered 200; retry until the client has reconnected.
    let mut status = 0;
    for _ in 0..50 {
        let response = app
            .post_robot("acme", &robot_message("msgOUTAGE"), now_ms(), SECRET)
            .await;
        status = response.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let ids: Vec<_> = app
        .stored()
        .await
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, ["acme:msgOUTAGE"], "stored exactly once");
}

#[tokio::test]
async fn a_publish_jetstream_refuses_is_answered_503_and_redelivery_can_succeed() {
    let app = spawn_app(None).await;
    let stream = app.js.get_stream(EVENTS).await.unwrap();
    let mut config = stream.cached_info().config.clone();
    let (max_messages, discard) = (config.max_messages, config.discard);
    config.max_messages = 1;
    config.discard = jetstream::stream::DiscardPolicy::New;
    app.js.update_stream(config.clone()).await.unwrap();

    let first = app
        .post_robot("acme", &robot_message("msgFIRST"), now_ms(), SECRET)
        .await;
    assert_eq!(first.status(), 200);
    let response = app
        .post_robot("acme", &robot_message("msgFULL"), now_ms(), SECRET)
        .await;
    let (status, code, message) = error_of(response).await;
    assert_eq!((status, code.as_str()), (503, "bus_unavailable"));
    assert!(message.contains("maximum messages"), "{message}");

    // Once the stream has room again, DingTalk's redelivery is stored.
    config.max_messages = max_messages;
    config.discard = discard;
    app.js.update_stream(config).await.unwrap();
    let again = app
        .post_robot("acme", &robot_message("msgFULL"), now_ms(), SECRET)
        .await;
    assert_eq!(again.status(), 200);
    let ids: Vec<_> = app
        .stored()
        .await
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, ["acme:msgFIRST", "acme:msgFULL"]);
}

#[tokio::test]
async fn without_the_events_stream_callbacks_get_503() {
    let app = spawn_app(None).await;
    app.js.delete_stream(EVENTS).await.unwrap();
    let response = app
        .post_robot("acme", &robot_message("msgNOSTREAM"), now_ms(), SECRET)
        .await;
    let (status, code, message) = error_of(response).await;
    assert_eq!((status, code.as_str()), (503, "bus_unavailable"));
    assert!(message.contains("no responders"), "{message}");
}

#[tokio::test]
async fn beyond_the_in_flight_bound_callbacks_are_shed_with_503() {
    let app = spawn_app_with(None, 0).await;
    let response = app
        .post_robot("acme", &robot_message("msgSHED"), now_ms(), SECRET)
        .await;
    assert_eq!(error_code(response).await, (503, "overloaded".into()));
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn an_unsigned_card_press_must_name_a_card_sent_where_it_was_pressed() {
    let mut app = spawn_app(None).await;
    app.sent_card("cmd-group", vec![CardSpace::Group("cid-ops".into())])
        .await;
    app.sent_card("cmd-dm", vec![CardSpace::User("user123".into())])
        .await;
    let press = |out_track_id: &str, space_type: &str, space_id: &str, user: &str| {
        json!({"type": "actionCallback", "outTrackId": out_track_id, "userId": user,
            "spaceType": space_type, "spaceId": space_id,
            "content": "{\"cardPrivateData\":{\"actionIds\":[\"end\"],\"params\":{}}}"})
    };
    let refused = [
        press("never-sent", "IM_GROUP", "cid-ops", "user123"),
        press("cmd-group", "IM_GROUP", "cid-elsewhere", "user123"),
        press("cmd-dm", "IM_ROBOT", "whatever", "user999"),
        press("cmd-dm", "IM_GROUP", "cid-ops", "user123"),
    ];
    for body in &refused {
        let response = app
            .http
            .post(format!("{}/card", app.url("acme")))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (403, "unknown_card".into()),
            "{body}"
        );
    }
    for body in [
        press("cmd-group", "IM_GROUP", "cid-ops", "anyone-in-the-group"),
        press("cmd-dm", "IM_ROBOT", "whatever", "user123"),
    ] {
        let response = app
            .http
            .post(format!("{}/card", app.url("acme")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{body}");
    }
    let tracks: Vec<String> = app
        .stored()
        .await
        .iter()
        .map(|(_, _, event)| match &event.body {
            EventBody::CardAction(action) => action.card.out_track_id.clone(),
            _ => panic!("not a card action"),
        })
        .collect();
    assert_eq!(tracks, ["cmd-group", "cmd-dm"], "only the genuine presses");
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_and_frees_its_slot_for_genuine_callbacks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One slot: a client that never finishes its body would otherwise hold it for ever.
    let app = spawn_app_with(None, 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /api/dingtalk/webhook/acme HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"msgId\":",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("the ingress answers a body that never comes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    let response = app
        .post_robot("acme", &robot_message("msgAfterSlow"), now_ms(), SECRET)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_unreadable_integration_record_is_misconfigured_without_details() {
    let app = spawn_app(None).await;
    let mut redis = app.redis.clone();
    redis::cmd("SET")
        .arg("dtg:integration:broken")
        .arg("{not json")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let response = app
        .post_robot("broken", &robot_message("msgBroken"), now_ms(), SECRET)
        .await;
    let (status, code) = (response.status().as_u16(), response.text().await.unwrap());
    assert_eq!(status, 500, "{code}");
    assert!(code.contains("misconfigured"), "{code}");
    assert!(!code.contains("dtg:"), "{code}");
}
