//! The per-user rate limit (`per_user_rps`, `per_user_burst`) at a fixed cost per request and a
//! fixed memory: [`UserLimiter`].
//!
//! It used to be governor's keyed limiter over the `user_id` string: a `DashMap<String, _>`
//! that gained an entry (a string copy, and now and then a table doubling) for every user it
//! ever saw, swept every 30 s. In a flash sale nearly every request comes from a new user, so
//! that map was the gateway's largest single cost per `create_order` (issue 13: 5% of the
//! server's CPU, page faults of its growth included).
//!
//! Instead, a user's requests are checked against one of [`USER_LIMIT_CELLS`] GCRA cells
//! (governor's keyed limiter, the same algorithm and quota as before, over a fixed array of
//! state words: [`HashedCells`]), chosen by a hash of the user id. Users whose ids share a cell
//! share its budget: a collision can make the limit stricter for them, never looser, and with
//! 65,536 cells it takes tens of thousands of users *per second* before a cell holds two active
//! ones (the per-user limit is an abuse guard, `per_user_rps` = 20 by default). The hash is
//! keyed per process (aHash with random keys, built for hash-flooding resistance), so a client
//! cannot choose user ids that collide with a victim's. (SipHash, std's keyed hash, was
//! 1.3% of a `sold_out` answer's server CPU in a profile.)

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{DefaultClock, QuantaInstant};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{NotUntil, Quota, RateLimiter};

/// GCRA cells of a [`UserLimiter`] (2^16).
pub const USER_LIMIT_CELLS: usize = 1 << 16;

/// governor's state store for [`UserLimiter`]: one GCRA state word per cell, keyed by the cell's
/// index (taken modulo the cell count), updated with the same compare-and-swap loop as
/// governor's own `InMemoryState`. 8 bytes a cell, 512 KiB for [`USER_LIMIT_CELLS`]: a direct
/// limiter per cell (its own quota, clock handle and start instant) took about ten times that,
/// and in a flash sale, where nearly every request comes from a new user, each check was a cache
/// miss into it (issue 13, session 9: 6% of the server's CPU per `sold_out` answer).
///
/// ```
/// use std::num::NonZeroU32;
/// use governor::{clock::DefaultClock, Quota, RateLimiter};
/// use surge_gateway::limits::{HashedCells, HashedLimiter};
/// let limiter: HashedLimiter = RateLimiter::new(Quota::per_second(NonZeroU32::MIN), HashedCells::new(4), DefaultClock::default());
/// assert!(limiter.check_key(&1).is_ok());
/// assert!(limiter.check_key(&5).is_err(), "5 % 4 = 1: the same cell, its budget spent");
/// ```
pub struct HashedCells(Box<[AtomicU64]>);

impl HashedCells {
    /// `cells` state words, all empty (a cell's first request sees no history).
    pub fn new(cells: usize) -> Self {
        Self((0..cells.max(1)).map(|_| AtomicU64::new(0)).collect())
    }
}

impl StateStore for HashedCells {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cell = &self.0[(*key % self.0.len() as u64) as usize];
        // 0 means "never measured", as in governor's `InMemoryState`.
        let mut prev = cell.load(Ordering::Acquire);
        let mut decision = f(NonZeroU64::new(prev).map(|n| n.get().into()));
        while let Ok((result, new_data)) = decision {
            match cell.compare_exchange_weak(prev, new_data.into(), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return Ok(result),
                Err(next_prev) => prev = next_prev,
            }
            decision = f(NonZeroU64::new(prev).map(|n| n.get().into()));
        }
        decision.map(|(result, _)| result)
    }
}

/// governor's keyed limiter over [`HashedCells`], keyed by a cell number (any `u64`: taken
/// modulo the cell count), on governor's default clock.
pub type HashedLimiter = RateLimiter<u64, HashedCells, DefaultClock, NoOpMiddleware<QuantaInstant>>;

/// Per-user rate limits in [`USER_LIMIT_CELLS`] hashed cells (module docs).
///
/// ```
/// use std::num::NonZeroU32;
/// use governor::Quota;
/// use surge_gateway::limits::UserLimiter;
/// let limiter = UserLimiter::new(Quota::per_second(NonZeroU32::MIN)); // 1 per second, burst 1
/// assert!(limiter.check("alice").is_ok());
/// assert!(limiter.check("alice").is_err(), "alice's budget is spent");
/// ```
pub struct UserLimiter {
    hasher: ahash::RandomState,
    cells: HashedLimiter,
}

impl UserLimiter {
    /// Every cell with `quota`, sharing one clock.
    pub fn new(quota: Quota) -> Self {
        let cells = RateLimiter::new(quota, HashedCells::new(USER_LIMIT_CELLS), DefaultClock::default());
        Self { hasher: ahash::RandomState::new(), cells }
    }

    /// A limiter with `rps` per second and a burst of `burst` (0: `rps`) per user.
    pub fn per_second(rps: u32, burst: u32) -> Self {
        let rps = NonZeroU32::new(rps).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rps);
        Self::new(Quota::per_second(rps).allow_burst(burst))
    }

    /// Take one request from `user_id`'s budget.
    ///
    /// # Errors
    /// The budget is spent: [`NotUntil`] says when the next request would pass.
    pub fn check(&self, user_id: &str) -> Result<(), NotUntil<QuantaInstant>> {
        self.cells.check_key(&self.hasher.hash_one(user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_a_budget_and_a_spent_one_refuses() {
        let limiter = UserLimiter::per_second(1, 3);
        for _ in 0..3 {
            assert!(limiter.check("alice").is_ok());
        }
        assert!(limiter.check("alice").is_err(), "burst of 3 spent");
        // Other users are not charged for alice (save the rare shared cell: at most a few of
        // 1,000 here, 1,000 users over 65,536 cells).
        let refused = (0..1_000).filter(|i| limiter.check(&format!("user-{i}")).is_err()).count();
        assert!(refused <= 5, "{refused} of 1000 fresh users refused");
    }

    #[test]
    fn memory_is_fixed_and_small() {
        // A cell is one state word; the quota and clock are the limiter's, once.
        let cells = HashedCells::new(USER_LIMIT_CELLS);
        let bytes = std::mem::size_of_val(&*cells.0);
        assert_eq!(bytes, 8 * USER_LIMIT_CELLS, "{bytes} bytes");
    }

    #[test]
    fn keys_wrap_around_the_cells_and_each_cell_has_its_own_budget() {
        let cells = HashedCells::new(USER_LIMIT_CELLS);
        let limiter: HashedLimiter =
            RateLimiter::new(Quota::per_second(NonZeroU32::MIN), cells, DefaultClock::default());
        assert!(limiter.check_key(&7).is_ok());
        assert!(limiter.check_key(&(7 + USER_LIMIT_CELLS as u64)).is_err(), "same cell: its budget is spent");
        assert!(limiter.check_key(&8).is_ok(), "the next cell has its own budget");
    }
}
