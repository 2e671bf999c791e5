//! Dispatcher benchmark: overhead and throughput over a real nats-server, redis-server and the
//! fake expert, with replicas started in-process exactly as the binary starts them.
//!
//! `cargo bench -p dispatcher --bench dispatch` (add `--profile dev` for a quick run). Prints a
//! Markdown table for `BENCHMARKS-dispatcher.md`. Everything runs on 127.0.0.1 and stops by
//! itself; every loop is bounded in count and time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use common::bus::command::Command;
use common::bus::streams;
use common::config::{Env, StreamSettings};
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use common::shutdown::Shutdown;
use fake_expert::{Behavior, FakeExpert};
use futures::StreamExt;
use serde_json::json;
use test_harness::{NatsServer, RedisServer};

/// The first command seen per event id, with when.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

struct World {
    _nats: NatsServer,
    _redis: RedisServer,
    nats_url: String,
    redis_url: String,
    expert: FakeExpert,
    js: jetstream::Context,
    seen: Seen,
}

async fn world() -> World {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let expert = FakeExpert::start().await;
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = jetstream::new(client.clone());
    streams::provision(&js, &StreamSettings::default())
        .await
        .expect("streams");
    let registry = Registry::connect(
        &redis.url(),
        RegistryOptions::new(SecretsKeys::unencrypted()),
    )
    .await
    .expect("registry");
    let spec: IntegrationSpec = serde_json::from_value(json!({
        "id": "bench", "client_id": "key", "client_secret": "s3cret-0123456789", "xpert_id": "x",
        "connection_mode": "stream"
    }))
    .expect("spec");
    registry.put_integration(spec).await.expect("integration");
    let seen: Seen = Arc::default();
    let mut commands = client
        .subscribe("dingtalk.commands.>")
        .await
        .expect("subscribe");
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some(message) = commands.next().await {
            let now = Instant::now();
            if let Ok(command) = Command::from_slice(&message.payload) {
                if let Some(event) = command.id.strip_suffix(":reply") {
                    record
                        .lock()
                        .expect("not poisoned")
                        .entry(event.to_owned())
                        .or_insert(now);
                }
            }
        }
    });
    World {
        nats_url: nats.url(),
        redis_url: redis.url(),
        _nats: nats,
        _redis: redis,
        expert,
        js,
        seen,
    }
}

