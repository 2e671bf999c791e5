//! The in-process read-through cache in front of Redis (integrations and trigger bindings).
//!
//! Pure bookkeeping, no I/O: the caller passes `now`, which keeps the expiry rules testable
//! with plain values. See the parent module for why and when entries are invalidated.
//!
//! Two details matter for correctness:
//!
//! * **Lost-update guard.** A reader that misses, goes to Redis and comes back could otherwise
//!   store a value that an invalidation has overtaken meanwhile (read old → invalidate → insert
//!   old). Every invalidation bumps an epoch; a reader captures the epoch before its Redis read
//!   and its insert is dropped if the epoch moved.
//! * **Bounded size.** Negative entries are keyed by whatever id a caller sent, so a flood of
//!   random ids must not grow memory without bound: at capacity, expired entries are purged and,
//!   if that is not enough, the new entry is simply not cached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One cached lookup result; `None` means "not found in Redis" (a negative entry).
struct Entry<V> {
    value: Option<V>,
    expires_at: Instant,
}

struct State<K, V> {
    epoch: u64,
    entries: HashMap<K, Entry<V>>,
}

/// A TTL map with separate lifetimes for found and not-found results.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    negative_ttl: Duration,
    capacity: usize,
    state: Mutex<State<K, V>>,
}

