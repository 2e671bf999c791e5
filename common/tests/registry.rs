//! The registry against a real `redis-server` per test (started by `test-harness` on a free
//! port, never the shared 6379).

use std::time::{Duration, Instant};

use common::registry::{
    ConversationKey, CustomRobotSpec, IntegrationId, IntegrationSpec, Registry, RegistryError,
    RegistryOptions, SecretsKeys, ThreadId, WaitingQuestion, XpertId,
};
use test_harness::RedisServer;

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];
const CLIENT_SECRET: &str = "client-secret-0123456789";
const CALLBACK_TOKEN: &str = "callback-token-0123456789";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn spec(id: &str) -> IntegrationSpec {
    IntegrationSpec {
        id: id.into(),
        name: Some(format!("Tenant {id}")),
        client_id: format!("dingkey-{id}"),
        client_secret: CLIENT_SECRET.into(),
        callback_token: Some(CALLBACK_TOKEN.into()),
        callback_aes_key: Some(AES_KEY.into()),
        ..IntegrationSpec::default()
    }
}

fn id(value: &str) -> IntegrationId {
    value.parse().expect("test id is valid")
}

fn options(secrets: SecretsKeys) -> RegistryOptions {
    RegistryOptions {
        timeout: Duration::from_millis(500),
        ..RegistryOptions::new(secrets)
    }
}

fn encrypted_with(current: &[u8; 32], previous: Option<&[u8; 32]>) -> RegistryOptions {
    options(SecretsKeys::from_bytes(current, previous))
}

async fn connect(redis: &RedisServer, options: RegistryOptions) -> Registry {
    Registry::connect(&redis.url(), options)
        .await
        .expect("registry connects to the test redis")
}

/// A plain connection for looking at what the registry wrote.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn raw_get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut raw(redis).await)
        .await
        .unwrap()
}

async fn raw_ttl(redis: &RedisServer, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut raw(redis).await)
        .await
        .unwrap()
}

async fn raw_expire(redis: &RedisServer, key: &str, seconds: u64) {
    redis::cmd("EXPIRE")
        .arg(key)
        .arg(seconds)
        .query_async::<()>(&mut raw(redis).await)
        .await
        .unwrap();
}

