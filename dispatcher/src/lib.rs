//! The dispatcher: routes each inbound message to its AI expert over the Agent Protocol and
//! turns the answer into notifier commands.
//!
//! * [`consumer`] — the shared durable pull consumer, acks, progress, redeliveries, dead letters;
//! * [`ordering`] — publish order within a conversation across replicas;
//! * [`claims`] — exactly one expert run per event;
//! * [`routing`] — which events count, who is answered, which expert answers (pure);
//! * [`dispatch`] — one event's work: thread, run, retries, answer;
//! * [`exhausted`] — dead letters for events JetStream stopped delivering;
//! * [`expert`] — the Agent Protocol client and its SSE stream;
//! * [`answer`] — commands for the notifier, and the pacing of card updates;
//! * [`throttle`] — slower updates while the notifier reports throttling;
//! * [`texts`] — every system text in zh-Hans and en.
//!
//! The binary (`src/main.rs`) only loads the config and calls [`run`]; everything else lives
//! here so tests start the same code in-process on free ports ([`start`]).

pub mod answer;
pub mod claims;
pub mod config;
pub mod consumer;
pub mod dispatch;
pub mod exhausted;
pub mod expert;
pub mod metrics;
pub mod ordering;
pub mod routing;
pub mod texts;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use common::runtime::{Foundation, StartError};
use common::shutdown::Shutdown;
use tokio::task::JoinHandle;

pub use config::Config;

/// A started dispatcher.
pub struct Running {
    /// Its connections and ops listener.
    pub foundation: Foundation,
    /// This replica's id (the owner of its claims and of the fetch lock).
    pub replica: String,
    consumer: JoinHandle<()>,
    /// The throttling and max-deliveries listeners.
    listeners: Vec<JoinHandle<()>>,
}

/// Starts the dispatcher: connects, provisions the bus streams and the shared consumer, serves
/// its ops listener, and starts pulling events.
pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Running, StartError> {
    let foundation =
        Foundation::start(&config.common, "dispatcher", axum::Router::new(), shutdown).await?;
    let replica = uuid::Uuid::new_v4().to_string();
    let settings = consumer::ConsumerSettings {
        name: config.consumer.clone(),
        concurrency: config.concurrency,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
    };
    let pull = consumer::durable(&foundation.jetstream, &settings).await?;
    let expert = expert::ExpertClient::new(&config.expert)
        .expect("a rustls HTTP client needs no system configuration to build");
    let throttle = throttle::Throttle::default();
    let dispatcher = dispatch::Dispatcher {
        registry: foundation.registry.clone(),
        expert,
        commands: answer::Commands::new(foundation.jetstream.clone()),
        throttle: throttle.clone(),
        settings: dispatch::Settings {
            update_interval: config.stream_update_interval,
            thinking_delay: config.thinking_delay,
            max_attempts: config.expert.max_attempts,
            retry_backoff: config.expert.retry_backoff,
        },
    };
    let ordering = ordering::Ordering::new(foundation.redis.clone(), &replica);
    let claims = claims::Claims::new(
        foundation.redis.clone(),
        &replica,
        config.claim_lease,
        config.done_retention,
    );
    let listeners = vec![
        tokio::spawn(
            throttle
                .clone()
                .listen(foundation.nats.clone(), shutdown.clone()),
        ),
        tokio::spawn(exhausted::watch(
            foundation.nats.clone(),
            foundation.jetstream.clone(),
            ordering.clone(),
            claims.clone(),
            config.consumer.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(common::bus::backlog::run(
            foundation.jetstream.clone(),
            common::bus::backlog::Watch {
                consumers: vec![(
                    common::bus::streams::EVENTS.to_owned(),
                    config.consumer.clone(),
                )],
                streams: vec![common::bus::streams::DLQ.to_owned()],
            },
            shutdown.clone(),
        )),
    ];
    let consumer = consumer::Consumer {
        dispatcher: Arc::new(dispatcher),
        claims,
        ordering,
        jetstream: foundation.jetstream.clone(),
        settings,
    };
    let drain = config.common.shutdown_timeout;
    let consumer = tokio::spawn(consumer.run(pull, shutdown.clone(), drain));
    tracing::info!(%replica, concurrency = config.concurrency, "dispatching events");
    Ok(Running {
        foundation,
        replica,
        consumer,
        listeners,
    })
}

impl Running {
    /// Waits for the events in flight (at most `limit`) and the listeners, then stops the
    /// registry's background task.
    pub async fn stopped(self, limit: Duration) {
        common::shutdown::drain(
            async {
                let _ = self.consumer.await;
                for listener in self.listeners {
                    let _ = listener.await;
                }
                let _ = self.foundation.ops.task.await;
            },
            limit,
        )
        .await;
        self.foundation.registry.shutdown().await;
    }

    /// Stops at once, as a crash would: nothing in flight is acked, no claim is released.
    pub fn abort(self) {
        self.consumer.abort();
        for listener in &self.listeners {
            listener.abort();
        }
        self.foundation.ops.task.abort();
    }
}

/// Runs the dispatcher until `shutdown`, then lets in-flight work finish within `SHUTDOWN_TIMEOUT`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let running = start(&config, &shutdown).await?;
    shutdown.wait().await;
    // The consumer drains within SHUTDOWN_TIMEOUT itself; a little more for the listeners.
    running
        .stopped(config.common.shutdown_timeout + Duration::from_secs(1))
        .await;
    Ok(())
}
