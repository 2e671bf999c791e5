//! The Agent Protocol client: threads, streamed runs, and finding a run again after a crash.
//!
//! Every call is bounded: a connect timeout, `EXPERT_TIMEOUT` for a whole run (including its
//! stream), and [`SMALL_CALL_TIMEOUT`] (at most `EXPERT_TIMEOUT`) for the small calls.

pub mod interrupt;
pub mod stream;

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::HeaderName;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::config::ExpertConfig;
use crate::routing::Facts;
use common::secret::Secret;
use interrupt::Interrupt;
use stream::{RunAnswer, RunEvent};

/// Bound of the calls that are not a run: thread creation, run listing.
pub const SMALL_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How many of a thread's latest runs are searched for an event's run.
const RUN_SEARCH_LIMIT: u32 = 20;

/// Why a call to the expert failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExpertError {
    /// The server answered with an error status.
    #[error("expert answered HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// No (complete) answer in time.
    #[error("expert did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS, ...
    #[error("cannot reach the expert: {0}")]
    Transport(String),
    /// The run reported an `error` event.
    #[error("the expert's run failed: {0}")]
    Run(String),
    /// The answer could not be read.
    #[error("unreadable answer from the expert: {0}")]
    Protocol(String),
    /// The server answered 404 for a run on a thread it knows: it does not know the expert.
    #[error("the expert server does not know expert {0:?}: check the xpert id of the trigger binding or the integration")]
    UnknownExpert(String),
}

impl ExpertError {
    /// Whether trying again may help: 5xx (and 429), timeouts and transport errors. A 4xx says
    /// the request itself is wrong, and a failed run already saw the message.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Run(_) | Self::Protocol(_) | Self::UnknownExpert(_) => false,
        }
    }

    /// The stable code for the DLQ reason and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Status { status, .. } if *status >= 500 => "expert_5xx",
            Self::Status { .. } => "expert_4xx",
            Self::Timeout(_) => "expert_timeout",
            Self::Transport(_) => "expert_unreachable",
            Self::Run(_) => "expert_run_failed",
            Self::Protocol(_) => "expert_protocol",
            Self::UnknownExpert(_) => "expert_not_found",
        }
    }

    /// Whether the server answered 404: an unknown thread, or for a run, an unknown thread or
    /// expert (LangGraph does not say which).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// Whether the thread is busy with another run (409: LangGraph's default multitask
    /// strategy, `reject`, refuses a second run on a thread).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Status { status: 409, .. })
    }

    /// Whether the run this error ended may still be going on at the server (the dispatcher
    /// stopped listening, not the server running it).
    pub fn run_may_live(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500,
            Self::Timeout(_) | Self::Transport(_) | Self::Protocol(_) => true,
            Self::Run(_) | Self::UnknownExpert(_) => false,
        }
    }
}

/// A run of a thread, as the run listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// `pending`, `running`, `success`, `error`, `timeout`, `interrupted`.
    pub status: String,
    /// The event it answers (`metadata.dingtalk_event_id`), if it is one of ours.
    pub event_id: Option<String>,
}

impl RunSummary {
    /// Whether the run has not finished.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "running")
    }
}

/// What a thread's run list says about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunLookup {
    /// A run carries the event id; its status as the server says it.
    Found {
        /// The run id.
        run_id: String,
        /// `pending`, `running`, `success`, `error`, `timeout`, `interrupted`.
        status: String,
    },
    /// No run of the thread carries the event id.
    Absent,
    /// The server cannot list runs: exactly-once degrades to at-least-once.
    Unsupported,
}

/// One run to start.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// The expert (`assistant_id`).
    pub assistant_id: &'a str,
    /// The human message.
    pub input: &'a str,
    /// Set when the thread waits for the user: the `command.resume` value that answers it
    /// (`input` is then not sent).
    pub resume: Option<&'a Value>,
    /// The event answered (run metadata `dingtalk_event_id`, to find the run again).
    pub event_id: &'a str,
    /// The conversation's facts.
    pub facts: &'a Facts,
}

