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
//! (governor's direct limiter, the same algorithm and quota as before), chosen by a hash of the
//! user id. Users whose ids share a cell share its budget: a collision can make the limit
//! stricter for them, never looser, and with 65,536 cells it takes tens of thousands of users
//! *per second* before a cell holds two active ones (the per-user limit is an abuse guard,
//! `per_user_rps` = 20 by default). The hash is seeded per process (SipHash with a random key),
//! so a client cannot choose user ids that collide with a victim's.

use std::hash::BuildHasher;
use std::num::NonZeroU32;

use governor::clock::{DefaultClock, QuantaInstant};
use governor::{DefaultDirectRateLimiter, NotUntil, Quota, RateLimiter};

/// GCRA cells of a [`UserLimiter`] (2^16).
pub const USER_LIMIT_CELLS: usize = 1 << 16;

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
    hasher: std::hash::RandomState,
    cells: Box<[DefaultDirectRateLimiter]>,
}

impl UserLimiter {
    /// Every cell with `quota`, sharing one clock.
    pub fn new(quota: Quota) -> Self {
        let clock = DefaultClock::default();
        let cells = (0..USER_LIMIT_CELLS).map(|_| RateLimiter::direct_with_clock(quota, clock.clone())).collect();
        Self { hasher: std::hash::RandomState::new(), cells }
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
        let cell = (self.hasher.hash_one(user_id) as usize) % USER_LIMIT_CELLS;
        self.cells[cell].check()
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
        // A cell is governor's direct limiter: its state word, quota and a shared clock handle.
        let bytes = std::mem::size_of::<DefaultDirectRateLimiter>() * USER_LIMIT_CELLS;
        assert!(bytes <= 8 << 20, "{bytes} bytes");
    }
}