/// How many times Redis has run `command` since the last `CONFIG RESETSTAT`.
async fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw(redis).await)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Polls `check` every 10 ms until it holds or `within` has passed; returns the time taken.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn integration_put_get_list_delete_round_trip() {
    let redis = RedisServer::start().await;
    let registry = connect(&redis, encrypted_with(&KEY_A, None)).await;
    registry.ping().await.unwrap();

    let stored = registry.put_integration(spec("beta")).await.unwrap();
    registry.put_integration(spec("alpha")).await.unwrap();
    assert_eq!(stored.robot_code(), "dingkey-beta");
    assert_eq!(stored.client_secret().expose(), CLIENT_SECRET);

    let read = registry
        .get_integration(&id("beta"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, stored);
    assert_eq!(registry.get_integration(&id("nobody")).await.unwrap(), None);

    let listed = registry.list_integrations().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|i| i.id().as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);

    // Replacing keeps created_at and moves updated_at.
    let replaced = registry
        .put_integration(IntegrationSpec {
            xpert_id: Some("xpert-7".into()),
            ..spec("beta")
        })
        .await
        .unwrap();
    assert_eq!(replaced.created_at(), stored.created_at());
    assert!(replaced.updated_at() >= stored.updated_at());
    let read = registry
        .get_integration(&id("beta"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.xpert_id().map(XpertId::as_str), Some("xpert-7"));

    assert!(registry.delete_integration(&id("beta")).await.unwrap());
    assert!(!registry.delete_integration(&id("beta")).await.unwrap());
    assert_eq!(registry.get_integration(&id("beta")).await.unwrap(), None);
    let listed = registry.list_integrations().await.unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn a_record_that_cannot_be_read_fails_the_listing_but_not_the_readable_ones() {
    let redis = RedisServer::start().await;
    let old = connect(&redis, encrypted_with(&KEY_A, None)).await;
    old.put_integration(spec("sealed-old")).await.unwrap();
    let current = connect(&redis, encrypted_with(&KEY_B, None)).await;
    current.put_integration(spec("alpha")).await.unwrap();
    current.put_integration(spec("zulu")).await.unwrap();
    let mut conn = raw(&redis).await;
    redis::cmd("SET")
        .arg("dtg:integration:zulu")
        .arg("not json")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let err = current.list_integrations().await.unwrap_err();
    assert!(matches!(err, RegistryError::Secrets { .. }), "{err}");
    let listing = current.readable_integrations().await.unwrap();
    let read: Vec<&str> = listing
        .integrations
        .iter()
        .map(|i| i.id().as_str())
        .collect();
    assert_eq!(read, ["alpha"]);
    let unreadable: Vec<(&str, bool)> = listing
        .unreadable
        .iter()
        .map(|(id, err)| (id.as_str(), matches!(err, RegistryError::Corrupt { .. })))
        .collect();
    assert_eq!(unreadable, [("sealed-old", false), ("zulu", true)]);
}

#[tokio::test]
async fn invalid_spec_is_rejected_with_every_field_and_nothing_is_written() {
    let redis = RedisServer::start().await;
    let registry = connect(&redis, encrypted_with(&KEY_A, None)).await;
    let bad = IntegrationSpec {
        client_secret: "".into(),
        qps_limit: Some(0),
        ..spec("acme")
    };
    let Err(RegistryError::Validation(errors)) = registry.put_integration(bad).await else {
        panic!("expected a validation error");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, ["client_secret", "qps_limit"]);
    assert_eq!(raw_get(&redis, "dtg:integration:acme").await, None);
}

#[tokio::test]
async fn secrets_are_stored_encrypted_when_a_key_is_set() {
    let redis = RedisServer::start().await;
    let registry = connect(&redis, encrypted_with(&KEY_A, None)).await;
    registry.put_integration(spec("acme")).await.unwrap();

    let stored = raw_get(&redis, "dtg:integration:acme").await.unwrap();
    for secret in [CLIENT_SECRET, CALLBACK_TOKEN, AES_KEY] {
        assert!(!stored.contains(secret), "plaintext secret in {stored}");
    }
    let record: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let kid_a = SecretsKeys::from_bytes(&KEY_A, None)
        .current_key_id()
        .unwrap()
        .to_string();
    for field in ["client_secret", "callback_token", "callback_aes_key"] {
        assert_eq!(record[field]["kid"], kid_a.as_str(), "{field}");
        assert!(record[field]["ct"].is_string() && record[field]["nonce"].is_string());
    }
    assert_eq!(
        record["client_id"], "dingkey-acme",
        "non-secrets stay readable"
    );
}

#[tokio::test]
async fn custom_robot_secrets_are_stored_encrypted_read_back_and_masked() {
    const TOKEN: &str = "robot-access-token-0123456789abcdef";
    const SIGNING: &str = "SEC0123456789abcdef0123456789";
    let redis = RedisServer::start().await;
    let registry = connect(&redis, encrypted_with(&KEY_A, None)).await;
    let robots = IntegrationSpec {
        custom_robots: Some(vec![CustomRobotSpec {
            access_token: TOKEN.into(),
            secret: SIGNING.into(),
        }]),
        ..spec("acme")
    };
    registry.put_integration(robots).await.unwrap();
    let stored = raw_get(&redis, "dtg:integration:acme").await.unwrap();
    assert!(
        !stored.contains(TOKEN) && !stored.contains(SIGNING),
        "{stored}"
    );
    let record: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(record["custom_robots"][0]["secret"]["ct"].is_string());

    // A fresh process (no cache) opens them.
    let reader = connect(&redis, encrypted_with(&KEY_A, None)).await;
    let acme = reader.get_integration(&id("acme")).await.unwrap().unwrap();
    assert_eq!(
        acme.custom_robot_secret(TOKEN).map(|s| s.expose()),
        Some(SIGNING)
    );
    assert!(acme.custom_robot_secret("another-robot").is_none());
    let masked = serde_json::to_value(acme.masked()).unwrap();
    assert_eq!(
        masked["custom_robots"],
        serde_json::json!([{"access_token": "robo***", "secret": "SEC0***"}])
    );
    assert!(!format!("{acme:?}").contains(SIGNING));

    // Rotation re-seals them too.
    let rotating = connect(&redis, encrypted_with(&KEY_B, Some(&KEY_A))).await;
    let report = rotating.reencrypt_all().await.unwrap();
    assert_eq!(report.rewritten, 1);
    let after = connect(&redis, encrypted_with(&KEY_B, None)).await;
    let acme = after.get_integration(&id("acme")).await.unwrap().unwrap();
    assert_eq!(
        acme.custom_robot_secret(TOKEN).map(|s| s.expose()),
        Some(SIGNING)
    );
}

#[tokio::test]
async fn secrets_are_marked_plain_without_a_key() {
    let redis = RedisServer::start().await;
    let registry = connect(&redis, options(SecretsKeys::unencrypted())).await;
    registry.put_integration(spec("acme")).await.unwrap();
    let stored = raw_get(&redis, "dtg:integration:acme").await.unwrap();
    let record: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(record["client_secret"]["plain"], CLIENT_SECRET);
}

#[tokio::test]
async fn key_rotation_reads_with_previous_key_then_reencrypt_all_moves_to_the_new_one() {
    let redis = RedisServer::start().await;
    let old = connect(&redis, encrypted_with(&KEY_A, None)).await;
    old.put_integration(spec("one")).await.unwrap();
    old.put_integration(spec("two")).await.unwrap();

    // Only the new key: the old ciphertexts are reported with their key id.
    let only_new = connect(&redis, encrypted_with(&KEY_B, None)).await;
    let kid_a = SecretsKeys::from_bytes(&KEY_A, None)
        .current_key_id()
        .unwrap()
        .to_string();
    let err = only_new.get_integration(&id("one")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Secrets { .. }), "{err}");
    assert!(err.to_string().contains(&kid_a), "{err}");

    let rotating = connect(&redis, encrypted_with(&KEY_B, Some(&KEY_A))).await;
    let one = rotating.get_integration(&id("one")).await.unwrap().unwrap();
    assert_eq!(one.client_secret().expose(), CLIENT_SECRET);

    let report = rotating.reencrypt_all().await.unwrap();
    assert_eq!((report.rewritten, report.already_current), (2, 0));
    let report = rotating.reencrypt_all().await.unwrap();
    assert_eq!((report.rewritten, report.already_current), (0, 2));

    // A fresh process with only the new key (no cache involved) reads everything.
    let after = connect(&redis, encrypted_with(&KEY_B, None)).await;
    let all = after.list_integrations().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .all(|i| i.callback_aes_key().map(|k| k.expose()) == Some(AES_KEY)));
    assert_eq!(
        all[0].created_at(),
        one.created_at(),
        "re-encryption keeps data"
    );
}

