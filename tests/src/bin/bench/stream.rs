//! `bench stream`: the ingress's Stream connector against the simulator's Stream gateway.
//!
//! Each setup has its own nats-server and redis-server, the release `ingress` process and the
//! simulator in this (release) process, so that frames are pushed without an HTTP hop and the
//! simulator's clock measures each frame from its push to the socket ack (the ingress acks only
//! after JetStream's ack). Three measurements:
//!
//! 1. **One connection** (`STREAM_CONNECTIONS_PER_APP=1`, one integration): the time from a
//!    SYSTEM `disconnect` to the first frame acked on the replacement connection (frames pushed
//!    every 2 ms meanwhile), `--disconnects` times; then a closed loop keeping `--window` frames
//!    pending for `--duration` (maximum rate), then an open loop at half that rate (latency).
//! 2. **`--integrations` integrations** with the default two connections each: the ingress's
//!    RSS before any integration and with every connection held; then the same two loops, the
//!    frames spread round-robin over the apps, with four times the window.
//!
//! Every loop also checks its frames: each pushed frame settled, and JetStream holding exactly
//! one event per frame (no loss, no duplicate).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::bus::streams::EVENTS;
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use dingtalk_sim::{
    AppCredentials, ConnectionControl, RunningSim, SimConfig, Simulator, StreamPush, StreamSettings,
};
use serde_json::json;
use test_harness::{NatsServer, RedisServer};
use tokio::process::{Child, Command};

use super::{free_addr, rss_kib, wait_for};

/// How long a setup may take to open its connections, or a loop to drain.
const LIMIT: Duration = Duration::from_secs(120);

/// The bench's knobs.
pub struct Options {
    pub duration: Duration,
    pub integrations: usize,
    pub window: usize,
    pub disconnects: usize,
}

