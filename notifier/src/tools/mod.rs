//! Notify tools for experts: the seed's DingTalk tools, served over MCP (streamable HTTP at
//! `/mcp`) and as plain JSON over HTTP (`/api/tools`), on the notifier's `TOOLS_ADDR`.
//!
//! An expert runs elsewhere and calls a tool while it works; each call becomes one bus command
//! (or a query, for the list tools) and waits for its answer, so a tool sends exactly what any
//! other publisher could send, under the same token, rate limits and exactly-once records.
//!
//! - [`catalog`]: names, descriptions and argument types (one JSON Schema per tool).
//! - [`translate`]: arguments → command or query, and answer → the seed's result shape (pure).
//! - [`bus`]: publishing and waiting, bounded by the call's timeout.
//! - [`mcp`] and [`http`]: the two surfaces over the one [`Tools::call`]; [`auth`]: the bearer
//!   token both require.

pub mod auth;
pub mod bus;
pub mod catalog;
pub mod http;
pub mod mcp;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;

use common::config::{ConfigError, Env};
use common::ops::Listener;
use common::registry::{Registry, RegistryError};
use common::runtime::StartError;
use common::secret::Secret;
use common::shutdown::Shutdown;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use self::bus::ToolBus;
use self::catalog::ToolName;
use self::translate::{Action, ConnectionDefaults, PlanError, Planned, ToolError, ToolResult};

/// Tool calls, by tool and outcome (`ok` or the error code).
pub const TOOL_CALLS: &str = "dingtalk_gateway_notifier_tool_calls_total";
/// Tool calls served at once by one replica; beyond it a call is refused as `overloaded`
/// (retryable) instead of queueing without bound.
pub const MAX_CALLS_IN_FLIGHT: usize = 512;
/// The shortest `TOOLS_TOKEN` accepted: a bearer token guessable in a few tries would open
/// DingTalk sending to anyone who can reach the port.
pub const MIN_TOKEN_LEN: usize = 16;

/// `TOOLS_ADDR` and `TOOLS_TOKEN`; the tools listener runs only when the token is set.
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    /// `TOOLS_ADDR`: where the tools listen (default `127.0.0.1:8091`).
    pub addr: SocketAddr,
    /// `TOOLS_TOKEN`: the bearer token every request must carry.
    pub token: Secret,
}

impl ToolsConfig {
    /// `None` when `TOOLS_TOKEN` is unset (the tools are off); an error for a bad address or a
    /// token shorter than [`MIN_TOKEN_LEN`].
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let addr = env.socket_addr("TOOLS_ADDR", "127.0.0.1:8091")?;
        let Some(token) = env.get("TOOLS_TOKEN") else {
            return Ok(None);
        };
        if token.trim().chars().count() < MIN_TOKEN_LEN || token.trim() != token {
            return Err(ConfigError {
                var: "TOOLS_TOKEN".to_owned(),
                value: "***".to_owned(),
                allowed: format!(
                    "a token of at least {MIN_TOKEN_LEN} characters without surrounding spaces (e.g. `openssl rand -hex 32`); unset it to turn the tools off"
                ),
            });
        }
        Ok(Some(Self {
            addr,
            token: Secret::from(token),
        }))
    }
}

/// The one implementation behind both surfaces.
#[derive(Clone)]
pub struct Tools {
    bus: ToolBus,
    registry: Registry,
    in_flight: Arc<Semaphore>,
}

impl Tools {
    /// Tools over the service's connections.
    pub fn new(bus: ToolBus, registry: Registry) -> Self {
        Self {
            bus,
            registry,
            in_flight: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
        }
    }

