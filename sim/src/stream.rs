//! DingTalk's Stream-mode gateway (PROTOCOL §7): the open endpoint hands out single-use tickets,
//! a WebSocket listener of its own (DingTalk serves it from another host) accepts connections
//! carrying one, and frames travel in DingTalk's JSON format.
//!
//! What it does like DingTalk, because the gateway's reliability depends on it:
//!
//! * every EVENT/CALLBACK frame stays pending until acked with code 200 (an EVENT answered
//!   `{"status":"LATER"}` stays pending too) or refused with a 4xx; a pending frame is redelivered after
//!   [`StreamSettings::redelivery_timeout`] under a **new** `headers.messageId`, to another
//!   connection of the same app when there is one;
//! * SYSTEM `ping` frames every [`StreamSettings::ping_interval`], answered by echoing `data`;
//! * SYSTEM `disconnect`: no new frames go to that connection, and the server closes it after
//!   [`StreamSettings::disconnect_grace`].
//!
//! Test controls ([`crate::SimState`]'s `stream_*` methods, `/_sim/stream/…` over HTTP) push
//! robot messages, card callbacks and events, drop a connection without a close handshake, and
//! make one *silent*: it still answers WebSocket pings but sends nothing at all any more — the
//! failure Stream clients most often miss.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Message, ServerBuilder};

use common::shutdown::Shutdown;

use crate::ids;

/// The robot message topic (PROTOCOL §7.7).
pub const ROBOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// The card callback topic.
pub const CARD_TOPIC: &str = "/v1.0/card/instances/callback";

/// Timings of the Stream gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How often each connection gets a SYSTEM `ping` frame.
    pub ping_interval: Duration,
    /// How long a frame may stay unacked before it is redelivered under a new message id.
    pub redelivery_timeout: Duration,
    /// How long a ticket from the open endpoint stays usable.
    pub ticket_ttl: Duration,
    /// How long after a SYSTEM `disconnect` the server closes the connection.
    pub disconnect_grace: Duration,
    /// Acks and SYSTEM ping answers kept for inspection (oldest dropped).
    pub max_recorded: usize,
    /// How long the server takes to answer a client's WebSocket close (a slow or distant
    /// gateway): the client's close waits that long.
    pub close_answer_delay: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            redelivery_timeout: Duration::from_secs(5),
            ticket_ttl: Duration::from_secs(90),
            disconnect_grace: Duration::from_secs(5),
            max_recorded: 100_000,
            close_answer_delay: Duration::ZERO,
        }
    }
}

/// What a test pushes to an app's Stream connections.
#[derive(Debug, Clone)]
pub enum StreamPush {
    /// A robot message (the §2.2 JSON) on the robot topic.
    RobotMessage {
        /// The app (clientId).
        app_key: String,
        /// The message JSON.
        data: Value,
    },
    /// A card button press (§4.6b JSON) on the card callback topic.
    CardCallback {
        /// The app.
        app_key: String,
        /// The callback JSON.
        data: Value,
    },
    /// An event subscription event.
    Event {
        /// The app.
        app_key: String,
        /// `headers.eventType`, e.g. `user_add_org`.
        event_type: String,
        /// `headers.eventId`: DingTalk's id of the event, stable across redeliveries.
        event_id: String,
        /// `headers.eventCorpId`.
        corp_id: String,
        /// The event JSON.
        data: Value,
    },
}

impl StreamPush {
    fn app_key(&self) -> &str {
        match self {
            Self::RobotMessage { app_key, .. }
            | Self::CardCallback { app_key, .. }
            | Self::Event { app_key, .. } => app_key,
        }
    }
}

/// A connection as the control API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamConnection {
    /// `headers.connectionId` of its frames.
    pub id: String,
    /// The app that opened it.
    pub app_key: String,
    /// Made silent by a test.
    pub silent: bool,
    /// Sent a SYSTEM `disconnect`; closing soon.
    pub disconnecting: bool,
    /// When it was accepted (ms since the epoch).
    pub opened_at_ms: i64,
}

