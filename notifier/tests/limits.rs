//! The client layer's guarantees seen end to end through commands: token expiry, throttling and
//! one shared rate limit across replicas.

mod support;

use std::time::{Duration, Instant};

use common::bus::result::Status;
use dingtalk_sim::{Api, CallFilter, Fault, FaultCount, FaultKind};
use serde_json::json;
use support::{send, text, Bed, Options};

/// DingTalk's token endpoint fails (500) until the faults are cleared.
fn no_tokens(bed: &Bed) {
    bed.sim
        .state()
        .add_fault(
            Fault::once(FaultKind::Http500)
                .on(Api::NewToken)
                .times(FaultCount::Always),
        )
        .unwrap();
}

fn delivered(bed: &Bed, content: &str) -> usize {
    bed.sim
        .state()
        .messages()
        .iter()
        .filter(|m| m.content["content"] == content)
        .count()
}

#[tokio::test]
async fn a_token_that_expires_mid_run_is_refreshed_and_the_command_succeeds_once() {
    let bed = Bed::start().await;
    let to = json!([{"type": "user_id", "id": "user001"}]);
    bed.publish(&send("c-t1", "acme", to.clone(), text("before")))
        .await;
    assert_eq!(bed.result("c-t1").await.status, Status::Ok);
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::ExpireTokens))
        .unwrap();
    bed.publish(&send("c-t2", "acme", to, text("after"))).await;
    let result = bed.result("c-t2").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(delivered(&bed, "after"), 1);
    assert_eq!(
        bed.sim.state().calls(&CallFilter::api(Api::NewToken)).len(),
        2,
        "one refresh"
    );
}

#[tokio::test]
async fn a_send_waits_while_dingtalk_issues_no_token_and_is_delivered_once_it_does() {
    let bed = Bed::start().await;
    no_tokens(&bed);
    bed.publish(&send(
        "c-no-token",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("after the outage"),
    ))
    .await;
    let refused = || {
        bed.sim
            .state()
            .rejected(&CallFilter::api(Api::NewToken))
            .len()
    };
    let started = Instant::now();
    // Two rounds of token fetches (each one retried by the client): the command was offered
    // again after the first, not failed.
    while refused() < 5 {
        let results = bed.results_of("c-no-token");
        assert!(results.is_empty(), "failed during the outage: {results:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second round"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bed.dead_letters_of("c-no-token").is_empty());
    bed.sim.state().clear_faults();
    let result = bed.result("c-no-token").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(delivered(&bed, "after the outage"), 1);
}

#[tokio::test]
async fn a_throttled_send_is_retried_and_delivered_once() {
    let bed = Bed::start().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::QpsLimit).on(Api::RobotBatchSend))
        .unwrap();
    bed.publish(&send(
        "c-q",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("throttled once"),
    ))
    .await;
    let result = bed.result("c-q").await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(
        bed.sim
            .state()
            .rejected(&CallFilter::api(Api::RobotBatchSend))
            .len(),
        1
    );
    assert_eq!(delivered(&bed, "throttled once"), 1);
}

#[tokio::test]
async fn a_command_put_off_past_notifier_max_defer_fails_instead_of_waiting_for_ever() {
    let bed = Bed::with(Options {
        max_defer: Some("3s".into()),
        ..Options::default()
    })
    .await;
    // DingTalk issues no token (it could as well throttle every call: both defer a command).
    no_tokens(&bed);
    bed.publish(&send(
        "c-stuck",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("late news"),
    ))
    .await;
    let result = bed.result_within("c-stuck", Duration::from_secs(30)).await;
    assert_eq!(result.status, Status::Failed, "{result:?}");
    let error = result.error.as_ref().expect("an error");
    assert_eq!(error.code, "unavailable", "{result:?}");
    assert!(error.retryable, "{result:?}");
    assert!(bed.dead_letters_of("c-stuck").is_empty());
    assert!(
        bed.sim
            .state()
            .rejected(&CallFilter::api(Api::NewToken))
            .len()
            >= 4,
        "deferred at least once before it gave up"
    );
    assert_eq!(delivered(&bed, "late news"), 0);
}

