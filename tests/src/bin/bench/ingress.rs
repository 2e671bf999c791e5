//! `bench ingress`: callbacks → JetStream, the ingress against this machine's raw limit.
//!
//! Four targets (and two more on request), measured the same way:
//!
//! - **raw**: a bare axum handler (`bench raw-server`) that only publishes the request body to
//!   JetStream and waits for the ack — the limit of one HTTP → JetStream hop here;
//! - **raw + `Nats-Msg-Id`**: the same with a unique message id per request, which is all that
//!   differs in what JetStream does for the ingress's events (they must be de-duplicated);
//! - the release **ingress** with signed robot messages, then with encrypted event callbacks;
//! - on request only (`--only raw-event,…`), **raw + `Nats-Msg-Id` with the robot message's
//!   event as the body**: JetStream stores the very bytes it stores for the robot target (about
//!   twice the callback's), so the two differ only in what the ingress does itself;
//! - on request only (`--only raw-answer,…`), the same **answered as the ingress answers a robot
//!   message** (200 with `{"ok":true,"id":…}` instead of an empty 200): what that answer costs
//!   the handler and the load generator, which reads it.
//!
//! Every target gets its own `nats-server` (an empty stream and an empty de-duplication table: a
//! target measured after another would otherwise inherit its stored messages and message ids)
//! and its own server process; the streams are provisioned with the gateway's own settings before
//! the server starts. The machine's speed drifts (two shared cores, a virtual machine): so that a
//! slow spell does not fall on one target only, each loop is cut into `--slices` slices and the
//! targets take turns slice by slice; "% of raw" compares each target with the raw target of the
//! same round. Rounds repeat all of it from fresh servers and show the spread.
//!
//! Per target: a 1 s warm-up that opens all the connections the loops use, a closed loop (`--concurrency` callers, as fast as answers come)
//! for the maximum rate, then an open loop at half that rate: request *i* is due at
//! *start + i / rate* and its latency counts from then, with four times as many callers on
//! kept-alive connections sharing the schedule, so a slow answer is charged to every request it
//! delays (no coordinated omission). Requests are unique (fresh `msgId` / `EventId`, valid
//! signatures) and built before each timed slice, so the generator's CPU per request does not
//! depend on the target. "CPU per request" is user + system time from `/proc/{pid}/stat` over the
//! closed loop divided by the requests answered: server, `nats-server`, load generator. "CPU
//! stolen" is the machine's steal time (`/proc/stat`) over each target's slices: CPU this virtual
//! machine wanted and the hypervisor gave elsewhere, which no target controls.
//!
//! `--slow 10ms` lists when the open loop's slower requests were due next to the nats-server's
//! garbage collections (logged when the bench runs with `GODEBUG=gctrace=1`), and
//! `--instructions N` counts the servers' instructions per request under callgrind instead.
//!
//! `--nats-cpu N` gives every nats-server CPU `N` alone and keeps the servers and the load
//! generator on the other CPUs (`taskset`, every thread): the layout of a deployment whose NATS
//! runs on nodes of its own, where the broker's garbage collections do not take the ingress's CPU.
//! By default every process may run on every CPU.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use common::bus::streams;
use common::config::StreamSettings;
use common::crypto::{self, AesKey, CallbackCrypto};
use common::registry::{IntegrationId, IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use serde_json::json;
use test_harness::{NatsServer, RedisServer};
use tokio::process::{Child, Command};

use super::{free_addr, rss_kib, wait_for, wait_for_within};

const SECRET: &str = "bench-app-secret-0123456789";
const TOKEN: &str = "bench-token";
const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
const APP_KEY: &str = "dingbenchapp";
/// The raw server's subject (inside the events stream).
const RAW_SUBJECT: &str = "dingtalk.events.raw.message";
/// Requests prepared per second of a closed loop: above any rate this machine reaches.
const PREPARED_PER_SECOND: f64 = 45_000.0;

/// The bench's knobs.
pub struct Options {
    pub duration: Duration,
    pub concurrency: usize,
    /// A comma-separated subset of `raw`, `raw-dedupe`, `raw-event` and `raw-answer` (these two
    /// only run when named), `robot`, `encrypted`.
    pub only: Option<String>,
    pub rounds: usize,
    /// Each loop is cut into this many slices, run in turn for every target.
    pub slices: usize,
    /// Count instructions under callgrind over this many requests instead of timing loops.
    pub instructions: Option<usize>,
    /// List the open loop's requests slower than this, by when they were due, next to the
    /// nats-server's garbage collections (run with `GODEBUG=gctrace=1` to have them logged).
    pub slow: Option<Duration>,
    /// Run every nats-server on this CPU alone, everything else on the other CPUs.
    pub nats_cpu: Option<usize>,
}

/// Which CPUs the processes of a timed run may use.
#[derive(Clone)]
struct Layout {
    /// The machine's CPUs.
    cpus: usize,
    /// The nats-servers' CPU and the list of the others, when the nats-servers have their own.
    split: Option<(usize, String)>,
}

impl Layout {
    /// Read before anything is pinned: the CPUs this process may use are all there are to share.
    fn new(nats_cpu: Option<usize>) -> Layout {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let split = nats_cpu.map(|cpu| {
            assert!(
                cpus >= 2 && cpu < cpus,
                "--nats-cpu {cpu}: needs a CPU below {cpus} and at least one more"
            );
            let others: Vec<String> = (0..cpus)
                .filter(|&c| c != cpu)
                .map(|c| c.to_string())
                .collect();
            (cpu, others.join(","))
        });
        Layout { cpus, split }
    }

    /// Confines `pid`, a nats-server, to its CPU (no-op when shared).
    fn place_nats(&self, pid: u32) {
        if let Some((cpu, _)) = &self.split {
            pin(pid, &cpu.to_string());
        }
    }

    /// Keeps `pid`, a server or this process, off the nats-servers' CPU (no-op when shared).
    fn place_other(&self, pid: u32) {
        if let Some((_, others)) = &self.split {
            pin(pid, others);
        }
    }

    fn describe(&self) -> String {
        match &self.split {
            Some((cpu, others)) => format!(
                "each nats-server alone on CPU {cpu}, the servers and the load generator on CPU {others}"
            ),
            None => "every process on every CPU".to_owned(),
        }
    }
}

/// Sets the CPU affinity of every thread of `pid` (threads started later inherit it).
fn pin(pid: u32, cpus: &str) {
    let status = std::process::Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) runs");
    assert!(
        status.success(),
        "taskset could not pin {pid} to CPUs {cpus}"
    );
}

