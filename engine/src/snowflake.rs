//! Snowflake order ids: 41 bits of milliseconds since [`EPOCH_MS`], 10 bits of node id, 12 bits
//! of sequence (Twitter's 2010 layout).
//!
//! Each shard owns one generator (no lock, no shared counter). Shard `s` of `n` only issues
//! sequence numbers with `seq % n == s`, so ids from different shards of one node never collide,
//! and [`shard_of`] finds an order's shard from its id alone.
//!
//! On a clock step back the generator keeps issuing from the last millisecond it used and, when
//! that millisecond's sequence space is exhausted, *waits* for the clock to pass it: it never
//! panics and never repeats an id.
//!
//! ```
//! use std::sync::Arc;
//! use surge_engine::{ManualClock, snowflake::{Snowflake, shard_of}};
//! let clock = Arc::new(ManualClock::new(1_800_000_000_000));
//! let mut g = Snowflake::new(7, 1, 2).unwrap();
//! let a = g.next_id(&*clock);
//! let b = g.next_id(&*clock);
//! assert!(b > a);
//! assert_eq!(shard_of(a, 2), 1);
//! ```

use crate::clock::Clock;
use crate::error::EngineError;

/// Custom epoch: 2024-01-01T00:00:00Z. 41 bits of ms last until 2093.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
/// Largest node id (10 bits).
pub const NODE_ID_MAX: u16 = 1023;
const SEQ_BITS: u32 = 12;
const NODE_BITS: u32 = 10;
const SEQ_SPACE: u32 = 1 << SEQ_BITS;

/// The shard (of `shard_count`) that owns order `id`.
pub fn shard_of(id: u64, shard_count: usize) -> usize {
    ((id & u64::from(SEQ_SPACE - 1)) as usize) % shard_count.max(1)
}

/// The millisecond timestamp (Unix epoch) encoded in an id.
pub fn timestamp_ms_of(id: u64) -> i64 {
    (id >> (SEQ_BITS + NODE_BITS)) as i64 + EPOCH_MS
}

/// A per-shard id generator.
#[derive(Debug)]
pub struct Snowflake {
    node_id: u64,
    /// First sequence number of this shard (== shard index).
    seq_first: u32,
    /// Distance between this shard's sequence numbers (== shard count).
    seq_stride: u32,
    last_ms: i64,
    next_seq: u32,
}

impl Snowflake {
    /// A generator for `shard` of `shard_count` on node `node_id`.
    ///
    /// # Errors
    /// `invalid_config` if `node_id > 1023`, `shard_count` is 0 or above 4096, or
    /// `shard >= shard_count`.
    pub fn new(node_id: u16, shard: usize, shard_count: usize) -> Result<Self, EngineError> {
        if node_id > NODE_ID_MAX {
            return Err(EngineError::InvalidConfig { message: format!("node_id {node_id} > {NODE_ID_MAX}") });
        }
        if shard_count == 0 || shard_count > SEQ_SPACE as usize || shard >= shard_count {
            return Err(EngineError::InvalidConfig {
                message: format!("shard {shard} of {shard_count}: need 1..=4096 shards"),
            });
        }
        Ok(Self {
            node_id: u64::from(node_id),
            seq_first: shard as u32,
            seq_stride: shard_count as u32,
            last_ms: 0,
            next_seq: shard as u32,
        })
    }

    /// Never issue an id at or before `id`'s millisecond again (used after recovery).
    pub fn observe(&mut self, id: u64) {
        let ms = timestamp_ms_of(id) - EPOCH_MS;
        if ms >= self.last_ms {
            self.last_ms = ms;
            self.next_seq = SEQ_SPACE; // exhausted: the next id moves to a later millisecond
        }
    }

    /// The next id. Blocks (sleeping in 1 ms steps) only while this shard's sequence space for
    /// the current millisecond is used up and the clock has not moved past it.
    pub fn next_id(&mut self, clock: &dyn Clock) -> u64 {
        loop {
            let now = (clock.now_ms() - EPOCH_MS).max(0);
            if now > self.last_ms {
                self.last_ms = now;
                self.next_seq = self.seq_first;
            }
            // A clock step back (now < last_ms) keeps using last_ms: ids stay increasing.
            if self.next_seq < SEQ_SPACE {
                let seq = self.next_seq;
                self.next_seq += self.seq_stride;
                let ms = (self.last_ms as u64) & ((1 << 41) - 1);
                return (ms << (SEQ_BITS + NODE_BITS)) | (self.node_id << SEQ_BITS) | u64::from(seq);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn ids_are_unique_increasing_and_routable_across_a_clock_step_back() {
        let clock = Arc::new(ManualClock::new(EPOCH_MS + 10_000));
        let mut g = Snowflake::new(3, 1, 3).unwrap();
        let mut seen = HashSet::new();
        let mut last = 0;
        for i in 0..3000 {
            if i == 500 {
                clock.advance_ms(-5_000); // NTP steps back five seconds
            }
            if i % 1000 == 999 {
                // Let the waiting generator through: the clock passes the last used ms.
                clock.advance_ms(6_000);
            }
            let id = g.next_id(&*clock);
            assert!(id > last, "id {id} not above {last} at {i}");
            assert!(seen.insert(id));
            assert_eq!(shard_of(id, 3), 1);
            assert_eq!((id >> 12) & 1023, 3, "node id field");
            last = id;
        }
    }

    #[test]
    fn exhausted_millisecond_waits_for_the_clock() {
        let clock = Arc::new(ManualClock::new(EPOCH_MS + 1));
        let mut g = Snowflake::new(0, 0, 2).unwrap();
        for _ in 0..2048 {
            g.next_id(&*clock);
        }
        let c2 = clock.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            c2.advance_ms(1);
        });
        let id = g.next_id(&*clock);
        t.join().unwrap();
        assert_eq!(timestamp_ms_of(id), EPOCH_MS + 2);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Snowflake::new(1024, 0, 1).is_err());
        assert!(Snowflake::new(0, 2, 2).is_err());
        assert!(Snowflake::new(0, 0, 0).is_err());
    }
}