/// An answer the gateway received for a frame it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamAck {
    /// The pushed message this answers (the id [`crate::SimState::stream_push`] returned), or
    /// `None` for an answer to a SYSTEM frame or to an unknown (e.g. superseded) message id.
    pub origin: Option<String>,
    /// The `headers.messageId` answered.
    pub message_id: String,
    /// The connection it came on.
    pub connection_id: String,
    /// `code` of the answer.
    pub code: i64,
    /// `data` of the answer (a JSON string in DingTalk's format).
    pub data: String,
    /// Whether it settled the message (code 200 and not `LATER`).
    pub settled: bool,
    /// Microseconds from the push of the message this answers to this answer (across
    /// redeliveries), or `None` when `origin` is.
    pub since_push_us: Option<u64>,
}

/// One call of the open endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenAttempt {
    /// The `clientId` given.
    pub app_key: String,
    /// Whether a ticket was issued.
    pub accepted: bool,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// Why a push or an open was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Wrong clientId or clientSecret.
    #[error("authFailed: unknown clientId or wrong clientSecret")]
    AuthFailed,
    /// The open request lacks a field.
    #[error("invalidParameter: {0}")]
    Invalid(String),
    /// The app is not registered.
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    /// Too many frames are pending.
    #[error("at most {0} frames may be pending")]
    Full(usize),
}

/// A subscription from the open request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    kind: String,
    topic: String,
}

struct Ticket {
    app_key: String,
    subscriptions: Vec<Subscription>,
    expires_at: Instant,
}

enum Command {
    Send(String),
    Disconnect,
    Drop,
}

struct Conn {
    app_key: String,
    subscriptions: Vec<Subscription>,
    tx: mpsc::UnboundedSender<Command>,
    silent: bool,
    disconnecting: bool,
    opened_at_ms: i64,
}

impl Conn {
    fn accepts(&self, kind: &str, topic: &str) -> bool {
        !self.disconnecting
            && self.subscriptions.iter().any(|s| {
                s.kind == kind && (s.topic == topic || (kind == "EVENT" && s.topic == "*"))
            })
    }
}

struct Pending {
    origin: String,
    app_key: String,
    kind: &'static str,
    topic: &'static str,
    data: String,
    event_headers: Option<Value>,
    connection: Option<String>,
    deadline: Instant,
    pushed_at: Instant,
}

#[derive(Default)]
struct State {
    tickets: HashMap<String, Ticket>,
    conns: HashMap<String, Conn>,
    pending: HashMap<String, Pending>,
    acks: Vec<StreamAck>,
    opens: Vec<OpenAttempt>,
    round_robin: usize,
}

