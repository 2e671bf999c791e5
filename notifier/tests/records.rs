//! The notifier's Redis records against a real redis-server.

use common::bus::command::{Mentions, Recipient, RecipientType};
use common::bus::result::CommandResult;
use notifier::records::{CommandLock, Delivered, Finished, Records, SentRecord};
use test_harness::RedisServer;

fn result(command_id: &str) -> CommandResult {
    CommandResult::from_slice(
        serde_json::json!({
            "v": 1, "command_id": command_id, "integration_id": "acme", "op": "send",
            "status": "ok",
            "targets": [{"recipient": {"type": "user_id", "id": "u1"}, "ok": true}],
            "finished_at": "2026-11-26T10:00:00Z"
        })
        .to_string()
        .as_bytes(),
    )
    .expect("a valid result")
}

fn sent() -> SentRecord {
    SentRecord {
        ok: true,
        recipients: vec![Recipient {
            kind: RecipientType::UserId,
            id: "u1".to_owned(),
        }],
        mentions: Mentions::default(),
        delivered: vec![(
            0,
            Delivered::OneToOne {
                process_query_key: "pqk".to_owned(),
            },
        )],
        resolved: Vec::new(),
        recalled: false,
    }
}

async fn records(redis: &RedisServer) -> Records {
    let client = redis::Client::open(redis.url()).expect("a Redis URL");
    Records::new(
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("Redis is reachable"),
    )
}

#[tokio::test]
async fn a_finished_send_a_finished_other_command_and_an_unfinished_one_are_told_apart() {
    let redis = RedisServer::start().await;
    let records = records(&redis).await;
    assert_eq!(
        records.finished("acme", "s1").await.unwrap(),
        Finished::NotYet
    );
    records
        .finish("acme", &result("s1"), Some(&sent()))
        .await
        .unwrap();
    assert_eq!(
        records.finished("acme", "s1").await.unwrap(),
        Finished::Sent(sent())
    );
    records.finish("acme", &result("r1"), None).await.unwrap();
    assert_eq!(
        records.finished("acme", "r1").await.unwrap(),
        Finished::NotASend
    );
    assert_eq!(
        records.finished("other", "s1").await.unwrap(),
        Finished::NotYet,
        "records are per integration"
    );
}

/// An update polls its target while the send finishes: it must see the send either unfinished
/// or finished with what it delivered, never finished without it (which fails the update for
/// good as `not_a_send`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_finishing_while_it_is_polled_is_never_seen_half_written() {
    let redis = RedisServer::start().await;
    let records = records(&redis).await;
    for n in 0..200 {
        let id = format!("race{n}");
        let writer = {
            let records = records.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                records.finish("acme", &result(&id), Some(&sent())).await
            })
        };
        loop {
            match records.finished("acme", &id).await.unwrap() {
                Finished::NotYet => continue,
                Finished::Sent(_) => break,
                Finished::NotASend => panic!("send {id} seen finished without its sent record"),
            }
        }
        writer.await.unwrap().unwrap();
    }
}

/// A redelivered command whose first execution finished between the redelivery's look for a
/// result and its taking the lease must not run again: the lease is refused as finished.
#[tokio::test]
async fn the_lease_of_a_finished_command_is_refused_as_finished() {
    let redis = RedisServer::start().await;
    let records = records(&redis).await;
    let lock = |command: &'static str, owner: &'static str| {
        let records = records.clone();
        async move {
            records
                .lock_command("acme", command, owner, std::time::Duration::from_secs(30))
                .await
                .unwrap()
        }
    };
    assert_eq!(lock("c1", "one").await, CommandLock::Taken);
    assert_eq!(lock("c1", "two").await, CommandLock::Held);
    records
        .finish("acme", &result("c1"), Some(&sent()))
        .await
        .unwrap();
    records.unlock("acme", "c1", "one").await.unwrap();
    assert_eq!(lock("c1", "two").await, CommandLock::Finished);
    assert_eq!(
        lock("c2", "two").await,
        CommandLock::Taken,
        "another command"
    );
}
