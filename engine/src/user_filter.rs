//! [`UserFilter`]: which users may hold an idempotency record, so a sold-out answer for anyone
//! else needs no trip to a shard (issue 12, "the cheap no").
//!
//! The sold-out fast path decides a rejection from a SKU's published counters. It used to send
//! every rejection through the user's shard anyway, because only the shard knows whether this
//! very request already made an order (a client retrying the request that took the last unit
//! must get its order, not `sold_out`). That hop, a mailbox message, a wake-up and a reply
//! through the journal, was most of the cost of a `no`.
//!
//! This filter is a one-hash Bloom filter (Bloom 1970) over user ids: a bit is set for a user
//! *before* any create request of theirs is sent to a shard, and for every user whose orders
//! are installed at recovery or restored from the archive. A user whose bit is clear has no
//! idempotency record, so their sold-out answer is the same whether the shard gives it or the
//! caller's thread does. A set bit (the user may have a record, or shares a bit with one that
//! does) takes the old path through the shard. Bits are never cleared: a filter that fills up
//! only sends more requests the slow way, it never answers wrongly.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits in the filter: 2^24 (2 MiB). In a flash sale only the users whose request reached a
/// shard (the few thousand before the stock ran out, plus any user with an order) are marked, so
/// almost every later `sold_out` is answered on the caller's thread; with a million marked
/// users 6% of the unmarked ones still take the shard path.
pub const USER_FILTER_BITS: usize = 1 << 24;

/// Users that may hold an idempotency record (module docs).
pub(crate) struct UserFilter {
    hasher: ahash::RandomState,
    words: Box<[AtomicU64]>,
}

impl Default for UserFilter {
    fn default() -> Self {
        let words = (0..USER_FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect();
        Self { hasher: ahash::RandomState::new(), words }
    }
}

impl UserFilter {
    fn bit(&self, user_id: &str) -> (usize, u64) {
        let h = self.hasher.hash_one(user_id) as usize % USER_FILTER_BITS;
        (h / 64, 1u64 << (h % 64))
    }

    /// Ask the CPU to bring `user_id`'s word into cache. The filter is 2 MiB, read at a random
    /// word per request: without this, [`UserFilter::insert`] waited for that miss on every
    /// order (issue 12: 84% of the caller's fast-path samples sat on the load). A batch
    /// prefetches all its users first, so their misses overlap instead of queueing.
    pub fn prefetch(&self, user_id: &str) {
        let (word, _) = self.bit(user_id);
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: SSE is part of the x86_64 baseline, so the instruction exists; a prefetch
            // is a hint that never faults and writes nothing, and the address is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.words[word].as_ptr().cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = word;
    }

    /// Mark `user_id` as possibly holding a record. Call it before the request that could
    /// create the record is sent (so any later request of the user sees the mark).
    pub fn insert(&self, user_id: &str) {
        let (word, mask) = self.bit(user_id);
        if self.words[word].load(Ordering::Acquire) & mask == 0 {
            self.words[word].fetch_or(mask, Ordering::AcqRel);
        }
    }

    /// False only if `user_id` was never marked: no idempotency record of theirs exists.
    pub fn may_contain(&self, user_id: &str) -> bool {
        let (word, mask) = self.bit(user_id);
        self.words[word].load(Ordering::Acquire) & mask != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_user_is_always_found() {
        let f = UserFilter::default();
        for i in 0..10_000 {
            f.insert(&format!("user-{i}"));
        }
        assert!((0..10_000).all(|i| f.may_contain(&format!("user-{i}"))));
        let strangers = (0..10_000).filter(|i| f.may_contain(&format!("other-{i}"))).count();
        // 10,000 of 16.7 M bits set: about 6 false positives expected.
        assert!(strangers < 100, "{strangers} false positives");
    }
}
