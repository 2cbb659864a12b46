//! Snowflake order ids: 41 bits of milliseconds since [`EPOCH_MS`], 10 bits of node id, 12 bits
//! of sequence (Twitter's 2010 layout).
//!
//! Each shard owns one generator (no lock, no shared counter). Shard `s` of `n` only issues
//! sequence numbers with `seq % n == s`, so ids from different shards of one node never collide,
//! and [`shard_of`] finds an order's shard from its id alone.
//!
//! The generator keeps a *logical* millisecond (`last_ms`) that never goes back. When the clock
//! is behind it (an NTP step back, or recovery [`Snowflake::observe`]d ids minted while the wall
//! clock was ahead, e.g. an id from next week), the generator does not wait for the clock to catch
//! up (that would freeze the shard for as long as the clock was ahead): it continues from the
//! logical millisecond, moving to the next one when this shard's sequence space in it is used up
//! (logical time, as Sonyflake and hybrid logical clocks do), and logs one warning per such
//! episode. Only when the clock stands exactly on the exhausted millisecond does it wait, at most
//! until the next millisecond. It never panics and never repeats an id.
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
    /// True while `last_ms` runs ahead of the clock (one warning per episode).
    ahead: bool,
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
            ahead: false,
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

    /// The next id: strictly above every id issued or observed before, with `seq % n == shard`.
    ///
    /// Never waits while the clock is behind the logical millisecond (see the module docs); it
    /// sleeps (200 µs steps) only while the clock stands on a millisecond whose sequence space
    /// this shard has used up, i.e. at most until the clock's next millisecond.
    pub fn next_id(&mut self, clock: &dyn Clock) -> u64 {
        loop {
            let now_ms = clock.now_ms();
            if let Some(id) = self.try_next_id(now_ms) {
                return id;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// The next id at `now_ms` (ms since the Unix epoch), as [`Snowflake::next_id`] but with
    /// time passed in and never waiting: when this shard's sequence space in the current
    /// millisecond is used up, it moves on to the next logical millisecond at once (as it does
    /// while the clock is behind; Sonyflake's and hybrid logical clocks' rule). This is what a
    /// shard's deterministic core uses: no clock is read and no thread sleeps inside it
    /// (issue 11). The ids stay strictly increasing and routable; under a burst above
    /// 4096 / `shard_count` ids in one millisecond their timestamps run up to a few ms ahead.
    ///
    /// ```
    /// use surge_engine::snowflake::{Snowflake, timestamp_ms_of, EPOCH_MS};
    /// let mut g = Snowflake::new(0, 0, 4).unwrap();
    /// let ids: Vec<u64> = (0..2_000).map(|_| g.next_id_at(EPOCH_MS + 5)).collect();
    /// assert!(ids.windows(2).all(|w| w[1] > w[0]));
    /// assert_eq!(timestamp_ms_of(ids[1_999]), EPOCH_MS + 6); // 1024 per ms for 4 shards
    /// ```
    pub fn next_id_at(&mut self, now_ms: i64) -> u64 {
        loop {
            if let Some(id) = self.try_next_id(now_ms) {
                return id;
            }
            // The clock stands on the used-up millisecond: borrow the next one.
            self.last_ms += 1;
            self.next_seq = self.seq_first;
        }
    }

    /// One attempt at the next id at `now_ms`: `None` only when the clock stands exactly on
    /// the logical millisecond and this shard's sequence space in it is used up.
    fn try_next_id(&mut self, now_ms: i64) -> Option<u64> {
        loop {
            let now = now_ms.saturating_sub(EPOCH_MS).max(0);
            if now > self.last_ms {
                if self.ahead {
                    tracing::info!(shard = self.seq_first, "snowflake: the clock caught up with the ids");
                    self.ahead = false;
                }
                self.last_ms = now;
                self.next_seq = self.seq_first;
            }
            if self.next_seq < SEQ_SPACE {
                let seq = self.next_seq;
                self.next_seq += self.seq_stride;
                let ms = (self.last_ms as u64) & ((1 << 41) - 1);
                return Some((ms << (SEQ_BITS + NODE_BITS)) | (self.node_id << SEQ_BITS) | u64::from(seq));
            }
            if now < self.last_ms {
                // The clock is behind the ids (stepped back, or ids came from a clock that was
                // ahead): continue in logical time rather than freeze until it catches up.
                if !self.ahead {
                    self.ahead = true;
                    tracing::warn!(
                        shard = self.seq_first,
                        ahead_ms = self.last_ms - now,
                        "snowflake: ids run ahead of the clock; continuing from the highest id in logical time"
                    );
                }
                self.last_ms += 1;
                self.next_seq = self.seq_first;
                continue;
            }
            return None;
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

    /// Observe an id minted `ahead_ms` ahead of a clock that then stands still; mint 100 000 ids.
    /// Before the fix the generator slept until the clock passed the observed millisecond, so
    /// this never finished (the timeout turns that into a failure).
    fn mints_without_waiting_after_observing_an_id_ahead(ahead_ms: i64) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = EPOCH_MS + 86_400_000;
            let clock = ManualClock::new(start);
            let mut old = Snowflake::new(5, 2, 3).unwrap();
            let future = old.next_id(&ManualClock::new(start + ahead_ms));
            let mut g = Snowflake::new(5, 2, 3).unwrap();
            g.observe(future);
            let mut last = future;
            for i in 0..100_000 {
                let id = g.next_id(&clock);
                assert!(id > last, "id {id} not above {last} at {i}");
                assert_eq!(shard_of(id, 3), 2, "routing of {id}");
                last = id;
            }
            // 100 000 ids at 1366 per ms for this shard take 74 logical ms past the floor.
            assert!(timestamp_ms_of(last) <= start + ahead_ms + 100, "logical time ran off");
            let _ = tx.send(());
        });
        let done = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert!(done.is_ok(), "the generator waited for the clock (or panicked) with ids {ahead_ms} ms ahead");
    }

    #[test]
    fn continues_from_an_id_an_hour_ahead_without_waiting() {
        mints_without_waiting_after_observing_an_id_ahead(3_600_000);
    }

    #[test]
    fn continues_from_an_id_a_year_ahead_without_waiting() {
        mints_without_waiting_after_observing_an_id_ahead(365 * 86_400_000);
    }

    /// The core's generator never waits: 10 000 ids at one fixed `now_ms` (a clock that never
    /// moves) finish, increase, and route to their shard.
    #[test]
    fn next_id_at_a_fixed_time_borrows_later_milliseconds() {
        let mut g = Snowflake::new(2, 1, 3).unwrap();
        let mut last = 0;
        for i in 0..10_000 {
            let id = g.next_id_at(EPOCH_MS + 100);
            assert!(id > last, "id {id} not above {last} at {i}");
            assert_eq!(shard_of(id, 3), 1);
            last = id;
        }
        // 1366 ids per ms for shard 1 of 3: 10 000 ids span 8 ms.
        assert_eq!(timestamp_ms_of(last), EPOCH_MS + 107);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Snowflake::new(1024, 0, 1).is_err());
        assert!(Snowflake::new(0, 2, 2).is_err());
        assert!(Snowflake::new(0, 0, 0).is_err());
    }
}
