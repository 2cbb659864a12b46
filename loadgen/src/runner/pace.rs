//! Open-loop pacing finer than tokio's timer.
//!
//! tokio's timer wheel ticks in whole milliseconds and rounds a deadline up to the next tick,
//! so a request due at `t` and slept for with `sleep_until(t)` leaves up to one or two
//! milliseconds late. An open-loop run measures latency from `t` (coordinated omission
//! corrected), so that lateness was charged to the server: at 10 k requests/s, 5% of the
//! server's saturation, Surge's median was 1.6 ms, most of it the generator's ticks (issue 13).
//! wrk2 has the same floor for the same reason (its event loop's timers are in milliseconds).
//!
//! [`pace_until`] sleeps on tokio's timer to within [`PACE_SPIN`] of the due time, then yields
//! to the runtime's other tasks (their replies are read meanwhile) until the clock reaches it.
//! The load generator runs on its own core in a pinned comparison, so the spin costs the server
//! nothing; its own CPU per request is no longer meaningful in an open-loop run.

use std::time::{Duration, Instant};

/// How close to the due time the timer sleep ends; the rest is spent yielding. Two ticks: the
/// timer may fire up to a tick late and rounds up once more.
pub(super) const PACE_SPIN: Duration = Duration::from_millis(2);

/// Return at `due` (never before it): a few microseconds after it on an idle generator when
/// `precise`; otherwise on tokio's timer alone (up to a tick or two late; in-process runs).
pub(super) async fn pace_until(due: Instant, precise: bool) {
    if !precise {
        return tokio::time::sleep_until(due.into()).await;
    }
    if let Some(coarse) = due.checked_sub(PACE_SPIN) {
        if coarse > Instant::now() {
            tokio::time::sleep_until(coarse.into()).await;
        }
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacing_never_returns_before_the_due_time() {
        for ahead_us in [0u64, 50, 900, 2_500, 4_000] {
            let due = Instant::now() + Duration::from_micros(ahead_us);
            pace_until(due, true).await;
            assert!(Instant::now() >= due, "returned before a due time {ahead_us} µs ahead");
        }
        // A due time in the past returns at once (a late request goes out now).
        pace_until(Instant::now() - Duration::from_millis(5), true).await;
        let due = Instant::now() + Duration::from_micros(1_500);
        pace_until(due, false).await;
        assert!(Instant::now() >= due, "the timer-only pacing returned early");
    }
}
