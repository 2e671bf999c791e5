//! The fault suite: a steady stream of robot message callbacks (loopback, bounded rate and time)
//! while NATS, Redis and each service are SIGKILLed and restarted in turn, the expert hangs and
//! fails, and DingTalk (the simulator) throttles and answers 500. The generator redelivers every
//! non-200 or timed-out callback with the same body (same `msgId`), as DingTalk does.
//!
//! Asserted from the simulator's record (and the expert's and the bus's): every callback answered
//! 200 produced exactly one reply message (updates of it do not count), the expert ran once per
//! event, and every command got exactly one result. A summary table per fault is printed
//! (`cargo nextest run -p gateway-tests --test faults --no-capture` shows it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dingtalk_sim::client::{CallbackClient, Content, RobotMessage};
use dingtalk_sim::{Api, CallFilter, Directory, Fault, FaultCount, FaultKind};
use fake_expert::Behavior;
use gateway_tests::stack::{Kind, Options, Stack, APP_SECRET, INTEGRATION};
use serde_json::Value;

/// New callbacks per second.
const RATE: u64 = 10;
/// How long each fault's window lasts (callbacks keep coming throughout).
const WINDOW: Duration = Duration::from_secs(4);
/// Attempts per callback; backoff 500 ms doubling: the last one about a minute after the first.
const ATTEMPTS: u32 = 8;

const FAULTS: [&str; 10] = [
    "none (baseline)",
    "NATS kill -9",
    "Redis kill -9",
    "ingress kill -9",
    "dispatcher kill -9",
    "notifier kill -9",
    "expert hangs",
    "expert fails (503)",
    "DingTalk throttles",
    "DingTalk 500s",
];

/// One callback's fate, as the generator saw it.
#[derive(Debug, Clone)]
struct Sent {
    msg_id: String,
    /// The message's text.
    text: String,
    phase: usize,
    acked: bool,
}