pub async fn run(options: Options) {
    let bin = std::env::current_exe()
        .expect("current exe")
        .parent()
        .expect("target dir")
        .to_owned();
    println!(
        "Loopback, {} cores; release `ingress` process, simulator in the (release) bench process; load average at start: {}.\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("| setup | closed loop: frames/s | p50 / p99 at max | open loop: frames/s | p50 / p99 at half rate | frames | lost / duplicated |");
    println!("|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();

    let mut one = Setup::start(&bin, 1, 1).await;
    one.wait_connections(1).await;
    let mut switches = Vec::new();
    for _ in 0..options.disconnects {
        switches.push(one.disconnect_switch().await);
    }
    one.loops(
        &format!("1 integration, 1 connection, window {}", options.window),
        options.duration,
        options.window,
    )
    .await;
    one.stop().await;
    switches.sort();
    if !switches.is_empty() {
        notes.push(format!(
            "`disconnect` → first frame acked on the replacement ({} switches, 1 connection): min {:.1} ms, median {:.1} ms, max {:.1} ms; frames lost during the switches: 0 (checked)",
            switches.len(),
            ms(switches[0]),
            ms(switches[switches.len() / 2]),
            ms(switches[switches.len() - 1]),
        ));
    }

    let mut many = Setup::start(&bin, options.integrations, 2).await;
    // Idle: the ingress is up (its listener answers) with no Stream integration yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(many.pid(), "VmRSS:");
    many.register().await;
    let opening = Instant::now();
    many.wait_connections(options.integrations * 2).await;
    let opened_in = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = rss_kib(many.pid(), "VmRSS:");
    let connections = options.integrations * 2;
    notes.push(format!(
        "{} integrations × 2 connections ({connections}) opened in {:.1} s (`STREAM_OPEN_RATE=1000`); ingress RSS idle {:.1} MiB, holding them {:.1} MiB: {:.1} KiB per connection",
        options.integrations,
        opened_in.as_secs_f64(),
        idle as f64 / 1024.0,
        held as f64 / 1024.0,
        held.saturating_sub(idle) as f64 / connections as f64,
    ));
    many.loops(
        &format!(
            "{} integrations, {connections} connections, window {}",
            options.integrations,
            options.window * 4
        ),
        options.duration,
        options.window * 4,
    )
    .await;
    notes.push(format!(
        "ingress peak RSS (VmHWM) with {connections} connections under load: {:.1} MiB",
        rss_kib(many.pid(), "VmHWM:") as f64 / 1024.0
    ));
    many.stop().await;
    println!();
    for note in notes {
        println!("- {note}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Setup {
    _nats: NatsServer,
    _redis: RedisServer,
    sim: Option<RunningSim>,
    ingress: Child,
    registry: Registry,
    js: jetstream::Context,
    apps: Vec<String>,
    next: u64,
}

struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    frames: usize,
    lost: usize,
    duplicated: usize,
}

impl Setup {
    /// NATS, Redis, the simulator with `integrations` apps and an ingress holding
    /// `per_app` connections per Stream integration; the integrations are registered at once
    /// when there is one, later ([`Self::register`]) otherwise.
    async fn start(bin: &std::path::Path, integrations: usize, per_app: usize) -> Self {
        let nats = NatsServer::start().await;
        let redis = RedisServer::start().await;
        let apps: Vec<String> = (0..integrations)
            .map(|i| format!("dingstreambench{i:03}"))
            .collect();
        let mut config = SimConfig::local();
        for app in &apps {
            config = config.with_app(AppCredentials::new(app, format!("secret-{app}")));
        }
        config.stream = StreamSettings {
            max_recorded: 5_000_000,
            ..StreamSettings::default()
        };
        let sim = Simulator::start(config).await.expect("simulator");
        let registry = Registry::connect(
            &redis.url(),
            RegistryOptions::new(SecretsKeys::unencrypted()),
        )
        .await
        .expect("registry");
        let ingress_addr = free_addr();
        let ingress = Command::new(bin.join("ingress"))
            .env("NATS_URL", nats.url())
            .env("REDIS_URL", redis.url())
            .env("INGRESS_ADDR", &ingress_addr)
            .env("ADMIN_ADDR", free_addr())
            .env("METRICS_ADDR", free_addr())
            .env("DINGTALK_API_URL", sim.base_url())
            .env("STREAM_CONNECTIONS_PER_APP", per_app.to_string())
            .env("STREAM_OPEN_RATE", "1000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("target/release/ingress: run `cargo build --release -p ingress -p dingtalk-sim -p gateway-tests` first");
        wait_for(&ingress_addr).await;
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
        let setup = Self {
            _nats: nats,
            _redis: redis,
            sim: Some(sim),
            ingress,
            registry,
            js,
            apps,
            next: 0,
        };
        if integrations == 1 {
            setup.register().await;
        }
        setup
    }

    fn sim(&self) -> &RunningSim {
        self.sim.as_ref().expect("running")
    }

    fn pid(&self) -> u32 {
        self.ingress.id().unwrap_or_default()
    }

    async fn register(&self) {
        for app in &self.apps {
            let spec: IntegrationSpec = serde_json::from_value(json!({
                "id": app, "client_id": app, "client_secret": format!("secret-{app}"),
                "connection_mode": "stream", "callback_token": "token",
                "callback_aes_key": "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij"
            }))
            .expect("spec");
            self.registry
                .put_integration(spec)
                .await
                .expect("integration");
        }
    }

    async fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let open = self
                .sim()
                .state()
                .stream_connections()
                .iter()
                .filter(|c| !c.disconnecting)
                .count();
            if open >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {open} of {n} stream connections opened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pushes one robot message (unique `msgId`) to app `app`.
    fn push(&mut self, app: usize) -> String {
        self.next += 1;
        let app_key = self.apps[app % self.apps.len()].clone();
        let data = json!({"msgId": format!("streambench{}", self.next), "msgtype": "text",
            "text": {"content": " hello bench "}, "conversationId": "cidBENCH==",
            "conversationType": "1", "senderId": "$:LWCP_v1:$sender", "senderStaffId": "user1",
            "senderNick": "Bench", "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": app_key,
            "isInAtList": true, "createAt": 1_700_000_000_000_i64,
            "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s",
            "sessionWebhookExpiredTime": 1_700_005_400_000_i64});
        self.sim()
            .state()
            .stream_push(StreamPush::RobotMessage { app_key, data })
            .expect("push")
    }

    async fn drain(&self) {
        let deadline = Instant::now() + LIMIT;
        while self.sim().state().stream_pending() > 0 {
            assert!(Instant::now() < deadline, "frames still pending");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One SYSTEM `disconnect` of the only connection: the time from it to the first frame
    /// acked on the replacement, frames being pushed every 2 ms from the disconnect on.
    async fn disconnect_switch(&mut self) -> Duration {
        let old = self
            .sim()
            .state()
            .stream_connections()
            .into_iter()
            .find(|c| !c.disconnecting)
            .expect("a connection")
            .id;
        let acks_before = self.sim().state().stream_acks().len();
        let mut pushed: HashMap<String, Instant> = HashMap::new();
        let started = Instant::now();
        assert!(self
            .sim()
            .state()
            .stream_control(&old, ConnectionControl::Disconnect));
        let deadline = started + LIMIT;
        let switched = loop {
            let origin = self.push(0);
            pushed.insert(origin, Instant::now());
            let acks = self.sim().state().stream_acks();
            let first_new = acks[acks_before..].iter().find(|a| {
                a.settled
                    && a.connection_id != old
                    && a.origin.is_some()
                    && a.since_push_us.is_some()
            });
            if let Some(ack) = first_new {
                let at = pushed[ack.origin.as_deref().expect("checked")]
                    + Duration::from_micros(ack.since_push_us.expect("checked"));
                break at - started;
            }
            assert!(Instant::now() < deadline, "no frame on a replacement");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        self.drain().await;
        let settled: std::collections::HashSet<String> = self.sim().state().stream_acks()
            [acks_before..]
            .iter()
            .filter(|a| a.settled)
            .filter_map(|a| a.origin.clone())
            .collect();
        assert_eq!(
            settled.len(),
            pushed.len(),
            "a frame pushed during the switch was not settled"
        );
        // The old connection closes (the ingress closes it once the replacement is up).
        let deadline = Instant::now() + LIMIT;
        while self
            .sim()
            .state()
            .stream_connections()
            .iter()
            .any(|c| c.id == old)
        {
            assert!(Instant::now() < deadline, "the old connection stays open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        switched
    }

    /// The closed loop (at most `window` frames pending) for `duration`, then an open loop at
    /// half its rate; one table row.
    async fn loops(&mut self, name: &str, duration: Duration, window: usize) {
        // Warm-up.
        self.closed(Duration::from_secs(1), window).await;
        let max = self.closed(duration, window).await;
        let half = self.open(duration, max.rate / 2.0).await;
        println!(
            "| {name} | {:.0} | {:.2} / {:.2} ms | {:.0} | {:.2} / {:.2} ms | {} | {} / {} |",
            max.rate,
            ms(max.p50),
            ms(max.p99),
            half.rate,
            ms(half.p50),
            ms(half.p99),
            max.frames + half.frames,
            max.lost + half.lost,
            max.duplicated + half.duplicated,
        );
    }

    /// Messages in the events stream.
    async fn events(&self) -> u64 {
        let mut stream = self.js.get_stream(EVENTS).await.expect("events stream");
        stream.info().await.expect("stream info").state.messages
    }

    async fn closed(&mut self, duration: Duration, window: usize) -> Run {
        let acks_before = self.sim().state().stream_acks().len();
        let events_before = self.events().await;
        let started = Instant::now();
        let mut pushed = 0usize;
        let mut app = 0usize;
        while started.elapsed() < duration {
            let free = window.saturating_sub(self.sim().state().stream_pending());
            for _ in 0..free {
                self.push(app);
                app += 1;
                pushed += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.drain().await;
        let elapsed = started.elapsed();
        self.tally(acks_before, events_before, pushed, elapsed)
            .await
    }

    async fn open(&mut self, duration: Duration, rate: f64) -> Run {
        let acks_before = self.sim().state().stream_acks().len();
        let events_before = self.events().await;
        let started = tokio::time::Instant::now();
        let total = (duration.as_secs_f64() * rate) as usize;
        let mut app = 0usize;
        let mut i = 0usize;
        while i < total {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due).await;
            // Every frame already due goes now (timers tick by the millisecond).
            while i < total
                && started + Duration::from_secs_f64(i as f64 / rate) <= tokio::time::Instant::now()
            {
                self.push(app);
                app += 1;
                i += 1;
            }
        }
        self.drain().await;
        let elapsed = started.elapsed();
        self.tally(acks_before, events_before, total, elapsed).await
    }

    /// Settled acks since `acks_before`: rate, latency from push, and every frame's fate.
    async fn tally(
        &self,
        acks_before: usize,
        events_before: u64,
        pushed: usize,
        elapsed: Duration,
    ) -> Run {
        let acks = self.sim().state().stream_acks();
        let mut latencies: Vec<u64> = Vec::new();
        let mut origins = std::collections::HashSet::new();
        for ack in &acks[acks_before..] {
            if let (true, Some(origin), Some(us)) = (ack.settled, &ack.origin, ack.since_push_us) {
                origins.insert(origin.clone());
                latencies.push(us);
            }
        }
        latencies.sort_unstable();
        let pick = |q: f64| {
            Duration::from_micros(
                latencies
                    .get(
                        ((latencies.len() as f64 * q) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .copied()
                    .unwrap_or_default(),
            )
        };
        // JetStream may take a moment to count the last publishes.
        let events = self.events().await - events_before;
        Run {
            rate: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
            frames: pushed,
            // Not settled, or settled without reaching the bus.
            lost: pushed.saturating_sub(
                origins
                    .len()
                    .min(usize::try_from(events).unwrap_or(usize::MAX)),
            ),
            duplicated: usize::try_from(events)
                .unwrap_or(usize::MAX)
                .saturating_sub(pushed),
        }
    }

    async fn stop(mut self) {
        let _ = self.ingress.start_kill();
        let _ = self.ingress.wait().await;
        if let Some(sim) = self.sim.take() {
            sim.stop().await;
        }
        self.registry.shutdown().await;
    }
}
