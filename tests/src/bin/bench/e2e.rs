//! `bench e2e`: the whole gateway (its own nats-server and redis-server, the release
//! `gateway-service` processes, the simulator and the fake expert in this process) under robot
//! message callbacks at a fixed rate, as DingTalk sends them: signed, each redelivered with the
//! same `msgId` until answered 200.
//!
//! Measured per callback: the ack latency (the ingress's 200), and from the simulator's call
//! record the end-to-end latency — callback sent → the reply card created (first reply) and →
//! its last write (final reply: the expert's whole answer). Sampled every second: the RSS of every
//! service process, of nats-server and redis-server, and of this process (simulator + expert +
//! generator). DingTalk's per-app QPS limit is lifted (simulator and integration alike), so that
//! the gateway, not the limit, is measured.
//!
//! After the run, a census of Redis: per key family (the key up to its first id), how many keys,
//! their bytes (`MEMORY USAGE`) per replied callback and how long they still live — what a day
//! of such traffic leaves in Redis.
//!
//! Prints a Markdown summary for BENCHMARKS.md and writes `<out>/<name>-latency.svg` and
//! `<out>/<name>-rss.svg`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dingtalk_sim::client::{CallbackClient, Content};
use dingtalk_sim::{Api, Directory};
use fake_expert::Behavior;
use gateway_tests::stack::{Kind, Options as StackOptions, Stack, APP_SECRET, INTEGRATION};
use plotters::prelude::*;
use tokio::task::JoinSet;

/// Attempts per callback (DingTalk redelivers a push that was not answered 200).
const ATTEMPTS: u32 = 4;
/// DingTalk's calls per second per app, lifted far above what the gateway sends here.
const LIFTED_QPS: u32 = 10_000;
/// No new card write for this long after the last callback: the run is over.
const QUIET: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// New callbacks per second.
    pub rate: u32,
    /// How long new callbacks are sent.
    pub duration: Duration,
    /// Dispatcher replicas.
    pub dispatchers: usize,
    /// Notifier replicas.
    pub notifiers: usize,
    /// The expert's pause before its first output.
    pub expert_delay: Duration,
    /// `DISPATCHER_CONCURRENCY` per replica (`None`: the service's default).
    pub dispatcher_concurrency: Option<u32>,
    /// `NOTIFIER_CONCURRENCY` per replica (`None`: the service's default).
    pub notifier_concurrency: Option<u32>,
    /// Distinct private conversations (senders) the callbacks cycle through: one conversation's
    /// messages are answered one after the other by design, so this bounds the parallelism.
    pub conversations: usize,
    /// Longest wait for the replies after the last callback.
    pub settle: Duration,
    /// Where the charts go.
    pub out: PathBuf,
    /// The charts' file name prefix and the run's label.
    pub name: String,
}

/// Points of a line: (seconds since the start, value).
type Points = Vec<(f64, f64)>;

/// One send second's latencies (ms): acks, and callback → the reply's last write.
type Bucket = (Vec<f64>, Vec<f64>);

/// One callback as the generator saw it.
struct Sent {
    msg_id: String,
    /// When its first attempt left, ms since the epoch.
    at_ms: i64,
    /// Seconds since the run's start.
    offset_s: f64,
    /// Latency of the attempt answered 200.
    ack: Option<Duration>,
    attempts: u32,
}

/// The reply cards' writes, by `msgId`: (first, last) arrival, ms since the epoch; and how many.
#[derive(Default)]
struct Replies {
    by_msg: HashMap<String, (i64, i64)>,
    writes: u64,
    last_write: Option<Instant>,
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
}

