//! What the services know about tenants, stored in Redis.
//!
//! * **Integrations** — one DingTalk app each: credentials, callback secrets, defaults
//!   ([`Integration`], built only from a validated [`IntegrationSpec`]).
//! * **Trigger bindings** — which expert answers for an integration.
//! * **Conversation bindings** — which Xpert thread a (conversation, sender) pair talks to,
//!   plus a generation counter so that "start over" yields a new, deterministic thread.
//!
//! # Redis keys
//!
//! Every key starts with `dtg:`.
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `dtg:integration:<id>` | string | JSON record; secrets sealed (see [`SecretsKeys`]) |
//! | `dtg:integrations` | set | every integration id (listing without `SCAN`) |
//! | `dtg:trigger:<id>` | string | expert id for the integration |
//! | `dtg:conv:<conversation key>` | string, TTL | JSON [`ConversationBinding`] |
//! | `dtg:conv-gen:<conversation key>` | string | generation counter (`INCR`), no TTL |
//! | `dtg:conv-wait:<conversation key>` | string, TTL | JSON [`WaitingQuestion`]: what the conversation's expert asked and waits on (human in the loop) |
//! | `dtg:registry:invalidate` | pub/sub channel | id of an integration whose data changed |
//!
//! `<conversation key>` is [`ConversationKey::encoded`]:
//! `<integration>:<byte length of conversation id>:<conversation id>:<sender id>`. DingTalk ids
//! may contain `$`, `:`, `=` or `+`; the integration id cannot contain `:` and the length
//! prefix marks where the conversation id ends, so no two keys can collide and the name stays
//! readable in `redis-cli`.
//!
//! Generation counters carry no TTL on purpose: if one expired and restarted at 0, the next
//! thread id derived from it would be that of a thread the user already asked to leave. They
//! are only created by [`Registry::unbind`] (an explicit reset), so they stay few. Deleting an
//! integration removes its record and trigger; its conversation bindings expire on their own.
//!
//! # Caching and invalidation
//!
//! Ingress looks up an integration on every callback and must answer DingTalk within 1.5 s, so
//! integrations and triggers are served from an in-process cache with a short TTL (default
//! 5 s): the hot path almost never waits on Redis.
//!
//! * Every write publishes the integration id on `dtg:registry:invalidate` in the same atomic
//!   step as the write; each process's background subscriber forgets that id at once, and the
//!   writing process forgets it locally before returning. Changes therefore show up everywhere
//!   within milliseconds.
//! * Pub/sub is fire-and-forget: a message published while a subscriber is disconnected is
//!   lost. The TTL is the safety net (a missed message leaves an entry stale for at most the
//!   TTL), and a subscriber that reconnects clears the whole cache.
//! * "Unknown integration" is cached too, for a shorter time (default 1 s), so a flood of
//!   callbacks for an id that does not exist costs one Redis read per second, not one each.
//!   The cache is bounded; when full of live entries, a found integration takes the place of a
//!   cached "unknown" (a flood of unknown ids cannot push real ones out), and nothing else is
//!   cached.
//! * When Redis is down, entries cached before the outage keep being served until their TTL
//!   runs out; after that, reads fail with [`RegistryError::Redis`] or
//!   [`RegistryError::Timeout`] (no stale-on-error: serving data of unknown age for an
//!   unbounded time would silently defeat deletes and secret rotations). Every Redis call is
//!   bounded by [`RegistryOptions::timeout`].
//! * Conversation bindings are **not** cached: they change with every conversation reset, only
//!   the dispatcher reads them, and a stale one would send a message to the wrong thread.

