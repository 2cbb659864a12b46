//! A shard's idempotency records: (user, idempotency key) → the order created with them.
//!
//! Every live order has one record, so its size is memory per order. A map keyed by the pair
//! holds two `Arc<str>` (32 bytes) per entry; this index keys by a 64-bit hash of the pair
//! instead (16 bytes per entry with the id), and checks a hit against the order itself, which
//! holds its user and key (the saga in flight, or the live order). Two pairs with the same hash
//! (about one in 2^64 per pair of records, and the hash's keys are random per process, so a
//! client cannot aim for one) are not an error: the second goes to a small map keyed by the
//! pair, as before. TigerBeetle keeps ids as u128 for the same reason: fixed-size keys make
//! dense tables.

use crate::chunked::ChunkedMap;
use crate::domain::{OrderId, UserId};
use crate::routing::FastMap;

/// The idempotency records of one shard (see the module docs).
pub(super) struct IdempotencyIndex {
    hasher: ahash::RandomState,
    /// In chunks ([`ChunkedMap`]), so that growing never rehashes all records at once: a
    /// million-record table doubling stopped the shard for tens of milliseconds (issue 12).
    by_hash: ChunkedMap<u64, OrderId>,
    /// Records whose hash another record holds in `by_hash`.
    spill: FastMap<(UserId, Box<str>), OrderId>,
}

impl Default for IdempotencyIndex {
    fn default() -> Self {
        Self { hasher: ahash::RandomState::new(), by_hash: ChunkedMap::default(), spill: FastMap::default() }
    }
}

impl IdempotencyIndex {
    fn hash(&self, user_id: &str, key: &str) -> u64 {
        // The user id's length separates ("ab","c") from ("a","bc").
        self.hasher.hash_one((user_id.len(), user_id, key))
    }

    /// The order recorded for (`user_id`, `key`). `holds(id)` says whether order `id` was
    /// created with exactly this user and key (the caller knows orders; this index does not).
    pub fn get(&self, user_id: &str, key: &str, holds: impl Fn(OrderId) -> bool) -> Option<OrderId> {
        if let Some(&id) = self.by_hash.get(&self.hash(user_id, key)) {
            if holds(id) {
                return Some(id);
            }
        }
        if self.spill.is_empty() {
            return None;
        }
        // A scan: the spill holds only records whose 64-bit hash collided, so it is empty but
        // for about one process in 2^64 / records² (and it takes `&str`s, not owned keys).
        self.spill.iter().find(|((u, k), _)| &**u == user_id && &**k == key).map(|(_, id)| *id)
    }

    /// Record `id` for (`user_id`, `key`), replacing what was recorded for the same pair.
    /// `current(id)` says whether order `id` still exists with *its* pair (then a record under
    /// the same hash belongs to another pair and must stay).
    pub fn insert(&mut self, user_id: &UserId, key: &str, id: OrderId, current: impl Fn(OrderId) -> Option<bool>) {
        let h = self.hash(user_id, key);
        match self.by_hash.get(&h).copied() {
            // Taken by a live record of another pair: this one spills.
            Some(other) if other != id && current(other) == Some(false) => {
                self.spill.insert((user_id.clone(), Box::from(key)), id);
            }
            _ => {
                self.by_hash.insert(h, id);
            }
        }
    }

    /// Forget the record of (`user_id`, `key`) if it is `id`.
    pub fn remove(&mut self, user_id: &UserId, key: &str, id: OrderId) {
        let h = self.hash(user_id, key);
        if self.by_hash.get(&h) == Some(&id) {
            self.by_hash.remove(&h);
        } else if self.spill.get(&(user_id.clone(), Box::from(key))) == Some(&id) {
            self.spill.remove(&(user_id.clone(), Box::from(key)));
        }
    }

    /// Reserve room for `n` more records (recovery knows how many orders it installs).
    pub fn reserve(&mut self, n: usize) {
        self.by_hash.reserve(n);
    }

    /// Forget everything (the simulator's planted bug).
    #[cfg(any(test, feature = "sim"))]
    pub fn clear(&mut self) {
        self.by_hash = ChunkedMap::default();
        self.spill.clear();
    }
}