/// What one request looks like.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw,
    RawDedupe,
    /// Opt-in (`--only`): raw + `Nats-Msg-Id` whose body is the very event the ingress publishes
    /// for a robot message, so that JetStream stores the same bytes as for the robot target.
    RawEvent,
    /// Opt-in (`--only`): [`Mode::RawEvent`] answered with the JSON body the ingress answers a
    /// robot message with.
    RawAnswer,
    Robot,
    Encrypted,
}

impl Mode {
    /// What runs without `--only`.
    const DEFAULT: [Mode; 4] = [Mode::Raw, Mode::RawDedupe, Mode::Robot, Mode::Encrypted];
    /// What `--only` may pick from.
    const ALL: [Mode; 6] = [
        Mode::Raw,
        Mode::RawDedupe,
        Mode::RawEvent,
        Mode::RawAnswer,
        Mode::Robot,
        Mode::Encrypted,
    ];

    fn key(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::RawDedupe => "raw-dedupe",
            Mode::RawEvent => "raw-event",
            Mode::RawAnswer => "raw-answer",
            Mode::Robot => "robot",
            Mode::Encrypted => "encrypted",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw (axum → JetStream, baseline)",
            Mode::RawDedupe => "raw + Nats-Msg-Id (de-duplication only)",
            Mode::RawEvent => "raw + Nats-Msg-Id, body = the robot message's event",
            Mode::RawAnswer => "raw + Nats-Msg-Id, the robot's event, answered like the ingress",
            Mode::Robot => "ingress, robot message (HMAC)",
            Mode::Encrypted => "ingress, encrypted event (SHA-1 + AES)",
        }
    }

    fn is_raw(self) -> bool {
        matches!(
            self,
            Mode::Raw | Mode::RawDedupe | Mode::RawEvent | Mode::RawAnswer
        )
    }

    /// Where this target's server at `addr` takes its requests.
    fn url(self, addr: &str) -> String {
        if self.is_raw() {
            format!("http://{addr}/raw")
        } else {
            format!("http://{addr}/api/dingtalk/webhook/bench")
        }
    }
}

