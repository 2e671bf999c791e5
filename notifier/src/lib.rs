//! The notifier: the only caller of the DingTalk API: executes outbound commands under shared token and rate limits.
//!
//! Commands arrive on `DINGTALK_COMMANDS` ([`worker`]); the [`engine`] reads each one, plans the
//! DingTalk calls ([`plan`], [`content`], [`calls`] — pure and unit-tested), runs them through
//! the client layer ([`dingtalk`]) exactly once ([`records`]) and publishes exactly one result
//! ([`publish`]). Queries are answered over request/reply ([`queries`]). Experts reach both
//! through the notify [`tools`] (MCP and HTTP, when `TOOLS_TOKEN` is set).
//!
//! The binary (`src/main.rs`) only loads the config and calls [`run`]; everything else lives
//! here so tests start the same code in-process on free ports.

pub mod answers;
pub mod calls;
pub mod config;
pub mod content;
pub mod dingtalk;
pub mod engine;
pub mod media;
pub mod metrics;
pub mod outcome;
pub mod pacer;
pub mod placeholders;
pub mod plan;
pub mod publish;
pub mod queries;
pub mod records;
mod send;
pub mod session_webhook;
pub mod tools;
mod update;
pub mod worker;

pub use config::Config;

use common::runtime::{Foundation, StartError};
use common::shutdown::Shutdown;
use tokio::task::JoinHandle;

use crate::dingtalk::{DingTalk, DingTalkOptions};
use crate::engine::{Engine, EngineConfig};
use crate::publish::Publisher;
use crate::queries::Queries;
use crate::records::Records;

/// A started notifier.
pub struct Running {
    /// Its connections and ops listener.
    pub foundation: Foundation,
    /// The commands consumer loop; ends after shutdown once in-flight commands finished.
    pub worker: JoinHandle<()>,
    /// The query responder; ends after shutdown.
    pub queries: JoinHandle<()>,
    /// The notify tools listener (`TOOLS_ADDR`), when `TOOLS_TOKEN` is set.
    pub tools: Option<common::ops::Listener>,
}

/// Starts the notifier: connects, provisions the bus streams and the shared consumer,
/// subscribes to queries, and starts consuming commands.
pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Running, StartError> {
    let foundation =
        Foundation::start(&config.common, "notifier", axum::Router::new(), shutdown).await?;
    let nats_error = |reason: String| StartError::Nats {
        url: config.common.nats_url.clone(),
        reason,
    };
    let http = crate::dingtalk::http_client()
        .map_err(|err| nats_error(format!("cannot build the HTTP client: {err}")))?;
    let dingtalk = DingTalk::new(
        http,
        config.dingtalk.clone(),
        foundation.redis.clone(),
        DingTalkOptions {
            limiter_margin: config.limiter_margin,
            ip_ban: config.ip_ban,
            ..DingTalkOptions::default()
        },
    );
    let records = Records::new(foundation.redis.clone()).with_retention(config.record_retention);
    let engine = Engine::new(
        dingtalk.clone(),
        records.clone(),
        foundation.registry.clone(),
        EngineConfig {
            oapi_url: config.dingtalk.oapi_url.clone(),
            media_url_allowlist: config.media_url_allowlist.clone(),
            public_base_url: config.public_base_url.clone(),
            lease: config.ack_wait,
            target_wait: config.target_wait,
            max_defer: config.max_defer,
            stream_max_age: config.common.streams.max_age,
        },
    );
    if config.public_base_url.is_none() {
        tracing::warn!("PUBLIC_BASE_URL is unset: cards are sent, but their button presses cannot reach the gateway");
    }
    worker::consumer(&foundation.jetstream, config.ack_wait)
        .await
        .map_err(|err| nats_error(format!("cannot create the commands consumer: {err}")))?;
    let requests = Queries::subscribe(&foundation.nats)
        .await
        .map_err(|err| nats_error(format!("cannot subscribe to queries: {err}")))?;
    // Usage gauges stay current across days, months and replicas; ends at shutdown.
    tokio::spawn(dingtalk.clone().keep_usage_current(shutdown.clone()));
    let queries = tokio::spawn(
        Queries::new(dingtalk, foundation.registry.clone(), records).serve(
            foundation.nats.clone(),
            requests,
            config.concurrency,
            shutdown.clone(),
        ),
    );
    let tools = match &config.tools {
        Some(tools_config) => {
            let tools = tools::Tools::new(
                tools::bus::ToolBus::new(foundation.nats.clone(), foundation.jetstream.clone()),
                foundation.registry.clone(),
            );
            Some(tools::start(tools_config, tools, shutdown).await?)
        }
        None => {
            tracing::info!(
                "TOOLS_TOKEN is unset: the notify tools for experts (MCP, HTTP) are off"
            );
            None
        }
    };
    // Lag and DLQ gauges for the dashboards and alerts; ends at shutdown.
    tokio::spawn(common::bus::backlog::run(
        foundation.jetstream.clone(),
        common::bus::backlog::Watch {
            consumers: vec![(
                common::bus::streams::COMMANDS.to_owned(),
                worker::CONSUMER.to_owned(),
            )],
            streams: vec![common::bus::streams::DLQ.to_owned()],
        },
        shutdown.clone(),
    ));
    let worker = tokio::spawn(worker::run(
        engine,
        Publisher::new(foundation.jetstream.clone()),
        foundation.jetstream.clone(),
        worker::WorkerConfig {
            concurrency: config.concurrency,
            ack_wait: config.ack_wait,
        },
        shutdown.clone(),
    ));
    Ok(Running {
        foundation,
        worker,
        queries,
        tools,
    })
}

/// Runs the notifier until `shutdown`, then lets in-flight work finish within `SHUTDOWN_TIMEOUT`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let running = start(&config, &shutdown).await?;
    shutdown.wait().await;
    common::shutdown::drain(
        async {
            let _ = running.worker.await;
            let _ = running.queries.await;
            if let Some(tools) = running.tools {
                let _ = tools.task.await;
            }
            let _ = running.foundation.ops.task.await;
        },
        config.common.shutdown_timeout,
    )
    .await;
    running.foundation.registry.shutdown().await;
    Ok(())
}