mod cache;
mod invalidation;
mod model;
mod secrets;
mod store;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use model::{
    mask, ConnectionMode, ConversationBinding, ConversationKey, CustomRobotSpec, FieldError,
    IdError, Integration, IntegrationId, IntegrationSpec, Language, MaskedCustomRobot,
    MaskedIntegration, QpsLimit, ThreadId, WaitingQuestion, XpertId, CALLBACK_AES_KEY_LEN,
    CUSTOM_ROBOTS_MAX,
};
pub use secrets::{KeyId, SecretsError, SecretsKeys, SECRETS_KEY_PREVIOUS_VAR, SECRETS_KEY_VAR};

use cache::{Cached, TtlCache};
use invalidation::Subscriber;
use store::Store;

/// What [`Registry::readable_integrations`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The integrations read, sorted by id.
    pub integrations: Vec<Integration>,
    /// The ids whose record could not be read, with why.
    pub unreadable: Vec<(IntegrationId, RegistryError)>,
}

/// Everything that can go wrong in the registry. Messages name keys, fields and key ids but
/// never secret values.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The spec broke one or more rules; the admin API answers 422 with this list.
    #[error("invalid integration: {}", join(.0))]
    Validation(Vec<FieldError>),
    /// Redis answered with an error or the connection failed.
    #[error("redis {op} failed: {source}")]
    Redis {
        /// The Redis operation that failed.
        op: &'static str,
        /// The client's error (commands' arguments are not part of it).
        source: redis::RedisError,
    },
    /// Redis did not answer within [`RegistryOptions::timeout`].
    #[error("redis {op} timed out after {} ms; is Redis reachable?", .timeout.as_millis())]
    Timeout {
        /// The Redis operation that timed out.
        op: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// A stored value could not be read back.
    #[error("stored value at {key} is corrupt: {reason}")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret could not be sealed or opened.
    #[error("secret {field} of integration {id}: {source}")]
    Secrets {
        /// The integration.
        id: String,
        /// Which secret field.
        field: &'static str,
        /// What went wrong (names key ids, never keys).
        source: SecretsError,
    },
    /// The operation needs an integration that does not exist.
    #[error("integration {0} does not exist")]
    UnknownIntegration(IntegrationId),
    /// The conversation was reset between reading its generation and binding it.
    #[error("conversation {key} was reset (now generation {current}) while binding generation {expected}; derive the thread id from the current generation and bind again")]
    StaleGeneration {
        /// The conversation.
        key: String,
        /// The generation the caller derived its thread from.
        expected: u64,
        /// The generation in Redis.
        current: u64,
    },
}

fn join(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// How the registry behaves; one per service, built from its configuration.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// How long a found integration or trigger is served from memory without asking Redis.
    /// Bounds staleness when an invalidation message is lost. Zero disables the cache.
    pub cache_ttl: Duration,
    /// How long "no such integration/trigger" is remembered (capped at `cache_ttl`).
    pub negative_cache_ttl: Duration,
    /// How long an unused conversation binding lives; every read extends it.
    pub binding_ttl: Duration,
    /// Deadline for every Redis call (and for connecting).
    pub timeout: Duration,
    /// Keys for secrets at rest.
    pub secrets: SecretsKeys,
}

impl RegistryOptions {
    /// Default cache TTL.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);
    /// Default negative cache TTL.
    pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(1);
    /// Default conversation binding TTL: a week of silence starts a fresh thread.
    pub const DEFAULT_BINDING_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
    /// Default Redis deadline: well inside DingTalk's 1.5 s callback budget.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// The defaults above, with the given keys.
    pub fn new(secrets: SecretsKeys) -> Self {
        Self {
            cache_ttl: Self::DEFAULT_CACHE_TTL,
            negative_cache_ttl: Self::DEFAULT_NEGATIVE_CACHE_TTL,
            binding_ttl: Self::DEFAULT_BINDING_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
            secrets,
        }
    }
}

/// Result of [`Registry::reencrypt_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReencryptReport {
    /// Integrations whose secrets were re-sealed with the current key.
    pub rewritten: usize,
    /// Integrations already sealed with the current key (or plain with no key configured).
    pub already_current: usize,
}

