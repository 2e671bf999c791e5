//! The ingress: the only public face of the gateway. It accepts what DingTalk sends, proves it
//! is genuine, puts it on the bus durably, and answers DingTalk fast. It never calls an expert
//! or the DingTalk API on the callback path.
//!
//! The binary (`src/main.rs`) only loads the config and calls [`run`]; everything else lives
//! here so tests start the same code in-process on free ports ([`start`]).

pub mod admin;
pub mod config;
pub mod error;
pub mod metrics;
pub mod normalize;
pub mod publish;
pub mod stream;
pub mod webhook;

use std::time::Duration;

use common::ops::{self, Listener, Readiness};
use common::runtime::{Foundation, StartError};
use common::shutdown::Shutdown;

pub use config::Config;

/// A started ingress.
pub struct Running {
    /// Connections, registry and the ops listener.
    pub foundation: Foundation,
    /// The public callback listener (`INGRESS_ADDR`).
    pub public: Listener,
    /// The admin API listener (`ADMIN_ADDR`).
    pub admin: Listener,
    /// The Stream-mode connector (`STREAM_ENABLED`).
    pub stream: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the ingress: foundation first, then the public and admin listeners.
pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Running, StartError> {
    let foundation =
        Foundation::start(&config.common, "ingress", axum::Router::new(), shutdown).await?;
    let publisher = publish::Publisher::new(foundation.jetstream.clone(), config.publish_timeout);
    let state = webhook::WebhookState {
        registry: foundation.registry.clone(),
        redis: foundation.redis.clone(),
        publisher: publisher.clone(),
        max_skew: config.callback_max_skew,
        sign_window: common::crypto::ROBOT_SIGN_WINDOW,
        clock: webhook::system_clock(),
        in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        reply_prefix: None,
    };
    let public = ops::serve(
        config.ingress_addr,
        webhook::router(state),
        shutdown.clone(),
    )
    .await
    .map_err(|err| StartError::Listen {
        var: "INGRESS_ADDR",
        addr: config.ingress_addr,
        reason: err.to_string(),
    })?;
    tracing::info!(addr = %public.addr, "accepting DingTalk callbacks");
    let readiness = Readiness::new()
        .nats(foundation.nats.clone())
        .redis(foundation.redis.clone());
    let admin = admin::serve(
        config,
        foundation.registry.clone(),
        foundation.redis.clone(),
        readiness,
        shutdown,
    )
    .await?;
    let stream = config.stream.enabled.then(|| {
        stream::Connector {
            config: config.stream.clone(),
            registry: foundation.registry.clone(),
            redis: foundation.redis.clone(),
            publisher,
            api_url: config.dingtalk.api_url.clone(),
        }
        .spawn(shutdown.clone())
    });
    Ok(Running {
        foundation,
        public,
        admin,
        stream,
    })
}

impl Running {
    /// Waits for the listeners to finish their in-flight requests (at most `limit`), then stops
    /// the registry's background task.
    pub async fn stopped(self, limit: Duration) {
        common::shutdown::drain(
            async {
                let _ = self.public.task.await;
                if let Some(stream) = self.stream {
                    let _ = stream.await;
                }
                let _ = self.admin.task.await;
                let _ = self.foundation.ops.task.await;
            },
            limit,
        )
        .await;
        self.foundation.registry.shutdown().await;
    }
}

/// Runs the ingress until `shutdown`, then lets in-flight callbacks finish.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let running = start(&config, &shutdown).await?;
    shutdown.wait().await;
    running.stopped(config.common.shutdown_timeout).await;
    Ok(())
}
