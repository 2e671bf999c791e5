//! The start-up sequence every service shares: connect to NATS and Redis, provision the bus
//! streams, and serve the ops listener. A dependency that is unreachable at start-up stops the
//! service with one line naming the variable to check (the orchestrator restarts it); after
//! start-up, both clients reconnect by themselves and `/readyz` reports the outage meanwhile.

use std::time::Duration;

use async_nats::jetstream;
use axum::Router;

use crate::bus::streams;
use crate::config::{redact_url, redact_url_list, CommonConfig};
use crate::ops::{self, Listener, Readiness};
use crate::registry::Registry;
use crate::shutdown::Shutdown;

/// How long start-up waits for NATS before giving up.
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// NATS is unreachable.
    #[error("cannot connect to NATS at NATS_URL={}: {reason}", redact_url_list(.url))]
    Nats {
        /// The URL tried (shown without its credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// The registry could not start (Redis unreachable).
    #[error("cannot open the registry at REDIS_URL={}: {reason}", redact_url(.url))]
    Registry {
        /// The URL tried (shown without its credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// Redis is unreachable.
    #[error("cannot connect to Redis at REDIS_URL={}: {reason}", redact_url(.url))]
    Redis {
        /// The URL tried (shown without its credentials).
        url: String,
        /// What failed.
        reason: String,
    },
    /// The bus streams could not be provisioned.
    #[error(transparent)]
    Streams(#[from] streams::ProvisionError),
    /// A listener could not bind.
    #[error("cannot listen on {var}={addr}: {reason}")]
    Listen {
        /// The variable naming the address.
        var: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// The connections and listener a running service stands on.
pub struct Foundation {
    /// The NATS client (reconnects by itself).
    pub nats: async_nats::Client,
    /// JetStream on that client.
    pub jetstream: jetstream::Context,
    /// The Redis connection (reconnects by itself).
    pub redis: redis::aio::ConnectionManager,
    /// Integrations and bindings (cached in-process).
    pub registry: Registry,
    /// The `/healthz`, `/readyz`, `/metrics` listener on `METRICS_ADDR`.
    pub ops: Listener,
}

impl Foundation {
    /// Connects, provisions the streams and starts the ops listener; `extra_routes` are served on
    /// the ops listener too (e.g. a service's admin routes when they share the port).
    pub async fn start(
        config: &CommonConfig,
        service: &str,
        extra_routes: Router,
        shutdown: &Shutdown,
    ) -> Result<Self, StartError> {
        let nats = connect_nats(&config.nats_url, service).await?;
        let jetstream = jetstream::new(nats.clone());
        streams::provision(&jetstream, &config.streams).await?;
        let redis = crate::redis::connect(&config.redis_url)
            .await
            .map_err(|err| StartError::Redis {
                url: config.redis_url.clone(),
                reason: err.to_string(),
            })?;
        config.registry.secrets.warn_if_unencrypted();
        let registry = Registry::connect(&config.redis_url, config.registry.clone())
            .await
            .map_err(|err| StartError::Registry {
                url: config.redis_url.clone(),
                reason: err.to_string(),
            })?;
        tokio::spawn(crate::redis::report_memory(redis.clone(), shutdown.clone()));
        tokio::spawn(crate::telemetry::keep_metrics(
            crate::telemetry::metrics_handle().clone(),
            crate::telemetry::METRICS_UPKEEP_INTERVAL,
            shutdown.clone(),
        ));
        let readiness = Readiness::new().nats(nats.clone()).redis(redis.clone());
        let app = ops::router(readiness).merge(extra_routes);
        let ops = ops::serve(config.metrics_addr, app, shutdown.clone())
            .await
            .map_err(|err| StartError::Listen {
                var: "METRICS_ADDR",
                addr: config.metrics_addr,
                reason: err.to_string(),
            })?;
        tracing::info!(service, metrics_addr = %ops.addr, "foundation ready");
        Ok(Self {
            nats,
            jetstream,
            redis,
            registry,
            ops,
        })
    }
}

/// Connects to NATS under the service's name, failing after five seconds. `url` may list
/// several servers, comma-separated: the client tries them, and learns the rest of the cluster
/// from the one it reaches.
pub async fn connect_nats(url: &str, service: &str) -> Result<async_nats::Client, StartError> {
    connect_nats_with(async_nats::ConnectOptions::new(), url, service).await
}

/// [`connect_nats`] starting from `options` (tests pin the order in which seeds are tried,
/// which the client otherwise shuffles).
#[doc(hidden)]
pub async fn connect_nats_with(
    options: async_nats::ConnectOptions,
    url: &str,
    service: &str,
) -> Result<async_nats::Client, StartError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .map(str::parse::<async_nats::ServerAddr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| StartError::Nats {
            url: url.to_owned(),
            reason: format!("not a NATS URL: {err}"),
        })?;
    // Each seed gets the whole bound: one that is down (its packets dropped, or accepting and
    // saying nothing) must not use up the time the next one needs.
    let budget = NATS_CONNECT_TIMEOUT * u32::try_from(servers.len()).unwrap_or(u32::MAX);
    let connect = options
        .name(format!("dingtalk-gateway-{service}"))
        .connection_timeout(NATS_CONNECT_TIMEOUT)
        .connect(servers);
    match tokio::time::timeout(budget, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(StartError::Nats {
            url: url.to_owned(),
            reason: err.to_string(),
        }),
        Err(_) => Err(StartError::Nats {
            url: url.to_owned(),
            reason: format!("no answer within {} s", budget.as_secs()),
        }),
    }
}

/// The body of every service's `main`: load the config (a bad value prints one line and exits
/// with status 2), set up tracing, run the service until SIGTERM or Ctrl-C, and exit 1 when it
/// cannot start.
pub async fn main<C, F, Fut>(
    service: &'static str,
    load: fn(&crate::config::Env) -> Result<C, crate::config::ConfigError>,
    common: fn(&C) -> &CommonConfig,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<(), StartError>>,
{
    let config = match load(&crate::config::Env::from_process()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{service}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let shared = common(&config);
    crate::telemetry::init_tracing(shared.log_format, &shared.log_filter);
    crate::telemetry::metrics_handle();
    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        on_signal.trigger();
    });
    match run(config, shutdown).await {
        Ok(()) => {
            tracing::info!(service, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(service, %err, "cannot start");
            eprintln!("{service}: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_error_names_the_url_without_its_password() {
        let errors = [
            StartError::Redis {
                url: "rediss://:hunter2@redis:6380".into(),
                reason: "refused".into(),
            },
            StartError::Registry {
                url: "redis://app:hunter2@redis".into(),
                reason: "refused".into(),
            },
            StartError::Nats {
                url: "tls://svc:hunter2@nats:4222".into(),
                reason: "refused".into(),
            },
        ];
        for err in errors {
            let shown = err.to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***@"), "{shown}");
        }
    }
}