/// Resident set size of a process, in MiB (`None` once it is gone).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Moves the simulator's recorded card writes into `replies`.
fn collect(sim: &dingtalk_sim::SimState, replies: &Mutex<Replies>) {
    let calls = sim.take_calls();
    let prefix = format!("{INTEGRATION}:");
    let mut replies = replies.lock().expect("replies lock");
    for call in calls {
        if !matches!(call.api, Api::StandardCardSend | Api::StandardCardUpdate) {
            continue;
        }
        let Some(msg_id) = call.body["cardBizId"]
            .as_str()
            .and_then(|id| id.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(":reply"))
        else {
            continue;
        };
        replies.writes += 1;
        replies.last_write = Some(Instant::now());
        let entry = replies
            .by_msg
            .entry(msg_id.to_owned())
            .or_insert((call.at_ms, call.at_ms));
        entry.0 = entry.0.min(call.at_ms);
        entry.1 = entry.1.max(call.at_ms);
    }
}

/// Runs the benchmark and prints its summary.
pub async fn run(options: Options) {
    let binary = std::env::current_exe()
        .expect("the bench binary's path")
        .with_file_name("gateway-service");
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p gateway-tests",
        binary.display()
    );
    let mut stack_options = StackOptions::new(&binary);
    stack_options.dispatchers = options.dispatchers;
    stack_options.notifiers = options.notifiers;
    stack_options.qps_limit = Some(LIFTED_QPS);
    if let Some(n) = options.dispatcher_concurrency {
        stack_options = stack_options.env("DISPATCHER_CONCURRENCY", &n.to_string());
    }
    if let Some(n) = options.notifier_concurrency {
        stack_options = stack_options.env("NOTIFIER_CONCURRENCY", &n.to_string());
    }
    let stack = Stack::start(stack_options).await;
    stack.expert.set_default(Behavior {
        delay: options.expert_delay,
        ..Behavior::default()
    });
    let sim = stack.sim.state().clone();
    sim.take_calls();

    // RSS every second.
    let mut processes: Vec<(String, u32)> = stack
        .services
        .iter()
        .filter_map(|s| {
            let name = match s.kind {
                Kind::Ingress => "ingress".to_owned(),
                kind => format!("{}-{}", kind.name(), s.replica),
            };
            s.pid().map(|pid| (name, pid))
        })
        .collect();
    processes.extend(stack.nats.pid().map(|pid| ("nats-server".to_owned(), pid)));
    processes.extend(
        stack
            .redis
            .pid()
            .map(|pid| ("redis-server".to_owned(), pid)),
    );
    processes.push((
        "bench (simulator, expert, generator)".to_owned(),
        std::process::id(),
    ));
    let started = Instant::now();
    let rss: Arc<Mutex<Vec<Points>>> = Arc::new(Mutex::new(vec![Vec::new(); processes.len()]));
    let replies = Arc::new(Mutex::new(Replies::default()));
    let sampler = {
        let (rss, replies, sim, processes) =
            (rss.clone(), replies.clone(), sim.clone(), processes.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let t = started.elapsed().as_secs_f64();
                {
                    let mut rss = rss.lock().expect("rss lock");
                    for (i, (_, pid)) in processes.iter().enumerate() {
                        if let Some(mib) = rss_mib(*pid) {
                            rss[i].push((t, mib));
                        }
                    }
                }
                collect(&sim, &replies);
            }
        })
    };

    // The senders: that many users added to the simulator's directory, each writing in their own
    // private chat with the bot.
    let mut directory = Directory::seeded();
    let template_user = directory.users[0].clone();
    let users: Vec<(String, String)> = (0..options.conversations.max(1))
        .map(|i| (format!("load{i:05}"), format!("Load user {i}")))
        .collect();
    for (userid, name) in &users {
        let mut user = template_user.clone();
        user.userid = userid.clone();
        user.unionid = format!("union-{userid}");
        user.name = name.clone();
        directory.users.push(user);
    }
    sim.set_directory(directory);

    // The generator: open loop at the fixed rate.
    let (client, url, template) = (
        CallbackClient::new(Duration::from_secs(10)).expect("an HTTP client"),
        stack.webhook_url(),
        stack.message(""),
    );
    let total = (f64::from(options.rate) * options.duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(options.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    let uptime_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for n in 0..total {
        ticker.tick().await;
        let (user, nick) = &users[n as usize % users.len()];
        let message = template
            .clone()
            .renewed()
            .from_user(user.clone(), nick.clone())
            .with_content(Content::Text(format!("load message {n}")));
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let at_ms = now_ms();
            let offset_s = started.elapsed().as_secs_f64();
            let body = message.to_json(at_ms);
            let mut backoff = Duration::from_millis(500);
            let mut sent = Sent {
                msg_id: message.msg_id.clone(),
                at_ms,
                offset_s,
                ack: None,
                attempts: 0,
            };
            for attempt in 1..=ATTEMPTS {
                sent.attempts = attempt;
                if let Ok(answer) = client.post_signed(&url, APP_SECRET, &body, now_ms()).await {
                    if answer.is_ack() {
                        sent.ack = Some(answer.latency);
                        break;
                    }
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            sent
        });
    }
    let generating = started.elapsed();
    let mut sent = Vec::with_capacity(total as usize);
    while let Some(done) = tasks.join_next().await {
        sent.push(done.expect("a delivery task"));
    }
    // Until every acked callback has its reply and the cards stopped changing.
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        collect(&sim, &replies);
        let replies = replies.lock().expect("replies lock");
        let all = sent
            .iter()
            .filter(|s| s.ack.is_some())
            .all(|s| replies.by_msg.contains_key(&s.msg_id));
        let quiet = replies.last_write.is_none_or(|at| at.elapsed() >= QUIET);
        if (all && quiet) || settle.elapsed() > options.settle {
            break;
        }
    }
    sampler.abort();
    let uptime_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let replies = std::mem::take(&mut *replies.lock().expect("replies lock"));
    let rss = std::mem::take(&mut *rss.lock().expect("rss lock"));

    // The numbers.
    sent.sort_by(|a, b| a.offset_s.total_cmp(&b.offset_s));
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.ack.is_some()).collect();
    let redelivered: u32 = sent.iter().map(|s| s.attempts - 1).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ack = sorted(acked.iter().filter_map(|s| s.ack.map(ms)).collect());
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut finished_ms = Vec::new();
    for s in &acked {
        if let Some((f, l)) = replies.by_msg.get(&s.msg_id) {
            first.push((f - s.at_ms) as f64);
            last.push((l - s.at_ms) as f64);
            finished_ms.push(*l);
        }
    }
    let replied = last.len();
    let first = sorted(first);
    let last_sorted = sorted(last.clone());
    let first_sent = sent.first().map_or(0, |s| s.at_ms);
    let last_done = finished_ms.iter().copied().max().unwrap_or(first_sent);
    let span_s = ((last_done - first_sent) as f64 / 1000.0).max(1e-3);
    let throughput = replied as f64 / span_s;
    // Steady state: replies finished per second over the middle of the sending window.
    let window = (
        first_sent + (generating.as_millis() as i64) / 4,
        first_sent + (generating.as_millis() as i64) * 3 / 4,
    );
    let in_window = finished_ms
        .iter()
        .filter(|at| (window.0..window.1).contains(at))
        .count();
    let steady = in_window as f64 / ((window.1 - window.0) as f64 / 1000.0).max(1e-3);
    let p = |v: &[f64]| {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            percentile(v, 1.0)
        )
    };
    let p_fine = |v: &[f64]| {
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1}",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            percentile(v, 1.0)
        )
    };
    println!(
        "### {}: {}/s for {:?} over {} conversations, {} dispatcher(s) × {} notifier(s), expert delay {:?}\n",
        options.name,
        options.rate,
        options.duration,
        options.conversations,
        options.dispatchers,
        options.notifiers,
        options.expert_delay
    );
    println!("load average before: {}", uptime_before.trim());
    println!("load average after:  {}\n", uptime_after.trim());
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| callbacks sent / acked / replied | {} / {} / {replied} ({redelivered} redeliveries) |",
        sent.len(),
        acked.len()
    );
    println!(
        "| sending rate achieved | {:.1}/s |",
        sent.len() as f64 / generating.as_secs_f64().max(1e-3)
    );
    println!(
        "| replies finished per second: middle half of the sending window / whole run | {steady:.1}/s / {throughput:.1}/s |"
    );
    println!(
        "| ack latency p50 / p90 / p99 / max (ms) | {} |",
        p_fine(&ack)
    );
    println!(
        "| callback → reply card created, p50 / p90 / p99 / max (ms) | {} |",
        p(&first)
    );
    println!(
        "| callback → reply's last write, p50 / p90 / p99 / max (ms) | {} |",
        p(&last_sorted)
    );
    println!(
        "| card writes (send + updates) per reply | {:.2} |",
        replies.writes as f64 / replied.max(1) as f64
    );
    let census = redis_census(&stack.redis.url()).await;
    for (i, (name, _)) in processes.iter().enumerate() {
        let samples = &rss[i];
        let start = samples.first().map_or(f64::NAN, |s| s.1);
        let end = samples.last().map_or(f64::NAN, |s| s.1);
        let peak = samples.iter().map(|s| s.1).fold(f64::NAN, f64::max);
        println!("| RSS {name}: start / peak / end (MiB) | {start:.1} / {peak:.1} / {end:.1} |");
    }
    census.print(replied);

    // Latency over time: per second of sending, of the callbacks sent in that second.
    let mut buckets: Vec<Bucket> = Vec::new();
    for s in &acked {
        let second = s.offset_s as usize;
        if buckets.len() <= second {
            buckets.resize_with(second + 1, Default::default);
        }
        if let Some(ack) = s.ack {
            buckets[second].0.push(ms(ack));
        }
        if let Some((_, l)) = replies.by_msg.get(&s.msg_id) {
            buckets[second].1.push((l - s.at_ms) as f64);
        }
    }
    let series = |pick: fn(&Bucket) -> &Vec<f64>, quantile: f64| {
        buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !pick(b).is_empty())
            .map(|(t, b)| {
                (
                    t as f64 + 0.5,
                    percentile(&sorted(pick(b).clone()), quantile),
                )
            })
            .collect::<Vec<_>>()
    };
    let latency_series = vec![
        (
            "callback → reply done, p50".to_owned(),
            series(|b| &b.1, 0.5),
        ),
        (
            "callback → reply done, p99".to_owned(),
            series(|b| &b.1, 0.99),
        ),
        ("ack, p99".to_owned(), series(|b| &b.0, 0.99)),
    ];
    let x_max = started.elapsed().as_secs_f64().ceil();
    std::fs::create_dir_all(&options.out).expect("the charts' directory");
    let caption = format!(
        "{}: {}/s, {} dispatcher(s), {} notifier(s), expert {:?}",
        options.name, options.rate, options.dispatchers, options.notifiers, options.expert_delay
    );
    let latency_path = options.out.join(format!("{}-latency.svg", options.name));
    line_chart(
        &latency_path,
        &format!("Latency by send second — {caption}"),
        "ms",
        generating.as_secs_f64().ceil(),
        &latency_series,
    )
    .expect("the latency chart");
    let rss_series: Vec<(String, Points)> = processes
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), rss[i].clone()))
        .collect();
    let rss_path = options.out.join(format!("{}-rss.svg", options.name));
    line_chart(
        &rss_path,
        &format!("RSS — {caption}"),
        "MiB",
        x_max,
        &rss_series,
    )
    .expect("the RSS chart");
    println!(
        "\ncharts: {} {}",
        latency_path.display(),
        rss_path.display()
    );
}