pub async fn run(options: Options) {
    let modes: Vec<Mode> = match options.only.as_deref() {
        None => Mode::DEFAULT.to_vec(),
        Some(only) => Mode::ALL
            .into_iter()
            .filter(|mode| only.split(',').any(|m| m == mode.key()))
            .collect(),
    };
    let redis = RedisServer::start().await;
    let registry = Registry::connect(
        &redis.url(),
        RegistryOptions::new(SecretsKeys::unencrypted()),
    )
    .await
    .expect("registry");
    let spec: IntegrationSpec = serde_json::from_value(json!({"id": "bench", "client_id": APP_KEY,
        "client_secret": SECRET, "callback_token": TOKEN, "callback_aes_key": AES_KEY}))
    .expect("integration");
    registry.put_integration(spec).await.expect("put");
    if let Some(count) = options.instructions {
        count_instructions(&modes, &redis.url(), count).await;
        registry.shutdown().await;
        return;
    }

    let layout = Layout::new(options.nats_cpu);
    layout.place_other(std::process::id());
    println!(
        "Loopback, {} CPUs ({}); {} round(s); per target a fresh nats-server; a closed loop with {} callers for {:?}, then an open loop at half the closed-loop rate for {:?}, each cut into {} slices taken by the targets in turn; load average at start: {}.\n",
        layout.cpus,
        layout.describe(),
        options.rounds,
        options.concurrency,
        options.duration,
        options.duration,
        options.slices,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("| round | target | max rate (req/s) | % of raw | CPU per request: server / nats-server / load generator | p50 / p99 at max | open loop rate | p50 / p99 at half rate | CPU stolen by the hypervisor: closed / open loop | failed | ingress RSS after the closed loop |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=options.rounds {
        let measured = measure(&modes, &redis.url(), &options, &layout).await;
        let raw_rate = measured
            .iter()
            .find(|row| row.mode == Mode::Raw)
            .map(|row| row.max.rate);
        for mut row in measured {
            row.of_raw = raw_rate.map(|raw| row.max.rate / raw);
            row.print(round);
            rows.push(row);
        }
    }
    summary(&modes, &rows);
    registry.shutdown().await;
}

/// One target's measurements in one round.
struct Row {
    mode: Mode,
    max: Outcome,
    half: Outcome,
    /// µs of CPU per request: server, nats-server, load generator.
    cpu: [f64; 3],
    /// Share of the machine's CPU time the hypervisor took (steal) during the closed loop and
    /// during the open loop.
    stolen: [f64; 2],
    /// The ingress's RSS after the closed loop and its peak, in KiB.
    rss: Option<(u64, u64)>,
    of_raw: Option<f64>,
}

impl Row {
    fn print(&self, round: usize) {
        println!(
            "| {round} | {} | {:.0} | {} | {:.1} / {:.1} / {:.1} µs | {:.2} / {:.2} ms | {:.0} | {:.2} / {:.2} ms | {:.1}% / {:.1}% | {} | {} |",
            self.mode.name(),
            self.max.rate,
            self.of_raw
                .map_or_else(|| "–".to_owned(), |f| format!("{:.0}%", f * 100.0)),
            self.cpu[0],
            self.cpu[1],
            self.cpu[2],
            millis(self.max.p50),
            millis(self.max.p99),
            self.half.rate,
            millis(self.half.p50),
            millis(self.half.p99),
            self.stolen[0] * 100.0,
            self.stolen[1] * 100.0,
            self.max.failed + self.half.failed,
            self.rss.map_or_else(
                || "–".to_owned(),
                |(rss, _)| format!("{:.1} MiB", rss as f64 / 1024.0)
            ),
        );
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and range of each target over the rounds.
fn summary(modes: &[Mode], rows: &[Row]) {
    println!("\nOver the rounds, median (min–max):\n");
    println!("| target | max rate (req/s) | % of raw | p99 at half rate (ms) | CPU stolen, open loop (%) |");
    println!("|---|---|---|---|---|");
    for &mode in modes {
        let of = |pick: &dyn Fn(&Row) -> Option<f64>| {
            let mut values: Vec<f64> = rows
                .iter()
                .filter(|r| r.mode == mode)
                .filter_map(pick)
                .collect();
            values.sort_by(f64::total_cmp);
            values
        };
        let show = |values: Vec<f64>, scale: f64, digits: usize| match values.as_slice() {
            [] => "–".to_owned(),
            [only] => format!("{:.digits$}", only * scale),
            all => format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                all[all.len() / 2] * scale,
                all[0] * scale,
                all[all.len() - 1] * scale
            ),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            mode.name(),
            show(of(&|r| Some(r.max.rate)), 1.0, 0),
            show(of(&|r| r.of_raw), 100.0, 0),
            show(of(&|r| Some(millis(r.half.p99))), 1.0, 2),
            show(of(&|r| Some(r.stolen[1])), 100.0, 1),
        );
    }
    let peak = rows.iter().filter_map(|r| r.rss).map(|(_, p)| p).max();
    if let Some(peak) = peak {
        println!(
            "\ningress peak RSS (VmHWM, highest of its processes): {:.1} MiB",
            peak as f64 / 1024.0
        );
    }
}

/// One target, ready to be driven: its own nats-server and server process.
struct Setup {
    mode: Mode,
    nats: NatsServer,
    nats_started: tokio::time::Instant,
    server: Child,
    target: Arc<Target>,
    http: reqwest::Client,
    /// Server, nats-server, this process.
    pids: [u32; 3],
}

impl Setup {
    async fn start(mode: Mode, redis_url: &str, concurrency: usize, layout: &Layout) -> Setup {
        let nats = provisioned_nats().await;
        layout.place_nats(nats.pid().expect("nats-server runs"));
        let nats_started = tokio::time::Instant::now();
        let addr = free_addr();
        let server = spawn_server(mode, &nats.url(), redis_url, &addr, &[]);
        layout.place_other(server.id().expect("server runs"));
        wait_for(&addr).await;
        let url = mode.url(&addr);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency * 4)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let pids = [
            server.id().unwrap_or_default(),
            nats.pid().unwrap_or_default(),
            std::process::id(),
        ];
        Setup {
            mode,
            nats,
            nats_started,
            server,
            target: Arc::new(Target::new(mode, url)),
            http,
            pids,
        }
    }

    fn cpu(&self) -> [Duration; 3] {
        self.pids.map(cpu_time)
    }
}

/// One round: every target set up at once, then each loop run in slices, the targets taking
/// turns, so that a slow spell of the shared machine falls on all of them alike.
async fn measure(modes: &[Mode], redis_url: &str, options: &Options, layout: &Layout) -> Vec<Row> {
    let mut setups = Vec::new();
    for &mode in modes {
        setups.push(Setup::start(mode, redis_url, options.concurrency, layout).await);
    }
    let slice = options.duration / options.slices.max(1) as u32;
    let prepare = |setup: &Setup, per_second: f64| {
        setup
            .target
            .fill((per_second * slice.as_secs_f64()) as usize + 1);
    };
    // Warm-up, with as many callers as the open loop will have, so that every loop finds its
    // connections open (a load balancer in front of the ingress keeps them alive too).
    for setup in &setups {
        setup.target.fill(PREPARED_PER_SECOND as usize);
        closed_loop(
            &setup.target,
            &setup.http,
            Duration::from_secs(1),
            options.concurrency * 4,
        )
        .await;
    }

    let mut closed: Vec<Samples> = setups.iter().map(|_| Samples::default()).collect();
    for _ in 0..options.slices {
        for (setup, samples) in setups.iter().zip(&mut closed) {
            prepare(setup, PREPARED_PER_SECOND);
            let before = setup.cpu();
            let ticks = MachineTicks::now();
            samples.add(closed_loop(&setup.target, &setup.http, slice, options.concurrency).await);
            samples.machine.add(MachineTicks::now().since(ticks));
            let after = setup.cpu();
            for ((total, after), before) in samples.cpu.iter_mut().zip(after).zip(before) {
                *total += after - before;
            }
        }
    }
    let rss_after_max: Vec<u64> = setups
        .iter()
        .map(|setup| rss_kib(setup.pids[0], "VmRSS:"))
        .collect();
    let max: Vec<Outcome> = closed.iter().map(Samples::outcome).collect();

    let mut open: Vec<(Samples, Vec<tokio::time::Instant>)> =
        setups.iter().map(|_| Default::default()).collect();
    for _ in 0..options.slices {
        for ((setup, (samples, slow_due)), max) in setups.iter().zip(&mut open).zip(&max) {
            let rate = max.rate / 2.0;
            prepare(setup, rate);
            let ticks = MachineTicks::now();
            let (more, due) = open_loop(
                &setup.target,
                &setup.http,
                slice,
                rate,
                options.concurrency * 4,
                options.slow,
            )
            .await;
            samples.add(more);
            samples.machine.add(MachineTicks::now().since(ticks));
            slow_due.extend(due);
        }
    }

    let mut rows = Vec::new();
    for (((mut setup, closed), (open, slow_due)), (max, rss_after_max)) in setups
        .into_iter()
        .zip(closed)
        .zip(open)
        .zip(max.into_iter().zip(rss_after_max))
    {
        if let Some(slow) = options.slow {
            report_slow(setup.mode, slow, &slow_due, setup.nats_started, &setup.nats);
        }
        let rss = (!setup.mode.is_raw()).then(|| (rss_after_max, rss_kib(setup.pids[0], "VmHWM:")));
        let _ = setup.server.start_kill();
        let _ = setup.server.wait().await;
        let requests = max.ok.max(1) as f64;
        rows.push(Row {
            mode: setup.mode,
            cpu: closed.cpu.map(|d| d.as_secs_f64() * 1e6 / requests),
            stolen: [closed.machine.stolen(), open.machine.stolen()],
            max,
            half: open.outcome(),
            rss,
            of_raw: None,
        });
    }
    rows
}

/// A fresh nats-server with the gateway's streams, provisioned with its own settings.
async fn provisioned_nats() -> NatsServer {
    let nats = NatsServer::start().await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    streams::provision(&js, &StreamSettings::default())
        .await
        .expect("streams");
    nats
}

/// The server of `mode` on `addr`, run through `wrapper` (a program and its arguments) if any.
fn spawn_server(
    mode: Mode,
    nats_url: &str,
    redis_url: &str,
    addr: &str,
    wrapper: &[String],
) -> Child {
    let bench = std::env::current_exe().expect("current exe");
    let program = if mode.is_raw() {
        bench.clone()
    } else {
        bench.parent().expect("target dir").join("ingress")
    };
    let mut command = match wrapper.split_first() {
        Some((wrapper, args)) => {
            let mut command = Command::new(wrapper);
            command.args(args).arg(&program);
            command
        }
        None => Command::new(&program),
    };
    if mode.is_raw() {
        command.args(["raw-server", "--nats", nats_url, "--addr", addr]);
    }
    // The service's own log level (`info`) — what an operator runs; its lines go nowhere.
    command
        .env("NATS_URL", nats_url)
        .env("REDIS_URL", redis_url)
        .env("INGRESS_ADDR", addr)
        .env("ADMIN_ADDR", free_addr())
        .env("METRICS_ADDR", free_addr())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "target/release/ingress: run `cargo build --release -p ingress -p gateway-tests` first",
        )
}

