//! Crashes and bursts: nothing lost, nothing sent twice, no tenant starved.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::bus::result::Status;
use dingtalk_sim::{Api, CallFilter, Fault, FaultCount, FaultKind};
use serde_json::json;
use support::{send, text, Bed, Options};

#[tokio::test]
async fn a_notifier_killed_mid_burst_and_restarted_loses_nothing_and_sends_nothing_twice() {
    let mut bed = Bed::with(Options {
        ack_wait: Duration::from_secs(2),
        concurrency: 4,
        ..Options::default()
    })
    .await;
    const N: usize = 60;
    let users = ["user001", "user002", "user003", "user004"];
    for n in 0..N {
        let command = send(
            &format!("burst-{n}"),
            "acme",
            json!([{"type": "user_id", "id": users[n % 4]}]),
            text(&format!("burst {n}")),
        );
        bed.publish(&command).await;
    }
    let started = Instant::now();
    while bed.all_result_ids().len() < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the burst does not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bed.kill_notifier().await;
    let done_before = bed.all_result_ids().len();
    assert!(done_before < N, "killed mid-burst");
    tokio::time::sleep(Duration::from_millis(500)).await;
    bed.start_notifier().await;
    for n in 0..N {
        bed.result_within(&format!("burst-{n}"), Duration::from_secs(60))
            .await;
    }
    bed.settle().await;
    assert_eq!(
        bed.all_result_ids().len(),
        N,
        "exactly one result per command"
    );
    // DingTalk received each message at most once; every `ok` one exactly once.
    let mut sent: HashMap<String, usize> = HashMap::new();
    for call in bed.sim.state().calls(&CallFilter::api(Api::RobotBatchSend)) {
        let param: serde_json::Value =
            serde_json::from_str(call.body["msgParam"].as_str().unwrap()).unwrap();
        *sent
            .entry(param["content"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut unknown = 0;
    for n in 0..N {
        let result = bed.results_of(&format!("burst-{n}")).remove(0);
        let copies = sent.get(&format!("burst {n}")).copied().unwrap_or(0);
        match result.status {
            Status::Ok => assert_eq!(copies, 1, "burst-{n} delivered once"),
            _ => {
                let error = result.error.unwrap();
                assert_eq!(error.code, "outcome_unknown", "burst-{n}: {error:?}");
                assert!(error.retryable);
                assert!(copies <= 1, "burst-{n} never sent twice");
                unknown += 1;
            }
        }
    }
    eprintln!("{done_before} of {N} done before the kill; {unknown} in doubt after the restart");
    assert!(
        unknown <= 4,
        "only the commands in flight at the crash are in doubt ({unknown})"
    );
    let (ack_pending, _, pending) = bed.consumer_state().await;
    assert_eq!((ack_pending, pending), (0, 0));
}

#[tokio::test]
async fn tenant_b_is_not_starved_by_tenant_as_burst() {
    let bed = Bed::with(Options {
        concurrency: 8,
        ..Options::default()
    })
    .await;
    const BURST: usize = 1000;
    let mut acks = Vec::with_capacity(BURST);
    for n in 0..BURST {
        let command = send(
            &format!("a-{n}"),
            "acme",
            json!([{"type": "user_id", "id": "user001"}]),
            text(&format!("a {n}")),
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(common::bus::MSG_ID_HEADER, format!("a-{n}").as_str());
        acks.push(
            bed.js
                .publish_with_headers(
                    "dingtalk.commands.acme.send".to_owned(),
                    headers,
                    command.to_string().into(),
                )
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
    bed.publish(&send(
        "b-1",
        "beta",
        json!([{"type": "user_id", "id": "user002"}]),
        text("b"),
    ))
    .await;
    let published = Instant::now();
    let result = bed.result_within("b-1", Duration::from_secs(10)).await;
    let waited = published.elapsed();
    assert_eq!(result.status, Status::Ok);
    let a_done = bed
        .all_result_ids()
        .iter()
        .filter(|id| id.starts_with("a-"))
        .count();
    eprintln!("tenant B waited {waited:?} behind {BURST} commands of A ({a_done} of A done)");
    assert!(a_done < BURST / 2, "A's burst is still running");
    assert!(waited < Duration::from_millis(1500), "B waited {waited:?}");
}

/// A unionId that fails to resolve on the first execution and resolves on the next must not move
/// the other recipients to new step keys: the first execution's sends are finished steps.
#[tokio::test]
async fn a_union_id_resolving_only_after_a_crash_sends_nothing_twice() {
    let mut bed = Bed::with(Options {
        ack_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::SystemError)
                .on(Api::UserGetByUnionId)
                .times(FaultCount::Always),
        )
        .unwrap();
    // user003 is held back, so the execution sleeps before its retry round: the crash lands
    // there, after user001's batchSend was recorded.
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::FlowControl {
                user_ids: vec!["user003".into()],
            })
            .on(Api::RobotBatchSend),
        )
        .unwrap();
    bed.publish(&send(
        "c-union-crash",
        "acme",
        json!([
            {"type": "union_id", "id": "union-user002"},
            {"type": "user_id", "id": "user001"},
            {"type": "user_id", "id": "user003"}
        ]),
        text("once only"),
    ))
    .await;
    // The crash must come after the batchSend's outcome is recorded (during the wait before
    // the retry round), not between DingTalk's answer and the record: then the step is in
    // doubt, and nobody in it is sent again.
    let mut redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let started = Instant::now();
    loop {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg("dtg:ntf:cmd:acme:c-union-crash")
            .query_async(&mut redis)
            .await
            .unwrap();
        let recorded = fields.iter().any(|(field, value)| {
            field.starts_with("step:") && field.contains("batch") && value != "pending"
        });
        if recorded {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no batchSend recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        bed.sim
            .state()
            .calls(&CallFilter::api(Api::RobotBatchSend))
            .len(),
        1
    );
    bed.kill_notifier().await;
    bed.sim.state().clear_faults();
    bed.start_notifier().await;
    let result = bed
        .result_within("c-union-crash", Duration::from_secs(30))
        .await;
    let mut reached: HashMap<String, usize> = HashMap::new();
    for message in bed.sim.state().messages() {
        if let dingtalk_sim::Recipient::OneToOne { user_ids } = message.recipient {
            for user in user_ids {
                *reached.entry(user).or_default() += 1;
            }
        }
    }
    assert!(
        reached.values().all(|n| *n == 1),
        "a recipient reached twice: {reached:?}"
    );
    assert_eq!(reached.len(), 2, "user001, then user003: {reached:?}");
    assert_eq!(result.status, Status::Ok);
    let oks: Vec<bool> = result.targets.iter().map(|t| t.ok).collect();
    assert_eq!(oks, [false, true, true], "{result:?}");
}

/// A card send cut short by a crash is probed on redelivery; a probe that fails without an
/// answer proves nothing, so the card is not sent again.
#[tokio::test]
async fn a_card_in_doubt_whose_probe_fails_is_reported_unknown_and_not_sent_again() {
    let mut bed = Bed::with(Options {
        ack_wait: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 1500 }).on(Api::StandardCardSend))
        .unwrap();
    let mut command = send(
        "c-probe",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("card"),
    );
    command["updatable"] = json!(true);
    bed.publish(&command).await;
    let client = redis::Client::open(bed.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    loop {
        let step: Option<String> = redis::cmd("HGET")
            .arg("dtg:ntf:cmd:acme:c-probe")
            .arg("step:card:c-probe")
            .query_async(&mut redis)
            .await
            .unwrap();
        if step.as_deref() == Some("pending") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no card step");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bed.kill_notifier().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sends_before = bed
        .sim
        .state()
        .calls(&CallFilter::api(Api::StandardCardSend))
        .len();
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::Http500)
                .on(Api::StandardCardUpdate)
                .times(FaultCount::Always),
        )
        .unwrap();
    bed.start_notifier().await;
    let result = bed.result_within("c-probe", Duration::from_secs(30)).await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    assert_eq!(result.error.unwrap().code, "outcome_unknown");
    assert_eq!(
        bed.sim
            .state()
            .calls(&CallFilter::api(Api::StandardCardSend))
            .len(),
        sends_before,
        "not sent again"
    );
}
