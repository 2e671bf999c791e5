//! The notify tools for experts over MCP (a real rmcp client session) and plain HTTP, each call
//! a bus command executed by the running notifier against the DingTalk simulator.

mod support;

use std::time::Duration;

use common::bus::result::Status;
use common::secret::Secret;
use dingtalk_sim::{Api, Directory, Fault, FaultKind};
use notifier::tools::catalog::ToolName;
use notifier::tools::ToolsConfig;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use support::{file_server, Bed, Options};

const TOKEN: &str = "tools-test-token-0123456789";

/// A notifier with its tools listener on a free port, next to the bed's own notifier.
struct ToolsBed {
    bed: Bed,
    base: String,
    _replica: (common::shutdown::Shutdown, notifier::Running),
}

impl ToolsBed {
    async fn start() -> Self {
        Self::with(Options::default()).await
    }

    async fn with(options: Options) -> Self {
        let mut bed = Bed::with(options).await;
        assert!(
            bed.notifier.as_ref().unwrap().1.tools.is_none(),
            "without TOOLS_TOKEN the tools are off"
        );
        bed.config.tools = Some(ToolsConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Secret::from(TOKEN),
        });
        let replica = bed.another_replica().await;
        let addr = replica.1.tools.as_ref().expect("tools listening").addr;
        Self {
            bed,
            base: format!("http://{addr}"),
            _replica: replica,
        }
    }

    /// An MCP client session on `/mcp{query}`.
    async fn mcp(&self, query: &str) -> RunningService<RoleClient, ()> {
        self.mcp_with_token(query, TOKEN)
            .await
            .expect("MCP session starts")
    }

    async fn mcp_with_token(
        &self,
        query: &str,
        token: &str,
    ) -> Result<RunningService<RoleClient, ()>, String> {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp{query}", self.base))
                .auth_header(token),
        );
        ().serve(transport).await.map_err(|err| err.to_string())
    }

    /// `POST /api/tools/{tool}` with the token: (status, body).
    async fn post(&self, tool: &str, arguments: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/tools/{tool}", self.base))
            .bearer_auth(TOKEN)
            .json(&arguments)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// Calls a tool over MCP and returns (isError, the result JSON).
async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> (bool, Value) {
    let result: CallToolResult = client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .expect("the call is answered");
    let json = result
        .structured_content
        .clone()
        .expect("structured content");
    (result.is_error == Some(true), json)
}

fn acme(args: Value) -> Value {
    let mut args = args;
    args["integration_id"] = json!("acme");
    args
}

fn message_id(answer: &Value) -> String {
    answer["results"][0]["messageId"]
        .as_str()
        .unwrap_or_else(|| panic!("no messageId in {answer:#}"))
        .to_owned()
}

#[tokio::test]
async fn an_mcp_session_lists_the_tools_sends_updates_recalls_and_lists_users() {
    let t = ToolsBed::start().await;
    let client = t.mcp("").await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    let expected: Vec<&str> = ToolName::ALL.iter().map(ToolName::as_str).collect();
    assert_eq!(names, expected);
    for tool in &tools {
        let name = ToolName::parse(&tool.name).unwrap();
        assert_eq!(*tool.input_schema, *name.input_schema(), "{}", tool.name);
    }

    let (failed, text) = call(
        &client,
        "dingtalk_send_text_notification",
        acme(json!({"content": "deploy finished", "recipient_id": "user001"})),
    )
    .await;
    assert!(!failed, "{text:#}");
    assert_eq!(text["tool"], "dingtalk_send_text_notification");
    assert_eq!(text["integrationId"], "acme");
    assert_eq!(text["successCount"], 1);
    assert_eq!(text["failureCount"], 0);
    assert_eq!(text["results"][0]["target"], "user_id:user001");
    assert_eq!(text["results"][0]["success"], true);
    let text_id = message_id(&text);

    let (failed, markdown) = call(
        &client,
        "dingtalk_send_rich_notification",
        acme(json!({"mode": "markdown", "markdown": "## Release 7\nall green", "recipient_ids": ["user001", "user002"]})),
    )
    .await;
    assert!(!failed, "{markdown:#}");
    assert_eq!(markdown["successCount"], 2);
    let messages = t.bed.sim.state().messages();
    let plain = messages
        .iter()
        .find(|m| m.kind == "sampleText")
        .expect("the text went out as sampleText");
    assert_eq!(plain.content["content"], "deploy finished");
    let md = messages
        .iter()
        .find(|m| m.kind == "sampleMarkdown")
        .expect("the markdown went out as sampleMarkdown");
    assert_eq!(
        md.content["title"], "Release 7",
        "the title defaults to the first line"
    );

    // A plain message is updated by recall + resend, and says so.
    let (failed, updated) = call(
        &client,
        "dingtalk_update_message",
        acme(json!({"messageId": text_id, "mode": "text", "content": "deploy rolled back"})),
    )
    .await;
    assert!(!failed, "{updated:#}");
    assert_eq!(updated["data"]["degraded"], true);
    assert_eq!(updated["results"][0]["messageId"], text_id.as_str());
    let messages = t.bed.sim.state().messages();
    assert!(
        messages
            .iter()
            .find(|m| m.content["content"] == "deploy finished")
            .unwrap()
            .recalled
    );

    let (failed, recalled) = call(
        &client,
        "dingtalk_recall_message",
        acme(json!({"messageId": text_id})),
    )
    .await;
    assert!(!failed, "{recalled:#}");
    assert_eq!(recalled["successCount"], 1);
    let messages = t.bed.sim.state().messages();
    assert!(
        messages
            .iter()
            .find(|m| m.content["content"] == "deploy rolled back")
            .unwrap()
            .recalled,
        "the recall withdrew the resent message"
    );

    let (failed, users) = call(
        &client,
        "dingtalk_list_users",
        acme(json!({"keyword": "wang"})),
    )
    .await;
    assert!(!failed, "{users:#}");
    assert_eq!(users["data"]["users"][0]["user_id"], "user004");
    let (failed, page) = call(&client, "dingtalk_list_users", acme(json!({"pageSize": 1}))).await;
    assert!(!failed, "{page:#}");
    assert_eq!(page["data"]["users"].as_array().unwrap().len(), 1);

    let (failed, chats) = call(&client, "dingtalk_list_chats", acme(json!({}))).await;
    assert!(!failed, "{chats:#}");
    assert_eq!(chats["data"]["chats"], json!([]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_http_api_lists_the_same_tools_and_runs_the_same_calls() {
    let t = ToolsBed::start().await;
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/api/tools", t.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tools = listed["tools"].as_array().unwrap();
    assert_eq!(tools.len(), ToolName::ALL.len());
    for (listed, tool) in tools.iter().zip(ToolName::ALL) {
        assert_eq!(listed["name"], tool.as_str());
        assert_eq!(listed["description"], tool.description());
        assert_eq!(
            listed["input_schema"],
            Value::Object(tool.input_schema().clone())
        );
    }

    let (status, sent) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "building…", "recipient_id": "user001", "updatable": true})),
        )
        .await;
    assert_eq!(status, 200, "{sent:#}");
    let card_id = message_id(&sent);
    let (status, markdown) = t
        .post(
            "dingtalk_send_rich_notification",
            acme(json!({"mode": "markdown", "title": "Report", "markdown": "**all green**", "recipient_id": "user002"})),
        )
        .await;
    assert_eq!(status, 200, "{markdown:#}");
    assert!(t
        .bed
        .sim
        .state()
        .messages()
        .iter()
        .any(|m| m.kind == "sampleMarkdown" && m.content["title"] == "Report"));

    // An updatable send is a card: updated in place, not degraded.
    let (status, updated) = t
        .post(
            "dingtalk_update_message",
            acme(json!({"messageId": card_id, "mode": "markdown", "markdown": "built"})),
        )
        .await;
    assert_eq!(status, 200, "{updated:#}");
    assert_eq!(updated["data"]["degraded"], false);
    let card = t
        .bed
        .sim
        .state()
        .standard_cards()
        .into_iter()
        .find(|c| c.card_biz_id == card_id)
        .expect("sent as a card");
    assert_eq!(card.updates, 1);
    assert!(card.card_data.to_string().contains("built"));

    let (status, plain) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "wrong channel", "recipient_id": "user002"})),
        )
        .await;
    assert_eq!(status, 200, "{plain:#}");
    let (status, recalled) = t
        .post(
            "dingtalk_recall_message",
            acme(json!({"messageId": message_id(&plain)})),
        )
        .await;
    assert_eq!(status, 200, "{recalled:#}");
    assert_eq!(recalled["successCount"], 1);
    assert!(
        t.bed
            .sim
            .state()
            .messages()
            .iter()
            .find(|m| m.content["content"] == "wrong channel")
            .unwrap()
            .recalled
    );

    let (status, users) = t
        .post("dingtalk_list_users", acme(json!({"pageSize": 2})))
        .await;
    assert_eq!(status, 200, "{users:#}");
    assert_eq!(users["data"]["users"].as_array().unwrap().len(), 1);
    assert_eq!(users["data"]["hasMore"], false);

    let (status, unknown) = t.post("dingtalk_send", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["code"], "unknown_tool");
    let (status, bad) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "x", "recipent_id": "user001"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("recipent_id"));
}

