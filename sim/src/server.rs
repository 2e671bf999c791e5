//! Starting and stopping a simulator: [`Simulator::start`] binds, serves and returns a
//! [`RunningSim`] that knows its address and holds the [`SimState`] handle.

use std::net::SocketAddr;

use common::ops;
use common::shutdown::Shutdown;
use tokio::task::JoinHandle;

use crate::config::SimConfig;
use crate::routes;
use crate::state::SimState;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address could not be bound.
    #[error("cannot listen on SIM_ADDR={addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Entry point of the library.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Starts a simulator with its own shutdown token (stopped by [`RunningSim::stop`] or drop).
    pub async fn start(config: SimConfig) -> Result<RunningSim, StartError> {
        Self::start_with_shutdown(config, Shutdown::new()).await
    }

    /// Starts a simulator that also stops when `shutdown` is triggered (the binary passes the
    /// signal-driven token).
    pub async fn start_with_shutdown(
        config: SimConfig,
        shutdown: Shutdown,
    ) -> Result<RunningSim, StartError> {
        let state = SimState::new(&config);
        let app = routes::router(state.clone(), config.limits.max_media_bytes);
        let shutdown = shutdown.child();
        let listener = ops::serve(config.addr, app, shutdown.clone())
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        let base_url = config
            .public_url
            .clone()
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{}", listener.addr));
        state.set_base_url(base_url);
        let stream_addr = state
            .stream()
            .serve(listener.addr.ip(), shutdown.clone())
            .await
            .map_err(|source| StartError::Bind {
                addr: listener.addr,
                source,
            })?;
        tracing::info!(addr = %listener.addr, %stream_addr, "DingTalk simulator listening");
        Ok(RunningSim {
            addr: listener.addr,
            state,
            shutdown,
            task: Some(listener.task),
        })
    }
}

/// A simulator serving requests. Dropping it stops the listener.
#[derive(Debug)]
pub struct RunningSim {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    state: SimState,
    shutdown: Shutdown,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// `http://<addr>`: point both `DINGTALK_API_URL` and `DINGTALK_OAPI_URL` at it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state handle, for set-up and assertions in-process.
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Stops accepting, finishes in-flight requests, and waits for the listener to end.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(%err, "simulator listener task failed");
            }
        }
    }

    /// Completes when the listener has stopped (after its shutdown token fires).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(%err, "simulator listener task failed");
            }
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
