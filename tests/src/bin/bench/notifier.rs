//! `bench notifier`: the notifier against the simulator, as separate release processes.
//!
//! Four measurements, each over its own nats-server, redis-server and `dingtalk-sim`:
//!
//! 1. **Burst under the limit**: the simulator allows `--qps` calls per (app, API) per wall-clock
//!    second; `--replicas` notifier processes share one durable consumer; `--commands` 1:1 text
//!    sends across `--integrations` integrations (one app each) are published at once, one
//!    integration's block after the other (the order least kind to fairness). Measured: the
//!    rate each app achieved (calls per whole second of its run, against the limit), what the
//!    simulator refused, every command's deliveries in the simulator's record (lost, duplicated)
//!    and its results in `DINGTALK_RESULTS`, and when each integration's last result came.
//! 2. **Throughput with the limit lifted**: the same commands, interleaved, against a simulator
//!    and integrations with a far higher limit, with 1 and with 3 replicas: commands/s.
//! 3. **Redis round trips per command**: one replica (concurrency 1) behind a counting proxy,
//!    commands sent one at a time: requests written to Redis per command (a pipeline is one),
//!    Redis commands per command by name, and `INFO commandstats` deltas (these include the
//!    commands Lua scripts run inside Redis).

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use common::bus::result::{CommandResult, Status};
use common::bus::MSG_ID_HEADER;
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use futures::StreamExt;
use serde_json::{json, Value};
use test_harness::{NatsServer, RedisServer};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{free_addr, wait_for};

/// The seeded simulator users commands are sent to, in turn.
const USERS: [&str; 4] = ["user001", "user002", "user003", "user004"];
/// How long a phase may take before the bench gives up waiting for results.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// The bench's knobs.
pub struct Options {
    pub commands: usize,
    pub integrations: usize,
    pub qps: u32,
    pub replicas: usize,
    pub concurrency: usize,
    pub lifted_commands: usize,
    pub sequential: usize,
    /// `NOTIFIER_LIMITER_MARGIN` for the notifiers, when not their default.
    pub limiter_margin: Option<String>,
}