/// A line chart of several series over seconds since the start.
fn line_chart(
    path: &Path,
    caption: &str,
    y_label: &str,
    x_max: f64,
    series: &[(String, Points)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max.max(1.0), 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the run started")
        .y_desc(y_label)
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One key family in Redis after a run.
struct Family {
    name: String,
    keys: u64,
    bytes: u64,
    /// Remaining lifetime (s) of the family's keys that expire: shortest and longest.
    ttl: Option<(i64, i64)>,
    /// Keys that never expire.
    persistent: u64,
}

/// What Redis holds after a run.
struct Census {
    used_memory: u64,
    families: Vec<Family>,
}

/// A key's family: its first three segments (`dtg:ntf:cmd`, `dtg:dispatch:claim`, …), which
/// name what it is; the rest are ids.
fn family(key: &str) -> String {
    let mut parts = key.splitn(4, ':');
    let head: Vec<&str> = parts.by_ref().take(3).collect();
    match parts.next() {
        Some(_) => format!("{}:…", head.join(":")),
        None => head.join(":"),
    }
}

/// Walks every key of the Redis at `url` (`SCAN`) and sums `MEMORY USAGE` and lifetimes by
/// family.
async fn redis_census(url: &str) -> Census {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis for the census");
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .expect("SCAN");
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .cmd("TTL")
                .arg(key);
        }
        let answers: Vec<(Option<u64>, i64)> = if keys.is_empty() {
            Vec::new()
        } else {
            let flat: Vec<redis::Value> = pipe.query_async(&mut redis).await.expect("MEMORY USAGE");
            flat.chunks(2)
                .map(|pair| {
                    let bytes = redis::from_redis_value_ref(&pair[0]).ok();
                    let ttl = redis::from_redis_value_ref(&pair[1]).unwrap_or(-2);
                    (bytes, ttl)
                })
                .collect()
        };
        for (key, (bytes, ttl)) in keys.iter().zip(answers) {
            let name = family(key);
            let entry = families.entry(name.clone()).or_insert(Family {
                name,
                keys: 0,
                bytes: 0,
                ttl: None,
                persistent: 0,
            });
            entry.keys += 1;
            entry.bytes += bytes.unwrap_or(0);
            match ttl {
                -1 => entry.persistent += 1,
                ttl if ttl >= 0 => {
                    entry.ttl = Some(
                        entry
                            .ttl
                            .map_or((ttl, ttl), |(lo, hi)| (lo.min(ttl), hi.max(ttl))),
                    );
                }
                _ => {} // gone since the SCAN
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .expect("INFO memory");
    let used_memory = common::redis::Memory::parse(&info)
        .expect("INFO memory names used_memory")
        .used;
    let mut families: Vec<Family> = families.into_values().collect();
    families.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    Census {
        used_memory,
        families,
    }
}

impl Census {
    fn print(&self, replied: usize) {
        let per = |bytes: u64| bytes as f64 / replied.max(1) as f64;
        let life = |s: i64| humantime::format_duration(Duration::from_secs(s as u64)).to_string();
        println!(
            "\nRedis after the run: `used_memory` {:.1} MiB, {:.0} bytes per replied callback.\n",
            self.used_memory as f64 / 1_048_576.0,
            per(self.used_memory)
        );
        println!("| key family | keys | keys per reply | bytes per reply | lives on for |");
        println!("|---|---|---|---|---|");
        for f in &self.families {
            let mut lifetime = match f.ttl {
                Some((lo, hi)) if lo == hi => life(lo),
                Some((lo, hi)) => format!("{} – {}", life(lo), life(hi)),
                None => String::new(),
            };
            if f.persistent > 0 {
                if !lifetime.is_empty() {
                    lifetime.push_str("; ");
                }
                lifetime.push_str(&format!("{} without expiry", f.persistent));
            }
            println!(
                "| `{}` | {} | {:.2} | {:.0} | {} |",
                f.name,
                f.keys,
                f.keys as f64 / replied.max(1) as f64,
                per(f.bytes),
                lifetime
            );
        }
    }
}