async fn deliver(client: CallbackClient, url: String, message: RobotMessage, phase: usize) -> Sent {
    let body = message.to_json(now_ms());
    let text = body["text"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        if let Ok(answer) = client.post_signed(&url, APP_SECRET, &body, now_ms()).await {
            if answer.is_ack() {
                return Sent {
                    msg_id: message.msg_id,
                    text,
                    phase,
                    acked: true,
                };
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(20));
        }
    }
    Sent {
        msg_id: message.msg_id,
        text,
        phase,
        acked: false,
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
}

async fn inject(stack: &mut Stack, phase: usize) {
    let sim = stack.sim.state().clone();
    match phase {
        1 => {
            stack.nats.kill().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stack.nats.restart().await;
        }
        2 => {
            stack.redis.kill().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stack.redis.restart().await;
        }
        3..=5 => {
            let kind = [Kind::Ingress, Kind::Dispatcher, Kind::Notifier][phase - 3];
            let service = stack.service(kind);
            service.kill().await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            service.restart().await;
        }
        6 => {
            // Longer than EXPERT_TIMEOUT: the dispatcher gives up on the stream, finds the run
            // still going and joins it.
            stack.expert.set_default(Behavior {
                delay: Duration::from_secs(4),
                ..Behavior::default()
            });
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.expert.set_default(Behavior::default());
        }
        7 => {
            stack.expert.set_default(Behavior::status(503));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stack.expert.set_default(Behavior::default());
        }
        8 => {
            for api in [Api::StandardCardSend, Api::StandardCardUpdate] {
                sim.add_fault(
                    Fault::once(FaultKind::QpsLimit)
                        .on(api)
                        .times(FaultCount::Times(15)),
                )
                .unwrap();
            }
        }
        9 => {
            for api in [Api::StandardCardSend, Api::StandardCardUpdate] {
                sim.add_fault(
                    Fault::once(FaultKind::Http500)
                        .on(api)
                        .times(FaultCount::Times(15)),
                )
                .unwrap();
            }
        }
        _ => {}
    }
}

/// Every message on a stream: (subject, payload).
async fn stream_payloads(js: &async_nats::jetstream::Context, name: &str) -> Vec<Value> {
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            if let Ok(value) = serde_json::from_slice(&message.payload) {
                out.push(value);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_doubled_across_crashes_hangs_and_throttling() {
    let options = Options::new(env!("CARGO_BIN_EXE_gateway-service"))
        .env("EXPERT_TIMEOUT", "3s")
        .env("EXPERT_MAX_ATTEMPTS", "5")
        .env("EXPERT_RETRY_BACKOFF", "500ms")
        .env("DISPATCHER_ACK_WAIT", "4s")
        .env("DISPATCHER_CLAIM_LEASE", "2s")
        .env("DISPATCHER_MAX_DELIVER", "20");
    let mut options = options;
    options.durable_redis = true;
    let mut stack = Stack::start(options).await;
    let users: Vec<(String, String)> = Directory::seeded()
        .users
        .into_iter()
        .map(|u| (u.userid, u.name))
        .collect();
    let phase = Arc::new(AtomicUsize::new(0));
    let generator = {
        let (client, url, template) =
            (stack.client.clone(), stack.webhook_url(), stack.message(""));
        let phase = phase.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let total = RATE * WINDOW.as_secs() * FAULTS.len() as u64;
            let mut tasks = Vec::new();
            for n in 0..total {
                ticker.tick().await;
                let (user, nick) = &users[n as usize % users.len()];
                let message = template
                    .clone()
                    .renewed()
                    .from_user(user.clone(), nick.clone())
                    .with_content(Content::Text(format!("fault run message {n}")));
                tasks.push(tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    message,
                    phase.load(Ordering::Relaxed),
                )));
            }
            let mut sent = Vec::new();
            for task in tasks {
                sent.push(task.await.expect("a delivery task"));
            }
            sent
        })
    };
    for (n, _) in FAULTS.iter().enumerate() {
        let window = Instant::now();
        phase.store(n, Ordering::Relaxed);
        inject(&mut stack, n).await;
        if let Some(rest) = WINDOW.checked_sub(window.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        stack.sim.state().clear_faults();
    }
    let sent = generator.await.expect("the generator");

    // Let everything settle: every acked callback's reply, or at most three minutes.
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.acked).collect();
    let reply_sends = |stack: &Stack| -> HashMap<String, usize> {
        let mut by_event: HashMap<String, usize> = HashMap::new();
        for call in stack
            .sim
            .state()
            .calls(&CallFilter::api(Api::StandardCardSend))
        {
            if call.status != 200 {
                continue;
            }
            if let Some(id) = call.body["cardBizId"].as_str() {
                if let Some(rest) = id.strip_prefix(&format!("{INTEGRATION}:")) {
                    let msg_id = rest.split(':').next().unwrap_or_default().to_owned();
                    *by_event.entry(msg_id).or_default() += 1;
                }
            }
        }
        by_event
    };
    // Every message DingTalk delivered counts: a plain message answering an event (an apology,
    // or the answer resent as a plain message after its card failed) is a reply too, and a
    // second message for an event is a duplicate.
    let replies_now = |stack: &Stack, report: bool| -> HashMap<String, usize> {
        let mut replies = reply_sends(stack);
        let delivered = stack.sim.state().messages();
        for sent in &sent {
            let suffix = format!(": {}\"", sent.text);
            let plain = delivered
                .iter()
                .filter(|m| m.content.to_string().contains(&suffix))
                .count();
            if plain > 0 {
                if report {
                    println!("plain message(s) for {}: {plain}", sent.text);
                }
                *replies.entry(sent.msg_id.clone()).or_default() += plain;
            }
        }
        replies
    };
    let settle = Instant::now();
    loop {
        let replies = replies_now(&stack, false);
        if acked.iter().all(|s| replies.contains_key(&s.msg_id)) {
            break;
        }
        if settle.elapsed() > Duration::from_secs(180) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then every command's result: a reply is the answer's first send, and the last answers'
    // updates may still be retried through the last fault.
    let js = async_nats::jetstream::new(stack.nats_client().await);
    loop {
        let commands = stream_payloads(&js, "DINGTALK_COMMANDS").await;
        let results = stream_payloads(&js, "DINGTALK_RESULTS").await;
        let answered: std::collections::HashSet<&str> = results
            .iter()
            .filter_map(|r| r["command_id"].as_str())
            .collect();
        let pending = commands
            .iter()
            .filter_map(|c| c["id"].as_str())
            .any(|id| !answered.contains(id));
        if !pending || settle.elapsed() > Duration::from_secs(180) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A little longer, so that a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replies = replies_now(&stack, true);
    let delivered = stack.sim.state().messages().len();

    // The table.
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (n, fault) in FAULTS.iter().enumerate() {
        let of_phase: Vec<&Sent> = sent.iter().filter(|s| s.phase == n).collect();
        let acked_here: Vec<&&Sent> = of_phase.iter().filter(|s| s.acked).collect();
        let replied = acked_here
            .iter()
            .filter(|s| replies.contains_key(&s.msg_id))
            .count();
        let duplicates: usize = acked_here
            .iter()
            .map(|s| {
                replies
                    .get(&s.msg_id)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(1)
            })
            .sum();
        let lost = acked_here.len() - replied;
        let runs_off = acked_here
            .iter()
            .filter(|s| {
                stack
                    .expert
                    .runs_for_event(&format!("{INTEGRATION}:{}", s.msg_id))
                    != 1
            })
            .count();
        rows.push(format!(
            "| {fault} | {} | {} | {replied} | {duplicates} | {lost} | {runs_off} |",
            of_phase.len(),
            acked_here.len()
        ));
        if duplicates > 0 || lost > 0 || runs_off > 0 {
            failures.push(fault.to_string());
        }
    }
    // Commands and results: exactly one result per command.
    let commands = stream_payloads(&js, "DINGTALK_COMMANDS").await;
    let results = stream_payloads(&js, "DINGTALK_RESULTS").await;
    let mut per_command: HashMap<String, usize> = HashMap::new();
    for result in &results {
        *per_command
            .entry(result["command_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let command_ids: std::collections::HashSet<String> = commands
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let without_result = command_ids
        .iter()
        .filter(|id| !per_command.contains_key(*id))
        .count();
    let doubled_results = per_command.values().filter(|n| **n > 1).count();

    println!("\nfault suite: {RATE}/s for {WINDOW:?} per fault, {ATTEMPTS} attempts per callback");
    println!("| fault | sent | acked | replied | duplicates | lost | expert runs != 1 |");
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!(
        "commands: {} distinct, {} results, {without_result} without a result, {doubled_results} with more than one; messages in DingTalk (cards included): {delivered}",
        command_ids.len(),
        results.len()
    );

    let crossing = sent.iter().filter(|s| s.phase > 0).count();
    assert!(
        crossing >= 300,
        "only {crossing} callbacks crossed the faults"
    );
    let unacked = sent.iter().filter(|s| !s.acked).count();
    assert!(
        failures.is_empty() && without_result == 0 && doubled_results == 0,
        "faults with lost, doubled or re-run events: {failures:?}; {unacked} never acked\n{}",
        stack.logs()
    );
    assert_eq!(
        unacked, 0,
        "every callback is acked within {ATTEMPTS} attempts"
    );
    println!("messages in DingTalk (cards included): {delivered}");
}
