//! One connection slot of one integration: open a ticket, connect, serve frames, and replace
//! the connection when it goes bad — opening the replacement **before** closing the old one.
//!
//! A slot's [`hold`] loop owns at most two sockets at a time (the serving one and, during a
//! switch, its successor). Each socket's [`serve`] task:
//!
//! * answers SYSTEM `ping` by echoing its data and acks SYSTEM `disconnect`;
//! * publishes every EVENT/CALLBACK frame (up to [`FRAMES_IN_FLIGHT`] at once) and acks it only
//!   after JetStream's ack; a failed publish leaves a CALLBACK unacked (DingTalk redelivers)
//!   and answers an EVENT `LATER`;
//! * sends WebSocket pings and asks for its replacement when DingTalk asked to disconnect,
//!   when nothing (no frame, or no pong to our pings) came for `STREAM_IDLE_TIMEOUT`, or when
//!   it reached `STREAM_MAX_AGE`; it keeps serving until its successor is up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_websockets::{ClientBuilder, Message};

use common::registry::Integration;
use common::shutdown::Shutdown;

use super::frame::{self, Content, FrameType};
use super::{Shared, SlotStatus};
use crate::publish::Published;

/// Frames of one connection being published at once.
pub const FRAMES_IN_FLIGHT: usize = 64;
/// Bound on the open call and on the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after bad credentials: they only change through the admin API (which restarts the slot).
const AUTH_RETRY: Duration = Duration::from_secs(60);
/// First and longest pause between failed connection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A socket that served this long proves the slot healthy: its end resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a closing socket may take to finish the frames it is publishing.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

type Socket =
    tokio_websockets::WebSocketStream<tokio_websockets::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// 401 `authFailed`: wrong clientId / clientSecret.
    AuthFailed(String),
    /// Anything else (network, 5xx, bad answer, handshake).
    Failed(String),
}

impl OpenError {
    fn describe(&self) -> String {
        match self {
            Self::AuthFailed(why) => format!("authFailed: {why}"),
            Self::Failed(why) => why.clone(),
        }
    }
}

/// Asks DingTalk for a ticket and connects with it.
pub(crate) async fn open(shared: &Shared, integration: &Integration) -> Result<Socket, OpenError> {
    shared.open_gate.wait().await;
    crate::metrics::stream_open();
    let url = format!("{}/v1.0/gateway/connections/open", shared.api_url);
    let body = json!({
        "clientId": integration.client_id(),
        "clientSecret": integration.client_secret().expose(),
        "subscriptions": frame::subscriptions(),
        "ua": concat!("dingtalk-gateway/", env!("CARGO_PKG_VERSION")),
    });
    let answer = shared
        .http
        .post(&url)
        .header("accept", "application/json")
        .json(&body)
        .timeout(CONNECT_TIMEOUT)
        .send()
        .await
        .map_err(|err| OpenError::Failed(format!("open call failed: {err}")))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .map_err(|err| OpenError::Failed(format!("open answer unreadable: {err}")))?;
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == reqwest::StatusCode::UNAUTHORIZED
        || parsed.get("code").and_then(Value::as_str) == Some("authFailed")
    {
        let message = parsed
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("wrong clientId or clientSecret");
        return Err(OpenError::AuthFailed(message.to_owned()));
    }
    if !status.is_success() {
        return Err(OpenError::Failed(format!(
            "open answered {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let field = |name: &str| {
        parsed
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OpenError::Failed(format!("open answer lacks `{name}`")))
    };
    let (endpoint, ticket) = (field("endpoint")?, field("ticket")?);
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    // The ticket is a credential: it goes into the URL only, never into a log line.
    let uri = format!("{endpoint}{separator}ticket={ticket}");
    let builder = ClientBuilder::new()
        .uri(&uri)
        .map_err(|_| OpenError::Failed(format!("endpoint {endpoint:?} is not a valid URI")))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, builder.connect()).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(err)) => Err(OpenError::Failed(format!(
            "WebSocket connect to {endpoint} failed: {err}"
        ))),
        Err(_) => Err(OpenError::Failed(format!(
            "WebSocket connect to {endpoint} timed out"
        ))),
    }
}

/// Why a socket asks to be replaced or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// DingTalk sent SYSTEM `disconnect`.
    Disconnect,
    /// No frame or no pong for `STREAM_IDLE_TIMEOUT`.
    Idle,
    /// Reached `STREAM_MAX_AGE`.
    MaxAge,
    /// The socket closed or failed.
    Closed,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
            Self::Closed => "closed",
        }
    }
}

