//! Who holds which connection slot, in Redis, without static shard numbers.
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `dtg:stream:replicas` | sorted set | live replicas, scored by when their presence expires (ms) |
//! | `dtg:stream:lease:<integration>:<slot>` | string, PX | the replica holding the slot |
//! | `dtg:stream:slot:<integration>:<slot>` | string, PX | JSON status of the slot, for the admin API |
//!
//! Every replica computes the same preferred owner for each slot from the live replicas
//! (rendezvous hashing: the replicas ordered by a hash of (integration, replica), slot `n` goes
//! to the `n`-th modulo their count), so an integration's slots land on different replicas
//! when there are enough, and a joining or leaving replica only moves slots of the
//! integrations whose ranking it changes (it ranks among their first `per_app`): those slots
//! shift by one rank, so a joiner ranked first takes slot 0 and slot 0's holder moves to slot 1. The lease is the lock that makes the handover safe: a slot is taken with `SET NX`,
//! renewed only by its holder, released by a holder that is no longer preferred, and expires
//! by itself when its holder dies. A holder gives up a connected slot only while every other
//! slot of the integration is connected and stays so (its holder is preferred, or it is a
//! higher slot, which waits for this one), so a rebalance that moves all of an app's slots
//! moves them one at a time, lowest first, and the app is never without a connection.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::registry::IntegrationId;

/// The live replicas.
pub const REPLICAS_KEY: &str = "dtg:stream:replicas";

/// The lease of one slot.
pub fn lease_key(id: &IntegrationId, slot: usize) -> String {
    format!("dtg:stream:lease:{id}:{slot}")
}

/// The status of one slot.
pub fn status_key(id: &IntegrationId, slot: usize) -> String {
    format!("dtg:stream:slot:{id}:{slot}")
}

/// Where Redis calls of the connector stop waiting.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Extend the lease if it is ours; take it again if nobody holds it (Redis lost it: restarted
/// without persistence, or flushed), so a serving connection outlives Redis's memory; `0` when
/// another replica holds it.
const RENEW: &str = r"local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0";
/// Drop the lease (KEYS[1]) and the slot's status (KEYS[2]) if the lease is ours: the admin API
/// then shows the slot unassigned until its next holder reports, not connected here.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2]) return redis.call('DEL', KEYS[1]) else return 0 end";

/// The preferred holder of `slot` of `id` among `replicas`.
pub fn owner<'a>(id: &IntegrationId, slot: usize, replicas: &'a [String]) -> Option<&'a String> {
    if replicas.is_empty() {
        return None;
    }
    let mut ranked: Vec<(Vec<u8>, &String)> = replicas
        .iter()
        .map(|replica| {
            let mut hash = Sha256::new();
            hash.update(id.as_str().as_bytes());
            hash.update([0]);
            hash.update(replica.as_bytes());
            (hash.finalize().to_vec(), replica)
        })
        .collect();
    ranked.sort();
    Some(ranked[slot % ranked.len()].1)
}

/// One replica's view of the leases.
#[derive(Clone)]
pub(crate) struct Leases {
    redis: ConnectionManager,
    replica: String,
    ttl: Duration,
    /// Whether a heartbeat of this replica has been stored before.
    announced: bool,
}

/// What a heartbeat found.
pub(crate) struct Heartbeat {
    /// The live replicas, sorted.
    pub(crate) replicas: Vec<String>,
    /// This replica, announced before, was missing from the set: Redis lost the set (restarted
    /// without persistence, or flushed), or this replica could not announce itself for a TTL.
    /// The other live replicas may not have announced themselves again yet.
    pub(crate) rejoined: bool,
}

async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "Redis did not answer within {} ms",
            REDIS_TIMEOUT.as_millis()
        )),
    }
}

