//! An insertion-ordered map that forgets its oldest entries past a cap, so that a simulator
//! left running under load keeps a flat memory profile.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map holding at most `cap` entries; inserting a new key past the cap evicts the oldest.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map for at most `cap` (at least 1) entries.
    pub fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Inserts or replaces; a replaced entry keeps its age. Returns the evicted value, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = value;
            return None;
        }
        let evicted = if self.order.len() >= self.cap {
            self.pop_oldest()
        } else {
            None
        };
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
        evicted
    }

    /// Removes and returns the oldest entry's value.
    pub fn pop_oldest(&mut self) -> Option<V> {
        let key = self.order.pop_front()?;
        self.entries.remove(&key)
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// The value for `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Values, oldest first.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.order.iter().filter_map(|key| self.entries.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_entry_is_evicted_past_the_cap() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 10);
        assert_eq!(map.insert("c", 3), Some(10));
        assert_eq!(map.values().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert!(!map.contains(&"a"));
    }
}
