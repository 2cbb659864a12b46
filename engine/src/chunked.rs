//! [`ChunkedMap`]: a hash map in copy-on-write chunks, so that a snapshot's cut is a copy of a
//! few pointers, not of the map.
//!
//! A snapshot needs every shard's state at one point of its log. Copying a shard's orders and
//! a hot SKU's holdings (millions of entries) on the shard thread stopped it for up to 0.9 s at
//! 1 M orders (issue 12: request p99 of 1–2 s in the seconds of a cut). Here a map is
//! [`CHUNKS`] hash maps behind `Arc`s: a clone shares every chunk (O(`CHUNKS`)), and the first
//! write to a shared chunk copies that chunk only (`Arc::make_mut`), 1/`CHUNKS` of the map. The
//! copying a cut causes is the same in total but spread over the writes that follow, a chunk
//! at a time, and none at all for chunks nobody writes before the snapshot is written. The
//! same idea as the copy-on-write pages of LMDB or of `fork()` (Redis's `BGSAVE`), at the
//! granularity of a chunk.

use std::cell::Cell;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::routing::FastMap;

/// Chunks per map: a write after a cut copies 1/64 of the map (16 k entries of a million: a
/// millisecond or two).
pub(crate) const CHUNKS: usize = 64;

/// Which chunk a key lives in.
///
/// By default a hash of the key. Order ids choose by *time* instead: the id's millisecond
/// timestamp in windows of [`ORDER_WINDOW_MS`], round robin over the chunks. New orders then
/// all go to the chunk of the current window, so after a cut the stream of creations copies
/// one chunk per window, not every chunk at its first batch (a batch of random keys touches
/// them all); older orders, touched by payments and cancellations, copy their chunks once each.
pub(crate) trait ChunkKey: Hash + Eq {
    fn chunk(&self, hasher: &ahash::RandomState) -> usize {
        (hasher.hash_one(self) >> 58) as usize % CHUNKS
    }
}

/// Milliseconds of order creation per chunk window (round robin: 64 windows are 16 s).
pub(crate) const ORDER_WINDOW_MS: u64 = 256;

impl ChunkKey for crate::domain::OrderId {
    fn chunk(&self, _: &ahash::RandomState) -> usize {
        let ms = self.0 >> 22; // snowflake: 12 bits of sequence and 10 of node below the time
        ((ms / ORDER_WINDOW_MS) % CHUNKS as u64) as usize
    }
}

impl ChunkKey for std::sync::Arc<str> {}

/// Keys that are already hashes (the idempotency index's): their own top bits.
impl ChunkKey for u64 {
    fn chunk(&self, _: &ahash::RandomState) -> usize {
        (*self >> 58) as usize % CHUNKS
    }
}

/// A hash map in [`CHUNKS`] copy-on-write chunks (see the module docs). Chunks are allocated
/// on first use: an empty map is one empty `Vec`.
pub(crate) struct ChunkedMap<K, V> {
    /// Empty until the first insert, then exactly [`CHUNKS`] long.
    chunks: Vec<Arc<FastMap<K, V>>>,
    /// Picks a key's chunk (its own keys: a chunk's map hashes again with its own).
    selector: ahash::RandomState,
    len: usize,
    /// Bit `i` set: chunk `i` may be shared with a clone (set for every chunk by `clone`,
    /// cleared by the first write, which copies the chunk if it still is shared). A clear bit
    /// means this map holds the chunk's only `Arc` (chunks are private, and only `clone` ever
    /// clones them, never downgrading), so a write needs no atomic operation: `Arc::make_mut`'s
    /// check is a locked compare-and-swap, and a barrier on every insert (issue 12: restart of
    /// 5 M orders went from 5.8 to 8.2 s with it).
    maybe_shared: Cell<u64>,
}

const _: () = assert!(CHUNKS <= 64, "one bit of `maybe_shared` per chunk");

impl<K, V> Default for ChunkedMap<K, V> {
    fn default() -> Self {
        Self { chunks: Vec::new(), selector: ahash::RandomState::new(), len: 0, maybe_shared: Cell::new(0) }
    }
}

impl<K, V> Clone for ChunkedMap<K, V> {
    /// Shares every chunk: O([`CHUNKS`]), whatever the size.
    fn clone(&self) -> Self {
        self.maybe_shared.set(u64::MAX);
        Self {
            chunks: self.chunks.clone(),
            selector: self.selector.clone(),
            len: self.len,
            maybe_shared: Cell::new(u64::MAX),
        }
    }
}

