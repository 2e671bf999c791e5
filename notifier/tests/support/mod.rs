//! A notifier in-process over its own nats-server, redis-server and DingTalk simulator, with
//! collectors of everything it publishes on the results and dead-letter streams.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use common::bus::result::CommandResult;
use common::bus::streams::COMMANDS;
use common::bus::MSG_ID_HEADER;
use common::config::Env;
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use common::shutdown::Shutdown;
use dingtalk_sim::{AppCredentials, RunningSim, SimConfig, Simulator};
use futures::StreamExt;
use serde_json::{json, Value};
use test_harness::{NatsServer, RedisServer};

/// The app of integration `acme` (simulator AppKey = robotCode).
pub const APP_A: &str = "dingappacme";
/// The app of integration `beta`.
pub const APP_B: &str = "dingappbeta";
const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub headers: Option<HeaderMap>,
    pub payload: Vec<u8>,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    }
}

/// Everything a test needs.
pub struct Bed {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub sim: RunningSim,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub registry: Registry,
    pub results: Arc<Mutex<Vec<Stored>>>,
    pub dead: Arc<Mutex<Vec<Stored>>>,
    pub config: notifier::Config,
    pub notifier: Option<(Shutdown, notifier::Running)>,
}

/// Knobs of a test bed.
pub struct Options {
    pub public_base_url: Option<String>,
    pub concurrency: usize,
    pub ack_wait: Duration,
    pub sim: SimConfig,
    /// `MEDIA_URL_ALLOWLIST`.
    pub media_allowlist: Option<String>,
    /// `NOTIFIER_RECORD_RETENTION`.
    pub record_retention: Option<String>,
    /// How long updates wait for a target that is not on its way.
    pub target_wait: Option<Duration>,
    /// `NOTIFIER_MAX_DEFER`.
    pub max_defer: Option<String>,
    /// How long an egress-IP ban lasts.
    pub ip_ban: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            public_base_url: None,
            concurrency: 8,
            ack_wait: Duration::from_secs(30),
            sim: SimConfig::local(),
            media_allowlist: None,
            record_retention: None,
            target_wait: None,
            max_defer: None,
            ip_ban: None,
        }
    }
}