#[tokio::test]
async fn every_request_needs_the_bearer_token() {
    let t = ToolsBed::start().await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/api/tools"),
        (reqwest::Method::POST, "/api/tools/dingtalk_list_chats"),
        (reqwest::Method::POST, "/mcp"),
    ] {
        for token in [None, Some("tools-test-token-012345678"), Some("")] {
            let mut request = http
                .request(method.clone(), format!("{}{path}", t.base))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body("{}");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let refused = t.mcp_with_token("", "not-the-token").await;
    assert!(
        refused.is_err(),
        "an MCP session cannot start without the token"
    );
    assert!(t.bed.sim.state().messages().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn the_target_defaults_to_the_runs_state_then_to_the_connection() {
    let t = ToolsBed::start().await;
    let client = t.mcp("?integration_id=acme&recipient_id=user002").await;
    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        json!({"content": "from the connection"}),
    )
    .await;
    assert!(!failed, "{answer:#}");
    assert_eq!(answer["results"][0]["target"], "user_id:user002");

    // The dispatcher's run facts, passed as state, win over the connection; {{state.x}} is filled.
    let state = json!({
        "dingtalk_integration_id": "acme",
        "dingtalkRecipientId": Directory::OPS_GROUP,
        "dingtalk_recipient_type": "chat_id",
        "ticket": "INC-7"
    });
    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        json!({"content": "{{state.ticket}} is resolved", "state": state}),
    )
    .await;
    assert!(!failed, "{answer:#}");
    assert_eq!(
        answer["results"][0]["target"],
        format!("chat_id:{}", Directory::OPS_GROUP)
    );
    assert!(t
        .bed
        .sim
        .state()
        .messages()
        .iter()
        .any(|m| m.content["content"] == "INC-7 is resolved"));

    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        json!({"content": "hi", "recipient_id": "{{state.who}}", "state": {}}),
    )
    .await;
    assert!(failed);
    assert_eq!(answer["error"]["code"], "missing_variable", "{answer:#}");
    client.cancel().await.unwrap();

    let broken = t.mcp("?recipient_type=email").await;
    let (failed, answer) = call(
        &broken,
        "dingtalk_list_chats",
        json!({"integration_id": "acme"}),
    )
    .await;
    assert!(failed);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("recipient_type"));
}