/// What a lookup found in the cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cached<V> {
    /// Not cached (or expired): ask Redis.
    Miss,
    /// Cached result: `None` is a cached "does not exist".
    Hit(Option<V>),
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache whose found entries live `ttl`, not-found entries `negative_ttl` (capped at
    /// `ttl`), holding at most `capacity` entries. A zero `ttl` disables caching.
    pub(crate) fn new(ttl: Duration, negative_ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            negative_ttl: negative_ttl.min(ttl),
            capacity,
            state: Mutex::new(State {
                epoch: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// The state is a plain map that every operation leaves consistent, so a panic elsewhere
    /// while holding the lock cannot have corrupted it: recover instead of propagating poison.
    fn state(&self) -> MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch to pass to [`TtlCache::insert`] after a Redis read started now.
    pub(crate) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Looks `key` up, treating expired entries as misses.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Cached<V> {
        match self.state().entries.get(key) {
            Some(entry) if entry.expires_at > now => Cached::Hit(entry.value.clone()),
            _ => Cached::Miss,
        }
    }

    /// Stores a Redis result read since `read_epoch`, unless an invalidation happened since.
    pub(crate) fn insert(&self, key: K, value: Option<V>, read_epoch: u64, now: Instant) {
        let ttl = if value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let mut state = self.state();
        if state.epoch != read_epoch {
            return;
        }
        if state.entries.len() >= self.capacity && !state.entries.contains_key(&key) {
            // Full. A "not found" is cheap to look up again: it never displaces anything, so a
            // flood of unknown ids cannot keep real integrations out of the cache (nor make
            // every miss scan the whole map). A found entry takes the place of expired ones,
            // or else of a "not found".
            if value.is_none() {
                return;
            }
            state.entries.retain(|_, entry| entry.expires_at > now);
            if state.entries.len() >= self.capacity {
                let negative = state
                    .entries
                    .iter()
                    .find(|(_, entry)| entry.value.is_none())
                    .map(|(key, _)| key.clone());
                match negative {
                    Some(negative) => {
                        state.entries.remove(&negative);
                    }
                    None => return,
                }
            }
        }
        state.entries.insert(
            key,
            Entry {
                value,
                expires_at: now + ttl,
            },
        );
    }

    /// Forgets `key` and fences off in-flight reads (see the module doc).
    pub(crate) fn invalidate(&self, key: &K) {
        let mut state = self.state();
        state.epoch = state.epoch.wrapping_add(1);
        state.entries.remove(key);
    }

    /// Forgets everything, e.g. after invalidation messages may have been missed.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.epoch = state.epoch.wrapping_add(1);
        state.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);
    const NEGATIVE_TTL: Duration = Duration::from_secs(1);

    fn cache(capacity: usize) -> TtlCache<&'static str, u32> {
        TtlCache::new(TTL, NEGATIVE_TTL, capacity)
    }

    #[test]
    fn found_entries_live_for_the_ttl() {
        let cache = cache(10);
        let t0 = Instant::now();
        assert_eq!(cache.get(&"a", t0), Cached::Miss);
        cache.insert("a", Some(1), cache.epoch(), t0);
        assert_eq!(
            cache.get(&"a", t0 + TTL - Duration::from_millis(1)),
            Cached::Hit(Some(1))
        );
        assert_eq!(cache.get(&"a", t0 + TTL), Cached::Miss);
    }

    #[test]
    fn not_found_entries_live_for_the_shorter_negative_ttl() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.insert("ghost", None, cache.epoch(), t0);
        assert_eq!(cache.get(&"ghost", t0), Cached::Hit(None));
        assert_eq!(cache.get(&"ghost", t0 + NEGATIVE_TTL), Cached::Miss);
    }

    #[test]
    fn invalidation_removes_the_entry() {
        let cache = cache(10);
        let t0 = Instant::now();
        cache.insert("a", Some(1), cache.epoch(), t0);
        cache.insert("b", Some(2), cache.epoch(), t0);
        cache.invalidate(&"a");
        assert_eq!(cache.get(&"a", t0), Cached::Miss);
        assert_eq!(cache.get(&"b", t0), Cached::Hit(Some(2)));
        cache.clear();
        assert_eq!(cache.get(&"b", t0), Cached::Miss);
    }

    #[test]
    fn read_overtaken_by_an_invalidation_is_not_cached() {
        let cache = cache(10);
        let t0 = Instant::now();
        let epoch = cache.epoch();
        // The Redis read returns the old value, but a write's invalidation lands first.
        cache.invalidate(&"a");
        cache.insert("a", Some(1), epoch, t0);
        assert_eq!(cache.get(&"a", t0), Cached::Miss);
    }

    #[test]
    fn full_cache_purges_expired_entries_then_stops_growing() {
        let cache = cache(2);
        let t0 = Instant::now();
        cache.insert("a", Some(1), cache.epoch(), t0);
        cache.insert("b", Some(2), cache.epoch(), t0);
        cache.insert("c", Some(3), cache.epoch(), t0);
        assert_eq!(cache.get(&"c", t0), Cached::Miss, "no room, not cached");
        // Once "a" has expired, its slot is reused.
        let later = t0 + TTL / 2;
        cache.insert("b", Some(2), cache.epoch(), later);
        let after_a = t0 + TTL;
        cache.insert("c", Some(3), cache.epoch(), after_a);
        assert_eq!(cache.get(&"c", after_a), Cached::Hit(Some(3)));
        assert_eq!(cache.get(&"b", after_a), Cached::Hit(Some(2)));
        // Replacing an existing key never needs room.
        cache.insert("b", Some(5), cache.epoch(), after_a);
        assert_eq!(cache.get(&"b", after_a), Cached::Hit(Some(5)));
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let cache: TtlCache<&str, u32> = TtlCache::new(Duration::ZERO, NEGATIVE_TTL, 10);
        let t0 = Instant::now();
        cache.insert("a", Some(1), cache.epoch(), t0);
        cache.insert("b", None, cache.epoch(), t0);
        assert_eq!(cache.get(&"a", t0), Cached::Miss);
        assert_eq!(cache.get(&"b", t0), Cached::Miss);
    }

    #[test]
    fn a_flood_of_unknown_ids_cannot_keep_a_found_entry_out() {
        let cache = cache(3);
        let now = Instant::now();
        for key in ["ghost-1", "ghost-2", "ghost-3"] {
            cache.insert(key, None, cache.epoch(), now);
        }
        cache.insert("ghost-4", None, cache.epoch(), now);
        assert!(
            matches!(cache.get(&"ghost-4", now), Cached::Miss),
            "full: not cached"
        );
        cache.insert("acme", Some(7), cache.epoch(), now);
        assert!(matches!(cache.get(&"acme", now), Cached::Hit(Some(7))));
        // Full of found entries: a new one is not cached (nothing may be evicted).
        cache.insert("beta", Some(8), cache.epoch(), now);
        cache.insert("gamma", Some(9), cache.epoch(), now);
        cache.insert("delta", Some(10), cache.epoch(), now);
        assert!(matches!(cache.get(&"delta", now), Cached::Miss));
        assert!(matches!(cache.get(&"acme", now), Cached::Hit(Some(7))));
    }
}