impl Bed {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let sim = Simulator::start(
            options
                .sim
                .with_app(AppCredentials::new(APP_A, "secret-a"))
                .with_app(AppCredentials::new(APP_B, "secret-b")),
        )
        .await
        .expect("simulator starts");
        let base = sim.base_url();
        let mut pairs = vec![
            ("NATS_URL", nats.url()),
            ("REDIS_URL", redis.url()),
            ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("DINGTALK_API_URL", base.clone()),
            ("DINGTALK_OAPI_URL", base.clone()),
            ("NOTIFIER_CONCURRENCY", options.concurrency.to_string()),
            ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
        ];
        if let Some(url) = &options.public_base_url {
            pairs.push(("PUBLIC_BASE_URL", url.clone()));
        }
        if let Some(hosts) = &options.media_allowlist {
            pairs.push(("MEDIA_URL_ALLOWLIST", hosts.clone()));
        }
        if let Some(retention) = &options.record_retention {
            pairs.push(("NOTIFIER_RECORD_RETENTION", retention.clone()));
        }
        if let Some(max_defer) = &options.max_defer {
            pairs.push(("NOTIFIER_MAX_DEFER", max_defer.clone()));
        }
        let mut config = notifier::Config::from_env(&Env::from_pairs(pairs)).expect("config");
        config.ack_wait = options.ack_wait;
        if let Some(wait) = options.target_wait {
            config.target_wait = wait;
        }
        if let Some(ban) = options.ip_ban {
            config.ip_ban = ban;
        }
        let registry = Registry::connect(
            &redis.url(),
            RegistryOptions::new(SecretsKeys::unencrypted()),
        )
        .await
        .expect("registry");
        for (id, app) in [("acme", APP_A), ("beta", APP_B)] {
            let spec: IntegrationSpec = serde_json::from_value(json!({
                "id": id, "client_id": app, "client_secret": if id == "acme" { "secret-a" } else { "secret-b" },
                "callback_token": "token", "callback_aes_key": AES_KEY
            }))
            .unwrap();
            registry
                .put_integration(spec)
                .await
                .expect("integration stored");
        }
        let client = async_nats::connect(nats.url()).await.expect("nats");
        let js = jetstream::new(client.clone());
        let mut bed = Self {
            nats,
            redis,
            sim,
            client,
            js,
            registry,
            results: Arc::default(),
            dead: Arc::default(),
            config,
            notifier: None,
        };
        bed.start_notifier().await;
        bed.results = collect(&bed.js, "DINGTALK_RESULTS").await;
        bed.dead = collect(&bed.js, "DINGTALK_DLQ").await;
        bed
    }

    /// Starts (again) the notifier under test.
    pub async fn start_notifier(&mut self) {
        let shutdown = Shutdown::new();
        let running = notifier::start(&self.config, &shutdown)
            .await
            .expect("notifier starts");
        self.notifier = Some((shutdown, running));
    }

    /// Starts one more replica of the notifier on the same NATS, Redis and simulator.
    pub async fn another_replica(&self) -> (Shutdown, notifier::Running) {
        let shutdown = Shutdown::new();
        let running = notifier::start(&self.config, &shutdown)
            .await
            .expect("replica starts");
        (shutdown, running)
    }

    /// Kills the notifier at once (as a crash would): its tasks are aborted mid-command and its
    /// connections dropped; nothing is acked or cleaned up.
    pub async fn kill_notifier(&mut self) {
        if let Some((_, running)) = self.notifier.take() {
            running.worker.abort();
            running.queries.abort();
            let _ = running.worker.await;
            running.foundation.ops.task.abort();
            drop(running.foundation);
        }
        // A pull request of the killed worker can stand at the server until its connection
        // closes or it expires: a command published meanwhile would be handed to it and come
        // back only after the ack wait. Wait until none stands.
        let started = Instant::now();
        loop {
            let waiting = match self.js.get_stream(COMMANDS).await {
                Ok(stream) => match stream
                    .get_consumer::<consumer::pull::Config>(notifier::worker::CONSUMER)
                    .await
                {
                    Ok(mut consumer) => consumer.info().await.map(|i| i.num_waiting).unwrap_or(0),
                    Err(_) => 0,
                },
                Err(_) => 0,
            };
            if waiting == 0 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the killed notifier's pull requests never went away"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes a command on its subject with `Nats-Msg-Id` = its id.
    pub async fn publish(&self, command: &Value) {
        let subject = format!(
            "dingtalk.commands.{}.{}",
            command["integration_id"].as_str().unwrap(),
            command["op"].as_str().unwrap()
        );
        let id = command["id"].as_str().unwrap_or_default();
        self.publish_raw(&subject, command.to_string().as_bytes(), Some(id))
            .await;
    }

    pub async fn publish_raw(&self, subject: &str, body: &[u8], msg_id: Option<&str>) {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(MSG_ID_HEADER, id);
        }
        self.js
            .publish_with_headers(subject.to_owned(), headers, body.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The results published for `command_id` so far.
    pub fn results_of(&self, command_id: &str) -> Vec<CommandResult> {
        self.results
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| CommandResult::from_slice(&m.payload).ok())
            .filter(|r| r.command_id == command_id)
            .collect()
    }

    /// Waits for the result of `command_id` (and checks there is exactly one).
    pub async fn result(&self, command_id: &str) -> CommandResult {
        self.result_within(command_id, Duration::from_secs(20))
            .await
    }

    pub async fn result_within(&self, command_id: &str, limit: Duration) -> CommandResult {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.results_of(command_id);
            if let Some(first) = found.first() {
                assert_eq!(
                    found.len(),
                    1,
                    "more than one result for {command_id}: {found:#?}"
                );
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no result for {command_id} within {limit:?}; results: {:#?}",
                self.all_result_ids()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn all_result_ids(&self) -> Vec<String> {
        self.results
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| CommandResult::from_slice(&m.payload).ok())
            .map(|r| r.command_id)
            .collect()
    }

    /// Dead letters whose `Nats-Msg-Id`-bearing original has this id.
    pub fn dead_letters_of(&self, command_id: &str) -> Vec<Stored> {
        self.dead
            .lock()
            .unwrap()
            .iter()
            .filter(|m| {
                m.header(MSG_ID_HEADER).as_deref() == Some(&format!("dlq:notifier:{command_id}"))
            })
            .cloned()
            .collect()
    }

    /// The shared consumer's state: (ack pending, redelivered, pending).
    pub async fn consumer_state(&self) -> (usize, usize, u64) {
        let stream = self.js.get_stream("DINGTALK_COMMANDS").await.unwrap();
        let mut consumer: consumer::PullConsumer = stream.get_consumer("notifier").await.unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_ack_pending, info.num_redelivered, info.num_pending)
    }

    /// A sanity pause so that asynchronous effects that must NOT happen would have happened.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Collects every message of a stream, in order, into a shared list.
async fn collect(js: &jetstream::Context, stream: &str) -> Arc<Mutex<Vec<Stored>>> {
    let list: Arc<Mutex<Vec<Stored>>> = Arc::default();
    let stream = js.get_stream(stream).await.expect("stream provisioned");
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let sink = Arc::clone(&list);
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            sink.lock().unwrap().push(Stored {
                subject: message.subject.to_string(),
                headers: message.headers.clone(),
                payload: message.payload.to_vec(),
            });
        }
    });
    list
}

/// A send command.
pub fn send(id: &str, integration: &str, recipients: Value, message: Value) -> Value {
    json!({"v": 1, "id": id, "integration_id": integration, "op": "send", "recipients": recipients, "message": message})
}

/// A text message.
pub fn text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// Serves `/files/{name}` from a map, for media URLs; returns `127.0.0.1:port`.
pub async fn file_server(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use axum::extract::Path;
    let files: Arc<std::collections::HashMap<&'static str, Vec<u8>>> =
        Arc::new(files.into_iter().collect());
    let app = axum::Router::new().route(
        "/files/{name}",
        axum::routing::get(move |Path(name): Path<String>| {
            let files = Arc::clone(&files);
            async move {
                match files.get(name.as_str()) {
                    Some(bytes) => (axum::http::StatusCode::OK, bytes.clone()),
                    None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}