    /// Runs one call of `tool` and answers in the seed's result shape; a failure is the same
    /// shape with `error` set. Never waits longer than the call's timeout (plus a registry read).
    pub async fn call(
        &self,
        tool: ToolName,
        arguments: Value,
        defaults: &ConnectionDefaults,
    ) -> ToolResult {
        let name = tool.as_str();
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return ToolResult::failed(
                name,
                "",
                ToolError::new(
                    "overloaded",
                    format!("{MAX_CALLS_IN_FLIGHT} tool calls are already running on this notifier; try again shortly"),
                )
                .retryable(),
            );
        };
        let command_id = format!("tool-{}", uuid::Uuid::new_v4());
        let planned = match translate::plan(tool, arguments, defaults, &command_id) {
            Ok(planned) => planned,
            Err(PlanError { integration, error }) => {
                return ToolResult::failed(name, &integration, error)
            }
        };
        let span = tracing::info_span!(
            "tool_call",
            tool = name,
            integration = %planned.integration,
            command_id = %command_id
        );
        let answer = self.run(&planned).instrument(span).await;
        metrics::counter!(
            TOOL_CALLS,
            "tool" => name,
            "outcome" => answer.error.as_ref().map_or("ok".to_owned(), |e| e.code.clone())
        )
        .increment(1);
        answer
    }

    /// The bus work of a translated call.
    async fn run(&self, planned: &Planned) -> ToolResult {
        let name = planned.tool.as_str();
        let integration = planned.integration.to_string();
        match self.registry.get_integration(&planned.integration).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return ToolResult::failed(
                    name,
                    &integration,
                    ToolError::new(
                        "unknown_integration",
                        format!("no integration {integration} is registered; check integration_id (or the state or connection it defaults from)"),
                    ),
                )
            }
            Err(err) => {
                // The details (Redis keys, errors) go to the log, not to the expert.
                tracing::warn!(%err, "cannot read the integration for a tool call");
                let error = match err {
                    RegistryError::Redis { .. } | RegistryError::Timeout { .. } => ToolError::new(
                        "unavailable",
                        "the integration registry (Redis) is unavailable; try again shortly",
                    )
                    .retryable(),
                    _ => ToolError::new(
                        "integration_unreadable",
                        format!("the record of integration {integration} cannot be read; an operator must save it again (the notifier's log says why)"),
                    ),
                };
                return ToolResult::failed(name, &integration, error);
            }
        }
        let answer = match &planned.action {
            Action::Command(command) => self
                .bus
                .execute(command, planned.timeout)
                .await
                .map(|result| translate::command_answer(planned, &result)),
            Action::ListUsers(request) => self
                .bus
                .list_users(&planned.integration, request, planned.timeout)
                .await
                .map(|reply| translate::users_answer(planned, reply)),
            Action::ListChats => self
                .bus
                .list_chats(&planned.integration, planned.timeout)
                .await
                .map(|reply| translate::chats_answer(planned, reply)),
        };
        let answer = answer.unwrap_or_else(|error| ToolResult::failed(name, &integration, error));
        match &answer.error {
            None => tracing::info!(
                successes = answer.success_count,
                failures = answer.failure_count,
                "tool call answered"
            ),
            Some(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "tool call failed")
            }
        }
        answer
    }
}

/// Starts the tools listener on `config.addr`: `/mcp` and `/api/tools`, behind the bearer token.
pub async fn start(
    config: &ToolsConfig,
    tools: Tools,
    shutdown: &Shutdown,
) -> Result<Listener, StartError> {
    let app = http::router(tools, config.token.clone());
    let listener = common::ops::serve(config.addr, app, shutdown.clone())
        .await
        .map_err(|err| StartError::Listen {
            var: "TOOLS_ADDR",
            addr: config.addr,
            reason: err.to_string(),
        })?;
    tracing::info!(addr = %listener.addr, "notify tools listening: MCP at /mcp, HTTP at /api/tools");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_are_off_without_a_token_and_listen_on_loopback_by_default() {
        assert!(ToolsConfig::from_env(&Env::default()).unwrap().is_none());
        let env = Env::from_pairs([("TOOLS_TOKEN", "0123456789abcdef0123")]);
        let config = ToolsConfig::from_env(&env).unwrap().unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8091");
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn a_short_token_or_a_bad_address_stops_start_up_without_showing_the_token() {
        let env = Env::from_pairs([("TOOLS_TOKEN", "short")]);
        let err = ToolsConfig::from_env(&env).unwrap_err();
        assert_eq!(err.var, "TOOLS_TOKEN");
        assert!(!err.to_string().contains("short"), "{err}");
        let env = Env::from_pairs([
            ("TOOLS_TOKEN", "0123456789abcdef0123"),
            ("TOOLS_ADDR", "nowhere"),
        ]);
        assert_eq!(ToolsConfig::from_env(&env).unwrap_err().var, "TOOLS_ADDR");
    }
}
