//! The tools as a Model Context Protocol server (streamable HTTP, served at `/mcp`).
//!
//! Stateless: every JSON-RPC request is answered on its own (plain JSON, no session), so any
//! replica behind a load balancer can answer any request and nothing is held between calls.
//! The connection's defaults come from the query string of the URL the client was configured
//! with, which the transport hands to each call with the HTTP request's parts.

use std::sync::Arc;

use axum::extract::Query;
use axum::http::request::Parts;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, Content, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ErrorData;
use serde_json::Value;

use super::catalog::ToolName;
use super::translate::{ConnectionDefaults, ToolError, ToolResult};
use super::Tools;

/// What a connected client is told about the server.
const INSTRUCTIONS: &str = "DingTalk notify tools of dingtalk-gateway. Send, update and recall \
DingTalk messages and list users and group chats. The target defaults to the run's conversation \
when `state` carries the run's dingtalk_* facts, else to the connection's query parameters.";

/// One MCP server instance; the transport makes one per request (stateless mode).
#[derive(Clone)]
pub struct McpTools {
    tools: Tools,
}

/// The `/mcp` service: stateless, JSON answers. The `Host` check that protects unauthenticated
/// local servers from DNS rebinding is off: every request needs the bearer token, which a
/// rebinding page cannot know, and a deployment is reached under names we cannot list here.
pub fn service(tools: Tools) -> StreamableHttpService<McpTools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_stateful_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            Ok(McpTools {
                tools: tools.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The tool list as MCP announces it: name, description and the catalog's schema.
pub fn listed_tools() -> Vec<Tool> {
    ToolName::ALL
        .iter()
        .map(|tool| {
            Tool::new(
                tool.as_str(),
                tool.description(),
                Arc::new(tool.input_schema().clone()),
            )
        })
        .collect()
}

/// The connection defaults of the HTTP request a call arrived with.
pub fn defaults_of(parts: Option<&Parts>) -> Result<ConnectionDefaults, ToolError> {
    let Some(parts) = parts else {
        return Ok(ConnectionDefaults::default());
    };
    Query::<ConnectionDefaults>::try_from_uri(&parts.uri)
        .map(|Query(defaults)| defaults)
        .map_err(|err| {
            ToolError::invalid(format!(
                "the connection URL's query is invalid ({}); it may set integration_id, recipient_type (user_id, union_id, open_id, chat_id) and recipient_id",
                err.body_text()
            ))
        })
}

/// An MCP tool result: the seed's JSON as text and as structured content; `isError` when the
/// call failed, with the error's message first so a model reads the reason at once.
pub fn to_call_result(answer: &ToolResult) -> CallToolResult {
    let json = serde_json::to_value(answer).expect("a tool result serializes");
    match &answer.error {
        None => CallToolResult::structured(json),
        Some(error) => {
            let mut result = CallToolResult::structured_error(json.clone());
            result.content = vec![
                Content::text(format!("{}: {}", error.code, error.message)),
                Content::text(json.to_string()),
            ];
            result
        }
    }
}

impl ServerHandler for McpTools {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "dingtalk-gateway-tools",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(listed_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(tool) = ToolName::parse(&request.name) else {
            let names: Vec<&str> = ToolName::ALL.iter().map(ToolName::as_str).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool {:?}; the tools are {names:?}", request.name),
                None,
            ));
        };
        let answer = match defaults_of(context.extensions.get::<Parts>()) {
            Ok(defaults) => {
                let arguments = request.arguments.map(Value::Object).unwrap_or(Value::Null);
                self.tools.call(tool, arguments, &defaults).await
            }
            Err(error) => ToolResult::failed(tool.as_str(), "", error),
        };
        Ok(to_call_result(&answer))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let tool = ToolName::parse(name)?;
        listed_tools()
            .into_iter()
            .find(|listed| listed.name == tool.as_str())
    }
}
