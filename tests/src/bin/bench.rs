//! `bench`: load benchmarks of the gateway on loopback, bounded in time.
//!
//! ```text
//! cargo build --release -p ingress -p gateway-tests
//! target/release/bench ingress [--duration 8s] [--concurrency 32] [--rounds 3] [--slices 8]
//!     [--only raw,raw-dedupe,raw-event,robot,encrypted] [--instructions N] [--slow 10ms] [--nats-cpu N]
//!
//! cargo build --release -p notifier -p dingtalk-sim -p gateway-tests
//! target/release/bench notifier [--commands 1000] [--integrations 10] [--qps 20] [--replicas 3]
//!     [--concurrency 16] [--lifted-commands 8000] [--sequential 200] [--limiter-margin 40ms]
//!
//! cargo build --release -p ingress -p dingtalk-sim -p gateway-tests
//! target/release/bench stream [--duration 10s] [--integrations 200] [--window 64] [--disconnects 10]
//! ```
//!
//! `ingress` measures the release `ingress` binary against a "raw" server (a bare axum handler
//! that only publishes its body to JetStream: this machine's limit for an HTTP → JetStream hop),
//! each with a fresh nats-server, in rounds (see [`ingress`]). Results go to stdout as Markdown
//! tables for BENCHMARKS.md.
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
#[path = "bench/ingress.rs"]
mod ingress;
#[path = "bench/notifier.rs"]
mod notifier;
#[path = "bench/stream.rs"]
mod stream;

use std::time::Duration;

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
            ingress::raw_server(
                &flag("--nats").expect("--nats"),
                &flag("--addr").expect("--addr"),
            )
            .await
        }
        Some("ingress") => {
            ingress::run(ingress::Options {
                duration: flag("--duration")
                    .map(|d| humantime::parse_duration(&d).expect("--duration like 10s"))
                    .unwrap_or(Duration::from_secs(8)),
                concurrency: flag("--concurrency")
                    .map(|c| c.parse().expect("--concurrency N"))
                    .unwrap_or(32),
                only: flag("--only"),
                rounds: flag("--rounds")
                    .map(|c| c.parse().expect("--rounds N"))
                    .unwrap_or(3),
                instructions: flag("--instructions").map(|n| n.parse().expect("--instructions N")),
                slices: flag("--slices")
                    .map(|c| c.parse().expect("--slices N"))
                    .unwrap_or(8),
                slow: flag("--slow")
                    .map(|d| humantime::parse_duration(&d).expect("--slow like 10ms")),
                nats_cpu: flag("--nats-cpu").map(|c| c.parse().expect("--nats-cpu N")),
            })
            .await;
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
            eprintln!("usage: bench ingress [--duration 8s] [--concurrency 32] [--rounds 3] [--slices 8] [--only raw,raw-dedupe,raw-event,robot,encrypted] [--instructions N] [--slow 10ms] [--nats-cpu N]");
            eprintln!("       bench notifier [--commands 1000] [--integrations 10] [--qps 20] [--replicas 3] [--concurrency 16] [--lifted-commands 8000] [--sequential 200] [--limiter-margin 40ms]");
            eprintln!("       bench stream [--duration 10s] [--integrations 200] [--window 64] [--disconnects 10]");
            eprintln!("       bench e2e [--rate 50] [--duration 60s] [--dispatchers 1] [--notifiers 1] [--expert-delay 200ms] [--conversations 1000] [--dispatcher-concurrency N] [--notifier-concurrency N] [--settle 120s] [--out docs/bench] [--name e2e]");
            std::process::exit(2);
        }
    }
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Waits until something listens on `addr`, for 10 s at most.
async fn wait_for(addr: &str) {
    wait_for_within(addr, Duration::from_secs(10)).await;
}

/// Waits until something listens on `addr`; panics after `limit`.
async fn wait_for_within(addr: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never started listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