pub async fn run(options: Options) {
    let bin = std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("target dir")
        .to_owned();
    println!(
        "Loopback, {} cores; release `notifier` and `dingtalk-sim` processes; NOTIFIER_LIMITER_MARGIN {}; load average at start: {}.\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        options.limiter_margin.as_deref().unwrap_or("default"),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    burst(&bin, &options).await;
    for replicas in [1, 3] {
        lifted(&bin, &options, replicas).await;
    }
    round_trips(&bin, &options).await;
}

/// NATS, Redis, a simulator and registered integrations: what every phase starts from.
struct Setup {
    nats: NatsServer,
    redis: RedisServer,
    _sim: Child,
    sim_url: String,
    registry: Registry,
    js: jetstream::Context,
    integrations: Vec<String>,
    http: reqwest::Client,
    limiter_margin: Option<String>,
}

impl Setup {
    async fn start(
        bin: &std::path::Path,
        options: &Options,
        integrations: usize,
        sim_qps: u32,
        qps: u32,
    ) -> Self {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let ids: Vec<String> = (0..integrations).map(|i| format!("bench-{i:02}")).collect();
        let apps: Vec<String> = ids
            .iter()
            .map(|id| format!("ding{}:secret-{id}", id.replace('-', "")))
            .collect();
        let sim_addr = free_addr();
        let sim = Command::new(bin.join("dingtalk-sim"))
            .env("SIM_ADDR", &sim_addr)
            .env("SIM_APPS", apps.join(","))
            .env("SIM_QPS_LIMIT", sim_qps.to_string())
            .env("SIM_MAX_CALLS", "1000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("target/release/dingtalk-sim: run `cargo build --release -p notifier -p dingtalk-sim -p gateway-tests` first");
        wait_for(&sim_addr).await;
        let registry = Registry::connect(
            &redis.url(),
            RegistryOptions::new(SecretsKeys::unencrypted()),
        )
        .await
        .expect("registry");
        for id in &ids {
            let spec: IntegrationSpec = serde_json::from_value(json!({
                "id": id, "client_id": format!("ding{}", id.replace('-', "")),
                "client_secret": format!("secret-{id}"), "qps_limit": qps,
                "callback_token": "token", "callback_aes_key": "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij"
            }))
            .expect("spec");
            registry.put_integration(spec).await.expect("integration");
        }
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
        Self {
            nats,
            redis,
            _sim: sim,
            sim_url: format!("http://{sim_addr}"),
            registry,
            js,
            integrations: ids,
            http: reqwest::Client::new(),
            limiter_margin: options.limiter_margin.clone(),
        }
    }

    /// Starts one notifier process; `redis_url` lets the round-trip phase put its proxy between.
    async fn notifier(&self, bin: &std::path::Path, concurrency: usize, redis_url: &str) -> Child {
        let metrics = free_addr();
        let mut command = Command::new(bin.join("notifier"));
        if let Some(margin) = &self.limiter_margin {
            command.env("NOTIFIER_LIMITER_MARGIN", margin);
        }
        let child = command
            .env("NATS_URL", self.nats.url())
            .env("REDIS_URL", redis_url)
            .env("DINGTALK_API_URL", &self.sim_url)
            .env("DINGTALK_OAPI_URL", &self.sim_url)
            .env("METRICS_ADDR", &metrics)
            .env("NOTIFIER_CONCURRENCY", concurrency.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("target/release/notifier: run `cargo build --release -p notifier -p dingtalk-sim -p gateway-tests` first");
        wait_for(&metrics).await;
        // The ops listener comes up first; readiness means NATS and Redis answered.
        for _ in 0..100 {
            if let Ok(answer) = self
                .http
                .get(format!("http://{metrics}/readyz"))
                .send()
                .await
            {
                if answer.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child
    }

    /// Publishes `commands` at once: a thousand publishes are sent before their acks are
    /// awaited (JetStream contexts allow 5,000 acks in flight; more would wait forever).
    async fn publish_all(&self, commands: &[Value]) {
        for chunk in commands.chunks(1000) {
            self.publish_chunk(chunk).await;
        }
    }

    async fn publish_chunk(&self, commands: &[Value]) {
        let mut acks = Vec::with_capacity(commands.len());
        for command in commands {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID_HEADER, command["id"].as_str().expect("id"));
            let subject = format!(
                "dingtalk.commands.{}.send",
                command["integration_id"].as_str().expect("integration")
            );
            acks.push(
                self.js
                    .publish_with_headers(subject, headers, command.to_string().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("command stored");
        }
    }

    /// Sends one warm-up command per integration (tokens fetched, registry cached, connections
    /// open) and waits for their results, then forgets the simulator's record of them.
    async fn warm_up(&self, results: &Results) {
        let commands: Vec<Value> = self
            .integrations
            .iter()
            .map(|id| command(&format!("warm-{id}"), id, 0))
            .collect();
        self.publish_all(&commands).await;
        results.wait(commands.len(), PHASE_LIMIT).await;
        // Let the limiter windows of the warm-up calls pass.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.http
            .delete(format!("{}/_sim/calls", self.sim_url))
            .send()
            .await
            .expect("sim reachable");
        results.clear();
    }

    /// The simulator's record: accepted (`calls`) or refused (`rejected`) calls of `api`.
    async fn sim_calls(&self, list: &str, api: &str) -> Vec<Value> {
        let answer: Value = self
            .http
            .get(format!("{}/_sim/{list}?api={api}", self.sim_url))
            .send()
            .await
            .expect("sim reachable")
            .json()
            .await
            .expect("sim answers JSON");
        assert_eq!(answer["dropped"], 0, "the simulator dropped records");
        answer["calls"].as_array().cloned().unwrap_or_default()
    }
}

/// One 1:1 text send; its text names the command so the simulator's record can be matched.
fn command(id: &str, integration: &str, n: usize) -> Value {
    json!({"v": 1, "id": id, "integration_id": integration, "op": "send",
        "recipients": [{"type": "user_id", "id": USERS[n % USERS.len()]}],
        "message": {"type": "text", "text": format!("bench {id}")}})
}

/// Every result stored in `DINGTALK_RESULTS`, with the time JetStream stored it.
#[derive(Clone, Default)]
struct Results {
    seen: Arc<Mutex<Vec<(CommandResult, OffsetDateTime)>>>,
}

impl Results {
    async fn collect(js: &jetstream::Context) -> Self {
        let results = Self::default();
        let stream = js
            .get_stream("DINGTALK_RESULTS")
            .await
            .expect("results stream");
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let sink = Arc::clone(&results.seen);
        tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                let published = message
                    .info()
                    .map(|i| i.published)
                    .unwrap_or_else(|_| OffsetDateTime::now_utc());
                if let Ok(result) = CommandResult::from_slice(&message.payload) {
                    sink.lock().expect("lock").push((result, published));
                }
            }
        });
        results
    }

    fn len(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }

    fn take(&self) -> Vec<(CommandResult, OffsetDateTime)> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }

    async fn wait(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.len() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} results within {limit:?}",
                self.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Seconds from `from` to `to`.
fn secs(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64()
}

/// The command id a recorded batchSend carried in its text.
fn command_of(call: &Value) -> Option<String> {
    let param: Value = serde_json::from_str(call["body"]["msgParam"].as_str()?).ok()?;
    param["content"]
        .as_str()?
        .strip_prefix("bench ")
        .map(str::to_owned)
}

async fn burst(bin: &std::path::Path, options: &Options) {
    let setup = Setup::start(bin, options, options.integrations, options.qps, options.qps).await;
    let mut replicas = Vec::new();
    for _ in 0..options.replicas {
        replicas.push(
            setup
                .notifier(bin, options.concurrency, &setup.redis.url())
                .await,
        );
    }
    let results = Results::collect(&setup.js).await;
    setup.warm_up(&results).await;

    let per = options.commands / options.integrations;
    let commands: Vec<Value> = setup
        .integrations
        .iter()
        .flat_map(|id| (0..per).map(move |n| (id, n)))
        .map(|(id, n)| command(&format!("{id}-c{n:04}"), id, n))
        .collect();
    let total = commands.len();
    let started = OffsetDateTime::now_utc();
    setup.publish_all(&commands).await;
    let published = OffsetDateTime::now_utc();
    results.wait(total, PHASE_LIMIT).await;
    // Anything late (a second result, a second delivery) would show up meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = results.take();

    let accepted = setup.sim_calls("calls", "robot.batchSend").await;
    let refused = setup.sim_calls("rejected", "robot.batchSend").await;
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    let mut by_app: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for call in &accepted {
        if let Some(id) = command_of(call) {
            *deliveries.entry(id).or_default() += 1;
        }
        by_app
            .entry(call["app"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(call["atMs"].as_i64().unwrap_or_default());
    }
    let ids: Vec<&str> = commands
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    let lost = ids
        .iter()
        .filter(|id| !deliveries.contains_key(**id))
        .count();
    let duplicated = deliveries.values().filter(|n| **n > 1).count();
    let mut result_count: HashMap<&str, usize> = HashMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut finished: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
    for (result, at) in &seen {
        *result_count.entry(result.command_id.as_str()).or_default() += 1;
        *statuses
            .entry(format!("{:?}", result.status).to_lowercase())
            .or_default() += 1;
        let last = finished.entry(result.integration_id.clone()).or_insert(*at);
        *last = (*last).max(*at);
    }
    let without_result = ids
        .iter()
        .filter(|id| !result_count.contains_key(**id))
        .count();
    let several_results = result_count.values().filter(|n| **n > 1).count();
    let not_ok = seen.iter().filter(|(r, _)| r.status != Status::Ok).count();

    // The rate each app sustained once under way: its calls after the first `qps` (the first
    // second's allowance, which any client may spend at once), over the time from its
    // `qps`-th call to its last. A client sending exactly `qps` calls in every wall-clock
    // second scores 100%, whether it spreads them or sends each second's at once.
    let qps = f64::from(options.qps);
    let mut sustained = Vec::new();
    let mut peak_window = 0;
    let mut cadence = String::new();
    for (app, times) in by_app.iter_mut() {
        times.sort_unstable();
        for (i, t) in times.iter().enumerate() {
            let within = times[i..].iter().take_while(|u| **u < t + 1000).count();
            peak_window = peak_window.max(within);
        }
        let allowance = options.qps as usize;
        if times.len() > allowance {
            let span = (times[times.len() - 1] - times[allowance - 1]) as f64 / 1e3;
            if span > 0.0 {
                sustained.push((times.len() - allowance) as f64 / span);
            }
        }
        if cadence.is_empty() {
            cadence = format!(
                "{app}: every {}th call at {} s",
                options.qps,
                times
                    .iter()
                    .step_by(options.qps as usize)
                    .map(|t| format!("{:.2}", (t - times[0]) as f64 / 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mean_rate = sustained.iter().sum::<f64>() / sustained.len().max(1) as f64;
    let min_rate = sustained.iter().copied().fold(f64::MAX, f64::min);
    let makespan = secs(started, finished.values().copied().max().unwrap_or(started));
    let ideal = per as f64 / f64::from(options.qps);
    let finish: Vec<f64> = finished.values().map(|at| secs(started, *at)).collect();
    let (min_finish, max_finish) = finish
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), f| (lo.min(*f), hi.max(*f)));

    println!("### Burst: {total} sends, {} integrations × {per} (published one integration after the other), {} replicas × concurrency {}, simulator limit {} calls/s per (app, API)\n", options.integrations, options.replicas, options.concurrency, options.qps);
    println!("| measurement | result |\n|---|---|");
    println!(
        "| commands published (all acked by JetStream) | {total} in {:.2} s |",
        secs(started, published)
    );
    let burst_rates: Vec<f64> = finish.iter().map(|f| per as f64 / f).collect();
    let burst_mean = burst_rates.iter().sum::<f64>() / burst_rates.len().max(1) as f64;
    let burst_min = burst_rates.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "| **burst rate** per integration: its {per} sends / (first publish → its last result), mean (lowest) | {burst_mean:.2} ({burst_min:.2}) of {} allowed = **{:.1}%** ({:.1}%) |",
        options.qps,
        100.0 * burst_mean / qps,
        100.0 * burst_min / qps
    );
    println!(
        "| sustained rate per app: (calls − {}) / (last call − {}th call), mean (lowest) of {} apps | {mean_rate:.2} ({min_rate:.2}) of {} allowed = **{:.1}%** ({:.1}%) |",
        options.qps,
        options.qps,
        sustained.len(),
        options.qps,
        100.0 * mean_rate / qps,
        100.0 * min_rate / qps
    );
    println!("| most calls of one app within any 1000 ms (simulator's clock) | {peak_window} |");
    println!("| cadence of the first app | {cadence} |");
    println!(
        "| makespan: first publish → last result | {makespan:.2} s (one app alone needs ≥ {:.2} s for {per} calls at {}/s: {:.0}%) |",
        ideal - 1.0,
        options.qps,
        100.0 * (ideal - 1.0) / makespan
    );
    println!(
        "| batchSend calls accepted / refused by the simulator | {} / {} |",
        accepted.len(),
        refused.len()
    );
    println!("| commands lost (no delivery in the simulator's record) | **{lost}** |");
    println!("| commands delivered more than once | **{duplicated}** |");
    println!(
        "| results in DINGTALK_RESULTS: total / commands without one / with more than one | {} / {without_result} / {several_results} |",
        seen.len()
    );
    println!("| result statuses | {statuses:?} (not ok: {not_ok}) |");
    println!(
        "| per-integration finish (first publish → its last result), min / max | {min_finish:.2} s / {max_finish:.2} s, **max/min = {:.2}** |",
        max_finish / min_finish
    );
    println!(
        "| finish by integration, in publication order (s) | {} |\n",
        finish
            .iter()
            .map(|f| format!("{f:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(replicas);
    setup.registry.shutdown().await;
}

async fn lifted(bin: &std::path::Path, options: &Options, count: usize) {
    let setup = Setup::start(bin, options, options.integrations, 100_000, 10_000).await;
    let mut replicas = Vec::new();
    for _ in 0..count {
        replicas.push(
            setup
                .notifier(bin, options.concurrency, &setup.redis.url())
                .await,
        );
    }
    let results = Results::collect(&setup.js).await;
    setup.warm_up(&results).await;
    let commands: Vec<Value> = (0..options.lifted_commands)
        .map(|n| {
            let id = &setup.integrations[n % setup.integrations.len()];
            command(&format!("{id}-f{n:05}"), id, n)
        })
        .collect();
    let started = OffsetDateTime::now_utc();
    setup.publish_all(&commands).await;
    results.wait(commands.len(), PHASE_LIMIT).await;
    let seen = results.take();
    let last = seen.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let elapsed = secs(started, last);
    let accepted = setup.sim_calls("calls", "robot.batchSend").await;
    let not_ok = seen.iter().filter(|(r, _)| r.status != Status::Ok).count();
    println!(
        "| limit lifted, {count} replica(s) × concurrency {}: {} commands (interleaved over {} integrations) | {:.0} commands/s ({:.0} per replica); {} batchSend calls, {} results not ok; {:.2} s |",
        options.concurrency,
        commands.len(),
        options.integrations,
        commands.len() as f64 / elapsed,
        commands.len() as f64 / elapsed / count as f64,
        accepted.len(),
        not_ok,
        elapsed
    );
    drop(replicas);
    setup.registry.shutdown().await;
}

/// What the counting proxy saw, from notifier to Redis.
#[derive(Default)]
struct Counts {
    /// Reads that started at a command boundary: one per request written (a pipeline is one).
    requests: AtomicU64,
    /// Commands by name.
    commands: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn snapshot(&self) -> (u64, BTreeMap<String, u64>) {
        (
            self.requests.load(Ordering::Relaxed),
            self.commands.lock().expect("lock").clone(),
        )
    }
}

/// A TCP proxy in front of Redis that counts the requests and commands clients send (RESP
/// arrays of bulk strings, as the redis crate writes them).
async fn counting_proxy(upstream: String, counts: Arc<Counts>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let mut pending: Vec<u8> = Vec::new();
                let mut chunk = vec![0_u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    if pending.is_empty() {
                        counts.requests.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some((used, name)) = parse_command(&pending) {
                        *counts
                            .commands
                            .lock()
                            .expect("lock")
                            .entry(name.to_ascii_uppercase())
                            .or_default() += 1;
                        pending.drain(..used);
                    }
                }
            });
        }
    });
    addr
}

/// One complete RESP command at the start of `buffer`: its length and its name.
fn parse_command(buffer: &[u8]) -> Option<(usize, String)> {
    fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buffer.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buffer[at..end], end + 2))
    }
    let (header, mut at) = line(buffer, 0)?;
    let parts: usize = std::str::from_utf8(header.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut name = String::new();
    for part in 0..parts {
        let (length, next) = line(buffer, at)?;
        let length: usize = std::str::from_utf8(length.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let data = buffer.get(next..next + length)?;
        if part == 0 {
            name = String::from_utf8_lossy(data).into_owned();
        }
        at = next + length + 2;
        if buffer.len() < at {
            return None;
        }
    }
    Some((at, name))
}

/// `INFO commandstats` as calls by command name.
async fn commandstats(redis_url: &str) -> BTreeMap<String, u64> {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_ascii_uppercase(), calls))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(name, calls)| *calls > 0 && name != "INFO")
        .collect()
}

async fn round_trips(bin: &std::path::Path, options: &Options) {
    let setup = Setup::start(bin, options, 1, 100_000, 10_000).await;
    let counts = Arc::new(Counts::default());
    let upstream = setup
        .redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = counting_proxy(upstream, Arc::clone(&counts)).await;
    let _replica = setup.notifier(bin, 1, &format!("redis://{proxy}")).await;
    let results = Results::collect(&setup.js).await;
    setup.warm_up(&results).await;
    let id = setup.integrations[0].clone();
    let (requests_before, commands_before) = counts.snapshot();
    let stats_before = commandstats(&setup.redis.url()).await;
    let started = Instant::now();
    for n in 0..options.sequential {
        setup
            .publish_all(&[command(&format!("{id}-s{n:04}"), &id, n)])
            .await;
        results.wait(n + 1, Duration::from_secs(30)).await;
    }
    let elapsed = started.elapsed();
    let (requests_after, commands_after) = counts.snapshot();
    let stats = delta(&stats_before, &commandstats(&setup.redis.url()).await);
    let n = options.sequential as f64;
    let sent = delta(&commands_before, &commands_after);
    let per = |map: &BTreeMap<String, u64>| {
        map.iter()
            .map(|(name, calls)| format!("{name} {:.2}", *calls as f64 / n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\n### Redis per command: {} sends one at a time, 1 replica, concurrency 1 ({:.1} ms each)\n",
        options.sequential,
        elapsed.as_secs_f64() * 1e3 / n
    );
    println!("| measurement | per command |\n|---|---|");
    println!(
        "| round trips (requests written to Redis; a pipeline is one) | **{:.2}** |",
        (requests_after - requests_before) as f64 / n
    );
    println!(
        "| commands sent, by name | {:.2}: {} |",
        sent.values().sum::<u64>() as f64 / n,
        per(&sent)
    );
    println!(
        "| commands Redis executed (`INFO commandstats`, Lua scripts' inner commands included) | {:.2}: {} |",
        stats.values().sum::<u64>() as f64 / n,
        per(&stats)
    );
    setup.registry.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::parse_command;

    #[test]
    fn resp_commands_are_counted_only_when_complete() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n";
        assert_eq!(parse_command(set), Some((set.len(), "SET".to_owned())));
        assert_eq!(parse_command(&set[..set.len() - 1]), None);
        let mut two = set.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(parse_command(&two).map(|(n, _)| n), Some(set.len()));
    }
}
