//! What the publisher task shares with its handle: counters read by [`super::PublisherStatus`]
//! and copied into the metrics; and the task's small helpers (back-off, rate-limited logging).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use metrics::{counter, gauge};
use surge_persistence::outbox::OutboxLog;

use super::PublisherStatus;
use crate::metrics::names;

/// `oldest_ms` when no unpublished event's time is known.
pub(crate) const UNKNOWN_MS: i64 = i64::MIN;

/// The publisher's live state. Written by its task, read by [`super::PublisherHandle::status`].
pub(crate) struct Shared {
    pub(crate) log: OutboxLog,
    /// The NATS client once connected (it reconnects by itself).
    pub(crate) client: Mutex<Option<async_nats::Client>>,
    /// Acknowledged publishes since start.
    pub(crate) published: AtomicU64,
    /// Publishes awaiting their acknowledgement.
    pub(crate) in_flight: AtomicU64,
    /// The LSN through which the log was read (≥ the cursor).
    pub(crate) read_lsn: AtomicU64,
    /// The saved cursor.
    pub(crate) cursor: AtomicU64,
    /// Time (engine clock, ms) of the oldest event not yet acknowledged, or [`UNKNOWN_MS`].
    pub(crate) oldest_ms: AtomicI64,
}

impl Shared {
    pub(crate) fn new(log: OutboxLog) -> Self {
        let cursor = log.cursor();
        Self {
            log,
            client: Mutex::new(None),
            published: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            read_lsn: AtomicU64::new(cursor),
            cursor: AtomicU64::new(cursor),
            oldest_ms: AtomicI64::new(UNKNOWN_MS),
        }
    }

    pub(crate) fn set_client(&self, client: Option<async_nats::Client>) {
        *self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }

    fn connected(&self) -> bool {
        let client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        client.as_ref().is_some_and(|c| c.connection_state() == State::Connected)
    }

    /// The status now (cheap: atomics and the client's state).
    pub(crate) fn status(&self) -> PublisherStatus {
        let durable_lsn = self.log.durable_lsn();
        let unread = durable_lsn.saturating_sub(self.read_lsn.load(Ordering::Acquire));
        let lag_events = self.in_flight.load(Ordering::Acquire).saturating_add(unread);
        let oldest_ms = self.oldest_ms.load(Ordering::Acquire);
        let lag_seconds = if lag_events == 0 || oldest_ms == UNKNOWN_MS {
            0.0
        } else {
            now_ms().saturating_sub(oldest_ms).max(0) as f64 / 1_000.0
        };
        PublisherStatus {
            connected: self.connected(),
            published_total: self.published.load(Ordering::Relaxed),
            lag_events,
            lag_seconds,
            cursor: self.cursor.load(Ordering::Acquire),
            durable_lsn,
            records_dropped: self.log.records_dropped(),
        }
    }

    /// Copy the status into the gauges (and the dropped-records counter).
    pub(crate) fn record_metrics(&self) {
        let s = self.status();
        gauge!(names::LAG_EVENTS).set(s.lag_events as f64);
        gauge!(names::LAG_SECONDS).set(s.lag_seconds);
        gauge!(names::CONNECTED).set(if s.connected { 1.0 } else { 0.0 });
        counter!(names::DROPPED_RECORDS).absolute(s.records_dropped);
    }
}

/// Wall-clock ms since the Unix epoch (the engine's `SystemClock` reads the same clock).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Capped exponential back-off: 100 ms, doubling, at most 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d
    }

    /// Progress was made: start again from the shortest wait.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Logs failures at `warn`, at most one line per 10 s, with the count of those it kept back.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(10);

    pub(crate) fn warn(&mut self, what: &str, err: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %err, suppressed = self.suppressed, "events: {what}; retrying");
        self.last = Some(now);
        self.suppressed = 0;
    }

    /// Forget the last failure (log the next one at once).
    pub(crate) fn clear(&mut self) {
        if self.last.take().is_some() {
            tracing::info!("events: publishing again");
        }
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn error_log_keeps_back_repeats() {
        let mut log = ErrorLog::default();
        log.warn("x", &"first");
        log.warn("x", &"second");
        log.warn("x", &"third");
        assert_eq!(log.suppressed, 2);
        log.clear();
        assert_eq!((log.last, log.suppressed), (None, 0));
    }
}
