//! Backlog gauges, sampled by the consuming services: how many messages a durable consumer has
//! not had delivered yet (its lag, what KEDA scales on) and how many messages a stream holds
//! (for the DLQ: dead letters waiting for an operator). They feed the dashboards and the
//! "lag growing" and "DLQ growing" alerts without a separate NATS exporter.
//!
//! | name | labels | meaning |
//! |---|---|---|
//! | `dingtalk_gateway_bus_consumer_pending_messages` | `stream`, `consumer` | messages not yet delivered to the consumer |
//! | `dingtalk_gateway_bus_consumer_ack_pending_messages` | `stream`, `consumer` | delivered, not yet acknowledged |
//! | `dingtalk_gateway_bus_stream_messages` | `stream` | messages stored in the stream |
//!
//! Every replica reports the same values (they describe shared JetStream state): aggregate with
//! `max`, not `sum`.

use std::time::Duration;

use async_nats::jetstream::Context;

use crate::shutdown::Shutdown;

/// Messages not yet delivered to a consumer.
pub const CONSUMER_PENDING: &str = "dingtalk_gateway_bus_consumer_pending_messages";
/// Messages delivered to a consumer and not acknowledged yet.
pub const CONSUMER_ACK_PENDING: &str = "dingtalk_gateway_bus_consumer_ack_pending_messages";
/// Messages stored in a stream.
pub const STREAM_MESSAGES: &str = "dingtalk_gateway_bus_stream_messages";

/// How often the gauges are refreshed.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// How long one sample may take.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a service samples: its own durable consumer, and streams whose size matters.
#[derive(Debug, Clone)]
pub struct Watch {
    /// `(stream, consumer)` pairs whose lag is reported.
    pub consumers: Vec<(String, String)>,
    /// Streams whose message count is reported (the DLQ).
    pub streams: Vec<String>,
}

/// Reads the consumers and streams once and sets the gauges; the first failure is returned
/// after everything else was sampled.
pub async fn sample(js: &Context, watch: &Watch) -> Result<(), String> {
    let mut failure = None;
    for (stream, consumer) in &watch.consumers {
        let info = async {
            let mut consumer = js
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    consumer, stream,
                )
                .await
                .map_err(|err| err.to_string())?;
            consumer
                .info()
                .await
                .map(|info| (info.num_pending, info.num_ack_pending))
                .map_err(|err| err.to_string())
        };
        match tokio::time::timeout(SAMPLE_TIMEOUT, info).await {
            Ok(Ok((pending, ack_pending))) => {
                let labels = [("stream", stream.clone()), ("consumer", consumer.clone())];
                metrics::gauge!(CONSUMER_PENDING, &labels).set(pending as f64);
                metrics::gauge!(CONSUMER_ACK_PENDING, &labels).set(ack_pending as f64);
            }
            Ok(Err(err)) => failure = failure.or(Some(format!("consumer {consumer}: {err}"))),
            Err(_) => failure = failure.or(Some(format!("consumer {consumer}: timed out"))),
        }
    }
    for stream in &watch.streams {
        let info = async {
            let mut handle = js.get_stream(stream).await.map_err(|err| err.to_string())?;
            handle
                .info()
                .await
                .map(|info| info.state.messages)
                .map_err(|err| err.to_string())
        };
        match tokio::time::timeout(SAMPLE_TIMEOUT, info).await {
            Ok(Ok(messages)) => {
                metrics::gauge!(STREAM_MESSAGES, "stream" => stream.clone()).set(messages as f64)
            }
            Ok(Err(err)) => failure = failure.or(Some(format!("stream {stream}: {err}"))),
            Err(_) => failure = failure.or(Some(format!("stream {stream}: timed out"))),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Samples every [`INTERVAL`] until `shutdown`; failures are logged at debug level (`/readyz`
/// already reports NATS being down).
pub async fn run(js: Context, watch: Watch, shutdown: Shutdown) {
    shutdown
        .every(INTERVAL, || {
            let (js, watch) = (js.clone(), watch.clone());
            async move {
                if let Err(err) = sample(&js, &watch).await {
                    tracing::debug!(%err, "cannot sample the bus backlog");
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::streams;
    use crate::config::StreamSettings;

    #[tokio::test]
    async fn lag_and_stream_size_are_reported() {
        let nats = test_harness::NatsServer::start().await;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        streams::provision(&js, &StreamSettings::default())
            .await
            .unwrap();
        js.get_stream(streams::COMMANDS)
            .await
            .unwrap()
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("lag-probe".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for n in 0..3 {
            js.publish(format!("dingtalk.commands.acme.send{n}"), "{}".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        js.publish("dingtalk.dlq.notifier.acme", "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
        crate::telemetry::metrics_handle();
        let watch = Watch {
            consumers: vec![(streams::COMMANDS.into(), "lag-probe".into())],
            streams: vec![streams::DLQ.into()],
        };
        sample(&js, &watch).await.unwrap();
        let text = crate::telemetry::render_metrics();
        assert!(
            text.contains(r#"dingtalk_gateway_bus_consumer_pending_messages{stream="DINGTALK_COMMANDS",consumer="lag-probe"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"dingtalk_gateway_bus_stream_messages{stream="DINGTALK_DLQ"} 1"#),
            "{text}"
        );
        let missing = Watch {
            consumers: vec![(streams::COMMANDS.into(), "nobody".into())],
            streams: vec![],
        };
        assert!(sample(&js, &missing).await.unwrap_err().contains("nobody"));
    }
}
