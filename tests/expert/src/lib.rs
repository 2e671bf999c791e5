//! A fake AI expert that speaks the Agent Protocol (the LangGraph Platform API Xpert serves) over
//! real HTTP and server-sent events, so the dispatcher's client is tested against the wire format
//! rather than a mock.
//!
//! It implements the endpoints the dispatcher uses, with LangGraph's shapes:
//!
//! * `POST /threads` — `thread_id` and `if_exists` (`do_nothing` returns the existing thread,
//!   `raise` answers 409), like `langgraph dev`.
//! * `POST /threads/{thread_id}/runs/stream` — events `metadata`, `messages` (message-tuple
//!   chunks), `values` (pretty-printed, so its data spans several `data:` lines), `error`, `end`,
//!   with keep-alive comments. A run goes on when the client disconnects
//!   (`on_disconnect: continue`), so a crashed caller can join it later.
//! * `GET /threads/{thread_id}/runs` — runs with their metadata, newest first.
//! * `GET /threads/{thread_id}/runs/{run_id}/join` — waits for the run, then the thread's values.
//! * `GET /threads/{thread_id}/runs/{run_id}` — the run, with its status.
//! * `POST /threads/{thread_id}/runs/{run_id}/cancel` — stops the run (`interrupted`).
//! * `GET /threads/{thread_id}` — the thread, with its `status` (`idle`, `busy`, `interrupted`)
//!   and its pending `interrupts` (task id → list).
//!
//! Human in the loop: a run scripted with [`Behavior::interrupt`] streams its answer, then stops
//! on an interrupt as LangGraph's `interrupt()` does (its last `values` event carries
//! `__interrupt__` beside the messages; the run ends `success`, the thread `interrupted`). The
//! next run answers it with `command.resume`, and a run with a new message drops it. `/join` of
//! a run that stopped to ask returns `{"__interrupt__": […]}` alone, as langgraph-api 0.16.7
//! does, or (`join_shows_interrupts(false)`) the messages alone, as a server that leaves the
//! question to the thread's state. A run cancelled mid-step leaves the thread `interrupted` with
//! no interrupts, as LangGraph does. One deliberate difference: a resume of a thread that waits
//! for nothing is refused with 400 (LangGraph accepts it and only repeats the state, so a caller
//! resuming blindly would send the previous answer again).
//!
//! A thread runs one run at a time: a run requested while another is pending or running is
//! refused with 409, as LangGraph's default multitask strategy (`reject`) does.
//!
//! Tests script answers, delays and failures per run ([`Behavior`]) and read back every run the
//! expert started ([`FakeExpert::runs`]). The `echo-expert` binary serves the default behaviour
//! for `scripts/run`: it echoes each message, numbering the turns of a thread (`echo #2: hello`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

/// What the expert answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `echo #N: <the message>`, N counting the finished runs of the thread.
    Echo,
    /// A fixed text.
    Text(String),
}

/// How one run fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The run request is answered with this HTTP status; no run is created.
    Status(u16),
    /// The stream starts, then carries an `error` event; the run ends in `error`.
    ErrorEvent(String),
}

/// How the expert behaves for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// The answer.
    pub reply: Reply,
    /// Into how many message chunks the answer is cut (0 = no `messages` events at all: an
    /// expert that only reports final values).
    pub chunks: usize,
    /// Pause between two chunks.
    pub chunk_delay: Duration,
    /// Pause before the first output (and before the final values).
    pub delay: Duration,
    /// A failure instead of an answer.
    pub failure: Option<Failure>,
    /// The stream closes after this many chunks (without `end`), as a proxy or a restarting
    /// server cuts it, while the run goes on to its end.
    pub cut_stream_after: Option<usize>,
    /// After its answer the run stops to ask the user: the value passed to `interrupt()`.
    pub interrupt: Option<Value>,
}

impl Default for Behavior {
    /// An echo in five chunks, without delay.
    fn default() -> Self {
        Self {
            reply: Reply::Echo,
            chunks: 5,
            chunk_delay: Duration::ZERO,
            delay: Duration::ZERO,
            failure: None,
            cut_stream_after: None,
            interrupt: None,
        }
    }
}

impl Behavior {
    /// A failure with HTTP status `code` on the run request.
    pub fn status(code: u16) -> Self {
        Self {
            failure: Some(Failure::Status(code)),
            ..Self::default()
        }
    }

    /// An answer given at once and in one piece, as an expert that does not stream.
    pub fn not_streaming() -> Self {
        Self {
            chunks: 0,
            ..Self::default()
        }
    }
}