#[tokio::test]
async fn failures_are_clear_tool_errors() {
    let files = file_server(vec![("big.zip", vec![7u8; 10 * 1024 * 1024 + 1])]).await;
    let t = ToolsBed::with(Options {
        media_allowlist: Some(files.clone()),
        ..Options::default()
    })
    .await;
    let client = t.mcp("").await;

    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        json!({"content": "hi", "integration_id": "ghost", "recipient_id": "user001"}),
    )
    .await;
    assert!(failed);
    assert_eq!(answer["error"]["code"], "unknown_integration");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ghost"));

    t.bed
        .sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::UserList))
        .unwrap();
    let (failed, answer) = call(&client, "dingtalk_list_users", acme(json!({}))).await;
    assert!(failed);
    assert_eq!(answer["error"]["code"], "60011", "{answer:#}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("qyapi_get_department_member"), "{message}");

    t.bed
        .sim
        .state()
        .add_fault(Fault::once(FaultKind::Permission60011).on(Api::RobotBatchSend))
        .unwrap();
    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        acme(json!({"content": "hi", "recipient_id": "user001"})),
    )
    .await;
    assert!(failed, "{answer:#}");
    assert_eq!(answer["failureCount"], 1);
    for text in [&answer["error"]["message"], &answer["results"][0]["error"]] {
        let text = text.as_str().unwrap();
        assert!(text.contains("60011"), "{text}");
        assert!(text.contains("qyapi_robot_sendmsg"), "{text}");
    }

    // No result in time: the error names the command, whose result still comes later.
    t.bed
        .sim
        .state()
        .add_fault(Fault::once(FaultKind::Slow { ms: 1500 }).on(Api::RobotBatchSend))
        .unwrap();
    let started = std::time::Instant::now();
    let (failed, answer) = call(
        &client,
        "dingtalk_send_text_notification",
        acme(json!({"content": "slow", "recipient_id": "user001", "timeoutMs": 300})),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "never a hung call"
    );
    assert!(failed);
    assert_eq!(answer["error"]["code"], "timeout");
    let command_id = answer["error"]["commandId"].as_str().unwrap().to_owned();
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&command_id));
    assert_eq!(t.bed.result(&command_id).await.status, Status::Ok);

    // A file over 10 MiB: refused at once when its size is given, by the notifier otherwise.
    let (failed, answer) = call(
        &client,
        "dingtalk_send_file",
        acme(json!({"url": format!("http://{files}/files/big.zip"), "size": 10 * 1024 * 1024 + 1, "recipient_id": "user001"})),
    )
    .await;
    assert!(failed);
    assert_eq!(answer["error"]["code"], "media_too_large");
    assert!(
        answer["data"].get("commandId").is_none(),
        "nothing was published"
    );
    let (failed, answer) = call(
        &client,
        "dingtalk_send_file",
        acme(json!({"url": format!("http://{files}/files/big.zip"), "recipient_id": "user001"})),
    )
    .await;
    assert!(failed);
    assert_eq!(answer["error"]["code"], "media_too_large", "{answer:#}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10 MiB"));

    let unknown = client
        .call_tool(CallToolRequestParams::new("dingtalk_fax"))
        .await;
    assert!(unknown.unwrap_err().to_string().contains("dingtalk_fax"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn files_go_as_image_or_file_messages_and_throttled_sends_are_retried() {
    let files = file_server(vec![
        ("chart.png", b"\x89PNG\r\n\x1a\n chart".to_vec()),
        ("report.pdf", b"%PDF-1.4 quarterly".to_vec()),
    ])
    .await;
    let t = ToolsBed::with(Options {
        media_allowlist: Some(files.clone()),
        ..Options::default()
    })
    .await;
    for (name, mime, kind) in [
        ("chart.png", None, "sampleImageMsg"),
        ("report.pdf", Some("application/pdf"), "sampleFile"),
    ] {
        let mut args =
            acme(json!({"url": format!("http://{files}/files/{name}"), "recipient_id": "user001"}));
        if let Some(mime) = mime {
            args["mimeType"] = json!(mime);
        }
        let (status, answer) = t.post("dingtalk_send_file", args).await;
        assert_eq!(status, 200, "{answer:#}");
        assert!(
            t.bed.sim.state().messages().iter().any(|m| m.kind == kind),
            "{name} went out as {kind}"
        );
    }

    t.bed
        .sim
        .state()
        .add_fault(
            Fault::once(FaultKind::FlowControl {
                user_ids: vec!["user002".into()],
            })
            .on(Api::RobotBatchSend),
        )
        .unwrap();
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "throttled", "recipient_ids": ["user001", "user002"]})),
        )
        .await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(
        answer["successCount"], 2,
        "user002 was sent again after the throttle"
    );
    let delivered = t
        .bed
        .sim
        .state()
        .messages()
        .into_iter()
        .filter(|m| m.content["content"] == "throttled")
        .count();
    assert_eq!(delivered, 2);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_on_both_surfaces_in_the_answer_shape() {
    let t = ToolsBed::start().await;
    let http = reqwest::Client::new();
    let big = acme(json!({"content": "x".repeat(1024 * 1024), "recipient_id": "user001"}));
    for path in ["/api/tools/dingtalk_send_text_notification", "/mcp"] {
        let response = http
            .post(format!("{}{path}", t.base))
            .bearer_auth(TOKEN)
            .header("accept", "application/json, text/event-stream")
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "message_too_large", "{path}: {body}");
        assert_eq!(body["error"]["retryable"], false, "{path}");
    }
    // Just under the limit is read (and then sent).
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "y".repeat(1000), "recipient_id": "user001"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(t.bed.sim.state().messages().len(), 1);
}

