//! Publish order within a conversation, across replicas.
//!
//! All replicas share one durable pull consumer, which hands out messages in stream order but
//! lets replicas work on them concurrently. Two Redis structures turn that into per-conversation
//! order without serializing different conversations:
//!
//! * **Fetch lock** (`dtg:dispatch:fetch-lock`, a lease): one replica at a time pulls a batch
//!   and *registers* every message of it before releasing the lock. Since JetStream delivers
//!   first deliveries in stream order, messages are registered in stream order across replicas.
//! * **Turn queue** (`dtg:dispatch:queue:{conversation key}`, a sorted set of event ids scored by
//!   stream sequence): a message runs only when it is the head of its conversation's queue, and
//!   leaves the queue when it is answered (or dead-lettered). A message out of turn waits in the
//!   replica that holds it, signalling `AckProgress`, without taking an expert slot; a redelivered
//!   message is already in the queue (`ZADD NX`), so it keeps its place.
//!
//! The cost is two Redis round trips per fetched batch plus one per message, measured in
//! `BENCHMARKS-dispatcher.md`. The one gap: a replica that dies between receiving a batch and
//! registering it (milliseconds) leaves those messages to be redelivered after
//! `DISPATCHER_ACK_WAIT`, possibly behind later messages of their conversation.

use std::sync::Arc;
use std::time::Duration;

use common::bus::Timestamp;
use common::registry::ConversationKey;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

/// The fetch lock's key.
pub const FETCH_LOCK_KEY: &str = "dtg:dispatch:fetch-lock";

/// How long a conversation's queue outlives its last registration (a safety net for entries a
/// crash left behind; normal operation removes every entry).
const QUEUE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Release the lock only if we hold it.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The turn queue's key of a conversation.
pub fn queue_key(key: &ConversationKey) -> String {
    format!("dtg:dispatch:queue:{}", key.encoded())
}

/// The group record the notifier's `list_chats` reads: hash `dtg:chats:{integration_id}`,
/// field = chat id, value = `{"title": …, "last_seen": RFC 3339}`.
pub fn chats_key(integration: &str) -> String {
    format!("dtg:chats:{integration}")
}

/// One message to register in its conversation's queue.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The queue.
    pub queue: String,
    /// The event id.
    pub event_id: String,
    /// The stream sequence.
    pub sequence: u64,
}

/// A group a message arrived from.
#[derive(Debug, Clone)]
pub struct ChatSeen {
    /// The integration.
    pub integration: String,
    /// The group's conversation id.
    pub chat_id: String,
    /// Its title.
    pub title: String,
    /// When.
    pub at: Timestamp,
}

/// The turn queues (cheap to clone).
#[derive(Clone)]
pub struct Ordering {
    redis: ConnectionManager,
    owner: String,
    /// Wakes this replica's waiting messages when one of its messages leaves a queue, so a
    /// conversation handled here moves on at once; other replicas' leaves are seen by polling.
    left: Arc<Notify>,
}

impl std::fmt::Debug for Ordering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordering")
            .field("owner", &self.owner)
            .finish()
    }
}

impl Ordering {
    /// Queues used by replica `replica`.
    pub fn new(redis: ConnectionManager, replica: &str) -> Self {
        Self {
            redis,
            owner: replica.to_owned(),
            left: Arc::new(Notify::new()),
        }
    }

    /// Takes the fetch lock for `ttl`; `false` when another replica holds it.
    pub async fn lock_fetch(&self, ttl: Duration) -> Result<bool, redis::RedisError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(FETCH_LOCK_KEY)
            .arg(&self.owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(set.is_some())
    }

    /// Releases the fetch lock if this replica holds it.
    pub async fn unlock_fetch(&self) -> Result<(), redis::RedisError> {
        redis::Script::new(UNLOCK)
            .key(FETCH_LOCK_KEY)
            .arg(&self.owner)
            .invoke_async::<u8>(&mut self.redis.clone())
            .await
            .map(drop)
    }

    /// Registers one message in its queue and records the group it came from, in one round trip.
    pub async fn register(
        &self,
        registration: Option<&Registration>,
        chat: Option<&ChatSeen>,
    ) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        if let Some(r) = registration {
            pipe.cmd("ZADD")
                .arg(&r.queue)
                .arg("NX")
                .arg(r.sequence)
                .arg(&r.event_id)
                .ignore()
                .cmd("EXPIRE")
                .arg(&r.queue)
                .arg(QUEUE_TTL.as_secs())
                .ignore();
        }
        if let Some(chat) = chat {
            let record = serde_json::json!({"title": chat.title, "last_seen": chat.at});
            pipe.cmd("HSET")
                .arg(chats_key(&chat.integration))
                .arg(&chat.chat_id)
                .arg(record.to_string())
                .ignore();
        }
        if registration.is_none() && chat.is_none() {
            return Ok(());
        }
        pipe.query_async::<()>(&mut self.redis.clone()).await
    }

    /// The event at the head of `queue`, if any.
    pub async fn head(&self, queue: &str) -> Result<Option<String>, redis::RedisError> {
        let head: Vec<String> = redis::cmd("ZRANGE")
            .arg(queue)
            .arg(0)
            .arg(0)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(head.into_iter().next())
    }

    /// Takes `event_id` out of `queue`: the next message of the conversation may run.
    pub async fn leave(&self, queue: &str, event_id: &str) -> Result<(), redis::RedisError> {
        redis::cmd("ZREM")
            .arg(queue)
            .arg(event_id)
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        self.left.notify_waiters();
        Ok(())
    }

    /// Waits until a message of this replica leaves a queue, or `limit` passes.
    pub async fn wait_for_leave(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.left.notified()).await;
    }
}
