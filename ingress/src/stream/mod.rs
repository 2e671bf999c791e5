//! Stream mode (PROTOCOL §7): instead of receiving HTTP callbacks, the ingress opens outbound
//! WebSockets to DingTalk for every integration whose `connection_mode` is `stream`, and puts
//! what arrives on the bus exactly as the HTTP routes would (same normalization, same event,
//! same `Nats-Msg-Id`), acking each frame only after JetStream's ack.
//!
//! The [`run`] loop is the supervisor: each pass (every third of `STREAM_LEASE_TTL`, and at
//! once when the registry reports a change) it announces the replica, decides which slots it
//! should hold ([`lease::owner`]), takes, renews or releases their leases, and starts or stops
//! one [`connection::hold`] task per slot. Each integration has `STREAM_CONNECTIONS_PER_APP`
//! slots, so a dead socket or replica leaves the others serving while it is replaced.

pub mod connection;
pub mod frame;
pub mod lease;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use common::bus::Timestamp;
use common::registry::{ConnectionMode, Integration, IntegrationId, Registry};
use common::shutdown::Shutdown;

use crate::config::StreamConfig;
use crate::publish::Publisher;

/// How often the whole integration list is read even without a change notice (the registry's
/// pub/sub is fire-and-forget).
const FULL_SCAN: Duration = Duration::from_secs(15);

/// What every slot of this replica shares.
pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    pub(crate) api_url: String,
    pub(crate) publisher: Publisher,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_age: Duration,
    pub(crate) open_gate: OpenGate,
}

/// Spaces new-connection opens of this replica (`STREAM_OPEN_RATE` per second), so hundreds of
/// apps reconnecting together do not storm DingTalk.
pub(crate) struct OpenGate {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl OpenGate {
    fn new(per_second: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this open's turn.
    pub(crate) async fn wait(&self) {
        let turn = {
            let mut next = self.next.lock().await;
            let turn = (*next).max(tokio::time::Instant::now());
            *next = turn + self.interval;
            turn
        };
        tokio::time::sleep_until(turn).await;
    }
}

/// What one slot reports about itself, for the admin API.
#[derive(Debug, Default, Clone)]
pub struct SlotStatus {
    connected_at: Option<Timestamp>,
    connected_since: Option<Instant>,
    last_frame_at: Option<Timestamp>,
    last_error: Option<(String, Timestamp)>,
    /// Sockets the slot holds: the serving one, and one closing or one opening during a
    /// switch.
    pub(crate) sockets: usize,
}

impl SlotStatus {
    /// A socket of the slot is up (its first, or the replacement of a serving one: the slot
    /// counts once in the connections gauge either way).
    pub(crate) fn connected(&mut self) {
        if self.connected_at.is_none() {
            crate::metrics::stream_connected(1.0);
        }
        self.connected_at = Some(Timestamp::now());
        self.connected_since = Some(Instant::now());
    }

    pub(crate) fn disconnected(&mut self, why: &str) {
        if self.connected_at.take().is_some() {
            crate::metrics::stream_connected(-1.0);
        }
        self.connected_since = None;
        if why != "released" {
            self.last_error = Some((why.to_owned(), Timestamp::now()));
        }
    }

    fn is_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    pub(crate) fn frame(&mut self) {
        self.last_frame_at = Some(Timestamp::now());
    }

    pub(crate) fn failed(&mut self, why: String) {
        self.last_error = Some((why, Timestamp::now()));
    }

