//! `bench`: load benchmarks of the gateway on loopback, bounded in time.
//!
//! ```text
//! cargo build --release -p ingress -p gateway-tests
//! target/release/bench ingress [--duration 10s] [--concurrency 64] [--only raw,robot,encrypted]
//!
//! cargo build --release -p notifier -p dingtalk-sim -p gateway-tests
//! target/release/bench notifier [--commands 1000] [--integrations 10] [--qps 20] [--replicas 3]
//!     [--concurrency 16] [--lifted-commands 8000] [--sequential 200] [--limiter-margin 40ms]
//!
//! cargo build --release -p ingress -p dingtalk-sim -p gateway-tests
//! target/release/bench stream [--duration 10s] [--integrations 200] [--window 64] [--disconnects 10]
//! ```
//!
//! `ingress` starts its own nats-server and redis-server, the release `ingress` binary and a
//! "raw" server (a bare axum handler that only publishes its body to JetStream and waits for the
//! ack: this machine's limit for an HTTP → JetStream hop), then drives each with the same closed
//! loop to find its maximum rate, and with an open loop at half that rate to measure latency.
//! Results go to stdout as a Markdown table for BENCHMARKS.md.
//!
//! `e2e` runs the whole stack (see [`e2e`]) at a fixed rate:
//!
//! ```text
//! cargo build --release -p gateway-tests -p ingress -p dispatcher -p notifier -p dingtalk-sim
//! target/release/bench e2e [--rate 50] [--duration 60s] [--dispatchers 1] [--notifiers 1]
//!     [--expert-delay 200ms] [--conversations 1000] [--dispatcher-concurrency N] [--notifier-concurrency N]
//!     [--settle 120s] [--out docs/bench] [--name e2e]
//! ```
//!
//! `notifier` starts its own nats-server, redis-server, release `dingtalk-sim` and release
//! `notifier` processes for each of its measurements (see [`notifier`]).
//!
//! `stream` starts its own nats-server, redis-server and release `ingress` process with the
//! simulator's Stream gateway in process (see [`stream`]).