impl Leases {
    pub(crate) fn new(redis: ConnectionManager, replica: String, ttl: Duration) -> Self {
        Self {
            redis,
            replica,
            ttl,
            announced: false,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Announces this replica for another TTL and returns the live replicas, sorted.
    pub(crate) async fn heartbeat(&mut self) -> Result<Heartbeat, String> {
        let now = common::bus::Timestamp::now().unix_millis();
        let expires = now + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(REPLICAS_KEY)
            .arg(expires)
            .arg(&self.replica)
            .cmd("ZREMRANGEBYSCORE")
            .arg(REPLICAS_KEY)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(REPLICAS_KEY)
            .arg(0)
            .arg(-1);
        let (added, mut replicas): (u8, Vec<String>) =
            bounded(pipe.query_async(&mut self.redis)).await?;
        replicas.sort();
        let rejoined = added == 1 && self.announced;
        self.announced = true;
        Ok(Heartbeat { replicas, rejoined })
    }

    /// Leaves the replica set (shutdown).
    pub(crate) async fn leave(&mut self) -> Result<(), String> {
        bounded(
            redis::cmd("ZREM")
                .arg(REPLICAS_KEY)
                .arg(&self.replica)
                .query_async::<()>(&mut self.redis),
        )
        .await
    }

    /// Takes the slot if nobody holds it.
    pub(crate) async fn acquire(
        &mut self,
        id: &IntegrationId,
        slot: usize,
    ) -> Result<bool, String> {
        let set: Option<String> = bounded(
            redis::cmd("SET")
                .arg(lease_key(id, slot))
                .arg(&self.replica)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms())
                .query_async(&mut self.redis),
        )
        .await?;
        Ok(set.is_some())
    }

    /// Extends the slot's lease (taking it again if nobody holds it); `false` if another
    /// replica holds it.
    pub(crate) async fn renew(&mut self, id: &IntegrationId, slot: usize) -> Result<bool, String> {
        let renewed: i64 = bounded(
            redis::Script::new(RENEW)
                .key(lease_key(id, slot))
                .arg(&self.replica)
                .arg(self.ttl_ms())
                .invoke_async(&mut self.redis),
        )
        .await?;
        Ok(renewed == 1)
    }

    /// Gives the slot up, and its status with it (only if this replica holds it).
    pub(crate) async fn release(&mut self, id: &IntegrationId, slot: usize) -> Result<(), String> {
        bounded(
            redis::Script::new(RELEASE)
                .key(lease_key(id, slot))
                .key(status_key(id, slot))
                .arg(&self.replica)
                .invoke_async::<i64>(&mut self.redis),
        )
        .await
        .map(drop)
    }

    /// The other replica that holds the slot's lease and reports it connected, if any.
    pub(crate) async fn connected_elsewhere(
        &mut self,
        id: &IntegrationId,
        slot: usize,
    ) -> Result<Option<String>, String> {
        let (holder, status): (Option<String>, Option<String>) = bounded(
            redis::pipe()
                .get(lease_key(id, slot))
                .get(status_key(id, slot))
                .query_async(&mut self.redis),
        )
        .await?;
        let status: Option<Value> = status.and_then(|s| serde_json::from_str(&s).ok());
        Ok(match (holder, status) {
            (Some(holder), Some(status))
                if holder != self.replica
                    && status["replica"] == holder.as_str()
                    && status["state"] == "connected" =>
            {
                Some(holder)
            }
            _ => None,
        })
    }

    /// Publishes the slot's status for the admin API (it expires with the holder).
    pub(crate) async fn write_status(
        &mut self,
        id: &IntegrationId,
        slot: usize,
        status: &Value,
    ) -> Result<(), String> {
        bounded(
            redis::cmd("SET")
                .arg(status_key(id, slot))
                .arg(status.to_string())
                .arg("PX")
                .arg(self.ttl_ms().saturating_mul(3))
                .query_async::<()>(&mut self.redis),
        )
        .await
    }
}

/// The published status of each of `slots` slots of `id` (`None`: nobody reported it lately).
pub async fn read_status(
    redis: &mut ConnectionManager,
    id: &IntegrationId,
    slots: usize,
) -> Result<Vec<Option<Value>>, String> {
    let keys: Vec<String> = (0..slots).map(|slot| status_key(id, slot)).collect();
    let values: Vec<Option<String>> =
        bounded(redis::cmd("MGET").arg(&keys).query_async(redis)).await?;
    Ok(values
        .into_iter()
        .map(|v| v.and_then(|v| serde_json::from_str(&v).ok()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> IntegrationId {
        s.parse().unwrap()
    }

    #[test]
    fn the_slots_of_an_integration_go_to_different_replicas_when_there_are_enough() {
        let replicas = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        for n in 0..50 {
            let integration = id(&format!("int-{n}"));
            let first = owner(&integration, 0, &replicas).unwrap();
            let second = owner(&integration, 1, &replicas).unwrap();
            assert_ne!(first, second);
        }
    }

    #[test]
    fn a_single_replica_owns_every_slot_and_no_replica_owns_nothing() {
        let one = vec!["only".to_owned()];
        assert_eq!(owner(&id("x"), 1, &one).unwrap(), "only");
        assert!(owner(&id("x"), 0, &[]).is_none());
    }

    #[test]
    fn every_replica_computes_the_same_owner_whatever_the_list_order() {
        let ab = vec!["a".to_owned(), "b".to_owned()];
        let ba = vec!["b".to_owned(), "a".to_owned()];
        for n in 0..20 {
            let integration = id(&format!("i{n}"));
            assert_eq!(owner(&integration, 0, &ab), owner(&integration, 0, &ba));
        }
    }
}