/// A run as the expert saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The thread it ran on.
    pub thread_id: String,
    /// `assistant_id` of the request.
    pub assistant_id: String,
    /// The human message's text (empty for a resume).
    pub input: String,
    /// The run's `command.resume`, when it answered an interrupt.
    pub resume: Option<Value>,
    /// The run's `metadata`.
    pub metadata: Value,
    /// The run's `config.configurable`.
    pub configurable: Value,
    /// The API key header's value, if any.
    pub api_key: Option<String>,
}

#[derive(Debug)]
struct Run {
    record: RunRecord,
    status: &'static str,
    created_at: String,
    done: watch::Receiver<bool>,
    /// The task playing it, until it ends (a cancel aborts it).
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Debug, Default)]
struct Thread {
    metadata: Value,
    messages: Vec<Value>,
    turns: u64,
    runs: Vec<Run>,
    /// The interrupt the thread waits on (`{"value", "id"}`).
    pending: Option<Value>,
    /// A run was cancelled mid-step: the thread is `interrupted`, with nothing to answer.
    cut_short: bool,
}

#[derive(Debug, Default)]
struct Inner {
    threads: HashMap<String, Thread>,
    script: VecDeque<Behavior>,
    default: Behavior,
    threads_created: usize,
    run_listing: bool,
    api_key: Option<(String, String)>,
    /// Assistant ids the server does not know.
    unknown_assistants: Vec<String>,
    /// Whether `/join` of a run that stopped to ask returns only `__interrupt__` (else only the
    /// messages).
    join_hides_interrupts: bool,
}

impl Inner {
    /// Run `run_id` of thread `thread_id`.
    fn run_mut(&mut self, thread_id: &str, run_id: &str) -> Option<&mut Run> {
        self.threads
            .get_mut(thread_id)
            .and_then(|t| t.runs.iter_mut().find(|r| r.record.run_id == run_id))
    }
}

#[derive(Debug, Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running fake expert; dropping it stops the server.
#[derive(Debug)]
pub struct FakeExpert {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeExpert {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeExpert {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("a valid address"))
            .await
            .expect("a free port on 127.0.0.1")
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let shared = Shared::default();
        shared.lock().run_listing = true;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Stream events go out in small writes: without TCP_NODELAY, Nagle's algorithm and the
        // client's delayed ACK hold each one back for about 40 ms.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(%err, "fake expert stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next run behaves like this (scripted behaviours are used in order, then the default).
    pub fn script(&self, behavior: Behavior) {
        self.shared.lock().script.push_back(behavior);
    }

    /// How runs behave once the script is used up.
    pub fn set_default(&self, behavior: Behavior) {
        self.shared.lock().default = behavior;
    }

    /// Refuses requests without `header: key` (401).
    pub fn require_api_key(&self, header: &str, key: &str) {
        self.shared.lock().api_key = Some((header.to_ascii_lowercase(), key.to_owned()));
    }

    /// Answers 404 to `GET /threads/{id}/runs`, as an expert server without run listing.
    pub fn disable_run_listing(&self) {
        self.shared.lock().run_listing = false;
    }

    /// Does not know assistant `id`: runs for it are refused with LangGraph's 404, which does not
    /// say whether the thread or the assistant is missing.
    pub fn forget_assistant(&self, id: &str) {
        self.shared.lock().unknown_assistants.push(id.to_owned());
    }

    /// What `/join` of a run that stopped to ask returns: `{"__interrupt__": […]}` alone (true,
    /// the default, as LangGraph), or the thread's messages alone (false).
    pub fn join_shows_interrupts(&self, shows: bool) {
        self.shared.lock().join_hides_interrupts = !shows;
    }

    /// Forgets a thread, as an expert whose storage was reset.
    pub fn forget_thread(&self, thread_id: &str) {
        self.shared.lock().threads.remove(thread_id);
    }

    /// Every run started, in order.
    pub fn runs(&self) -> Vec<RunRecord> {
        let inner = self.shared.lock();
        let mut runs: Vec<(String, RunRecord)> = inner
            .threads
            .values()
            .flat_map(|t| {
                t.runs
                    .iter()
                    .map(|r| (r.created_at.clone(), r.record.clone()))
            })
            .collect();
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        runs.into_iter().map(|(_, r)| r).collect()
    }

    /// The statuses of the runs that carried `dingtalk_event_id` = `event_id`, oldest first
    /// (`running`, `success`, `error`, `interrupted`).
    pub fn statuses_for_event(&self, event_id: &str) -> Vec<String> {
        let inner = self.shared.lock();
        let mut runs: Vec<(&String, &str)> = inner
            .threads
            .values()
            .flat_map(|t| t.runs.iter())
            .filter(|r| r.record.metadata["dingtalk_event_id"] == event_id)
            .map(|r| (&r.created_at, r.status))
            .collect();
        runs.sort();
        runs.into_iter().map(|(_, s)| s.to_owned()).collect()
    }