/// Most entries each cache holds; far above any real number of tenants, it only stops a
/// flood of unknown ids from growing memory.
const CACHE_CAPACITY: usize = 10_000;

/// The in-process caches, shared with the invalidation task.
pub(crate) struct Caches {
    integrations: TtlCache<IntegrationId, Arc<Integration>>,
    triggers: TtlCache<IntegrationId, XpertId>,
    /// Bumped on every invalidation, local or from another process ([`Registry::changes`]).
    changes: watch::Sender<u64>,
}

impl Caches {
    fn new(options: &RegistryOptions) -> Self {
        let (ttl, negative_ttl) = (options.cache_ttl, options.negative_cache_ttl);
        Self {
            integrations: TtlCache::new(ttl, negative_ttl, CACHE_CAPACITY),
            triggers: TtlCache::new(ttl, negative_ttl, CACHE_CAPACITY),
            changes: watch::channel(0).0,
        }
    }

    pub(crate) fn invalidate(&self, id: &IntegrationId) {
        self.integrations.invalidate(id);
        self.triggers.invalidate(id);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn clear(&self) {
        self.integrations.clear();
        self.triggers.clear();
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What a cache lookup was for.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Integration,
    Trigger,
}

/// Counts cache lookups so the hit rate is visible; every callback makes one, so the handles are
/// kept.
fn record_lookup(kind: Lookup, hit: bool) {
    static INTEGRATION_HIT: OnceLock<metrics::Counter> = OnceLock::new();
    static INTEGRATION_MISS: OnceLock<metrics::Counter> = OnceLock::new();
    static TRIGGER_HIT: OnceLock<metrics::Counter> = OnceLock::new();
    static TRIGGER_MISS: OnceLock<metrics::Counter> = OnceLock::new();
    let (cell, kind, result) = match (kind, hit) {
        (Lookup::Integration, true) => (&INTEGRATION_HIT, "integration", "hit"),
        (Lookup::Integration, false) => (&INTEGRATION_MISS, "integration", "miss"),
        (Lookup::Trigger, true) => (&TRIGGER_HIT, "trigger", "hit"),
        (Lookup::Trigger, false) => (&TRIGGER_MISS, "trigger", "miss"),
    };
    crate::telemetry::kept(cell, || {
        metrics::counter!(
            "dingtalk_gateway_registry_cache_lookups_total",
            "kind" => kind,
            "result" => result
        )
    })
    .increment(1);
}

struct Inner {
    store: Store,
    caches: Arc<Caches>,
    secrets: SecretsKeys,
    binding_ttl_secs: u64,
    /// Dropping it (with the last handle) also stops the invalidation task.
    shutdown: watch::Sender<bool>,
    subscriber: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the registry: cheap to clone, share one per process.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("secrets", &self.inner.secrets)
            .field("binding_ttl_secs", &self.inner.binding_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Connects to Redis and starts the invalidation subscriber; returns once both work, so a
    /// service fails fast at start-up when Redis is unreachable.
    pub async fn connect(redis_url: &str, options: RegistryOptions) -> Result<Self, RegistryError> {
        let client = redis::Client::open(redis_url).map_err(|source| RegistryError::Redis {
            op: "connect",
            source,
        })?;
        let conn = tokio::time::timeout(options.timeout, crate::redis::connect(redis_url))
            .await
            .map_err(|_| RegistryError::Timeout {
                op: "connect",
                timeout: options.timeout,
            })?
            .map_err(|source| RegistryError::Redis {
                op: "connect",
                source,
            })?;

        let caches = Arc::new(Caches::new(&options));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = Subscriber {
            client,
            caches: Arc::clone(&caches),
            timeout: options.timeout,
            shutdown: shutdown_rx,
        };
        let task = tokio::spawn(subscriber.run(ready_tx));
        ready_rx
            .await
            .expect("the invalidation subscriber reports its first attempt before it can end")?;

        Ok(Self {
            inner: Arc::new(Inner {
                store: Store::new(conn, options.timeout),
                caches,
                secrets: options.secrets,
                binding_ttl_secs: options.binding_ttl.as_secs().max(1),
                shutdown,
                subscriber: Mutex::new(Some(task)),
            }),
        })
    }

    /// Stops the invalidation subscriber and waits for it; later reads still work but rely on
    /// the TTL alone. Services call it once their [`crate::shutdown::Shutdown`] fires.
    /// Dropping every handle has the same effect without the wait.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::warn!(%error, "registry invalidation task ended abnormally");
            }
        }
    }