#[tokio::test]
async fn another_process_sees_a_write_through_pub_sub_long_before_the_ttl() {
    let redis = RedisServer::start().await;
    // A 60 s TTL: only the invalidation message can explain seeing changes quickly.
    let long_ttl = || RegistryOptions {
        cache_ttl: Duration::from_secs(60),
        negative_cache_ttl: Duration::from_secs(60),
        ..encrypted_with(&KEY_A, None)
    };
    let admin = connect(&redis, long_ttl()).await;
    let ingress = connect(&redis, long_ttl()).await;
    let acme = id("acme");

    // Cached negative result first, then a create.
    assert_eq!(ingress.get_integration(&acme).await.unwrap(), None);
    admin.put_integration(spec("acme")).await.unwrap();
    let seen = eventually(Duration::from_secs(2), || async {
        ingress.get_integration(&acme).await.unwrap().is_some()
    })
    .await
    .expect("create seen through pub/sub");
    assert!(seen < Duration::from_secs(2), "took {seen:?}");

    // An update of a cached positive entry.
    admin
        .put_integration(IntegrationSpec {
            qps_limit: Some(99),
            ..spec("acme")
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(2), || async {
        ingress
            .get_integration(&acme)
            .await
            .unwrap()
            .unwrap()
            .qps_limit()
            .get()
            == 99
    })
    .await
    .expect("update seen through pub/sub");

    // Triggers are cached and invalidated the same way.
    assert_eq!(ingress.get_trigger(&acme).await.unwrap(), None);
    admin
        .set_trigger(&acme, "xpert-1".parse().unwrap())
        .await
        .unwrap();
    eventually(Duration::from_secs(2), || async {
        ingress.get_trigger(&acme).await.unwrap().is_some()
    })
    .await
    .expect("trigger seen through pub/sub");

    // And a delete.
    admin.delete_integration(&acme).await.unwrap();
    eventually(Duration::from_secs(2), || async {
        ingress.get_integration(&acme).await.unwrap().is_none()
            && ingress.get_trigger(&acme).await.unwrap().is_none()
    })
    .await
    .expect("delete seen through pub/sub");
}

#[tokio::test]
async fn cached_reads_do_not_reach_redis_and_unknown_ids_are_cached_briefly() {
    let redis = RedisServer::start().await;
    let registry = connect(
        &redis,
        RegistryOptions {
            cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_millis(300),
            ..encrypted_with(&KEY_A, None)
        },
    )
    .await;
    registry.put_integration(spec("acme")).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut raw(&redis).await)
        .await
        .unwrap();

    for _ in 0..100 {
        assert!(registry
            .get_integration(&id("acme"))
            .await
            .unwrap()
            .is_some());
        assert!(registry
            .get_integration(&id("ghost"))
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(command_calls(&redis, "get").await, 2, "one read per id");

    // The negative entry expires after its own, shorter TTL.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(registry
        .get_integration(&id("ghost"))
        .await
        .unwrap()
        .is_none());
    assert!(registry
        .get_integration(&id("acme"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(command_calls(&redis, "get").await, 3);
}

#[tokio::test]
async fn triggers_need_an_integration_and_go_away_with_it() {
    let redis = RedisServer::start().await;
    let registry = connect(&redis, encrypted_with(&KEY_A, None)).await;
    let acme = id("acme");
    let xpert: XpertId = "xpert-1".parse().unwrap();

    let err = registry
        .set_trigger(&acme, xpert.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::UnknownIntegration(_)), "{err}");

    registry.put_integration(spec("acme")).await.unwrap();
    registry.set_trigger(&acme, xpert.clone()).await.unwrap();
    assert_eq!(
        registry.get_trigger(&acme).await.unwrap(),
        Some(xpert.clone())
    );
    assert!(registry.delete_trigger(&acme).await.unwrap());
    assert_eq!(registry.get_trigger(&acme).await.unwrap(), None);
    assert!(!registry.delete_trigger(&acme).await.unwrap());

    registry.set_trigger(&acme, xpert).await.unwrap();
    registry.delete_integration(&acme).await.unwrap();
    assert_eq!(raw_get(&redis, "dtg:trigger:acme").await, None);
    assert_eq!(registry.get_trigger(&acme).await.unwrap(), None);
}

#[tokio::test]
async fn conversation_binding_ttl_is_set_and_refreshed_on_read_and_unbind_bumps_generation() {
    let redis = RedisServer::start().await;
    let registry = connect(
        &redis,
        RegistryOptions {
            binding_ttl: Duration::from_secs(1000),
            ..encrypted_with(&KEY_A, None)
        },
    )
    .await;
    let key = ConversationKey::new(id("acme"), "cid$:LWCP=+x==", "$:LWCP_v1:$user").unwrap();
    let redis_key = "dtg:conv:acme:14:cid$:LWCP=+x==:$:LWCP_v1:$user";
    let ttl = |key| raw_ttl(&redis, key);

    assert_eq!(registry.get_binding(&key).await.unwrap(), None);
    assert_eq!(registry.generation(&key).await.unwrap(), 0);
    let thread: ThreadId = "thread-0".parse().unwrap();
    let xpert: XpertId = "xpert-1".parse().unwrap();
    let bound = registry
        .bind(&key, xpert.clone(), thread.clone(), 0)
        .await
        .unwrap();
    assert!((990..=1000).contains(&ttl(redis_key).await));

    // Age the key, then read: the TTL is back to the full binding TTL.
    raw_expire(&redis, redis_key, 10).await;
    assert!(ttl(redis_key).await <= 10);
    assert_eq!(registry.get_binding(&key).await.unwrap(), Some(bound));
    assert!((990..=1000).contains(&ttl(redis_key).await));

    // Reset: binding gone, generation 1, and a bind derived from generation 0 is refused.
    assert_eq!(registry.unbind(&key).await.unwrap(), 1);
    assert_eq!(registry.generation(&key).await.unwrap(), 1);
    assert_eq!(registry.get_binding(&key).await.unwrap(), None);
    let err = registry
        .bind(&key, xpert.clone(), thread, 0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::StaleGeneration {
                expected: 0,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
    let rebound = registry
        .bind(&key, xpert, "thread-1".parse().unwrap(), 1)
        .await
        .unwrap();
    assert_eq!(rebound.generation, 1);
    assert_eq!(registry.get_binding(&key).await.unwrap(), Some(rebound));
    // The generation counter outlives bindings on purpose.
    assert_eq!(
        ttl("dtg:conv-gen:acme:14:cid$:LWCP=+x==:$:LWCP_v1:$user").await,
        -1
    );
}

#[tokio::test]
async fn a_waiting_question_lives_and_is_refreshed_like_a_binding_and_goes_with_a_reset() {
    let redis = RedisServer::start().await;
    let registry = connect(
        &redis,
        RegistryOptions {
            binding_ttl: Duration::from_secs(1000),
            ..encrypted_with(&KEY_A, None)
        },
    )
    .await;
    let key = ConversationKey::new(id("acme"), "cid1", "u1").unwrap();
    let redis_key = "dtg:conv-wait:acme:4:cid1:u1";
    let ttl = || raw_ttl(&redis, redis_key);
    let question = WaitingQuestion {
        thread_id: "thread-0".parse().unwrap(),
        interrupts: vec!["i1#0123456789abcdef".into()],
        asked_by: "acme:m1".into(),
    };
    registry
        .set_waiting_question(&key, Some(&question))
        .await
        .unwrap();
    assert!((990..=1000).contains(&ttl().await));
    raw_expire(&redis, redis_key, 10).await;
    assert_eq!(
        registry.waiting_question(&key).await.unwrap(),
        Some(question.clone())
    );
    assert!((990..=1000).contains(&ttl().await));

    // Answered: gone. Asked again, then reset: gone with the binding.
    registry.set_waiting_question(&key, None).await.unwrap();
    assert_eq!(registry.waiting_question(&key).await.unwrap(), None);
    registry
        .set_waiting_question(&key, Some(&question))
        .await
        .unwrap();
    registry.unbind(&key).await.unwrap();
    assert_eq!(registry.waiting_question(&key).await.unwrap(), None);

    // A record that does not read is no question (the thread is asked before any resume).
    let _: () = redis::cmd("SET")
        .arg(redis_key)
        .arg("thread-0")
        .query_async(&mut raw(&redis).await)
        .await
        .unwrap();
    assert_eq!(registry.waiting_question(&key).await.unwrap(), None);
}

#[tokio::test]
async fn redis_outage_fails_fast_serves_fresh_cache_and_recovers_after_restart() {
    let mut redis = RedisServer::start().await;
    let timeout = Duration::from_millis(500);
    let outage_options = || RegistryOptions {
        cache_ttl: Duration::from_secs(30),
        timeout,
        ..encrypted_with(&KEY_A, None)
    };
    let registry = connect(&redis, outage_options()).await;
    let other_process = connect(&redis, outage_options()).await;
    registry.put_integration(spec("acme")).await.unwrap();
    assert!(registry
        .get_integration(&id("acme"))
        .await
        .unwrap()
        .is_some());
    assert!(other_process
        .get_integration(&id("acme"))
        .await
        .unwrap()
        .is_some());

    redis.kill().await;

    // Cached within its TTL: still served.
    assert!(registry
        .get_integration(&id("acme"))
        .await
        .unwrap()
        .is_some());
    // Anything that needs Redis fails with a clear error within the timeout.
    for _ in 0..3 {
        let start = Instant::now();
        let err = registry.get_integration(&id("other")).await.unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            matches!(
                err,
                RegistryError::Redis { .. } | RegistryError::Timeout { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("redis "), "{err}");
        assert!(
            elapsed < timeout + Duration::from_millis(300),
            "{elapsed:?}"
        );
        assert!(registry.ping().await.is_err());
    }

    redis.restart().await;

    eventually(Duration::from_secs(15), || async {
        registry.ping().await.is_ok()
    })
    .await
    .expect("registry reconnects after redis restarts");
    registry
        .put_integration(IntegrationSpec {
            qps_limit: Some(77),
            ..spec("acme")
        })
        .await
        .unwrap();
    // The other process's subscriber reconnected too, so it sees the write long before its
    // 30 s TTL.
    eventually(Duration::from_secs(15), || async {
        matches!(
            other_process.get_integration(&id("acme")).await,
            Ok(Some(i)) if i.qps_limit().get() == 77
        )
    })
    .await
    .expect("invalidation works again after restart");
}

#[tokio::test]
async fn connect_fails_fast_with_a_clear_error_when_redis_is_unreachable() {
    let start = Instant::now();
    // Port 1 is never a Redis server; the connection is refused (or times out).
    let err = Registry::connect("redis://127.0.0.1:1", options(SecretsKeys::unencrypted()))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().starts_with("redis connect"), "{err}");
}

#[tokio::test]
async fn invalidation_subscriber_stops_on_shutdown_and_when_all_handles_drop() {
    let redis = RedisServer::start().await;
    let subscribers = || async {
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("dtg:registry:invalidate")
            .query_async(&mut raw(&redis).await)
            .await
            .unwrap();
        count
    };

    let first = connect(&redis, encrypted_with(&KEY_A, None)).await;
    let second = connect(&redis, encrypted_with(&KEY_A, None)).await;
    assert_eq!(subscribers().await, 2);

    first.shutdown().await;
    eventually(Duration::from_secs(2), || async {
        subscribers().await == 1
    })
    .await
    .expect("shutdown unsubscribes");
    // Reads still work after shutdown (TTL-only caching).
    assert_eq!(first.get_integration(&id("acme")).await.unwrap(), None);

    let clone = second.clone();
    drop(second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(subscribers().await, 1, "a clone keeps the subscriber alive");
    drop(clone);
    eventually(Duration::from_secs(2), || async {
        subscribers().await == 0
    })
    .await
    .expect("dropping every handle stops the subscriber");
}