    /// How many runs carried `dingtalk_event_id` = `event_id` in their metadata.
    pub fn runs_for_event(&self, event_id: &str) -> usize {
        self.runs()
            .iter()
            .filter(|r| r.metadata["dingtalk_event_id"] == event_id)
            .count()
    }

    /// How many threads were created (a `do_nothing` on an existing one does not count).
    pub fn threads_created(&self) -> usize {
        self.shared.lock().threads_created
    }

    /// The interrupt thread `thread_id` waits on (`{"value", "id"}`), if any.
    pub fn pending_interrupt(&self, thread_id: &str) -> Option<Value> {
        self.shared
            .lock()
            .threads
            .get(thread_id)
            .and_then(|t| t.pending.clone())
    }

    /// Makes thread `thread_id` wait on a new interrupt (id `elsewhere-{n}`), as a run driven
    /// from the expert's own UI that stopped to ask would.
    pub fn ask_elsewhere(&self, thread_id: &str, value: Value) {
        if let Some(thread) = self.shared.lock().threads.get_mut(thread_id) {
            let id = format!("elsewhere-{}", thread.runs.len());
            thread.pending = Some(json!({"value": value, "id": id}));
        }
    }

    /// Drops the interrupt thread `thread_id` waits on, as an answer given elsewhere (the
    /// expert's own UI) would.
    pub fn answer_elsewhere(&self, thread_id: &str) {
        if let Some(thread) = self.shared.lock().threads.get_mut(thread_id) {
            thread.pending = None;
        }
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/threads", post(create_thread))
        .route("/threads/{thread_id}", get(get_thread))
        .route("/threads/{thread_id}/runs", get(list_runs))
        .route("/threads/{thread_id}/runs/stream", post(stream_run))
        .route("/threads/{thread_id}/runs/{run_id}", get(get_run))
        .route("/threads/{thread_id}/runs/{run_id}/join", get(join_run))
        .route(
            "/threads/{thread_id}/runs/{run_id}/cancel",
            post(cancel_run),
        )
        .with_state(shared)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn error(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// The configured API key check; `Err` is the 401 to answer.
fn check_key(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let inner = shared.lock();
    let Some((header, key)) = &inner.api_key else {
        return Ok(None);
    };
    match headers.get(header.as_str()).and_then(|v| v.to_str().ok()) {
        Some(sent) if sent == key => Ok(Some(sent.to_owned())),
        _ => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key",
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct CreateThread {
    thread_id: Option<String>,
    if_exists: Option<String>,
    #[serde(default)]
    metadata: Value,
}

async fn create_thread(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<CreateThread>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    let id = body
        .thread_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut inner = shared.lock();
    if let Some(thread) = inner.threads.get(&id) {
        if body.if_exists.as_deref() != Some("do_nothing") {
            return error(StatusCode::CONFLICT, "thread already exists");
        }
        return Json(thread_json(&id, thread)).into_response();
    }
    let thread = Thread {
        metadata: body.metadata,
        ..Thread::default()
    };
    let reply = thread_json(&id, &thread);
    inner.threads.insert(id, thread);
    inner.threads_created += 1;
    Json(reply).into_response()
}

fn thread_json(id: &str, thread: &Thread) -> Value {
    let status = if thread.runs.iter().any(|r| r.status == "running") {
        "busy"
    } else if thread.pending.is_some() || thread.cut_short {
        "interrupted"
    } else {
        "idle"
    };
    let interrupts = match &thread.pending {
        Some(pending) => json!({ format!("task-{}", thread.turns): [pending] }),
        None => json!({}),
    };
    json!({
        "thread_id": id,
        "metadata": thread.metadata,
        "status": status,
        "values": {"messages": thread.messages},
        "interrupts": interrupts,
    })
}

async fn get_thread(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(thread_id): Path<String>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    match shared.lock().threads.get(&thread_id) {
        Some(thread) => Json(thread_json(&thread_id, thread)).into_response(),
        None => error(StatusCode::NOT_FOUND, "thread not found"),
    }
}

async fn list_runs(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(thread_id): Path<String>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    let inner = shared.lock();
    if !inner.run_listing {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let Some(thread) = inner.threads.get(&thread_id) else {
        return error(StatusCode::NOT_FOUND, "thread not found");
    };
    let runs: Vec<Value> = thread.runs.iter().rev().map(run_json).collect();
    Json(runs).into_response()
}

async fn join_run(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    let done = {
        let mut inner = shared.lock();
        let Some(run) = inner.run_mut(&thread_id, &run_id) else {
            return error(StatusCode::NOT_FOUND, "run not found");
        };
        run.done.clone()
    };
    let mut done = done;
    // The sender lives as long as the run's task; a closed channel also means "finished".
    let _ = done.wait_for(|finished| *finished).await;
    let inner = shared.lock();
    match inner.threads.get(&thread_id) {
        Some(thread) => match &thread.pending {
            Some(pending) if !inner.join_hides_interrupts => {
                Json(json!({ "__interrupt__": [pending] })).into_response()
            }
            _ => Json(json!({"messages": thread.messages})).into_response(),
        },
        None => error(StatusCode::NOT_FOUND, "thread not found"),
    }
}

/// A run as the API shows it.
fn run_json(run: &Run) -> Value {
    json!({
        "run_id": run.record.run_id,
        "thread_id": run.record.thread_id,
        "assistant_id": run.record.assistant_id,
        "status": run.status,
        "metadata": run.record.metadata,
        "created_at": run.created_at,
    })
}

async fn get_run(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    let mut inner = shared.lock();
    match inner.run_mut(&thread_id, &run_id) {
        Some(run) => Json(run_json(run)).into_response(),
        None => error(StatusCode::NOT_FOUND, "run not found"),
    }
}

async fn cancel_run(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check_key(&shared, &headers) {
        return *response;
    }
    let mut inner = shared.lock();
    let Some(thread) = inner.threads.get_mut(&thread_id) else {
        return error(StatusCode::NOT_FOUND, "run not found");
    };
    let Some(run) = thread.runs.iter_mut().find(|r| r.record.run_id == run_id) else {
        return error(StatusCode::NOT_FOUND, "run not found");
    };
    if run.status == "running" {
        // Its stream ends and its joiners return: the task's senders go with it.
        if let Some(task) = run.task.take() {
            task.abort();
        }
        run.status = "interrupted";
        thread.cut_short = true;
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct RunRequest {
    assistant_id: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    command: Value,
}

async fn stream_run(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Path(thread_id): Path<String>,
    Json(body): Json<RunRequest>,
) -> Response {
    let api_key = match check_key(&shared, &headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let input = body.input["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let resume = body.command.get("resume").cloned();
    let (behavior, run_id, turn, done_tx) = {
        let mut inner = shared.lock();
        let known = !inner.unknown_assistants.contains(&body.assistant_id);
        let refused = match inner.threads.get(&thread_id).filter(|_| known) {
            None => Some(error(StatusCode::NOT_FOUND, "Thread or assistant not found.")),
            Some(thread) if thread.runs.iter().any(|run| run.status == "running") => Some(error(
                StatusCode::CONFLICT,
                "Thread is already running a task. Wait for it to finish or choose a different multitask strategy.",
            )),
            Some(_) => None,
        };
        // A run refused before it exists leaves the script for the next one.
        if let Some(refused) = refused {
            return refused;
        }
        let behavior = match inner.script.pop_front() {
            Some(behavior) => behavior,
            None => inner.default.clone(),
        };
        let Some(thread) = inner.threads.get_mut(&thread_id) else {
            return error(StatusCode::NOT_FOUND, "Thread or assistant not found.");
        };
        if let Some(Failure::Status(code)) = &behavior.failure {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "scripted failure");
        }
        if resume.is_some() && thread.pending.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "the thread has no pending interrupt to resume",
            );
        }
        // Answered, or dropped by a new message.
        thread.pending = None;
        thread.cut_short = false;
        let run_id = uuid::Uuid::new_v4().to_string();
        let (done_tx, done_rx) = watch::channel(false);
        thread.runs.push(Run {
            record: RunRecord {
                run_id: run_id.clone(),
                thread_id: thread_id.clone(),
                assistant_id: body.assistant_id.clone(),
                input: input.clone(),
                resume: resume.clone(),
                metadata: body.metadata.clone(),
                configurable: body.config["configurable"].clone(),
                api_key,
            },
            status: "running",
            created_at: format!("{} {:020}", now(), thread.runs.len()),
            done: done_rx,
            task: None,
        });
        if resume.is_none() {
            thread
                .messages
                .push(json!({"type": "human", "content": input}));
        }
        (behavior, run_id, thread.turns + 1, done_tx)
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    // What the echo repeats: the message, or what answered the interrupt.
    let heard = match &resume {
        Some(Value::String(text)) => format!("resumed with {text}"),
        Some(other) => format!("resumed with {other}"),
        None => input,
    };
    let task = tokio::spawn(play(
        shared.clone(),
        thread_id.clone(),
        run_id.clone(),
        heard,
        turn,
        behavior,
        tx,
        done_tx,
    ));
    if let Some(run) = shared.lock().run_mut(&thread_id, &run_id) {
        run.task = Some(task.abort_handle());
    }
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(200)))
        .into_response()
}

/// Plays one run to its end, whether or not anyone still listens (`on_disconnect: continue`).
#[allow(clippy::too_many_arguments)]
async fn play(
    shared: Shared,
    thread_id: String,
    run_id: String,
    input: String,
    turn: u64,
    behavior: Behavior,
    tx: mpsc::Sender<SseEvent>,
    done: watch::Sender<bool>,
) {
    // `None` once the stream is cut: the run goes on without it.
    let tx = std::sync::Mutex::new(Some(tx));
    let send = |event: SseEvent| {
        let tx = tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        async move {
            // A closed channel means the caller went away; the run goes on regardless.
            if let Some(tx) = tx {
                let _ = tx.send(event).await;
            }
        }
    };
    let data = |name: &str, value: Value| SseEvent::default().event(name).data(value.to_string());
    send(data(
        "metadata",
        json!({"run_id": run_id, "thread_id": thread_id, "attempt": 1}),
    ))
    .await;
    tokio::time::sleep(behavior.delay).await;
    let answer = match &behavior.reply {
        Reply::Echo => format!("echo #{turn}: {input}"),
        Reply::Text(text) => text.clone(),
    };
    let message_id = format!("msg-{run_id}");
    if let Some(Failure::ErrorEvent(message)) = &behavior.failure {
        send(data(
            "error",
            json!({"error": "ScriptedError", "message": message}),
        ))
        .await;
        finish(&shared, &thread_id, &run_id, "error", None);
        let _ = done.send(true);
        return;
    }
    // Chunks keep to a schedule (not sleep after sleep), so a busy machine does not stretch
    // "50 chunks over 5 s" into six seconds.
    let start = tokio::time::Instant::now();
    for (i, piece) in split(&answer, behavior.chunks).into_iter().enumerate() {
        if behavior.cut_stream_after == Some(i) {
            tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        tokio::time::sleep_until(start + behavior.chunk_delay * i as u32).await;
        let chunk = json!({"type": "AIMessageChunk", "id": message_id, "content": piece});
        send(data(
            "messages",
            json!([chunk, {"langgraph_node": "agent"}]),
        ))
        .await;
    }
    let ai = json!({"type": "ai", "id": message_id, "content": answer});
    let messages = finish(&shared, &thread_id, &run_id, "success", Some(ai));
    let mut values = json!({"messages": messages});
    if let Some(value) = behavior.interrupt {
        let pending = json!({"value": value, "id": format!("int-{run_id}")});
        if let Some(thread) = shared.lock().threads.get_mut(&thread_id) {
            thread.pending = Some(pending.clone());
        }
        values["__interrupt__"] = json!([pending]);
    }
    // Pretty-printed: the data spans several lines, as real servers' sometimes does.
    let pretty = serde_json::to_string_pretty(&values).unwrap_or_else(|_| values.to_string());
    send(SseEvent::default().event("values").data(pretty)).await;
    send(SseEvent::default().event("end").data("null")).await;
    let _ = done.send(true);
}

/// Records the run's outcome; returns the thread's messages.
fn finish(
    shared: &Shared,
    thread_id: &str,
    run_id: &str,
    status: &'static str,
    answer: Option<Value>,
) -> Vec<Value> {
    let mut inner = shared.lock();
    let Some(thread) = inner.threads.get_mut(thread_id) else {
        return Vec::new();
    };
    if let Some(run) = thread.runs.iter_mut().find(|r| r.record.run_id == run_id) {
        run.status = status;
    }
    if let Some(answer) = answer {
        thread.messages.push(answer);
        thread.turns += 1;
    }
    thread.messages.clone()
}

/// Cuts `text` into `parts` pieces of about equal length (on character boundaries).
fn split(text: &str, parts: usize) -> Vec<String> {
    if parts == 0 {
        return Vec::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts).max(1);
    chars
        .chunks(size)
        .map(|piece| piece.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_character_in_order() {
        let pieces = split("héllo wörld", 4);
        assert_eq!(pieces.concat(), "héllo wörld");
        assert!(pieces.len() <= 4);
        assert!(split("x", 0).is_empty());
    }
}
