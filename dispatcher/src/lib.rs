//! The dispatcher: routes each inbound message to its AI expert and turns the answer into notifier commands.
//!
//! The binary (`src/main.rs`) only loads the config and calls [`run`]; everything else lives
//! here so tests start the same code in-process on free ports.

use common::config::{CommonConfig, ConfigError, Env};
use common::runtime::{Foundation, StartError};
use common::shutdown::Shutdown;

/// Everything the dispatcher reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings shared by every service (`METRICS_ADDR` defaults to `0.0.0.0:9101`).
    pub common: CommonConfig,
}

impl Config {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, "0.0.0.0:9101")?,
        })
    }
}

/// A started dispatcher.
pub struct Running {
    /// Its connections and ops listener.
    pub foundation: Foundation,
}

/// Starts the dispatcher: connects, provisions the bus streams and serves its ops listener.
pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Running, StartError> {
    let foundation =
        Foundation::start(&config.common, "dispatcher", axum::Router::new(), shutdown).await?;
    Ok(Running { foundation })
}

/// Runs the dispatcher until `shutdown`, then lets in-flight work finish within `SHUTDOWN_TIMEOUT`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    let running = start(&config, &shutdown).await?;
    shutdown.wait().await;
    common::shutdown::drain(
        async {
            let _ = running.foundation.ops.task.await;
        },
        config.common.shutdown_timeout,
    )
    .await;
    running.foundation.registry.shutdown().await;
    Ok(())
}
