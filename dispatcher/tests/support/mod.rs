//! What every dispatcher test stands on: its own nats-server, redis-server and fake expert, the
//! dispatcher started in-process like the binary, and helpers that publish events the way the
//! ingress does and read back the commands the dispatcher published.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use common::bus::command::{Command, Operation, OutboundMessage};
use common::bus::streams::{self, COMMANDS, DLQ};
use common::bus::MSG_ID_HEADER;
use common::config::{Env, StreamSettings};
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use common::shutdown::Shutdown;
use fake_expert::FakeExpert;
use serde_json::{json, Value};
use test_harness::{NatsServer, RedisServer};

/// One test's world.
pub struct World {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub expert: FakeExpert,
    pub js: Context,
    pub registry: Registry,
}

impl World {
    pub async fn start() -> Self {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let expert = FakeExpert::start().await;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        streams::provision(&js, &StreamSettings::default())
            .await
            .unwrap();
        let registry = Registry::connect(
            &redis.url(),
            RegistryOptions::new(SecretsKeys::unencrypted()),
        )
        .await
        .unwrap();
        Self {
            nats,
            redis,
            expert,
            js,
            registry,
        }
    }

    /// Stores integration `id` with an optional fallback expert and language.
    pub async fn integration(&self, id: &str, fallback: Option<&str>, language: Option<&str>) {
        let mut spec = json!({"id": id, "client_id": format!("key-{id}"), "client_secret": "s3cret-0123456789",
            "connection_mode": "stream"});
        if let Some(x) = fallback {
            spec["xpert_id"] = json!(x);
        }
        if let Some(l) = language {
            spec["preferred_language"] = json!(l);
        }
        let spec: IntegrationSpec = serde_json::from_value(spec).unwrap();
        self.registry.put_integration(spec).await.unwrap();
    }

