//! The bus streams against a real JetStream: provisioning is idempotent, never shrinks what an
//! operator enlarged, and de-duplicates on `Nats-Msg-Id` within the configured window.

use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use common::bus::streams::{self, COMMANDS, DLQ, EVENTS, RESULTS};
use common::config::StreamSettings;
use test_harness::NatsServer;

async fn jetstream(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

async fn config_of(js: &jetstream::Context, name: &str) -> Config {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone()
}

#[tokio::test]
async fn provisioning_creates_the_four_streams_and_is_idempotent() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let settings = StreamSettings::default();
    streams::provision(&js, &settings).await.unwrap();
    streams::provision(&js, &settings).await.unwrap();
    for name in [EVENTS, COMMANDS, RESULTS, DLQ] {
        let config = config_of(&js, name).await;
        assert_eq!(config.duplicate_window, Duration::from_secs(600), "{name}");
        assert_eq!(
            config.storage,
            jetstream::stream::StorageType::File,
            "{name}"
        );
    }
    assert_eq!(config_of(&js, DLQ).await.max_age, settings.dlq_max_age);
}

#[tokio::test]
async fn provisioning_keeps_limits_an_operator_enlarged() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let settings = StreamSettings::default();
    streams::provision(&js, &settings).await.unwrap();

    let mut enlarged = config_of(&js, EVENTS).await;
    enlarged.max_age = Duration::from_secs(90 * 24 * 3600);
    enlarged.max_bytes = 8 << 30;
    enlarged.duplicate_window = Duration::from_secs(3600);
    js.update_stream(enlarged).await.unwrap();

    streams::provision(&js, &settings).await.unwrap();
    let after = config_of(&js, EVENTS).await;
    assert_eq!(after.max_age, Duration::from_secs(90 * 24 * 3600));
    assert_eq!(after.max_bytes, 8 << 30);
    assert_eq!(after.duplicate_window, Duration::from_secs(3600));
}

#[tokio::test]
async fn provisioning_grows_a_stream_below_the_configured_limits() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let small = StreamSettings {
        max_age: Duration::from_secs(15 * 60),
        ..StreamSettings::default()
    };
    streams::provision(&js, &small).await.unwrap();
    streams::provision(&js, &StreamSettings::default())
        .await
        .unwrap();
    assert_eq!(
        config_of(&js, EVENTS).await.max_age,
        StreamSettings::default().max_age
    );
}

#[tokio::test]
async fn a_redelivered_message_id_is_stored_once() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    streams::provision(&js, &StreamSettings::default())
        .await
        .unwrap();
    let publish = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(common::bus::MSG_ID_HEADER, "acme:msg1");
        js.publish_with_headers("dingtalk.events.acme.message", headers, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap()
    };
    assert!(!publish().await.duplicate);
    assert!(publish().await.duplicate);
    let mut stream = js.get_stream(EVENTS).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}