impl<K: ChunkKey, V> ChunkedMap<K, V> {
    fn chunk_of(&self, key: &K) -> usize {
        key.chunk(&self.selector)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.chunks.get(self.chunk_of(key))?.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Every entry, chunk by chunk (no order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Every value (no order).
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.chunks.iter().flat_map(|c| c.values())
    }
}

impl<K: ChunkKey + Clone, V: Clone> ChunkedMap<K, V> {
    /// The chunk `i`, copied first if a clone shares it.
    fn chunk_mut(&mut self, i: usize) -> &mut FastMap<K, V> {
        if self.chunks.is_empty() {
            self.chunks = (0..CHUNKS).map(|_| Arc::new(FastMap::default())).collect();
        }
        let bit = 1u64 << i;
        let shared = self.maybe_shared.get();
        if shared & bit != 0 {
            self.maybe_shared.set(shared & !bit);
            return Arc::make_mut(&mut self.chunks[i]);
        }
        let chunk = &mut self.chunks[i];
        debug_assert_eq!(Arc::strong_count(chunk), 1, "a chunk without its shared bit is this map's alone");
        // SAFETY: the bit is clear, so this map holds the only `Arc` of the chunk and no
        // `Weak` exists (see `maybe_shared`); `&mut self` excludes every other access to it.
        // That is what `Arc::get_mut` checks, without its atomic operations.
        unsafe { &mut *Arc::as_ptr(chunk).cast_mut() }
    }

    /// Room for `n` more entries in all (spread over the chunks).
    pub fn reserve(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let per_chunk = n.div_ceil(CHUNKS);
        for i in 0..CHUNKS {
            self.chunk_mut(i).reserve(per_chunk);
        }
    }

    /// Set `key` to `value`; the old value, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let i = self.chunk_of(&key);
        let old = self.chunk_mut(i).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.chunk_of(key);
        // Only a chunk that holds the key is copied.
        if !self.chunks.get(i)?.contains_key(key) {
            return None;
        }
        self.chunk_mut(i).get_mut(key)
    }

    /// The value of `key`, inserted as `default` first if missing.
    pub fn get_or_insert(&mut self, key: K, default: V) -> &mut V {
        let i = self.chunk_of(&key);
        if !self.chunks.get(i).is_some_and(|c| c.contains_key(&key)) {
            self.len += 1;
        }
        self.chunk_mut(i).entry(key).or_insert(default)
    }

    /// Remove `key`; its value, if any.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.chunk_of(key);
        if !self.chunks.get(i)?.contains_key(key) {
            return None;
        }
        let old = self.chunk_mut(i).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

impl<K: ChunkKey + Clone, V: Clone> FromIterator<(K, V)> for ChunkedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<K: ChunkKey, V: PartialEq> PartialEq for ChunkedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: ChunkKey, V: Eq> Eq for ChunkedMap<K, V> {}

impl<K: ChunkKey + fmt::Debug, V: fmt::Debug> fmt::Debug for ChunkedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Stored as a plain map (the same bytes a `HashMap` gives): the chunking is not data.
impl<K: Serialize + ChunkKey, V: Serialize> Serialize for ChunkedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K, V> Deserialize<'de> for ChunkedMap<K, V>
where
    K: Deserialize<'de> + ChunkKey + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de> + ChunkKey + Clone,
            V: Deserialize<'de> + Clone,
        {
            type Value = ChunkedMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = ChunkedMap::default();
                if let Some(n) = access.size_hint() {
                    map.reserve(n);
                }
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkedMap;

    #[test]
    fn a_clone_is_a_cut_that_later_writes_leave_alone() {
        let mut live: ChunkedMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        let cut = live.clone();
        for i in 0..10_000 {
            if i % 3 == 0 {
                live.remove(&i);
            } else if let Some(v) = live.get_mut(&i) {
                *v += 1;
            }
        }
        live.insert(20_000, 1);
        *live.get_or_insert(30_000, 5) += 1;
        assert_eq!(cut.len(), 10_000);
        assert!((0..10_000).all(|i| cut.get(&i) == Some(&i)), "the cut keeps every value it had");
        assert_eq!(live.len(), 10_000 - 3_334 + 2);
        assert_eq!(live.get(&1), Some(&2));
        assert_eq!(live.get(&3), None);
        assert_eq!(live.get(&30_000), Some(&6));
        assert_eq!(live.iter().count(), live.len());
    }

    #[test]
    fn new_orders_fill_one_chunk_at_a_time() {
        use crate::domain::OrderId;
        let at = |ms: u64, seq: u64| OrderId(ms << 22 | seq);
        let window = super::ORDER_WINDOW_MS;
        let chunk = |id: OrderId| super::ChunkKey::chunk(&id, &ahash::RandomState::new());
        assert_eq!(chunk(at(5 * window, 1)), chunk(at(5 * window + window - 1, 4095)));
        assert_ne!(chunk(at(5 * window, 1)), chunk(at(6 * window, 1)));
    }

    #[test]
    fn stored_as_a_plain_map() {
        let chunked: ChunkedMap<u64, String> = (0..50).map(|i| (i, format!("v{i}"))).collect();
        let plain: std::collections::BTreeMap<u64, String> = (0..50).map(|i| (i, format!("v{i}"))).collect();
        let json = serde_json::to_value(&chunked).expect("encode");
        assert_eq!(json, serde_json::to_value(&plain).expect("encode"));
        let back: ChunkedMap<u64, String> = serde_json::from_value(json).expect("decode");
        assert_eq!(back, chunked);
    }
}