    /// Changes whenever an integration was written (here or in another process, through the
    /// invalidation channel) or the cache was cleared after a lost subscription: a cue for
    /// whoever acts on the set of integrations (the Stream connector) to look again at once
    /// instead of waiting for its next periodic pass.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.caches.changes.subscribe()
    }

    /// Readiness check: Redis answers `PING`.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        self.inner
            .store
            .query::<String>("PING", redis::cmd("PING"))
            .await
            .map(drop)
    }

    /// Validates `spec` and stores it, creating or replacing the integration. `created_at`
    /// survives replacement; `updated_at` is now. Every process sees the change at once.
    pub async fn put_integration(
        &self,
        spec: IntegrationSpec,
    ) -> Result<Integration, RegistryError> {
        let now = OffsetDateTime::now_utc();
        let integration = spec
            .into_integration(now)
            .map_err(RegistryError::Validation)?;
        let id = integration.id().clone();
        let key = store::integration_key(&id);

        let existing: Option<String> = self
            .inner
            .store
            .query("GET", redis::cmd("GET").arg(&key).clone())
            .await?;
        let integration = match existing.as_deref().and_then(store::stored_created_at) {
            Some(created_at) => integration.with_created_at(created_at),
            None => integration,
        };
        let json = store::encode_integration(&integration, &self.inner.secrets)?;

        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("SADD")
            .arg(store::INTEGRATIONS_SET)
            .arg(id.as_str())
            .ignore()
            .cmd("PUBLISH")
            .arg(store::INVALIDATE_CHANNEL)
            .arg(id.as_str())
            .ignore();
        self.inner
            .store
            .pipeline::<()>("SET integration", pipe)
            .await?;
        self.inner.caches.invalidate(&id);
        tracing::info!(integration = %id, "integration stored");
        Ok(integration)
    }

    /// The integration, or `None` if it does not exist. Served from the cache when fresh.
    pub async fn get_integration(
        &self,
        id: &IntegrationId,
    ) -> Result<Option<Integration>, RegistryError> {
        let cache = &self.inner.caches.integrations;
        if let Cached::Hit(value) = cache.get(id, Instant::now()) {
            record_lookup(Lookup::Integration, true);
            return Ok(value.map(|i| Integration::clone(&i)));
        }
        record_lookup(Lookup::Integration, false);
        let epoch = cache.epoch();
        let value = self.load_integration(id).await?.map(Arc::new);
        cache.insert(id.clone(), value.clone(), epoch, Instant::now());
        Ok(value.map(|i| Integration::clone(&i)))
    }

    /// Reads and decodes one integration from Redis, bypassing the cache.
    async fn load_integration(
        &self,
        id: &IntegrationId,
    ) -> Result<Option<Integration>, RegistryError> {
        let json: Option<String> = self
            .inner
            .store
            .query(
                "GET",
                redis::cmd("GET").arg(store::integration_key(id)).clone(),
            )
            .await?;
        json.map(|json| {
            store::decode_integration(id, &json, &self.inner.secrets).map(|d| d.integration)
        })
        .transpose()
    }

    /// Every integration, sorted by id, straight from Redis (an admin operation, not cached).
    pub async fn list_integrations(&self) -> Result<Vec<Integration>, RegistryError> {
        let listing = self.readable_integrations().await?;
        match listing.unreadable.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(listing.integrations),
        }
    }

    /// Every integration whose record can be read, and why each other one cannot (a corrupt
    /// record, a secret sealed with a key no longer configured): for readers that must serve
    /// the good ones whatever happened to one of them.
    pub async fn readable_integrations(&self) -> Result<Listing, RegistryError> {
        let ids = self.integration_ids().await?;
        let mut listing = Listing::default();
        if ids.is_empty() {
            return Ok(listing);
        }
        let keys: Vec<String> = ids.iter().map(store::integration_key).collect();
        let values: Vec<Option<String>> = self
            .inner
            .store
            .query("MGET", redis::cmd("MGET").arg(&keys).clone())
            .await?;
        for (id, json) in ids.into_iter().zip(values) {
            // An id whose record is gone was deleted between the two reads.
            let Some(json) = json else { continue };
            match store::decode_integration(&id, &json, &self.inner.secrets) {
                Ok(decoded) => listing.integrations.push(decoded.integration),
                Err(error) => listing.unreadable.push((id, error)),
            }
        }
        Ok(listing)
    }

    /// Ids in the `dtg:integrations` set, parsed and sorted.
    async fn integration_ids(&self) -> Result<Vec<IntegrationId>, RegistryError> {
        let raw: Vec<String> = self
            .inner
            .store
            .query(
                "SMEMBERS",
                redis::cmd("SMEMBERS").arg(store::INTEGRATIONS_SET).clone(),
            )
            .await?;
        let mut ids = raw
            .into_iter()
            .map(|s| {
                s.parse::<IntegrationId>()
                    .map_err(|e| RegistryError::Corrupt {
                        key: store::INTEGRATIONS_SET.to_owned(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Deletes an integration and its trigger binding; `false` if it did not exist.
    pub async fn delete_integration(&self, id: &IntegrationId) -> Result<bool, RegistryError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(store::integration_key(id))
            .cmd("DEL")
            .arg(store::trigger_key(id))
            .ignore()
            .cmd("SREM")
            .arg(store::INTEGRATIONS_SET)
            .arg(id.as_str())
            .ignore()
            .cmd("PUBLISH")
            .arg(store::INVALIDATE_CHANNEL)
            .arg(id.as_str())
            .ignore();
        let (deleted,): (u64,) = self.inner.store.pipeline("DEL integration", pipe).await?;
        self.inner.caches.invalidate(id);
        if deleted > 0 {
            tracing::info!(integration = %id, "integration deleted");
        }
        Ok(deleted > 0)
    }

    /// Binds `xpert_id` as the expert answering for integration `id`.
    pub async fn set_trigger(
        &self,
        id: &IntegrationId,
        xpert_id: XpertId,
    ) -> Result<(), RegistryError> {
        let script = redis::Script::new(store::SET_TRIGGER_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(store::integration_key(id))
            .key(store::trigger_key(id))
            .arg(xpert_id.as_str())
            .arg(store::INVALIDATE_CHANNEL)
            .arg(id.as_str());
        let set: u8 = self
            .inner
            .store
            .run("SET trigger", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        self.inner.caches.invalidate(id);
        match set {
            1 => Ok(()),
            _ => Err(RegistryError::UnknownIntegration(id.clone())),
        }
    }

    /// The expert bound to integration `id`, if any. Served from the cache when fresh.
    pub async fn get_trigger(&self, id: &IntegrationId) -> Result<Option<XpertId>, RegistryError> {
        let cache = &self.inner.caches.triggers;
        if let Cached::Hit(value) = cache.get(id, Instant::now()) {
            record_lookup(Lookup::Trigger, true);
            return Ok(value);
        }
        record_lookup(Lookup::Trigger, false);
        let epoch = cache.epoch();
        let key = store::trigger_key(id);
        let raw: Option<String> = self
            .inner
            .store
            .query("GET", redis::cmd("GET").arg(&key).clone())
            .await?;
        let value = raw
            .map(|s| {
                s.parse::<XpertId>().map_err(|e| RegistryError::Corrupt {
                    key,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        cache.insert(id.clone(), value.clone(), epoch, Instant::now());
        Ok(value)
    }

    /// Removes the trigger binding of `id`; `false` if there was none.
    pub async fn delete_trigger(&self, id: &IntegrationId) -> Result<bool, RegistryError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(store::trigger_key(id))
            .cmd("PUBLISH")
            .arg(store::INVALIDATE_CHANNEL)
            .arg(id.as_str())
            .ignore();
        let (deleted,): (u64,) = self.inner.store.pipeline("DEL trigger", pipe).await?;
        self.inner.caches.invalidate(id);
        Ok(deleted > 0)
    }

    /// Binds a conversation to a thread, for [`RegistryOptions::binding_ttl`].
    ///
    /// `generation` is the value of [`Registry::generation`] the thread id was derived from;
    /// if the conversation was reset since, nothing is written and
    /// [`RegistryError::StaleGeneration`] says so (derive again from the new generation).
    pub async fn bind(
        &self,
        key: &ConversationKey,
        xpert_id: XpertId,
        thread_id: ThreadId,
        generation: u64,
    ) -> Result<ConversationBinding, RegistryError> {
        let binding = ConversationBinding {
            xpert_id,
            thread_id,
            generation,
            updated_at: OffsetDateTime::now_utc(),
        };
        let binding_key = store::binding_key(key);
        let json = serde_json::to_string(&binding).map_err(|e| RegistryError::Corrupt {
            key: binding_key.clone(),
            reason: format!("could not serialize: {e}"),
        })?;
        let script = redis::Script::new(store::BIND_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&binding_key)
            .key(store::generation_key(key))
            .arg(generation)
            .arg(json)
            .arg(self.inner.binding_ttl_secs);
        let (bound, current): (u8, String) = self
            .inner
            .store
            .run("SET binding", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if bound == 1 {
            return Ok(binding);
        }
        let current = current.parse().map_err(|_| RegistryError::Corrupt {
            key: store::generation_key(key),
            reason: format!("generation {current:?} is not a non-negative integer"),
        })?;
        Err(RegistryError::StaleGeneration {
            key: key.to_string(),
            expected: generation,
            current,
        })
    }

    /// A key of a conversation, read: its TTL starts again (`GETEX`), so what an active
    /// conversation keeps lives on.
    async fn read_conversation_key(&self, key: &str) -> Result<Option<String>, RegistryError> {
        let getex = redis::cmd("GETEX")
            .arg(key)
            .arg("EX")
            .arg(self.inner.binding_ttl_secs)
            .clone();
        self.inner.store.query("GETEX", getex).await
    }

    /// The conversation's binding, if any; reading it extends its TTL (`GETEX`), so active
    /// conversations keep their thread.
    pub async fn get_binding(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<ConversationBinding>, RegistryError> {
        let binding_key = store::binding_key(key);
        let raw = self.read_conversation_key(&binding_key).await?;
        raw.map(|json| {
            serde_json::from_str(&json).map_err(|e| RegistryError::Corrupt {
                key: binding_key,
                reason: format!("not a conversation binding: {e}"),
            })
        })
        .transpose()
    }

    /// The question the conversation's expert asked and waits on, if any; read like a binding
    /// (its TTL starts again), so the two expire together. A record that does not read is
    /// ignored with a warning: the expert's thread, asked before any resume, is the authority.
    pub async fn waiting_question(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<WaitingQuestion>, RegistryError> {
        let waiting_key = store::waiting_key(key);
        let raw = self.read_conversation_key(&waiting_key).await?;
        Ok(raw.and_then(|json| match serde_json::from_str(&json) {
            Ok(question) => Some(question),
            Err(err) => {
                tracing::warn!(key = %waiting_key, %err, "ignoring an unreadable waiting question");
                None
            }
        }))
    }

    /// Records the question the conversation's expert waits on, or (`None`) that nothing waits.
    pub async fn set_waiting_question(
        &self,
        key: &ConversationKey,
        question: Option<&WaitingQuestion>,
    ) -> Result<(), RegistryError> {
        let waiting_key = store::waiting_key(key);
        let cmd = match question {
            Some(question) => {
                let json = serde_json::to_string(question).map_err(|e| RegistryError::Corrupt {
                    key: waiting_key.clone(),
                    reason: format!("could not serialize: {e}"),
                })?;
                redis::cmd("SET")
                    .arg(&waiting_key)
                    .arg(json)
                    .arg("EX")
                    .arg(self.inner.binding_ttl_secs)
                    .clone()
            }
            None => redis::cmd("DEL").arg(&waiting_key).clone(),
        };
        self.inner.store.query::<()>("SET waiting", cmd).await
    }

    /// Forgets the conversation's binding (and any question its expert waits on) and moves it
    /// to the next generation, so the next message derives a new thread id. Returns the new
    /// generation.
    pub async fn unbind(&self, key: &ConversationKey) -> Result<u64, RegistryError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(store::binding_key(key))
            .arg(store::waiting_key(key))
            .ignore()
            .cmd("INCR")
            .arg(store::generation_key(key));
        let (generation,): (u64,) = self.inner.store.pipeline("unbind", pipe).await?;
        Ok(generation)
    }

    /// The conversation's current generation (0 until the first [`Registry::unbind`]). A
    /// thread id derived from the key and this number is stable across redeliveries of the
    /// same message and changes after every reset.
    pub async fn generation(&self, key: &ConversationKey) -> Result<u64, RegistryError> {
        let generation: Option<u64> = self
            .inner
            .store
            .query(
                "GET",
                redis::cmd("GET").arg(store::generation_key(key)).clone(),
            )
            .await?;
        Ok(generation.unwrap_or(0))
    }

    /// Re-seals every stored integration whose secrets are not under the current key (after a
    /// key rotation, or after turning encryption on). Records changed concurrently are read
    /// again, so a concurrent write is never overwritten with older data.
    pub async fn reencrypt_all(&self) -> Result<ReencryptReport, RegistryError> {
        const MAX_ATTEMPTS: usize = 5;
        let mut report = ReencryptReport::default();
        let script = redis::Script::new(store::REPLACE_IF_UNCHANGED_SCRIPT);
        for id in self.integration_ids().await? {
            let key = store::integration_key(&id);
            for attempt in 1..=MAX_ATTEMPTS {
                let json: Option<String> = self
                    .inner
                    .store
                    .query("GET", redis::cmd("GET").arg(&key).clone())
                    .await?;
                let Some(json) = json else { break };
                let decoded = store::decode_integration(&id, &json, &self.inner.secrets)?;
                if decoded.sealed_with_current_key {
                    report.already_current += 1;
                    break;
                }
                let resealed =
                    store::encode_integration(&decoded.integration, &self.inner.secrets)?;
                let mut invocation = script.prepare_invoke();
                invocation.key(&key).arg(&json).arg(resealed);
                let replaced: u8 = self
                    .inner
                    .store
                    .run("SET integration", |mut conn| async move {
                        invocation.invoke_async(&mut conn).await
                    })
                    .await?;
                if replaced == 1 {
                    report.rewritten += 1;
                    break;
                }
                if attempt == MAX_ATTEMPTS {
                    return Err(RegistryError::Corrupt {
                        key,
                        reason: format!(
                            "changed during each of {MAX_ATTEMPTS} re-encryption attempts"
                        ),
                    });
                }
            }
        }
        tracing::info!(
            rewritten = report.rewritten,
            already_current = report.already_current,
            key_id = self.inner.secrets.current_key_id().map(KeyId::as_str),
            "re-encryption finished"
        );
        Ok(report)
    }
}