/// What a socket task tells its slot.
struct Report {
    generation: u64,
    reason: Reason,
    /// `true`: the socket still serves and waits to be closed; `false`: it is gone.
    alive: bool,
}

/// Holds one slot of `integration` until `stop` fires.
pub(crate) async fn hold(
    shared: Arc<Shared>,
    integration: Integration,
    slot: usize,
    status: Arc<Mutex<SlotStatus>>,
    stop: Shutdown,
) {
    let id = integration.id().clone();
    let (reports_tx, mut reports) = mpsc::channel::<Report>(8);
    let mut generation = 0u64;
    let mut current: Option<oneshot::Sender<()>> = None;
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = BACKOFF_MIN;
    // When the current socket was opened: one that lived STABLE_AFTER resets the backoff.
    let mut opened = Instant::now();
    loop {
        reap(&mut tasks, &status);
        if current.is_none() {
            match connect_or_stop(&shared, &integration, &status, &stop, &mut backoff).await {
                Some(socket) => {
                    generation += 1;
                    opened = Instant::now();
                    current = Some(spawn(
                        &mut tasks,
                        socket,
                        generation,
                        &shared,
                        &integration,
                        &status,
                        reports_tx.clone(),
                    ));
                }
                None => break,
            }
        }
        let report = tokio::select! {
            () = stop.wait() => break,
            report = reports.recv() => report,
            // A replaced socket that closed: out of the set and the count.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                reap(&mut tasks, &status);
                continue;
            }
        };
        let Some(report) = report else { break };
        if report.generation != generation {
            continue;
        }
        crate::metrics::stream_replaced(report.reason.as_str());
        let stable = opened.elapsed() >= STABLE_AFTER;
        if stable {
            backoff = BACKOFF_MIN;
        }
        if report.alive {
            tracing::info!(integration = %id, slot, reason = report.reason.as_str(),
                "replacing stream connection; the old one serves until the new one is up");
            // A peer that asks every new socket to disconnect (a draining gateway) is asked
            // again with a growing pause, as a failing one is; the old socket serves meanwhile.
            let pause = (report.reason == Reason::Disconnect && !stable).then(|| {
                let pause = jitter(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                pause
            });
            let replacement = async {
                if let Some(pause) = pause {
                    tokio::select! {
                        () = stop.wait() => return None,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                connect_or_stop(&shared, &integration, &status, &stop, &mut backoff).await
            };
            tokio::pin!(replacement);
            // The old socket may die while its replacement cannot be opened (DingTalk closes it
            // after the disconnect's grace period): the slot then says so meanwhile.
            let replacement = loop {
                tokio::select! {
                    socket = &mut replacement => break socket,
                    Some(late) = reports.recv() => {
                        if late.generation == generation && !late.alive {
                            tracing::warn!(integration = %id, slot, "stream connection lost before its replacement was up");
                            status
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .disconnected("connection closed while its replacement was being opened");
                        }
                    }
                }
            };
            match replacement {
                Some(socket) => {
                    generation += 1;
                    opened = Instant::now();
                    let old = current.replace(spawn(
                        &mut tasks,
                        socket,
                        generation,
                        &shared,
                        &integration,
                        &status,
                        reports_tx.clone(),
                    ));
                    if let Some(old) = old {
                        let _ = old.send(());
                    }
                }
                None => break,
            }
        } else {
            tracing::warn!(integration = %id, slot, "stream connection lost; reconnecting");
            status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .disconnected("connection closed by the peer or the network");
            current = None;
            tokio::select! {
                () = stop.wait() => break,
                () = tokio::time::sleep(jitter(backoff)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    if let Some(current) = current.take() {
        let _ = current.send(());
    }
    // Every socket finishes the frames it is publishing and closes.
    while tasks.join_next().await.is_some() {}
    status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .disconnected("released");
}

/// Drops the sockets that finished (replaced, closed) from the set, which otherwise keeps each
/// one's task until the slot ends, and shows how many are left.
fn reap(tasks: &mut tokio::task::JoinSet<()>, status: &Mutex<SlotStatus>) {
    while tasks.try_join_next().is_some() {}
    status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sockets = tasks.len();
}

fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    socket: Socket,
    generation: u64,
    shared: &Arc<Shared>,
    integration: &Integration,
    status: &Arc<Mutex<SlotStatus>>,
    reports: mpsc::Sender<Report>,
) -> oneshot::Sender<()> {
    let (close_tx, close_rx) = oneshot::channel();
    status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .connected();
    let shared = Arc::clone(shared);
    let integration = integration.clone();
    let task_status = Arc::clone(status);
    tasks.spawn(async move {
        serve(
            socket,
            generation,
            &shared,
            &integration,
            &task_status,
            reports,
            close_rx,
        )
        .await;
    });
    reap(tasks, status);
    close_tx
}

/// Opens a socket, retrying with backoff (slowly after `authFailed`); `None` once stopped.
async fn connect_or_stop(
    shared: &Shared,
    integration: &Integration,
    status: &Mutex<SlotStatus>,
    stop: &Shutdown,
    backoff: &mut Duration,
) -> Option<Socket> {
    loop {
        if stop.is_triggered() {
            return None;
        }
        let attempt = tokio::select! {
            () = stop.wait() => return None,
            attempt = open(shared, integration) => attempt,
        };
        let pause = match attempt {
            // The backoff is not reset here: a peer that accepts sockets and closes them at
            // once (a refused ticket, a proxy) would otherwise be asked every second for ever.
            Ok(socket) => return Some(socket),
            Err(err) => {
                let auth = matches!(err, OpenError::AuthFailed(_));
                let why = err.describe();
                crate::metrics::stream_open_failed(if auth { "auth_failed" } else { "error" });
                if auth {
                    tracing::error!(integration = %integration.id(), client_id = integration.client_id(),
                        error = %why, retry_in_s = AUTH_RETRY.as_secs(),
                        "DingTalk refused the integration's credentials for Stream mode; fix client_id / client_secret");
                } else {
                    tracing::warn!(integration = %integration.id(), error = %why,
                        retry_in_ms = backoff.as_millis(), "opening a stream connection failed");
                }
                status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .failed(why);
                let pause = if auth { AUTH_RETRY } else { *backoff };
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
                pause
            }
        };
        tokio::select! {
            () = stop.wait() => return None,
            () = tokio::time::sleep(jitter(pause)) => {}
        }
    }
}

/// `base` ± 20 %, so slots that failed together do not retry together.
fn jitter(base: Duration) -> Duration {
    let factor = 0.8 + rand::random::<f64>() * 0.4;
    base.mul_f64(factor)
}

/// Serves one socket until it is told to close or it dies.
async fn serve(
    mut socket: Socket,
    generation: u64,
    shared: &Shared,
    integration: &Integration,
    status: &Mutex<SlotStatus>,
    reports: mpsc::Sender<Report>,
    mut close: oneshot::Receiver<()>,
) {
    let opened = Instant::now();
    // Up to a tenth early, so that sockets opened together are not all replaced together.
    let max_age = shared.max_age.mul_f64(0.9 + rand::random::<f64>() * 0.1);
    let mut last_frame = Instant::now();
    let mut last_pong = Instant::now();
    let mut asked = false;
    let mut in_flight = FuturesUnordered::new();
    let ping_every = (shared.idle_timeout / 3).max(Duration::from_millis(300));
    let mut ping = tokio::time::interval(ping_every);
    ping.reset();
    let id = integration.id();
    let ask = |reason: Reason, asked: &mut bool| {
        if !*asked {
            *asked = true;
            // The slot may be gone (shutting down); then nobody needs the report.
            let _ = reports.try_send(Report {
                generation,
                reason,
                alive: true,
            });
        }
    };
    let alive = loop {
        tokio::select! {
            _ = &mut close => break true,
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(reply) = reply {
                    if socket.send(Message::text(reply)).await.is_err() {
                        break false;
                    }
                }
            }
            incoming = socket.next(), if in_flight.len() < FRAMES_IN_FLIGHT => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => {
                        tracing::debug!(integration = %id, error = %err, "stream socket failed");
                        break false;
                    }
                    None => break false,
                };
                if message.is_pong() {
                    last_pong = Instant::now();
                    continue;
                }
                let Some(text) = message.as_text() else { continue };
                last_frame = Instant::now();
                last_pong = last_frame;
                status.lock().unwrap_or_else(PoisonError::into_inner).frame();
                let frame = match frame::parse(text) {
                    Ok(frame) => frame,
                    Err((message_id, why)) => {
                        crate::metrics::stream_frame("malformed");
                        tracing::warn!(integration = %id, message_id = message_id.as_deref().unwrap_or("-"),
                            error = %why, "malformed stream frame");
                        if let Some(message_id) = message_id {
                            if socket.send(Message::text(frame::malformed(&message_id, &why))).await.is_err() {
                                break false;
                            }
                        }
                        continue;
                    }
                };
                match frame.kind {
                    FrameType::System => {
                        let reply = match frame.topic.as_str() {
                            "ping" => Some(frame::pong(&frame)),
                            "disconnect" => {
                                tracing::info!(integration = %id, data = %frame.data, "DingTalk asked to disconnect");
                                ask(Reason::Disconnect, &mut asked);
                                Some(frame::ack(&frame))
                            }
                            other => {
                                tracing::debug!(integration = %id, topic = other, "SYSTEM frame ignored");
                                None
                            }
                        };
                        if let Some(reply) = reply {
                            if socket.send(Message::text(reply)).await.is_err() {
                                break false;
                            }
                        }
                    }
                    FrameType::Event | FrameType::Callback => {
                        in_flight.push(handle(shared, integration, frame));
                    }
                }
            }
            _ = ping.tick() => {
                let now = Instant::now();
                if now.duration_since(last_frame) >= shared.idle_timeout
                    || now.duration_since(last_pong) >= shared.idle_timeout
                {
                    ask(Reason::Idle, &mut asked);
                }
                if now.duration_since(opened) >= max_age {
                    ask(Reason::MaxAge, &mut asked);
                }
                if socket.send(Message::ping("")).await.is_err() {
                    break false;
                }
            }
        }
    };
    if !alive {
        let _ = reports.try_send(Report {
            generation,
            reason: Reason::Closed,
            alive: false,
        });
        // Frames being published still reach the bus; their acks cannot be sent, so DingTalk
        // redelivers them and the bus drops the copies.
        while in_flight.next().await.is_some() {}
        return;
    }
    // Closing on purpose: finish the frames in hand, ack them, then close.
    let drain = async {
        while let Some(reply) = in_flight.next().await {
            if let Some(reply) = reply {
                let _ = socket.send(Message::text(reply)).await;
            }
        }
        let _ = socket.close().await;
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
}

/// Publishes one EVENT/CALLBACK frame; returns the answer to write (`None`: stay silent so
/// DingTalk redelivers).
async fn handle(shared: &Shared, integration: &Integration, frame: frame::Frame) -> Option<String> {
    let started = Instant::now();
    if frame.data.len() > crate::webhook::MAX_BODY_BYTES {
        // The HTTP routes refuse such a body (413); its event would not fit a bus message.
        crate::metrics::stream_frame("too_large");
        tracing::warn!(integration = %integration.id(), message_id = %frame.message_id,
            topic = %frame.topic, bytes = frame.data.len(), "stream frame too large; refused");
        return Some(frame::malformed(
            &frame.message_id,
            &format!(
                "frame data of {} bytes exceeds the {} bytes a callback may have",
                frame.data.len(),
                crate::webhook::MAX_BODY_BYTES
            ),
        ));
    }
    let normalized = match frame::content(&frame) {
        Ok(Content::Event(normalized)) => normalized,
        Ok(Content::UnknownTopic) => {
            crate::metrics::stream_frame("unknown_topic");
            tracing::info!(integration = %integration.id(), message_id = %frame.message_id,
                topic = %frame.topic, "stream frame with an unhandled topic acked and skipped");
            return Some(frame::ack(&frame));
        }
        Err(err) => {
            crate::metrics::stream_frame("malformed");
            tracing::warn!(integration = %integration.id(), message_id = %frame.message_id,
                topic = %frame.topic, error = %err.0, "malformed stream frame");
            return Some(frame::malformed(&frame.message_id, &err.0));
        }
    };
    match shared
        .publisher
        .publish_normalized(integration.id(), *normalized)
        .await
    {
        Ok((event_id, published)) => {
            crate::metrics::stream_frame(match published {
                Published::New => "published",
                Published::Duplicate => "duplicate",
            });
            crate::metrics::stream_frame_latency(started.elapsed());
            tracing::debug!(%event_id, message_id = %frame.message_id, "stream frame published");
            Some(frame::ack(&frame))
        }
        Err(err) => {
            crate::metrics::stream_frame("publish_failed");
            tracing::warn!(integration = %integration.id(), message_id = %frame.message_id,
                error = %err.message, "stream frame not published; left for redelivery");
            match frame.kind {
                FrameType::Event => Some(frame::later(
                    &frame,
                    "the gateway could not store the event; retry later",
                )),
                _ => None,
            }
        }
    }
}