impl RunRequest<'_> {
    /// The `POST /threads/{id}/runs/stream` body.
    pub fn body(&self) -> Value {
        let facts = self.facts;
        let context = json!({
            "dingtalk_integration_id": facts.integration_id,
            "dingtalk_conversation_id": facts.conversation_id,
            "dingtalk_conversation_type": facts.conversation_type,
            "dingtalk_conversation_title": facts.conversation_title,
            "dingtalk_sender_staff_id": facts.sender_staff_id,
            "dingtalk_sender_nick": facts.sender_nick,
            "dingtalkRecipientId": facts.recipient_id,
            "dingtalk_recipient_type": facts.recipient_type,
        });
        let mut metadata = context.clone();
        metadata["dingtalk_event_id"] = json!(self.event_id);
        let mut body = json!({
            "assistant_id": self.assistant_id,
            "stream_mode": ["messages-tuple", "values"],
            "metadata": metadata,
            "config": {"configurable": context},
            // A dispatcher that dies mid-run must not kill the run: its successor joins it.
            "on_disconnect": "continue",
        });
        match self.resume {
            Some(resume) => body["command"] = json!({ "resume": resume }),
            None => {
                body["input"] = json!({"messages": [{"role": "human", "content": self.input}]});
            }
        }
        body
    }
}

/// The Agent Protocol client (cheap to clone).
#[derive(Debug, Clone)]
pub struct ExpertClient {
    http: reqwest::Client,
    base: String,
    key: Option<(HeaderName, Secret)>,
    timeout: Duration,
}

impl ExpertClient {
    /// A client for `config`.
    pub fn new(config: &ExpertConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let key = config.api_key.as_ref().and_then(|key| {
            HeaderName::from_bytes(config.api_key_header.as_bytes())
                .ok()
                .map(|name| (name, key.clone()))
        });
        Ok(Self {
            http,
            base: config.url.clone(),
            key,
            timeout: config.timeout,
        })
    }

    /// The bound of one whole run.
    pub fn run_timeout(&self) -> Duration {
        self.timeout
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some((name, key)) = &self.key {
            request = request.header(name.clone(), key.expose());
        }
        request
    }