#[tokio::test]
async fn placeholders_cannot_grow_a_call_without_bound_nor_list_every_recipient() {
    let t = ToolsBed::start().await;
    // 40,000 placeholders of a 100 KB value would fill 4 GB.
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({
                "content": "{{state.blob}}".repeat(40_000),
                "recipient_id": "user001",
                "state": {"blob": "z".repeat(100_000)}
            })),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "message_too_large");
    assert!(
        answer.to_string().len() < 4_000,
        "the error quotes no filled text: {} bytes",
        answer.to_string().len()
    );
    // An integration id made of placeholders is refused without quoting the filled value.
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            json!({
                "integration_id": "{{state.blob}}{{state.blob}}",
                "content": "hi",
                "recipient_id": "user001",
                "state": {"blob": "z".repeat(100_000)}
            }),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "message_too_large");
    assert!(answer.to_string().len() < 4_000);
    let ids: Vec<String> = (0..201).map(|n| format!("user{n:03}")).collect();
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "hi", "recipient_ids": ids})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_arguments");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 200"),
        "{answer}"
    );
    assert!(t.bed.sim.state().messages().is_empty(), "nothing was sent");
}

/// A query may take the call's whole `timeoutMs`, even past the connection's default request
/// timeout; past `timeoutMs` it is a retryable `timeout`.
#[tokio::test]
async fn a_query_waits_for_the_calls_timeout_not_the_connections_default() {
    let nats = test_harness::NatsServer::start().await;
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(300)))
        .connect(nats.url())
        .await
        .unwrap();
    let mut queries = client
        .subscribe("dingtalk.query.acme.list_chats")
        .await
        .unwrap();
    let responder = client.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(query) = queries.next().await {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let reply = query.reply.unwrap();
            responder
                .publish(reply, r#"{"chats": []}"#.into())
                .await
                .unwrap();
        }
    });
    let bus = notifier::tools::bus::ToolBus::new(
        client.clone(),
        async_nats::jetstream::new(client.clone()),
    );
    let acme: common::registry::IntegrationId = "acme".parse().unwrap();
    let reply = bus
        .list_chats(&acme, Duration::from_secs(3))
        .await
        .expect("answered within the call's timeout");
    assert!(reply.chats.is_empty());
    let late = bus
        .list_chats(&acme, Duration::from_millis(400))
        .await
        .unwrap_err();
    assert_eq!(late.code, "timeout");
    assert!(late.retryable);
}

