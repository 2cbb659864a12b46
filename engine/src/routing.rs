//! Where actors live: the shard of a SKU or user id, and the hash map shards keep actors in.

use std::hash::{Hash, Hasher};

/// A HashMap with aHash (random keys per process: fast, and not floodable by chosen ids).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// The shard that hosts the actor keyed by `key` (SKU ids, user ids). Fixed-key SipHash, so the
/// placement is the same in every process.
pub(crate) fn shard_for_key(key: &str, shard_count: usize) -> usize {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    (h.finish() % shard_count.max(1) as u64) as usize
}