    /// The dispatcher's environment, with short timings so failures show fast.
    pub fn env(&self, overrides: &[(&str, &str)]) -> Env {
        let mut pairs: Vec<(String, String)> = vec![
            ("NATS_URL".into(), self.nats.url()),
            ("REDIS_URL".into(), self.redis.url()),
            ("METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("EXPERT_API_URL".into(), self.expert.url()),
            ("EXPERT_TIMEOUT".into(), "10s".into()),
            ("EXPERT_RETRY_BACKOFF".into(), "50ms".into()),
            ("DISPATCHER_ACK_WAIT".into(), "2s".into()),
            ("DISPATCHER_CLAIM_LEASE".into(), "2s".into()),
            ("SHUTDOWN_TIMEOUT".into(), "5s".into()),
            ("DISPATCHER_CONCURRENCY".into(), "8".into()),
        ];
        for (k, v) in overrides {
            pairs.retain(|(key, _)| key != k);
            pairs.push(((*k).into(), (*v).into()));
        }
        Env::from_pairs(pairs)
    }

    /// Starts one dispatcher replica.
    pub async fn dispatcher(&self, overrides: &[(&str, &str)]) -> Replica {
        let config = dispatcher::Config::from_env(&self.env(overrides)).unwrap();
        let shutdown = Shutdown::new();
        let running = dispatcher::start(&config, &shutdown).await.unwrap();
        Replica {
            running: Some(running),
            shutdown,
        }
    }

    /// Waits until the expert has received a run.
    pub async fn run_started(&self) {
        let start = Instant::now();
        while self.expert.runs().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "no run started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes an event as the ingress does (`Nats-Msg-Id` = its id, unless `msg_id` says
    /// otherwise, as for a replay after the duplicate window).
    pub async fn publish(&self, event: &Value, msg_id: Option<&str>) {
        let integration = event["integration_id"].as_str().unwrap();
        let kind = event["kind"].as_str().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            MSG_ID_HEADER,
            msg_id.unwrap_or(event["id"].as_str().unwrap()),
        );
        self.js
            .publish_with_headers(
                format!("dingtalk.events.{integration}.{kind}"),
                headers,
                event.to_string().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Every command on the bus, in order.
    pub async fn commands(&self) -> Vec<Command> {
        self.stream_messages(COMMANDS)
            .await
            .into_iter()
            .map(|(_, _, payload)| Command::from_slice(&payload).unwrap())
            .collect()
    }

    /// Every dead letter: subject, headers, body.
    pub async fn dead_letters(&self) -> Vec<(String, HeaderMap, Vec<u8>)> {
        self.stream_messages(DLQ).await
    }

    /// Waits (at most `limit`) until a dead letter is stored; returns every one.
    pub async fn wait_dead_letters(&self, limit: Duration) -> Vec<(String, HeaderMap, Vec<u8>)> {
        let start = Instant::now();
        loop {
            let letters = self.dead_letters().await;
            if !letters.is_empty() {
                return letters;
            }
            assert!(start.elapsed() < limit, "no dead letter in {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stream_messages(&self, name: &str) -> Vec<(String, HeaderMap, Vec<u8>)> {
        let mut stream = self.js.get_stream(name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                out.push((
                    message.subject.to_string(),
                    message.headers,
                    message.payload.to_vec(),
                ));
            }
        }
        out
    }

    /// Waits (at most `limit`) until the commands satisfy `done`; returns them.
    pub async fn wait_commands(
        &self,
        limit: Duration,
        done: impl Fn(&[Command]) -> bool,
    ) -> Vec<Command> {
        let start = Instant::now();
        loop {
            let commands = self.commands().await;
            if done(&commands) {
                return commands;
            }
            if start.elapsed() > limit {
                panic!("commands did not arrive in {limit:?}: {commands:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes private message `msg_id` of `staff_id` to integration `acme`, and waits for
    /// its answer.
    pub async fn say(&self, msg_id: &str, staff_id: &str, text: &str) -> String {
        self.publish(&private("acme", msg_id, staff_id, text), None)
            .await;
        self.answer(&format!("acme:{msg_id}")).await
    }

    /// Waits until the final answer to `event_id` is on the bus; returns its text.
    pub async fn answer(&self, event_id: &str) -> String {
        let commands = self
            .wait_commands(Duration::from_secs(20), |c| {
                final_text(c, event_id).is_some()
            })
            .await;
        final_text(&commands, event_id).unwrap()
    }
}

/// A running replica; dropping it stops it.
pub struct Replica {
    running: Option<dispatcher::Running>,
    shutdown: Shutdown,
}

impl Replica {
    /// Crashes it: nothing in flight is acked or released.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.kill();
    }
}

/// The text of a command's message.
pub fn text_of(message: &OutboundMessage) -> &str {
    match message {
        OutboundMessage::Text { text } | OutboundMessage::Markdown { text, .. } => text,
        _ => "",
    }
}

/// The whole answer to `event_id`: the final update, or the one non-updatable send.
pub fn final_text(commands: &[Command], event_id: &str) -> Option<String> {
    let last = format!("{event_id}:final");
    let reply = format!("{event_id}:reply");
    commands.iter().find_map(|c| match &c.op {
        Operation::Update(u) if c.id == last => Some(text_of(&u.message).to_owned()),
        Operation::Send(s) if c.id == reply && !s.updatable => Some(text_of(&s.message).to_owned()),
        _ => None,
    })
}

/// The commands that belong to `event_id`.
pub fn of_event<'a>(commands: &'a [Command], event_id: &str) -> Vec<&'a Command> {
    let prefix = format!("{event_id}:");
    commands
        .iter()
        .filter(|c| c.id.starts_with(&prefix))
        .collect()
}

/// A robot message event.
pub fn message(
    integration: &str,
    msg_id: &str,
    conversation: (&str, &str),
    staff_id: &str,
    text: &str,
    mentions_bot: bool,
) -> Value {
    let (conversation_id, kind) = conversation;
    let mut conv = json!({"id": conversation_id, "type": kind});
    if kind == "group" {
        conv["title"] = json!("ops");
    }
    json!({
        "v": 1, "id": format!("{integration}:{msg_id}"), "integration_id": integration,
        "kind": "message", "received_at": "2026-11-25T10:00:00Z",
        "conversation": conv,
        "sender": {"id": format!("$:LWCP_v1:${staff_id}"), "staff_id": staff_id, "nick": "Li"},
        "message": {"id": msg_id, "type": "text", "text": text, "mentions_bot": mentions_bot},
        "reply": {"session_webhook": "https://oapi.example/robot/sendBySession?session=s1", "expires_at": "2099-01-01T00:00:00Z"}
    })
}

/// A private message from `staff_id`.
pub fn private(integration: &str, msg_id: &str, staff_id: &str, text: &str) -> Value {
    message(
        integration,
        msg_id,
        (&format!("cid-{staff_id}"), "private"),
        staff_id,
        text,
        false,
    )
}