    /// A request without a body, answered with a success status within `timeout`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ExpertError> {
        let response = self
            .request(method, path, timeout)
            .send()
            .await
            .map_err(|e| transport(e, timeout))?;
        check(response).await
    }

    fn small_timeout(&self) -> Duration {
        SMALL_CALL_TIMEOUT.min(self.timeout)
    }

    /// Creates the thread `thread_id` unless it exists (`if_exists: do_nothing`), so a retry
    /// after a crash finds the same thread instead of forking the conversation. Returns the
    /// thread as the server shows it (`Null` when the answer is not JSON).
    pub async fn create_thread(
        &self,
        thread_id: &str,
        facts: &Facts,
    ) -> Result<Value, ExpertError> {
        let body = json!({
            "thread_id": thread_id,
            "if_exists": "do_nothing",
            "metadata": {
                "dingtalk_integration_id": facts.integration_id,
                "dingtalk_conversation_id": facts.conversation_id,
            },
        });
        let timeout = self.small_timeout();
        let response = self
            .request(reqwest::Method::POST, "/threads", timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(e, timeout))?;
        Ok(check(response).await?.json().await.unwrap_or(Value::Null))
    }

    /// Starts a run and returns its events as they come.
    pub async fn stream_run(
        &self,
        thread_id: &str,
        run: &RunRequest<'_>,
    ) -> Result<BoxStream<'static, Result<RunEvent, ExpertError>>, ExpertError> {
        let timeout = self.timeout;
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/threads/{thread_id}/runs/stream"),
                timeout,
            )
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&run.body())
            .send()
            .await
            .map_err(|e| transport(e, timeout))?;
        let response = check(response).await?;
        Ok(response
            .bytes_stream()
            .eventsource()
            .map(move |item| match item {
                Ok(event) => {
                    stream::interpret(&event.event, &event.data).map_err(ExpertError::Protocol)
                }
                Err(eventsource_stream::EventStreamError::Transport(err)) => {
                    Err(transport(err, timeout))
                }
                Err(err) => Err(ExpertError::Protocol(err.to_string())),
            })
            .boxed())
    }

    /// The thread's latest runs, newest first; `None` when the server cannot list runs.
    pub async fn list_runs(&self, thread_id: &str) -> Result<Option<Vec<RunSummary>>, ExpertError> {
        let timeout = self.small_timeout();
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/threads/{thread_id}/runs?limit={RUN_SEARCH_LIMIT}"),
                timeout,
            )
            .send()
            .await
            .map_err(|e| transport(e, timeout))?;
        if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok(None);
        }
        let runs: Value = check(response)
            .await?
            .json()
            .await
            .map_err(|e| ExpertError::Protocol(e.to_string()))?;
        Ok(Some(
            runs.as_array()
                .into_iter()
                .flatten()
                .map(|run| RunSummary {
                    run_id: run["run_id"].as_str().unwrap_or_default().to_owned(),
                    status: run["status"].as_str().unwrap_or_default().to_owned(),
                    event_id: run["metadata"]["dingtalk_event_id"]
                        .as_str()
                        .map(str::to_owned),
                })
                .collect(),
        ))
    }

    /// Looks for the run of `event_id` among the thread's latest runs.
    pub async fn find_run(
        &self,
        thread_id: &str,
        event_id: &str,
    ) -> Result<RunLookup, ExpertError> {
        let Some(runs) = self.list_runs(thread_id).await? else {
            return Ok(RunLookup::Unsupported);
        };
        Ok(
            match runs
                .into_iter()
                .find(|run| run.event_id.as_deref() == Some(event_id))
            {
                Some(run) => RunLookup::Found {
                    run_id: run.run_id,
                    status: run.status,
                },
                None => RunLookup::Absent,
            },
        )
    }

    /// A run's status (`GET /threads/{id}/runs/{run_id}`).
    pub async fn run_status(&self, thread_id: &str, run_id: &str) -> Result<String, ExpertError> {
        let run: Value = self
            .call(
                reqwest::Method::GET,
                &format!("/threads/{thread_id}/runs/{run_id}"),
                self.small_timeout(),
            )
            .await?
            .json()
            .await
            .map_err(|e| ExpertError::Protocol(e.to_string()))?;
        run["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ExpertError::Protocol("the run has no status".to_owned()))
    }

    /// Stops a run (`POST /threads/{id}/runs/{run_id}/cancel`, as an interrupt: the thread
    /// keeps what the run did so far); with `wait`, answers once the run has stopped.
    pub async fn cancel_run(
        &self,
        thread_id: &str,
        run_id: &str,
        wait: bool,
    ) -> Result<(), ExpertError> {
        self.call(
            reqwest::Method::POST,
            &format!("/threads/{thread_id}/runs/{run_id}/cancel?wait={wait}&action=interrupt"),
            self.small_timeout(),
        )
        .await
        .map(drop)
    }

    /// The thread (`GET /threads/{id}`); `None` when the server does not know it.
    pub async fn get_thread(&self, thread_id: &str) -> Result<Option<Value>, ExpertError> {
        let response = self
            .call(
                reqwest::Method::GET,
                &format!("/threads/{thread_id}"),
                self.small_timeout(),
            )
            .await;
        match response {
            Ok(response) => response
                .json()
                .await
                .map(Some)
                .map_err(|e| ExpertError::Protocol(e.to_string())),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Waits for a run to finish and returns its answer (the thread's last AI message), with
    /// the interrupts it ended on. What `/join` returns for a run that stopped to ask differs
    /// between servers: LangGraph gives `{"__interrupt__": […]}` alone, others the values alone;
    /// the thread has both.
    pub async fn join_run(&self, thread_id: &str, run_id: &str) -> Result<RunAnswer, ExpertError> {
        let timeout = self.timeout;
        let values: Value = self
            .call(
                reqwest::Method::GET,
                &format!("/threads/{thread_id}/runs/{run_id}/join"),
                timeout,
            )
            .await?
            .json()
            .await
            .map_err(|e| transport(e, timeout))?;
        let mut interrupts = interrupt::from_state(&values);
        let mut state = values;
        if state.get("__error__").is_none()
            && (interrupts.is_empty() || state.get("messages").is_none())
        {
            if let Some(thread) = self.get_thread(thread_id).await? {
                if interrupts.is_empty() {
                    interrupts = interrupt::from_thread(&thread);
                }
                if state.get("messages").is_none() {
                    state = thread["values"].clone();
                }
            }
        }
        joined_answer(&state, interrupts)
    }
}

/// The answer in what `/join` returned: the state's answer, read as the stream's final state
/// is, or the failure of a run that errored (`__error__`). A run that stopped to ask may end
/// without an answer.
fn joined_answer(values: &Value, interrupts: Vec<Interrupt>) -> Result<RunAnswer, ExpertError> {
    if let Some(error) = values.get("__error__") {
        let message = error["message"]
            .as_str()
            .or_else(|| error["error"].as_str())
            .unwrap_or("the run failed");
        return Err(ExpertError::Run(message.to_owned()));
    }
    match stream::final_text(values) {
        Some(text) => Ok(RunAnswer { text, interrupts }),
        None if !interrupts.is_empty() => Ok(RunAnswer {
            text: String::new(),
            interrupts,
        }),
        None => Err(ExpertError::Protocol(
            "the joined run's state ends without an answer".to_owned(),
        )),
    }
}

fn transport(err: reqwest::Error, timeout: Duration) -> ExpertError {
    if err.is_timeout() {
        ExpertError::Timeout(timeout)
    } else {
        ExpertError::Transport(err.to_string())
    }
}

/// Turns an error status into [`ExpertError::Status`] with the start of the body.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, ExpertError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ExpertError::Status {
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_carries_the_conversations_facts_under_the_documented_keys() {
        let facts = Facts {
            integration_id: "acme".into(),
            conversation_id: "cid1".into(),
            conversation_type: "group",
            conversation_title: Some("ops".into()),
            sender_staff_id: Some("u1".into()),
            sender_nick: "Li".into(),
            recipient_id: "cid1".into(),
            recipient_type: common::bus::command::RecipientType::ChatId,
        };
        let request = RunRequest {
            assistant_id: "x1",
            input: "hi",
            resume: None,
            event_id: "acme:m1",
            facts: &facts,
        };
        let body = request.body();
        assert_eq!(body["assistant_id"], "x1");
        assert_eq!(body["input"]["messages"][0]["role"], "human");
        assert_eq!(body["input"]["messages"][0]["content"], "hi");
        assert_eq!(body["metadata"]["dingtalk_event_id"], "acme:m1");
        for section in [&body["metadata"], &body["config"]["configurable"]] {
            assert_eq!(section["dingtalk_integration_id"], "acme");
            assert_eq!(section["dingtalk_conversation_id"], "cid1");
            assert_eq!(section["dingtalk_conversation_type"], "group");
            assert_eq!(section["dingtalk_conversation_title"], "ops");
            assert_eq!(section["dingtalk_sender_staff_id"], "u1");
            assert_eq!(section["dingtalk_sender_nick"], "Li");
            assert_eq!(section["dingtalkRecipientId"], "cid1");
            assert_eq!(section["dingtalk_recipient_type"], "chat_id");
        }
        assert_eq!(body["stream_mode"], json!(["messages-tuple", "values"]));
        assert!(body.get("command").is_none());

        // Answering a thread that waits: the reply goes as `command.resume`, not as a message.
        let resume = json!({"decisions": [{"type": "approve"}]});
        let body = RunRequest {
            resume: Some(&resume),
            ..request
        }
        .body();
        assert_eq!(body["command"], json!({ "resume": resume }));
        assert!(body.get("input").is_none());
        assert_eq!(body["metadata"]["dingtalk_event_id"], "acme:m1");
    }

    #[test]
    fn a_joined_run_answers_with_its_last_ai_message_or_its_error() {
        let answer = joined_answer(
            &json!({"messages": [
                {"type": "human", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}
            ]}),
            Vec::new(),
        );
        assert_eq!(answer.unwrap().text, "hello");
        let failed = joined_answer(
            &json!({"__error__": {"error": "ValueError", "message": "bad tool"}}),
            Vec::new(),
        );
        assert!(matches!(failed, Err(ExpertError::Run(m)) if m == "bad tool"));
        let tool_last = joined_answer(
            &json!({"messages": [{"type": "tool", "content": "42"}]}),
            Vec::new(),
        );
        assert_eq!(tool_last.unwrap().text, "42");
        let human_last = json!({"messages": [{"type": "human", "content": "hi"}]});
        let unanswered = joined_answer(&human_last, Vec::new());
        assert!(matches!(unanswered, Err(ExpertError::Protocol(_))));
        // A run that stopped to ask before answering anything.
        let asked = Interrupt {
            id: None,
            value: json!("Which day?"),
            schema: None,
        };
        let asking = joined_answer(&human_last, vec![asked.clone()]).unwrap();
        assert_eq!(asking.text, "");
        assert_eq!(asking.interrupts, vec![asked]);
    }

    #[test]
    fn only_server_errors_timeouts_and_transport_errors_are_retried() {
        let status = |status| ExpertError::Status {
            status,
            body: String::new(),
        };
        assert!(status(503).retryable());
        assert!(status(429).retryable());
        assert!(!status(400).retryable());
        assert!(!status(404).retryable());
        assert!(ExpertError::Timeout(Duration::from_secs(1)).retryable());
        assert!(!ExpertError::Run("boom".into()).retryable());
    }
}
