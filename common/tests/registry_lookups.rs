//! The registry counts its cache lookups (`dingtalk_gateway_registry_cache_lookups_total`). The
//! counter belongs to the process, so this check is a test binary of its own: no other test's
//! lookups can land in it, whichever runner runs the tests.

use common::registry::{IntegrationId, IntegrationSpec, Registry, RegistryOptions, SecretsKeys};
use test_harness::RedisServer;

/// The counter's value for integration lookups with `result` (`hit` or `miss`).
fn lookups(result: &str) -> u64 {
    let series = format!(
        "dingtalk_gateway_registry_cache_lookups_total{{kind=\"integration\",result=\"{result}\"}} "
    );
    common::telemetry::render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().expect("a counter"))
}

#[tokio::test]
async fn cache_hits_and_misses_are_counted() {
    let redis = RedisServer::start().await;
    let registry = Registry::connect(
        &redis.url(),
        RegistryOptions::new(SecretsKeys::unencrypted()),
    )
    .await
    .expect("registry connects to the test redis");
    registry
        .put_integration(IntegrationSpec {
            id: "acme".into(),
            client_id: "dingkey-acme".into(),
            client_secret: "client-secret-0123456789".into(),
            callback_token: Some("callback-token-0123456789".into()),
            callback_aes_key: Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            ..IntegrationSpec::default()
        })
        .await
        .unwrap();
    let (known, ghost): (IntegrationId, IntegrationId) =
        ("acme".parse().unwrap(), "ghost".parse().unwrap());
    let (hits, misses) = (lookups("hit"), lookups("miss"));

    for _ in 0..100 {
        assert!(registry.get_integration(&known).await.unwrap().is_some());
        assert!(registry.get_integration(&ghost).await.unwrap().is_none());
    }
    // The first lookup of each id misses and fills the cache (the unknown one negatively).
    assert_eq!((lookups("hit") - hits, lookups("miss") - misses), (198, 2));
    registry.shutdown().await;
}