/// Instructions the server executes per request (callgrind's `Ir`): unlike time, the same for
/// the same binary and requests whatever else the machine does, so a change of a few percent in
/// the ingress's own work shows. Each target: a fresh nats-server, the server under callgrind,
/// `count / 4` requests to warm up, counters zeroed, `count` requests, counters dumped.
async fn count_instructions(modes: &[Mode], redis_url: &str, count: usize) {
    println!("Server instructions per request (callgrind Ir), {count} requests after {} of warm-up, 8 callers:\n", count / 4);
    println!("| target | instructions per request | vs raw |");
    println!("|---|---|---|");
    let mut raw = None;
    for &mode in modes {
        let nats = provisioned_nats().await;
        let dir = tempfile::tempdir().expect("temp dir");
        // `BENCH_CALLGRIND_DIR` keeps the dumps, for `callgrind_annotate`.
        let dir = match std::env::var_os("BENCH_CALLGRIND_DIR") {
            Some(keep) => {
                let keep = std::path::Path::new(&keep).join(mode.key());
                std::fs::create_dir_all(&keep).expect("BENCH_CALLGRIND_DIR");
                keep
            }
            None => dir.path().to_owned(),
        };
        let out = dir.join("callgrind.out");
        let wrapper = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let addr = free_addr();
        let mut server = spawn_server(mode, &nats.url(), redis_url, &addr, &wrapper);
        // valgrind starts slowly: up to a minute.
        wait_for_within(&addr, Duration::from_secs(60)).await;
        let url = mode.url(&addr);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let target = Arc::new(Target::new(mode, url));
        target.fill(count + count / 4);
        let pid = server.id().expect("pid").to_string();
        let control = |args: &[&str]| {
            let status = std::process::Command::new("callgrind_control")
                .args(args)
                .arg(&pid)
                .stdout(Stdio::null())
                .status()
                .expect("callgrind_control (valgrind)");
            assert!(status.success(), "callgrind_control {args:?} failed");
        };
        exactly(&target, &http, count / 4).await;
        control(&["--zero"]);
        exactly(&target, &http, count).await;
        control(&["--dump"]);
        let total = read_total(&dir).await;
        let _ = server.start_kill();
        let _ = server.wait().await;
        let per_request = total as f64 / count as f64;
        if mode == Mode::Raw {
            raw = Some(per_request);
        }
        println!(
            "| {} | {:.0} | {} |",
            mode.name(),
            per_request,
            raw.map_or_else(
                || "–".to_owned(),
                |raw| format!("{:.2}×", per_request / raw)
            )
        );
    }
}