impl World {
    async fn replica(&self, concurrency: usize) -> (dispatcher::Running, Shutdown) {
        let env = Env::from_pairs([
            ("NATS_URL", self.nats_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("EXPERT_API_URL", &self.expert.url()),
            ("THINKING_DELAY", "60s"),
            ("DISPATCHER_CONCURRENCY", &concurrency.to_string()),
        ]);
        let config = dispatcher::Config::from_env(&env).expect("config");
        let shutdown = Shutdown::new();
        let running = dispatcher::start(&config, &shutdown)
            .await
            .expect("dispatcher");
        (running, shutdown)
    }

    async fn publish(&self, n: usize, tag: &str) -> Instant {
        let event = json!({
            "v": 1, "id": format!("bench:{tag}-{n}"), "integration_id": "bench", "kind": "message",
            "received_at": "2026-11-25T10:00:00Z",
            "conversation": {"id": format!("cid-{tag}-{n}"), "type": "private"},
            "sender": {"id": format!("s{n}"), "staff_id": format!("u{n}"), "nick": "B"},
            "message": {"id": format!("{tag}-{n}"), "type": "text", "text": "ping", "mentions_bot": true}
        });
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("bench:{tag}-{n}").as_str());
        let sent = Instant::now();
        self.js
            .publish_with_headers(
                "dingtalk.events.bench.message",
                headers,
                event.to_string().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
        sent
    }

    fn first_command(&self, tag: &str, n: usize) -> Option<Instant> {
        self.seen
            .lock()
            .expect("not poisoned")
            .get(&format!("bench:{tag}-{n}"))
            .copied()
    }

    fn count(&self, tag: &str) -> usize {
        let prefix = format!("bench:{tag}-");
        self.seen
            .lock()
            .expect("not poisoned")
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .count()
    }

    /// Publishes `n` events as fast as possible; events/s until every first command is out.
    async fn throughput(&self, n: usize, tag: &str, limit: Duration) -> f64 {
        let start = Instant::now();
        for i in 0..n {
            self.publish(i, tag).await;
        }
        while self.count(tag) < n {
            assert!(
                start.elapsed() < limit,
                "only {} of {n} answered",
                self.count(tag)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n as f64 / start.elapsed().as_secs_f64()
    }
}

/// Sum and count of `dingtalk_gateway_dispatcher_first_command_seconds` so far.
fn internal_first_command() -> (f64, f64) {
    let text = common::telemetry::render_metrics();
    let value = |suffix: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "dingtalk_gateway_dispatcher_first_command_seconds{suffix}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("_sum"), value("_count"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let limit = Duration::from_secs(120);
    let mut rows = Vec::new();
    // The dispatcher's own histograms (event consumed → first command published).
    common::telemetry::metrics_handle();

    // 1. Overhead with an instant expert, one event at a time.
    {
        let world = world().await;
        world.expert.set_default(Behavior::not_streaming());
        let (_replica, _stop) = world.replica(16).await;
        let mut latencies = Vec::new();
        for i in 0..300 {
            let sent = world.publish(i, "latency").await;
            let deadline = Instant::now() + Duration::from_secs(10);
            let first = loop {
                if let Some(at) = world.first_command("latency", i) {
                    break at;
                }
                assert!(Instant::now() < deadline, "event {i} not answered");
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            if i >= 20 {
                latencies.push(first.duration_since(sent));
            }
        }
        latencies.sort();
        let (sum, count) = internal_first_command();
        rows.push(format!(
            "| event consumed → first command published (the dispatcher's own histogram), same run | mean {} over {count} events |",
            ms(Duration::from_secs_f64(sum / count.max(1.0)))
        ));
        rows.push(format!(
            "| publish → first command, instant expert, 1 replica (280 events, one at a time) | p50 {} · p99 {} |",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        ));
        let rate = world.throughput(2000, "flood", limit).await;
        rows.push(format!(
            "| events/s, instant expert, 1 replica, concurrency 16 (2000 events, distinct conversations) | {rate:.0} |"
        ));
    }

    // 2. Throughput with an instant expert, two replicas.
    {
        let world = world().await;
        world.expert.set_default(Behavior::not_streaming());
        let _a = world.replica(16).await;
        let _b = world.replica(16).await;
        let rate = world.throughput(2000, "flood2", limit).await;
        rows.push(format!(
            "| events/s, instant expert, 2 replicas, concurrency 16 each (2000 events) | {rate:.0} |"
        ));
    }

    // 3. A 200 ms expert: one replica against two.
    let slow = Behavior {
        delay: Duration::from_millis(200),
        ..Behavior::not_streaming()
    };
    for replicas in [1usize, 2] {
        let world = world().await;
        world.expert.set_default(slow.clone());
        let mut running = Vec::new();
        for _ in 0..replicas {
            running.push(world.replica(16).await);
        }
        let rate = world
            .throughput(400, &format!("slow{replicas}"), limit)
            .await;
        rows.push(format!(
            "| events/s, 200 ms expert, {replicas} replica(s), concurrency 16 each (400 events) | {rate:.0} |"
        ));
    }

    // 4. Ordering cost: 200 messages of one conversation, instant expert, two replicas.
    {
        let world = world().await;
        world.expert.set_default(Behavior::not_streaming());
        let _a = world.replica(16).await;
        let _b = world.replica(16).await;
        let start = Instant::now();
        for i in 0..200 {
            let event = json!({
                "v": 1, "id": format!("bench:one-{i}"), "integration_id": "bench", "kind": "message",
                "received_at": "2026-11-25T10:00:00Z",
                "conversation": {"id": "cid-one", "type": "private"},
                "sender": {"id": "s1", "staff_id": "u1", "nick": "B"},
                "message": {"id": format!("one-{i}"), "type": "text", "text": "ping", "mentions_bot": true}
            });
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("bench:one-{i}").as_str());
            world
                .js
                .publish_with_headers(
                    "dingtalk.events.bench.message",
                    headers,
                    event.to_string().into(),
                )
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        while world.count("one") < 200 {
            assert!(
                start.elapsed() < limit,
                "only {} of 200 answered",
                world.count("one")
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rate = 200.0 / start.elapsed().as_secs_f64();
        rows.push(format!(
            "| events/s within ONE conversation (serialized by design), instant expert, 2 replicas (200 events) | {rate:.0} |"
        ));
    }

    println!("| measurement | result |\n|---|---|");
    for row in rows {
        println!("{row}");
    }
}