#[path = "bench/e2e.rs"]
mod e2e;
#[path = "bench/notifier.rs"]
mod notifier;
#[path = "bench/stream.rs"]
mod stream;

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::crypto::{self, AesKey, CallbackCrypto};
use common::registry::{IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use serde_json::json;
use test_harness::{NatsServer, RedisServer};

const SECRET: &str = "bench-app-secret-0123456789";
const TOKEN: &str = "bench-token";
const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
const APP_KEY: &str = "dingbenchapp";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.get(1).map(String::as_str) {
        Some("raw-server") => {
            raw_server(
                &flag("--nats").expect("--nats"),
                &flag("--addr").expect("--addr"),
            )
            .await
        }
        Some("ingress") => {
            let duration = flag("--duration")
                .map(|d| humantime::parse_duration(&d).expect("--duration like 10s"))
                .unwrap_or(Duration::from_secs(10));
            let concurrency = flag("--concurrency")
                .map(|c| c.parse().expect("--concurrency N"))
                .unwrap_or(64);
            let only = flag("--only");
            ingress_bench(duration, concurrency, only.as_deref()).await;
        }
        Some("notifier") => {
            let number = |name: &str, default: usize| {
                flag(name)
                    .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
                    .unwrap_or(default)
            };
            notifier::run(notifier::Options {
                commands: number("--commands", 1000),
                integrations: number("--integrations", 10),
                qps: number("--qps", 20) as u32,
                replicas: number("--replicas", 3),
                concurrency: number("--concurrency", 16),
                lifted_commands: number("--lifted-commands", 8000),
                sequential: number("--sequential", 200),
                limiter_margin: flag("--limiter-margin"),
            })
            .await;
        }
        Some("stream") => {
            let number = |name: &str, default: usize| {
                flag(name)
                    .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
                    .unwrap_or(default)
            };
            stream::run(stream::Options {
                duration: flag("--duration")
                    .map(|d| humantime::parse_duration(&d).expect("--duration like 10s"))
                    .unwrap_or(Duration::from_secs(10)),
                integrations: number("--integrations", 200),
                window: number("--window", 64),
                disconnects: number("--disconnects", 10),
            })
            .await;
        }
        Some("e2e") => {
            let number = |name: &str, default: usize| {
                flag(name)
                    .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
                    .unwrap_or(default)
            };
            let duration = |name: &str, default: &str| {
                humantime::parse_duration(&flag(name).unwrap_or_else(|| default.to_owned()))
                    .unwrap_or_else(|_| panic!("{name} like 60s"))
            };
            let optional =
                |name: &str| flag(name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")));
            e2e::run(e2e::Options {
                rate: number("--rate", 50) as u32,
                duration: duration("--duration", "60s"),
                dispatchers: number("--dispatchers", 1),
                notifiers: number("--notifiers", 1),
                expert_delay: duration("--expert-delay", "200ms"),
                dispatcher_concurrency: optional("--dispatcher-concurrency"),
                notifier_concurrency: optional("--notifier-concurrency"),
                conversations: number("--conversations", 1000),
                settle: duration("--settle", "120s"),
                out: flag("--out")
                    .unwrap_or_else(|| "docs/bench".to_owned())
                    .into(),
                name: flag("--name").unwrap_or_else(|| "e2e".to_owned()),
            })
            .await;
        }
        _ => {
            eprintln!("usage: bench ingress [--duration 10s] [--concurrency 64] [--only raw,robot,encrypted]");
            eprintln!("       bench notifier [--commands 1000] [--integrations 10] [--qps 20] [--replicas 3] [--concurrency 16] [--lifted-commands 8000] [--sequential 200] [--limiter-margin 40ms]");
            eprintln!("       bench stream [--duration 10s] [--integrations 200] [--window 64] [--disconnects 10]");
            eprintln!("       bench e2e [--rate 50] [--duration 60s] [--dispatchers 1] [--notifiers 1] [--expert-delay 200ms] [--conversations 1000] [--dispatcher-concurrency N] [--notifier-concurrency N] [--settle 120s] [--out docs/bench] [--name e2e]");
            std::process::exit(2);
        }
    }
}

/// The baseline: HTTP in, one JetStream publish with ack, 200 out. Nothing else — except that
/// an `x-msg-id` request header becomes the message's `Nats-Msg-Id`, to show what JetStream's
/// de-duplication (which the ingress needs) costs by itself.
async fn raw_server(nats: &str, addr: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.expect("nats"));
    let app = axum::Router::new().route(
        "/raw",
        axum::routing::post(
            move |request: axum::http::HeaderMap, body: axum::body::Bytes| {
                let js = js.clone();
                async move {
                    let mut headers = async_nats::HeaderMap::new();
                    if let Some(id) = request.get("x-msg-id").and_then(|v| v.to_str().ok()) {
                        headers.insert(common::bus::MSG_ID_HEADER, id);
                    }
                    let subject = "dingtalk.events.raw.message";
                    match js.publish_with_headers(subject, headers, body).await {
                        Ok(ack) => match ack.await {
                            Ok(_) => axum::http::StatusCode::OK,
                            Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        },
                        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn wait_for(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never started listening");
}

/// What one request looks like: produced fresh for every call (unique ids, valid signatures).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw,
    RawDedupe,
    Robot,
    Encrypted,
}

impl Mode {
    fn key(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::RawDedupe => "raw-dedupe",
            Mode::Robot => "robot",
            Mode::Encrypted => "encrypted",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw (axum → JetStream, baseline)",
            Mode::RawDedupe => "raw + Nats-Msg-Id (de-duplication only)",
            Mode::Robot => "ingress, robot message (HMAC)",
            Mode::Encrypted => "ingress, encrypted event (SHA-1 + AES)",
        }
    }
}

struct Target {
    mode: Mode,
    url: String,
    cipher: CallbackCrypto,
    /// Index of the next request to send.
    counter: AtomicU64,
    /// Requests built ahead of time, taken in order.
    pool: std::sync::Mutex<Vec<Option<Prepared>>>,
}

fn robot_body(id: u64) -> serde_json::Value {
    json!({"msgId": format!("msg{id}"), "msgtype": "text", "text": {"content": " hello bench "},
        "conversationId": "cidBENCH==", "conversationType": "2", "conversationTitle": "bench",
        "senderId": "$:LWCP_v1:$sender", "senderStaffId": "user1", "senderNick": "Bench",
        "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": APP_KEY, "isInAtList": true,
        "createAt": 1_700_000_000_000_i64, "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s",
        "sessionWebhookExpiredTime": 1_700_005_400_000_i64})
}

/// One ready-to-send request: built before the timed loops so that the load generator spends the
/// same (tiny) CPU on every target, whatever signing or encryption its requests need.
struct Prepared {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Target {
    /// Builds request `id` (unique ids, signatures valid for the next hour).
    fn prepare(&self, id: u64) -> Prepared {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).to_string();
        match self.mode {
            Mode::Raw => Prepared {
                url: self.url.clone(),
                headers: Vec::new(),
                body: robot_body(id).to_string().into_bytes(),
            },
            Mode::RawDedupe => Prepared {
                url: self.url.clone(),
                headers: vec![("x-msg-id", format!("raw:{id}"))],
                body: robot_body(id).to_string().into_bytes(),
            },
            Mode::Robot => Prepared {
                url: self.url.clone(),
                headers: vec![
                    ("sign", crypto::robot_sign(SECRET, &now)),
                    ("timestamp", now),
                ],
                body: robot_body(id).to_string().into_bytes(),
            },
            Mode::Encrypted => {
                let event = json!({"EventType": "user_add_org", "EventId": format!("evt{id}"), "UserId": ["user1"], "CorpId": "dingcorp"});
                let encrypt = self.cipher.encrypt(&event.to_string());
                let signature = crypto::signature(TOKEN, &now, "benchnce", &encrypt);
                Prepared {
                    url: format!(
                        "{}?signature={signature}&timestamp={now}&nonce=benchnce",
                        self.url
                    ),
                    headers: Vec::new(),
                    body: json!({"encrypt": encrypt}).to_string().into_bytes(),
                }
            }
        }
    }

    /// Fills the pool with `count` requests.
    fn fill(&self, count: u64) {
        let mut pool = self.pool.lock().unwrap();
        let start = self.counter.load(Ordering::Relaxed) + pool.len() as u64;
        pool.extend((start..start + count).map(|id| Some(self.prepare(id))));
    }

    async fn call(&self, http: &reqwest::Client) -> Result<Duration, String> {
        let next = {
            let mut pool = self.pool.lock().unwrap();
            let index = self.counter.fetch_add(1, Ordering::Relaxed) as usize;
            pool.get_mut(index).and_then(Option::take)
        };
        let prepared = match next {
            Some(prepared) => prepared,
            None => self.prepare(self.counter.load(Ordering::Relaxed) + 1_000_000_000),
        };
        let mut request = http
            .post(&prepared.url)
            .header("content-type", "application/json")
            .body(prepared.body);
        for (name, value) in prepared.headers {
            request = request.header(name, value);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.bytes().await;
        if status.is_success() {
            Ok(started.elapsed())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

struct Outcome {
    ok: usize,
    failed: usize,
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn outcome(mut latencies: Vec<Duration>, failed: usize, elapsed: Duration) -> Outcome {
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        ok: latencies.len(),
        failed,
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// As fast as `concurrency` callers can go.
async fn closed_loop(
    target: Arc<Target>,
    http: reqwest::Client,
    duration: Duration,
    concurrency: usize,
) -> Outcome {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, http) = (target.clone(), http.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0);
                while started.elapsed() < duration {
                    match target.call(&http).await {
                        Ok(latency) => latencies.push(latency),
                        Err(_) => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for worker in workers {
        let (l, f) = worker.await.unwrap();
        latencies.extend(l);
        failed += f;
    }
    outcome(latencies, failed, started.elapsed())
}

/// A fixed arrival rate, whatever the answers' latency: request `i` is due at `start + i / rate`
/// and its latency counts from then, so a slow answer that delays the requests behind it is
/// charged to them too (no coordinated omission). `connections` callers share the schedule, each
/// on its own kept-alive connection, as a load balancer in front of the ingress would.
async fn open_loop(
    target: Arc<Target>,
    http: reqwest::Client,
    duration: Duration,
    rate: f64,
    connections: usize,
) -> Outcome {
    let started = tokio::time::Instant::now();
    let total = (duration.as_secs_f64() * rate) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..connections)
        .map(|_| {
            let (target, http, next) = (target.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut reasons) = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    match target.call(&http).await {
                        Ok(_) => latencies.push(due.elapsed()),
                        Err(reason) => reasons.push(reason),
                    }
                }
                (latencies, reasons)
            })
        })
        .collect();
    let (mut latencies, mut reasons) = (Vec::new(), std::collections::BTreeMap::new());
    for caller in callers {
        let (l, r) = caller.await.unwrap();
        latencies.extend(l);
        for reason in r {
            *reasons.entry(reason).or_insert(0usize) += 1;
        }
    }
    if !reasons.is_empty() {
        eprintln!("open loop failures: {reasons:?}");
    }
    let failed = reasons.values().sum();
    outcome(latencies, failed, started.elapsed())
}

/// CPU time (user + system) a process has used so far, from `/proc/{pid}/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at index 2 of the rest.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A memory figure of `/proc/{pid}/status` (`VmRSS:` now, `VmHWM:` peak), in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `only`: a comma-separated subset of `raw`, `robot`, `encrypted` (for profiling one target).
async fn ingress_bench(duration: Duration, concurrency: usize, only: Option<&str>) {
    let release_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let registry = Registry::connect(
        &redis.url(),
        RegistryOptions::new(SecretsKeys::unencrypted()),
    )
    .await
    .unwrap();
    let spec: IntegrationSpec = serde_json::from_value(json!({"id": "bench", "client_id": APP_KEY,
        "client_secret": SECRET, "callback_token": TOKEN, "callback_aes_key": AES_KEY}))
    .unwrap();
    registry.put_integration(spec).await.unwrap();

    let ingress_addr = free_addr();
    let mut ingress = tokio::process::Command::new(release_dir.join("ingress"))
        .env("NATS_URL", nats.url())
        .env("REDIS_URL", redis.url())
        .env("INGRESS_ADDR", &ingress_addr)
        .env("ADMIN_ADDR", free_addr())
        .env("METRICS_ADDR", free_addr())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "target/release/ingress: run `cargo build --release -p ingress -p gateway-tests` first",
        );
    let raw_addr = free_addr();
    let raw = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["raw-server", "--nats", &nats.url(), "--addr", &raw_addr])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for(&ingress_addr).await;
    wait_for(&raw_addr).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 4)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let cipher = || CallbackCrypto::new(TOKEN, AesKey::parse(AES_KEY).unwrap(), APP_KEY);
    let targets = [
        (Mode::Raw, format!("http://{raw_addr}/raw")),
        (Mode::RawDedupe, format!("http://{raw_addr}/raw")),
        (
            Mode::Robot,
            format!("http://{ingress_addr}/api/dingtalk/webhook/bench"),
        ),
        (
            Mode::Encrypted,
            format!("http://{ingress_addr}/api/dingtalk/webhook/bench"),
        ),
    ];
    println!("Loopback, {} cores, closed loop with {concurrency} callers for {duration:?}, then an open loop at half the closed-loop rate for {duration:?}.\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("| target | max rate (req/s) | % of raw | CPU per request: server / nats-server / load generator | p50 / p99 at max | open loop rate | p50 / p99 at half rate | failed |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut raw_rate = 0.0;
    for (mode, url) in targets {
        if only.is_some_and(|only| !only.split(',').any(|m| m == mode.key())) {
            continue;
        }
        let target = Arc::new(Target {
            mode,
            url,
            cipher: cipher(),
            counter: AtomicU64::new(0),
            pool: std::sync::Mutex::new(Vec::new()),
        });
        // Enough for the warm-up, the closed loop at up to 20k/s and the open loop at half of it.
        target.fill((duration.as_secs_f64() * 30_000.0 + 20_000.0) as u64);
        // Warm-up: connections and caches.
        let _ = closed_loop(
            target.clone(),
            http.clone(),
            Duration::from_secs(1),
            concurrency,
        )
        .await;
        let server = if matches!(mode, Mode::Raw | Mode::RawDedupe) {
            raw.id().unwrap_or_default()
        } else {
            ingress.id().unwrap_or_default()
        };
        let nats_pid = nats.pid().unwrap_or_default();
        let me = std::process::id();
        let (cpu_before, nats_before, me_before) =
            (cpu_time(server), cpu_time(nats_pid), cpu_time(me));
        let max = closed_loop(target.clone(), http.clone(), duration, concurrency).await;
        let per_request = |d: Duration| d.as_secs_f64() * 1e6 / max.ok.max(1) as f64;
        let cpu_per_request = per_request(cpu_time(server) - cpu_before);
        let nats_per_request = per_request(cpu_time(nats_pid) - nats_before);
        let generator_per_request = per_request(cpu_time(me) - me_before);
        if mode == Mode::Raw {
            raw_rate = max.rate;
        }
        let rss_after_max = rss_kib(ingress.id().unwrap_or_default(), "VmRSS:");
        let half = open_loop(
            target.clone(),
            http.clone(),
            duration,
            max.rate / 2.0,
            concurrency * 4,
        )
        .await;
        println!(
            "| {} | {:.0} | {} | {:.1} / {:.1} / {:.1} µs | {:.2} / {:.2} ms | {:.0} | {:.2} / {:.2} ms | {} |",
            mode.name(),
            max.rate,
            if raw_rate > 0.0 {
                format!("{:.0}%", 100.0 * max.rate / raw_rate)
            } else {
                "–".to_owned()
            },
            cpu_per_request,
            nats_per_request,
            generator_per_request,
            max.p50.as_secs_f64() * 1e3,
            max.p99.as_secs_f64() * 1e3,
            half.rate,
            half.p50.as_secs_f64() * 1e3,
            half.p99.as_secs_f64() * 1e3,
            max.failed + half.failed,
        );
        let _ = (max.ok, half.ok);
        if !matches!(mode, Mode::Raw | Mode::RawDedupe) {
            println!(
                "|   ingress RSS after the closed loop: {:.1} MiB | | | | | | | |",
                rss_after_max as f64 / 1024.0
            );
        }
    }
    let pid = ingress.id().unwrap_or_default();
    println!(
        "\ningress peak RSS (VmHWM): {:.1} MiB",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    let _ = ingress.start_kill();
    registry.shutdown().await;
}