#[tokio::test]
async fn an_unreadable_integration_record_is_a_clear_error_that_names_no_redis_key() {
    let t = ToolsBed::start().await;
    let client = redis::Client::open(t.bed.redis.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg("dtg:integration:gamma")
        .arg("{not json")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            json!({"integration_id": "gamma", "content": "hi", "recipient_id": "user001"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "integration_unreadable");
    assert_eq!(answer["error"]["retryable"], false);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("gamma"), "{message}");
    assert!(!message.contains("dtg:"), "{message}");
    assert!(t.bed.sim.state().messages().is_empty());
}

/// A publish the bus never confirms may still have been stored: the call answers `timeout`,
/// not retryable, naming the command, which is then executed once when the bus comes back.
#[tokio::test]
async fn a_send_the_bus_does_not_confirm_is_in_doubt_not_retryable() {
    let t = ToolsBed::start().await;
    let pid = t.bed.nats.pid().expect("a local nats-server").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    // The server stops answering (a stall, a partition): the publish leaves, no ack comes.
    signal("-STOP");
    let (status, answer) = t
        .post(
            "dingtalk_send_text_notification",
            acme(json!({"content": "in doubt", "recipient_id": "user001", "timeoutMs": 800})),
        )
        .await;
    signal("-CONT");
    assert_ne!(status, 200, "{answer:#}");
    assert_eq!(answer["error"]["code"], "timeout", "{answer:#}");
    assert_eq!(answer["error"]["retryable"], false, "{answer:#}");
    let command_id = answer["error"]["commandId"]
        .as_str()
        .unwrap_or_else(|| panic!("no commandId in {answer:#}"))
        .to_owned();
    // It was stored after all: executed once, which a blind retry would have made twice.
    let result = t
        .bed
        .result_within(&command_id, Duration::from_secs(30))
        .await;
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let delivered = t
        .bed
        .sim
        .state()
        .messages()
        .iter()
        .filter(|m| m.content["content"] == "in doubt")
        .count();
    assert_eq!(delivered, 1);
}
