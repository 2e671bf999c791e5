//! Exactly one expert run per event: a claim per event id in Redis.
//!
//! `dtg:dispatch:claim:{event_id}` holds `run:{replica}` while a replica works on the event (from
//! its turn in the conversation on, the wait for an expert slot included) — a lease of
//! `DISPATCHER_CLAIM_LEASE`, renewed (with JetStream's `AckProgress`) as long as the run lives —
//! and `done` for `DISPATCHER_DONE_RETENTION` (24 h) once the event is answered, so a callback
//! replayed after JetStream's duplicate window gets no second answer. An event whose expert
//! failed for good holds `failed:{reason}` from the apology on until its dead letter is stored,
//! then `done`: a redelivery in between only parks it in the DLQ, never runs it again. A replica
//! that dies stops renewing; after the lease the redelivered event can be claimed by another
//! replica, which first looks for the dead replica's run on the expert (see `dispatch`), so the
//! expert never sees the message twice.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// What claiming an event found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the lease now.
    Acquired,
    /// The event was answered already.
    Done,
    /// Another live replica holds the lease.
    Held,
    /// The expert failed for good and the user was told; the event still has to be parked in
    /// the DLQ, for this reason.
    Failed(String),
}

/// Where an event stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// Nobody works on it (not yet, or a lease ran out).
    Free,
    /// A replica holds its lease.
    Running,
    /// Answered.
    Done,
    /// Apologized for; its dead letter, for this reason, is not stored yet.
    Failed(String),
}

/// The value of a failed event's claim: this prefix, then the dead letter's reason.
const FAILED: &str = "failed:";

/// Claims in Redis (cheap to clone).
#[derive(Clone)]
pub struct Claims {
    redis: ConnectionManager,
    owner: String,
    lease: Duration,
    retention: Duration,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("owner", &self.owner)
            .finish()
    }
}

/// Take the lease unless the event is done, failed or held, even by this replica: a second
/// delivery to the replica still working on the event waits for the first instead of joining
/// it. Answers 'acquired', 'held', or the claim's value when done or failed.
const ACQUIRE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'acquired'
end
if v == 'done' or string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then return v end
return 'held'
"#;

/// Extend the lease, only if the caller still holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Drop the lease, only if the caller holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn key(event_id: &str) -> String {
    format!("dtg:dispatch:claim:{event_id}")
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

impl Claims {
    /// Claims held by replica `replica`.
    pub fn new(
        redis: ConnectionManager,
        replica: &str,
        lease: Duration,
        retention: Duration,
    ) -> Self {
        Self {
            redis,
            owner: format!("run:{replica}"),
            lease,
            retention,
        }
    }

    /// Claims `event_id` for this replica.
    pub async fn acquire(&self, event_id: &str) -> Result<Claim, redis::RedisError> {
        let found: String = redis::Script::new(ACQUIRE)
            .key(key(event_id))
            .arg(&self.owner)
            .arg(millis(self.lease))
            .arg(FAILED)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match found.as_str() {
            "done" => Claim::Done,
            "acquired" => Claim::Acquired,
            other => match other.strip_prefix(FAILED) {
                Some(reason) => Claim::Failed(reason.to_owned()),
                None => Claim::Held,
            },
        })
    }

    /// Where `event_id` stands (read-only).
    pub async fn state(&self, event_id: &str) -> Result<ClaimState, redis::RedisError> {
        let value: Option<String> = redis::cmd("GET")
            .arg(key(event_id))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(match value.as_deref() {
            None => ClaimState::Free,
            Some("done") => ClaimState::Done,
            Some(other) => match other.strip_prefix(FAILED) {
                Some(reason) => ClaimState::Failed(reason.to_owned()),
                None => ClaimState::Running,
            },
        })
    }

    /// Extends the lease; `false` when this replica lost it.
    pub async fn renew(&self, event_id: &str) -> Result<bool, redis::RedisError> {
        let renewed: u8 = redis::Script::new(RENEW)
            .key(key(event_id))
            .arg(&self.owner)
            .arg(millis(self.lease))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(renewed == 1)
    }

    /// Marks `event_id` answered for the retention period.
    pub async fn finish(&self, event_id: &str) -> Result<(), redis::RedisError> {
        self.settle(event_id, "done").await
    }

    /// Marks `event_id` apologized for, its dead letter (for `reason`) still to be stored; no
    /// delivery of it runs the expert again.
    pub async fn fail(&self, event_id: &str, reason: &str) -> Result<(), redis::RedisError> {
        self.settle(event_id, &format!("{FAILED}{reason}")).await
    }

    async fn settle(&self, event_id: &str, value: &str) -> Result<(), redis::RedisError> {
        redis::cmd("SET")
            .arg(key(event_id))
            .arg(value)
            .arg("PX")
            .arg(millis(self.retention))
            .query_async::<()>(&mut self.redis.clone())
            .await
    }

    /// Gives the lease up so a redelivery can claim the event at once.
    pub async fn release(&self, event_id: &str) -> Result<(), redis::RedisError> {
        redis::Script::new(RELEASE)
            .key(key(event_id))
            .arg(&self.owner)
            .invoke_async::<u8>(&mut self.redis.clone())
            .await
            .map(drop)
    }
}