    fn to_json(&self, replica: &str, slot: usize) -> Value {
        json!({
            "slot": slot,
            "replica": replica,
            "state": if self.connected_at.is_some() { "connected" } else { "connecting" },
            "connected_at": self.connected_at.map(|t| t.to_string()),
            "age_s": self.connected_since.map(|s| s.elapsed().as_secs()),
            "last_frame_at": self.last_frame_at.map(|t| t.to_string()),
            "last_error": self.last_error.as_ref().map(|(e, _)| e.clone()),
            "last_error_at": self.last_error.as_ref().map(|(_, t)| t.to_string()),
            "sockets": self.sockets,
        })
    }
}

/// Whether a connection opened for `held` serves `current` as well: only the credentials go
/// into a connection, so other changes to the integration (its name, expert, language) leave
/// its sockets alone.
fn same_credentials(current: &Integration, held: &Integration) -> bool {
    current.client_id() == held.client_id()
        && current.client_secret().expose() == held.client_secret().expose()
}

/// Something per connection slot: (integration, slot number).
type Slots<T> = HashMap<(IntegrationId, usize), T>;

struct Held {
    /// The integration as the connection was opened for it.
    integration: Integration,
    stop: Shutdown,
    task: JoinHandle<()>,
    status: Arc<Mutex<SlotStatus>>,
}

impl Drop for Held {
    /// A supervisor that ends abruptly (its task aborted) takes its connections with it, like
    /// a killed process; the orderly path stops and awaits each slot first.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A slot being given up: its sockets finish their frames and close while its lease is kept,
/// then the lease is released. Runs beside the supervisor, whose passes must stay short: a
/// pass that waited for each closing socket (up to a DingTalk round trip each, or the drain
/// limit) could outlast the lease TTL, and the other replicas would count this one out and
/// take its slots while its sockets still serve.
struct Releasing(JoinHandle<()>);

impl Releasing {
    fn start(mut gone: Held, mut leases: lease::Leases, id: IntegrationId, slot: usize) -> Self {
        let renew_every = leases.ttl() / 3;
        Self(tokio::spawn(async move {
            gone.stop.trigger();
            let mut renew =
                tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
            loop {
                tokio::select! {
                    _ = &mut gone.task => break,
                    _ = renew.tick() => {
                        if let Err(error) = leases.renew(&id, slot).await {
                            tracing::debug!(integration = %id, slot, %error, "lease of a closing stream slot not renewed");
                        }
                    }
                }
            }
            if let Err(error) = leases.release(&id, slot).await {
                tracing::warn!(integration = %id, slot, %error, "stream lease not released; it expires by itself");
            }
        }))
    }
}

impl Drop for Releasing {
    /// Like [`Held`]: an aborted supervisor takes its closing slots with it.
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who a supervisor pass deals with.
struct Roster<'a> {
    /// The live replicas, sorted.
    replicas: &'a [String],
    /// This replica.
    replica: &'a str,
    /// Whether it may take free slots now.
    take: bool,
}

/// A slot this replica holds and another replica is now preferred for.
struct Handover<'a> {
    id: &'a IntegrationId,
    slot: usize,
    per_app: usize,
    replicas: &'a [String],
    replica: &'a str,
}

/// Everything the connector needs from the ingress.
pub struct Connector {
    /// `STREAM_*` settings.
    pub config: StreamConfig,
    /// Integrations, and the change notices that make a mode switch take effect at once.
    pub registry: Registry,
    /// Leases and status.
    pub redis: ConnectionManager,
    /// Where events go.
    pub publisher: Publisher,
    /// `DINGTALK_API_URL`.
    pub api_url: String,
}

impl Connector {
    /// Runs the supervisor until `shutdown`, then closes every connection (finishing the
    /// frames in hand) and releases the leases.
    pub fn spawn(self, shutdown: Shutdown) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, shutdown: Shutdown) {
        let shared = Arc::new(Shared {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client with default TLS builds"),
            api_url: self.api_url.trim_end_matches('/').to_owned(),
            publisher: self.publisher.clone(),
            idle_timeout: self.config.idle_timeout,
            max_age: self.config.max_age,
            open_gate: OpenGate::new(self.config.open_rate),
        });
        let replica = self.config.replica_id.clone();
        let mut leases =
            lease::Leases::new(self.redis.clone(), replica.clone(), self.config.lease_ttl);
        let mut held: Slots<Held> = HashMap::new();
        let mut releasing: Slots<Releasing> = HashMap::new();
        let mut changes = self.registry.changes();
        let mut tick = tokio::time::interval(self.config.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut integrations: HashMap<IntegrationId, Integration> = HashMap::new();
        let mut last_scan: Option<Instant> = None;
        // Before this, the supervisor renews what it holds and takes nothing new.
        let mut take_after = Instant::now();
        tracing::info!(%replica, per_app = self.config.connections_per_app, "stream connector running");
        loop {
            let mut changed = false;
            tokio::select! {
                () = shutdown.wait() => break,
                _ = tick.tick() => {}
                notice = changes.changed() => {
                    changed = notice.is_ok();
                    // A burst of writes is one rescan.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    changes.borrow_and_update();
                }
            }
            if changed || last_scan.is_none_or(|t| t.elapsed() >= FULL_SCAN) {
                match self.registry.readable_integrations().await {
                    Ok(listing) => {
                        let mut read: HashMap<IntegrationId, Integration> = listing
                            .integrations
                            .into_iter()
                            .filter(|i| i.connection_mode() == ConnectionMode::Stream)
                            .map(|i| (i.id().clone(), i))
                            .collect();
                        // One unreadable record (corrupt, or sealed with a retired key) costs
                        // only its own app: as it was last read, or not at all.
                        for (id, error) in listing.unreadable {
                            tracing::warn!(integration = %id, %error, "stream connector: integration unreadable; keeping it as last read");
                            if let Some(known) = integrations.remove(&id) {
                                read.insert(id, known);
                            }
                        }
                        integrations = read;
                        last_scan = Some(Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "stream connector: listing integrations failed; keeping the current set")
                    }
                }
            }
            let replicas = match leases.heartbeat().await {
                Ok(beat) => {
                    if beat.rejoined {
                        // Taking slots now would take every other replica's too (their leases
                        // may be gone with the set): wait until they have announced themselves.
                        tracing::warn!(
                            "stream connector: this replica was missing from the replica set (Redis lost it, or this replica was cut off); renewing its slots, taking none for {} ms",
                            self.config.lease_ttl.as_millis()
                        );
                        take_after = Instant::now() + self.config.lease_ttl;
                    }
                    beat.replicas
                }
                Err(error) => {
                    // Without Redis nothing can be taken over safely; keep what is held.
                    tracing::warn!(%error, "stream connector: lease heartbeat failed");
                    continue;
                }
            };
            self.pass(
                &shared,
                &mut leases,
                &mut held,
                &mut releasing,
                &integrations,
                Roster {
                    replicas: &replicas,
                    replica: &replica,
                    take: Instant::now() >= take_after,
                },
            )
            .await;
        }
        // Out of the replica set first: the other replicas count this one out at once, and take
        // each slot as soon as its lease is released below.
        let _ = leases.leave().await;
        for held in held.values() {
            held.stop.trigger();
        }
        for ((id, slot), mut held) in held.drain() {
            let _ = (&mut held.task).await;
            let _ = leases.release(&id, slot).await;
        }
        for (_, mut closing) in releasing.drain() {
            let _ = (&mut closing.0).await;
        }
        tracing::info!("stream connector stopped");
    }

    /// Whether this replica may give up slot `slot` of `id`, which another replica is now
    /// preferred for: always when the slot has no connection, otherwise only while every other
    /// slot of the integration is connected and will stay so until the successor connects:
    /// held by its preferred replica, or a higher slot (which itself waits for this one). So a
    /// rebalance that moves several slots of an app (their holders deciding independently)
    /// moves them one after the other, lowest first, each once its successor carries frames,
    /// and never leaves the app without a connection.
    async fn may_hand_over(
        leases: &mut lease::Leases,
        held: &HashMap<(IntegrationId, usize), Held>,
        ask: Handover<'_>,
    ) -> bool {
        let Handover {
            id,
            slot,
            per_app,
            replicas,
            replica,
        } = ask;
        let connected_here = |s: usize| {
            held.get(&(id.clone(), s)).is_some_and(|h| {
                h.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_connected()
            })
        };
        if !connected_here(slot) {
            return true;
        }
        for other in (0..per_app).filter(|&s| s != slot) {
            let holder = if connected_here(other) {
                Some(replica.to_owned())
            } else {
                match leases.connected_elsewhere(id, other).await {
                    Ok(holder) => holder,
                    Err(error) => {
                        tracing::warn!(integration = %id, slot, %error, "stream slot handover deferred: status unreadable");
                        return false;
                    }
                }
            };
            let stays = holder.is_some_and(|holder| {
                other > slot || lease::owner(id, other, replicas).is_some_and(|o| *o == holder)
            });
            if !stays {
                tracing::debug!(integration = %id, slot, waiting_for = other, "stream slot handover deferred");
                return false;
            }
        }
        true
    }

    /// One supervisor pass: stop what should not run here, renew what should, take what is free.
    async fn pass(
        &self,
        shared: &Arc<Shared>,
        leases: &mut lease::Leases,
        held: &mut Slots<Held>,
        releasing: &mut Slots<Releasing>,
        integrations: &HashMap<IntegrationId, Integration>,
        roster: Roster<'_>,
    ) {
        releasing.retain(|_, closing| !closing.0.is_finished());
        let Roster {
            replicas,
            replica,
            take,
        } = roster;
        let per_app = self.config.connections_per_app;
        let wanted = |id: &IntegrationId, slot: usize| {
            slot < per_app && lease::owner(id, slot, replicas).is_some_and(|o| o == replica)
        };
        let keys: Vec<(IntegrationId, usize)> = held.keys().cloned().collect();
        for key in keys {
            let (id, slot) = &key;
            let current = integrations.get(id);
            let healthy = current.is_some_and(|i| same_credentials(i, &held[&key].integration))
                && *slot < per_app
                && !held[&key].task.is_finished();
            let keep = healthy
                && (wanted(id, *slot)
                    || !Self::may_hand_over(
                        leases,
                        held,
                        Handover {
                            id,
                            slot: *slot,
                            per_app,
                            replicas,
                            replica,
                        },
                    )
                    .await);
            let renewed = keep
                && match leases.renew(id, *slot).await {
                    Ok(renewed) => renewed,
                    Err(error) => {
                        // Redis failed, not the lease: the connection serves on, and the next
                        // pass renews again or learns that the slot went elsewhere.
                        tracing::warn!(integration = %id, slot, %error, "stream lease not renewed; keeping the connection");
                        continue;
                    }
                };
            if renewed {
                let status = held[&key]
                    .status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .to_json(replica, *slot);
                if let Err(error) = leases.write_status(id, *slot, &status).await {
                    tracing::debug!(%error, "stream slot status not written");
                }
                continue;
            }
            let Some(gone) = held.remove(&key) else {
                continue;
            };
            tracing::info!(integration = %id, slot, "stream slot released by this replica");
            releasing.insert(
                key.clone(),
                Releasing::start(gone, leases.clone(), id.clone(), *slot),
            );
        }
        if !take {
            return;
        }
        for (id, integration) in integrations {
            for slot in 0..per_app {
                let key = (id.clone(), slot);
                if held.contains_key(&key) || releasing.contains_key(&key) || !wanted(id, slot) {
                    continue;
                }
                match leases.acquire(id, slot).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::warn!(integration = %id, slot, %error, "stream lease not taken");
                        continue;
                    }
                }
                tracing::info!(integration = %id, slot, %replica, "stream slot taken");
                let status = Arc::new(Mutex::new(SlotStatus::default()));
                let stop = Shutdown::new();
                let task = tokio::spawn(connection::hold(
                    Arc::clone(shared),
                    integration.clone(),
                    slot,
                    Arc::clone(&status),
                    stop.clone(),
                ));
                held.insert(
                    key,
                    Held {
                        integration: integration.clone(),
                        stop,
                        task,
                        status,
                    },
                );
            }
        }
    }
}
