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
//! * **Interrupted pulls.** A replica that dies between receiving a batch and registering it
//!   would leave those messages to a redelivery after `DISPATCHER_ACK_WAIT`, behind later
//!   messages of their conversation. So taking the lock also marks a pull as open
//!   (`dtg:dispatch:fetch-open`), and releasing it records the highest stream sequence the pull
//!   handled (`dtg:dispatch:fetch-cursor`) and closes the mark, both atomically; a pull cut
//!   short (shutdown, a broken batch) keeps its mark, as if its replica had died. The next
//!   replica to take the lock and find a pull still open reads the stream from the cursor up to
//!   the consumer's last delivered sequence and registers what it finds ([`Interrupted`]),
//!   before it pulls anything itself. Registration is idempotent (`ZADD NX`), so a recovery
//!   after a holder that was only slow does no harm.
//!
//! The cost is two Redis round trips per fetched batch plus one per message, measured in
//! `BENCHMARKS.md`.

use std::sync::Arc;
use std::time::Duration;

use common::bus::Timestamp;
use common::registry::ConversationKey;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;

/// The fetch lock's key.
pub const FETCH_LOCK_KEY: &str = "dtg:dispatch:fetch-lock";
/// Set while a pull is open (from taking the lock to releasing it): the holder's replica id.
pub const FETCH_OPEN_KEY: &str = "dtg:dispatch:fetch-open";
/// The highest stream sequence a finished pull handled.
pub const FETCH_CURSOR_KEY: &str = "dtg:dispatch:fetch-cursor";

/// How long a conversation's queue outlives its last registration (a safety net for entries a
/// crash left behind; normal operation removes every entry).
const QUEUE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Take the lock (KEYS[1]) for ARGV[2] ms and open a pull (KEYS[2]); answers whether we got it,
/// the previous pull's holder if it never closed (else ''), and the cursor (KEYS[3]).
const LOCK: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, '', '0'}
end
local open = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[1])
return {1, open, redis.call('GET', KEYS[3]) or '0'}
"#;

/// End our pull: move the cursor (KEYS[3]) up to ARGV[2], clear the open mark (KEYS[2]) if it
/// is ours and the pull was complete (ARGV[3] = '1'), and release the lock (KEYS[1]) if ours.
const UNLOCK: &str = r#"
local handled = tonumber(ARGV[2])
if handled > tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], ARGV[2])
end
if ARGV[3] == '1' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// What trying to take the fetch lock gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchLock {
    /// Another replica holds it.
    Busy,
    /// Ours; the previous pull closed normally.
    Taken,
    /// Ours, but the previous pull never closed: its holder may have received messages it did
    /// not register.
    Interrupted(Interrupted),
}

/// How a pull under the fetch lock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullEnd {
    /// Its batch was read to the end: every message it received was registered.
    Complete,
    /// It stopped early (shutdown, a broken batch): JetStream may have delivered messages it
    /// never read. The pull stays open, so the next holder of the lock registers them
    /// ([`FetchLock::Interrupted`]) before pulling anything itself.
    Cut,
}

/// An open pull found when taking the fetch lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// The replica that opened it.
    pub holder: String,
    /// The highest stream sequence handled by a finished pull: everything the interrupted pull
    /// received lies above it.
    pub cursor: u64,
}

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

    /// Tries to take the fetch lock for `ttl` and open a pull, in one round trip.
    pub async fn lock_fetch(&self, ttl: Duration) -> Result<FetchLock, redis::RedisError> {
        let (taken, open, cursor): (u8, String, String) = redis::Script::new(LOCK)
            .key(FETCH_LOCK_KEY)
            .key(FETCH_OPEN_KEY)
            .key(FETCH_CURSOR_KEY)
            .arg(&self.owner)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match (taken, open.is_empty()) {
            (0, _) => FetchLock::Busy,
            (_, true) => FetchLock::Taken,
            (_, false) => FetchLock::Interrupted(Interrupted {
                holder: open,
                cursor: cursor.parse().unwrap_or(0),
            }),
        })
    }

    /// Ends this replica's pull, which handled stream sequences up to `handled` (0: none):
    /// closes it if it was complete, and releases the fetch lock if this replica still holds
    /// it.
    pub async fn unlock_fetch(&self, handled: u64, end: PullEnd) -> Result<(), redis::RedisError> {
        redis::Script::new(UNLOCK)
            .key(FETCH_LOCK_KEY)
            .key(FETCH_OPEN_KEY)
            .key(FETCH_CURSOR_KEY)
            .arg(&self.owner)
            .arg(handled)
            .arg(u8::from(end == PullEnd::Complete))
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