/// The gateway, shared by the open route, the WebSocket listener and the test controls.
pub(crate) struct Gateway {
    settings: StreamSettings,
    state: Mutex<State>,
    endpoint: Mutex<String>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub(crate) fn new(settings: StreamSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::default()),
            endpoint: Mutex::new(String::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds the WebSocket listener next to the HTTP one and serves until `shutdown`.
    pub(crate) async fn serve(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        shutdown: Shutdown,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) =
            format!("ws://{addr}/connect");
        let gateway = Arc::clone(self);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.wait() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            let gateway = Arc::clone(&gateway);
                            let stop = stop.clone();
                            tokio::spawn(async move { gateway.connection(socket, stop).await });
                        }
                        Err(error) => tracing::warn!(%error, "stream accept failed"),
                    },
                }
            }
        });
        let gateway = Arc::clone(self);
        tokio::spawn(async move { gateway.redeliver_loop(shutdown).await });
        Ok(addr)
    }

    /// `POST /v1.0/gateway/connections/open`: checks the credentials against `apps`
    /// (`clientId` → `clientSecret`) and issues a ticket.
    pub(crate) fn open(
        &self,
        body: &Value,
        secret_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Value, StreamError> {
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| StreamError::Invalid(format!("`{name}` is required")))
        };
        let client_id = field("clientId")?;
        let client_secret = field("clientSecret")?;
        let subscriptions: Vec<Subscription> = body
            .get("subscriptions")
            .and_then(Value::as_array)
            .map(|subs| {
                subs.iter()
                    .filter_map(|s| {
                        Some(Subscription {
                            kind: s.get("type")?.as_str()?.to_owned(),
                            topic: s.get("topic")?.as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if subscriptions.is_empty() {
            return Err(StreamError::Invalid(
                "`subscriptions` must name at least one {type, topic}".into(),
            ));
        }
        let accepted = secret_of(client_id).is_some_and(|secret| secret == client_secret);
        let mut state = self.lock();
        let at_ms = ids::now_ms();
        push_bounded(
            &mut state.opens,
            OpenAttempt {
                app_key: client_id.to_owned(),
                accepted,
                at_ms,
            },
            self.settings.max_recorded,
        );
        if !accepted {
            return Err(StreamError::AuthFailed);
        }
        let now = Instant::now();
        state.tickets.retain(|_, t| t.expires_at > now);
        let ticket = format!("simtk{}", ids::alphanumeric(27));
        state.tickets.insert(
            ticket.clone(),
            Ticket {
                app_key: client_id.to_owned(),
                subscriptions,
                expires_at: now + self.settings.ticket_ttl,
            },
        );
        let endpoint = self
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(json!({"endpoint": endpoint, "ticket": ticket}))
    }

    /// One WebSocket connection: ticket check, then frames out and answers in until it ends.
    async fn connection(self: Arc<Self>, socket: TcpStream, shutdown: Shutdown) {
        let Ok((request, mut ws)) = ServerBuilder::new().accept(socket).await else {
            return;
        };
        let ticket = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("ticket="))
            .map(percent_decode)
            .unwrap_or_default();
        let id = format!("simconn{}", ids::alphanumeric(16));
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Single use: a ticket is consumed by its first connection attempt.
        let ticket = self
            .lock()
            .tickets
            .remove(&ticket)
            .filter(|t| t.expires_at > Instant::now());
        let Some(ticket) = ticket else {
            let _ = ws
                .send(Message::close(
                    Some(CloseCode::POLICY_VIOLATION),
                    "invalid or used ticket",
                ))
                .await;
            return;
        };
        self.lock().conns.insert(
            id.clone(),
            Conn {
                app_key: ticket.app_key,
                subscriptions: ticket.subscriptions,
                tx,
                silent: false,
                disconnecting: false,
                opened_at_ms: ids::now_ms(),
            },
        );
        // Frames that waited for a connection of this app go out at once.
        self.deliver_waiting();
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.reset();
        let mut close_at: Option<tokio::time::Instant> = None;
        loop {
            let closing = async {
                match close_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.wait() => break,
                () = closing => {
                    let _ = ws.close().await;
                    break;
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(message)) => {
                        if let Some(text) = message.as_text() {
                            self.answer(&id, text);
                        }
                        if message.is_close() && !self.settings.close_answer_delay.is_zero() {
                            // The close reply is queued; it leaves with the next poll.
                            tokio::time::sleep(self.settings.close_answer_delay).await;
                        }
                    }
                    _ => break,
                },
                command = rx.recv() => match command {
                    Some(Command::Send(text)) => {
                        if !self.is_silent(&id) && ws.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Command::Disconnect) => {
                        let frame = system_frame(&id, "disconnect", json!({"reason": "simulated server restart"}));
                        if ws.send(Message::text(frame)).await.is_err() {
                            break;
                        }
                        close_at = Some(tokio::time::Instant::now() + self.settings.disconnect_grace);
                    }
                    // Dropping the socket without a close frame, as a dead peer would.
                    Some(Command::Drop) | None => break,
                },
                _ = ping.tick() => {
                    if !self.is_silent(&id) {
                        let frame = system_frame(&id, "ping", json!({"opaque": ids::alphanumeric(12)}));
                        if ws.send(Message::text(frame)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        self.lock().conns.remove(&id);
    }

    fn is_silent(&self, id: &str) -> bool {
        self.lock().conns.get(id).is_some_and(|c| c.silent)
    }

    /// An answer from the client: settles the pending frame it names (code 200, not `LATER`).
    fn answer(&self, connection: &str, text: &str) {
        let Ok(reply) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(connection, "stream answer is not JSON");
            return;
        };
        let message_id = reply
            .pointer("/headers/messageId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let code = reply.get("code").and_then(Value::as_i64).unwrap_or(0);
        let data = reply
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let later = serde_json::from_str::<Value>(&data)
            .ok()
            .and_then(|d| d.get("status").and_then(Value::as_str).map(str::to_owned))
            .is_some_and(|s| s == "LATER");
        let mut state = self.lock();
        // A 4xx says the client cannot use the frame: retrying would not help.
        let settled = (code == 200 && !later) || (400..500).contains(&code);
        let (origin, since_push_us) = match state.pending.get(&message_id) {
            Some(p) if p.connection.as_deref() == Some(connection) => {
                let origin = p.origin.clone();
                let since_push =
                    u64::try_from(p.pushed_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                if settled {
                    state.pending.remove(&message_id);
                }
                (Some(origin), Some(since_push))
            }
            _ => (None, None),
        };
        push_bounded(
            &mut state.acks,
            StreamAck {
                origin,
                message_id,
                connection_id: connection.to_owned(),
                code,
                data,
                settled,
                since_push_us,
            },
            self.settings.max_recorded,
        );
    }

    /// Queues a pushed frame and delivers it to a connection of its app, if any.
    pub(crate) fn push(&self, push: StreamPush) -> Result<String, StreamError> {
        let origin = format!("simpush{}", ids::alphanumeric(16));
        let (kind, topic, data, event_headers) = match &push {
            StreamPush::RobotMessage { data, .. } => ("CALLBACK", ROBOT_TOPIC, data, None),
            StreamPush::CardCallback { data, .. } => ("CALLBACK", CARD_TOPIC, data, None),
            StreamPush::Event {
                app_key,
                event_type,
                event_id,
                corp_id,
                data,
            } => (
                "EVENT",
                "*",
                data,
                Some(json!({
                    "eventType": event_type, "eventId": event_id,
                    "eventBornTime": ids::now_ms().to_string(), "eventCorpId": corp_id,
                    "eventUnifiedAppId": app_key,
                })),
            ),
        };
        let mut state = self.lock();
        if state.pending.len() >= self.settings.max_recorded {
            return Err(StreamError::Full(self.settings.max_recorded));
        }
        let message_id = new_message_id();
        state.pending.insert(
            message_id.clone(),
            Pending {
                origin: origin.clone(),
                app_key: push.app_key().to_owned(),
                kind,
                topic,
                data: data.to_string(),
                event_headers,
                connection: None,
                deadline: Instant::now(),
                pushed_at: Instant::now(),
            },
        );
        self.deliver(&mut state, message_id, None);
        Ok(origin)
    }

    /// Sends pending frame `message_id` to a connection of its app (avoiding `avoid` when
    /// another one is there); with none, it waits for one.
    fn deliver(&self, state: &mut State, message_id: String, avoid: Option<&str>) {
        let Some(pending) = state.pending.get(&message_id) else {
            return;
        };
        let mut candidates: Vec<&String> = state
            .conns
            .iter()
            .filter(|(_, c)| c.app_key == pending.app_key && c.accepts(pending.kind, pending.topic))
            .map(|(id, _)| id)
            .collect();
        candidates.sort();
        if candidates.len() > 1 {
            if let Some(avoid) = avoid {
                candidates.retain(|id| id.as_str() != avoid);
            }
        }
        let chosen = (!candidates.is_empty())
            .then(|| candidates[state.round_robin % candidates.len()].clone());
        state.round_robin = state.round_robin.wrapping_add(1);
        let deadline = Instant::now() + self.settings.redelivery_timeout;
        let Some(connection) = chosen else {
            if let Some(p) = state.pending.get_mut(&message_id) {
                p.connection = None;
            }
            return;
        };
        let pending = state
            .pending
            .get_mut(&message_id)
            .expect("checked above under the same lock");
        pending.connection = Some(connection.clone());
        pending.deadline = deadline;
        let mut headers = json!({
            "appId": pending.app_key, "connectionId": connection, "contentType": "application/json",
            "messageId": message_id, "time": ids::now_ms().to_string(),
            "topic": if pending.kind == "EVENT" { "*" } else { pending.topic },
        });
        if let (Some(extra), Some(headers)) = (&pending.event_headers, headers.as_object_mut()) {
            if let Some(extra) = extra.as_object() {
                headers.extend(extra.clone());
            }
        }
        let frame = json!({"specVersion": "1.0", "type": pending.kind, "headers": headers, "data": pending.data});
        if let Some(conn) = state.conns.get(&connection) {
            // A closed channel means the connection just ended: the deadline redelivers.
            let _ = conn.tx.send(Command::Send(frame.to_string()));
        }
    }

    /// Delivers frames that have no connection yet.
    fn deliver_waiting(&self) {
        let mut state = self.lock();
        let waiting: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.connection.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            self.deliver(&mut state, id, None);
        }
    }

    /// Redelivers overdue frames under new message ids, like DingTalk.
    async fn redeliver_loop(self: Arc<Self>, shutdown: Shutdown) {
        let tick = (self.settings.redelivery_timeout / 10)
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        let mut interval = tokio::time::interval(tick);
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = interval.tick() => {}
            }
            let now = Instant::now();
            let mut state = self.lock();
            let overdue: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, p)| p.connection.is_some() && p.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for old_id in overdue {
                let Some(pending) = state.pending.remove(&old_id) else {
                    continue;
                };
                let previous = pending.connection.clone();
                let new_id = new_message_id();
                state.pending.insert(new_id.clone(), pending);
                self.deliver(&mut state, new_id, previous.as_deref());
            }
            drop(state);
            self.deliver_waiting();
        }
    }

    pub(crate) fn connections(&self) -> Vec<StreamConnection> {
        let mut list: Vec<StreamConnection> = self
            .lock()
            .conns
            .iter()
            .map(|(id, c)| StreamConnection {
                id: id.clone(),
                app_key: c.app_key.clone(),
                silent: c.silent,
                disconnecting: c.disconnecting,
                opened_at_ms: c.opened_at_ms,
            })
            .collect();
        list.sort_by(|a, b| (a.opened_at_ms, &a.id).cmp(&(b.opened_at_ms, &b.id)));
        list
    }

    /// Applies a control to one connection; `false` if it does not exist.
    pub(crate) fn control(&self, id: &str, control: ConnectionControl) -> bool {
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(id) else {
            return false;
        };
        match control {
            ConnectionControl::Silence => conn.silent = true,
            ConnectionControl::Disconnect => {
                conn.disconnecting = true;
                let _ = conn.tx.send(Command::Disconnect);
            }
            ConnectionControl::Drop => {
                let _ = conn.tx.send(Command::Drop);
            }
        }
        true
    }

    pub(crate) fn acks(&self) -> Vec<StreamAck> {
        self.lock().acks.clone()
    }

    pub(crate) fn opens(&self) -> Vec<OpenAttempt> {
        self.lock().opens.clone()
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// What a test can do to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionControl {
    /// Send SYSTEM `disconnect`, then close after the grace period.
    Disconnect,
    /// Close the TCP connection without a WebSocket close.
    Drop,
    /// Keep answering WebSocket pings, send nothing else (no frames, no SYSTEM pings).
    Silence,
}

fn new_message_id() -> String {
    format!("simmsg{}", ids::alphanumeric(18))
}

fn system_frame(connection: &str, topic: &str, data: Value) -> String {
    json!({
        "specVersion": "1.0", "type": "SYSTEM",
        "headers": {"appId": "", "connectionId": connection, "contentType": "application/json",
                    "messageId": new_message_id(), "time": ids::now_ms().to_string(), "topic": topic},
        "data": data.to_string(),
    })
    .to_string()
}

fn push_bounded<T>(list: &mut Vec<T>, item: T, cap: usize) {
    if list.len() >= cap.max(1) {
        list.remove(0);
    }
    list.push(item);
}

/// Tickets are URL-safe, but some SDKs percent-encode them anyway (PROTOCOL §7.2).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_percent_decoded() {
        assert_eq!(percent_decode("ab%2Dc"), "ab-c");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("end%2"), "end%2");
    }

    #[test]
    fn wrong_credentials_get_auth_failed_and_are_recorded() {
        let gateway = Gateway::new(StreamSettings::default());
        let body = json!({"clientId": "app", "clientSecret": "wrong",
            "subscriptions": [{"type": "CALLBACK", "topic": ROBOT_TOPIC}]});
        let err = gateway
            .open(&body, |_| Some("right".to_owned()))
            .unwrap_err();
        assert_eq!(err, StreamError::AuthFailed);
        assert!(!gateway.opens()[0].accepted);
        let ok = gateway.open(&body, |_| Some("wrong".to_owned())).unwrap();
        assert!(ok["ticket"].as_str().unwrap().starts_with("simtk"));
    }

    #[test]
    fn an_open_without_subscriptions_is_refused() {
        let gateway = Gateway::new(StreamSettings::default());
        let body = json!({"clientId": "app", "clientSecret": "s"});
        assert!(matches!(
            gateway.open(&body, |_| Some("s".to_owned())),
            Err(StreamError::Invalid(_))
        ));
    }
}