/// Sends exactly `count` requests, 8 at a time; panics on a failure.
async fn exactly(target: &Arc<Target>, http: &reqwest::Client, count: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (target, http, next) = (target.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                    target.call(&http).await.expect("request");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
}

/// The `totals:` (or `summary:`) line of the callgrind dump in `dir`, once written.
async fn read_total(dir: &std::path::Path) -> u64 {
    for _ in 0..600 {
        for entry in std::fs::read_dir(dir).expect("dump dir").flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let total = text.lines().find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            });
            if let Some(total) = total {
                return total;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("callgrind wrote no dump in {}", dir.display());
}

/// The baseline: HTTP in, one JetStream publish with ack, 200 out. Nothing else — except that
/// an `x-msg-id` request header becomes the message's `Nats-Msg-Id`, to show what JetStream's
/// de-duplication (which the ingress needs) costs by itself, and that `x-answer: json` makes the
/// answer the ingress's answer to a robot message (`{"ok":true,"id":…}`, the id being the
/// message id), to show what answering with a body costs. The bench provisions the stream.
pub async fn raw_server(nats: &str, addr: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.expect("nats"));
    let app = axum::Router::new().route(
        "/raw",
        axum::routing::post(
            move |request: axum::http::HeaderMap, body: axum::body::Bytes| {
                let js = js.clone();
                async move {
                    let mut headers = async_nats::HeaderMap::new();
                    let id = request.get("x-msg-id").and_then(|v| v.to_str().ok());
                    if let Some(id) = id {
                        headers.insert(common::bus::MSG_ID_HEADER, id);
                    }
                    let answer_json = request
                        .get("x-answer")
                        .is_some_and(|answer| answer == "json");
                    let stored = match js.publish_with_headers(RAW_SUBJECT, headers, body).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    match (stored, id) {
                        (false, _) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                        (true, Some(id)) if answer_json => Json(ingress::webhook::Accepted {
                            ok: true,
                            id: id.to_owned(),
                        })
                        .into_response(),
                        (true, _) => StatusCode::OK.into_response(),
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

/// One ready-to-send request.
struct Prepared {
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

struct Target {
    mode: Mode,
    url: String,
    cipher: CallbackCrypto,
    /// The id of the next request to prepare.
    next_id: AtomicU64,
    /// Requests built ahead of a timed loop, taken in order.
    pool: Mutex<VecDeque<Prepared>>,
}

fn robot_body(id: u64) -> serde_json::Value {
    json!({"msgId": format!("msg{id}"), "msgtype": "text", "text": {"content": " hello bench "},
        "conversationId": "cidBENCH==", "conversationType": "2", "conversationTitle": "bench",
        "senderId": "$:LWCP_v1:$sender", "senderStaffId": "user1", "senderNick": "Bench",
        "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": APP_KEY, "isInAtList": true,
        "createAt": 1_700_000_000_000_i64, "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s",
        "sessionWebhookExpiredTime": 1_700_005_400_000_i64})
}

impl Target {
    fn new(mode: Mode, url: String) -> Self {
        Self {
            mode,
            url,
            cipher: CallbackCrypto::new(TOKEN, AesKey::parse(AES_KEY).expect("key"), APP_KEY),
            next_id: AtomicU64::new(0),
            pool: Mutex::new(VecDeque::new()),
        }
    }

    /// Builds the next request (unique ids, signatures valid for the next hour).
    fn prepare(&self) -> Prepared {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
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
            Mode::RawEvent | Mode::RawAnswer => {
                let normalized = ingress::normalize::robot_message(&robot_body(id).to_string())
                    .expect("the bench's robot message normalizes");
                let integration = IntegrationId::try_from("bench".to_owned()).expect("id");
                let event = ingress::publish::event(&integration, normalized);
                let mut headers = vec![("x-msg-id", event.id.clone())];
                if self.mode == Mode::RawAnswer {
                    headers.push(("x-answer", "json".to_owned()));
                }
                Prepared {
                    url: self.url.clone(),
                    headers,
                    body: serde_json::to_vec(&event).expect("an event serializes"),
                }
            }
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

    /// Tops the pool up to `count` requests.
    fn fill(&self, count: usize) {
        let mut pool = self.pool.lock().expect("pool");
        while pool.len() < count {
            let prepared = self.prepare();
            pool.push_back(prepared);
        }
    }

    async fn call(&self, http: &reqwest::Client) -> Result<Duration, String> {
        let next = self.pool.lock().expect("pool").pop_front();
        // An empty pool (a faster machine than PREPARED_PER_SECOND assumes) costs the generator
        // the preparation; still correct.
        let prepared = next.unwrap_or_else(|| self.prepare());
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

/// What loops (or slices of one) measured.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
    /// CPU time of the server, the nats-server and this process meanwhile (closed loops).
    cpu: [Duration; 3],
    /// The machine's CPU time meanwhile: taken by the hypervisor (steal), and in all.
    machine: MachineTicks,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }

    fn outcome(&self) -> Outcome {
        outcome(self.latencies.clone(), self.failed, self.elapsed)
    }
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
    target: &Arc<Target>,
    http: &reqwest::Client,
    duration: Duration,
    concurrency: usize,
) -> Samples {
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
        let (l, f) = worker.await.expect("worker");
        latencies.extend(l);
        failed += f;
    }
    Samples {
        latencies,
        failed,
        elapsed: started.elapsed(),
        cpu: Default::default(),
        machine: MachineTicks::default(),
    }
}

/// Prints when the open loop's slow requests were due, in 100 ms bins counted from the
/// nats-server's start, and the garbage collections the server logged (with
/// `GODEBUG=gctrace=1`: `gc N @{seconds since start}s …: {sweep}+{mark}+{end} ms clock`), so
/// that slow spells can be matched with them. The two clocks differ by the server's start-up
/// (tens of milliseconds).
fn report_slow(
    mode: Mode,
    slow: Duration,
    due: &[tokio::time::Instant],
    nats_started: tokio::time::Instant,
    nats: &NatsServer,
) {
    let mut bins = std::collections::BTreeMap::<u128, usize>::new();
    for at in due {
        *bins
            .entry(at.duration_since(nats_started).as_millis() / 100)
            .or_default() += 1;
    }
    let first = bins.keys().next().copied().unwrap_or_default() as f64 / 10.0;
    let last = bins.keys().last().copied().unwrap_or_default() as f64 / 10.0 + 0.1;
    let spells: Vec<String> = bins
        .iter()
        .map(|(bin, count)| format!("{:.1} s: {count}", *bin as f64 / 10.0))
        .collect();
    println!(
        "\n{}: {} open-loop requests over {} ms, by when they were due (seconds since nats-server started): {}",
        mode.key(),
        due.len(),
        slow.as_millis(),
        spells.join(", ")
    );
    let log = nats
        .log_path()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    let collections: Vec<String> = log
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("gc ")?;
            let at: f64 = rest.split_once('@')?.1.split_once('s')?.0.parse().ok()?;
            let clock = rest.split_once(": ")?.1.split_once(" ms clock")?.0;
            let wall: f64 = clock.split('+').filter_map(|p| p.parse::<f64>().ok()).sum();
            (first - 0.5..=last)
                .contains(&at)
                .then(|| format!("@{at:.2} s ({wall:.0} ms)"))
        })
        .collect();
    if collections.is_empty() {
        println!("nats-server logged no garbage collection then (run with GODEBUG=gctrace=1 to log them)");
    } else {
        println!(
            "nats-server garbage collections then: {}",
            collections.join(", ")
        );
    }
}

/// A fixed arrival rate, whatever the answers' latency: request `i` is due at `start + i / rate`
/// and its latency counts from then, so a slow answer that delays the requests behind it is
/// charged to them too (no coordinated omission). `connections` callers share the schedule, each
/// on its own kept-alive connection, as a load balancer in front of the ingress would. Also
/// returns when the requests slower than `slow` were due.
async fn open_loop(
    target: &Arc<Target>,
    http: &reqwest::Client,
    duration: Duration,
    rate: f64,
    connections: usize,
    slow: Option<Duration>,
) -> (Samples, Vec<tokio::time::Instant>) {
    let started = tokio::time::Instant::now();
    let total = (duration.as_secs_f64() * rate) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..connections)
        .map(|_| {
            let (target, http, next) = (target.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut reasons, mut slow_due) =
                    (Vec::new(), Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    match target.call(&http).await {
                        Ok(_) => {
                            let latency = due.elapsed();
                            if slow.is_some_and(|slow| latency > slow) {
                                slow_due.push(due);
                            }
                            latencies.push(latency);
                        }
                        Err(reason) => reasons.push(reason),
                    }
                }
                (latencies, reasons, slow_due)
            })
        })
        .collect();
    let (mut latencies, mut reasons) = (Vec::new(), std::collections::BTreeMap::new());
    let mut slow_due = Vec::new();
    for caller in callers {
        let (l, r, s) = caller.await.expect("caller");
        latencies.extend(l);
        slow_due.extend(s);
        for reason in r {
            *reasons.entry(reason).or_insert(0usize) += 1;
        }
    }
    if !reasons.is_empty() {
        eprintln!("open loop failures: {reasons:?}");
    }
    let samples = Samples {
        latencies,
        failed: reasons.values().sum(),
        elapsed: started.elapsed(),
        cpu: Default::default(),
        machine: MachineTicks::default(),
    };
    (samples, slow_due)
}

/// The machine's CPU time so far, in ticks, from the `cpu` line of `/proc/stat`: what the
/// hypervisor gave to other guests while this one wanted to run (steal), and in all.
#[derive(Debug, Default, Clone, Copy)]
struct MachineTicks {
    steal: u64,
    total: u64,
}

impl MachineTicks {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .unwrap_or_default()
            .split_whitespace()
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        Self {
            steal: ticks.get(7).copied().unwrap_or(0),
            total: ticks.iter().sum(),
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            steal: self.steal.saturating_sub(earlier.steal),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    fn add(&mut self, other: Self) {
        self.steal += other.steal;
        self.total += other.total;
    }

    /// Steal as a share of all CPU time.
    fn stolen(&self) -> f64 {
        self.steal as f64 / self.total.max(1) as f64
    }
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
