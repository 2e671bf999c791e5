//! The notifier: the only caller of the DingTalk API: executes outbound commands under shared token and rate limits.
//!
//! The binary (`src/main.rs`) only loads the config and calls [`run`]; everything else lives
//! here so tests start the same code in-process on free ports.

pub mod dingtalk;

use common::config::{CommonConfig, ConfigError, Env};
use common::runtime::{Foundation, StartError};
use common::shutdown::Shutdown;

/// Everything the notifier reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings shared by every service (`METRICS_ADDR` defaults to `0.0.0.0:9102`).
    pub common: CommonConfig,
}

impl Config {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, "0.0.0.0:9102")?,
        })
    }
}

/// A started notifier.
pub struct Running {
    /// Its connections and ops listener.
    pub foundation: Foundation,
}

/// Starts the notifier: connects, provisions the bus streams and serves its ops listener.
pub async fn start(config: &Config, shutdown: &Shutdown) -> Result<Running, StartError> {
    let foundation =
        Foundation::start(&config.common, "notifier", axum::Router::new(), shutdown).await?;
    Ok(Running { foundation })
}

/// Runs the notifier until `shutdown`, then lets in-flight work finish within `SHUTDOWN_TIMEOUT`.
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