#[tokio::test]
async fn a_command_that_waited_in_a_backlog_may_still_be_put_off() {
    let mut bed = Bed::with(Options {
        max_defer: Some("3s".into()),
        ..Options::default()
    })
    .await;
    // Published while no notifier runs, and older than NOTIFIER_MAX_DEFER when one starts.
    bed.kill_notifier().await;
    bed.publish(&send(
        "c-backlog",
        "acme",
        json!([{"type": "user_id", "id": "user001"}]),
        text("after the backlog"),
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    no_tokens(&bed);
    bed.start_notifier().await;
    // It is put off (never deferred before, its NOTIFIER_MAX_DEFER starts now), not failed.
    let mut redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let started = Instant::now();
    loop {
        assert!(
            bed.results_of("c-backlog").is_empty(),
            "failed instead of put off: {:?}",
            bed.results_of("c-backlog")
        );
        let since: Option<i64> = redis::cmd("HGET")
            .arg("dtg:ntf:cmd:acme:c-backlog")
            .arg("deferred_since")
            .query_async(&mut redis)
            .await
            .unwrap();
        if since.is_some() {
            break;
        }
        // The token fetch's own server retries, with backoff, come first: a loaded machine
        // needs room.
        assert!(started.elapsed() < Duration::from_secs(60), "never put off");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bed.sim.state().clear_faults();
    let result = bed
        .result_within("c-backlog", Duration::from_secs(30))
        .await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(delivered(&bed, "after the backlog"), 1);
}

#[tokio::test]
async fn a_send_answered_429_or_an_html_page_is_retried_and_delivered_once() {
    for (n, kind) in [FaultKind::Http429, FaultKind::HtmlPage]
        .into_iter()
        .enumerate()
    {
        let bed = Bed::start().await;
        bed.sim
            .state()
            .add_fault(Fault::once(kind.clone()).on(Api::RobotBatchSend))
            .unwrap();
        let content = format!("throttled as {n}");
        bed.publish(&send(
            "c-shape",
            "acme",
            json!([{"type": "user_id", "id": "user001"}]),
            text(&content),
        ))
        .await;
        let result = bed.result("c-shape").await;
        assert_eq!(result.status, Status::Ok, "{kind:?}: {result:?}");
        assert_eq!(delivered(&bed, &content), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn an_ip_ban_pauses_every_app_of_every_replica_until_it_ends_and_nothing_is_lost() {
    // DingTalk's ban lasts 5 minutes; 4 s here.
    let ban = Duration::from_secs(4);
    let bed = Bed::with(Options {
        ip_ban: Some(ban),
        ..Options::default()
    })
    .await;
    let (_stop, _second) = bed.another_replica().await;
    bed.sim
        .state()
        .add_fault(Fault::once(FaultKind::IpBan).on(Api::RobotBatchSend))
        .unwrap();
    let to = json!([{"type": "user_id", "id": "user001"}]);
    bed.publish(&send("c-ban", "acme", to.clone(), text("during the ban")))
        .await;
    let mut redis = common::redis::connect(&bed.redis.url()).await.unwrap();
    let started = Instant::now();
    loop {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("dtg:limit:ban:ip")
            .query_async(&mut redis)
            .await
            .unwrap();
        if ttl > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no ban stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let banned_at = Instant::now();
    // Another app's command, on either replica, waits for the ban too.
    bed.publish(&send("c-ban-b", "beta", to, text("other app")))
        .await;
    let calls_now = || {
        bed.sim
            .state()
            .calls(&CallFilter::default())
            .into_iter()
            .filter(|call| call.api != Api::NewToken)
            .count()
    };
    let before = calls_now();
    tokio::time::sleep(ban / 2).await;
    assert_eq!(calls_now(), before, "DingTalk called during the ban");
    assert!(bed.results_of("c-ban").is_empty() && bed.results_of("c-ban-b").is_empty());
    for id in ["c-ban", "c-ban-b"] {
        let result = bed.result_within(id, Duration::from_secs(30)).await;
        assert_eq!(result.status, Status::Ok, "{result:?}");
    }
    assert!(banned_at.elapsed() >= ban / 2);
    assert_eq!(delivered(&bed, "during the ban"), 1);
    assert_eq!(delivered(&bed, "other app"), 1);
}

#[tokio::test]
async fn two_replicas_share_one_rate_limit() {
    let bed = Bed::start().await;
    let _second = bed.another_replica().await;
    const N: usize = 60;
    let started = Instant::now();
    for n in 0..N {
        let command = send(
            &format!("r-{n}"),
            "acme",
            json!([{"type": "user_id", "id": "user001"}]),
            text(&format!("r {n}")),
        );
        bed.publish(&command).await;
    }
    for n in 0..N {
        assert_eq!(
            bed.result_within(&format!("r-{n}"), Duration::from_secs(30))
                .await
                .status,
            Status::Ok
        );
    }
    let took = started.elapsed();
    let refused = bed
        .sim
        .state()
        .rejected(&CallFilter::api(Api::RobotBatchSend));
    assert!(
        refused.is_empty(),
        "DingTalk's 20 QPS was never exceeded: {refused:?}"
    );
    for n in 0..N {
        assert_eq!(delivered(&bed, &format!("r {n}")), 1);
    }
    // 60 calls at 20 a second need at least two full seconds after the first twenty.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    eprintln!("{N} sends through two replicas in {took:?}");
}
