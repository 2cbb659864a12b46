//! Bounds on what one connection may make the server hold (issue 10 item 12): unwritten reply
//! bytes per connection (`max_pending_reply_bytes`), and the counters that show them. The
//! per-user rate limit is in `user.rs` ([`UserLimiter`]).
//!
//! A reply's bytes are counted from the moment it is produced (before it waits for room in the
//! connection's outbound queue) until the transport's writer has handed it to the socket (TCP:
//! `write_all` returned; WebSocket: actix-ws took the frame into its own queue of 32 frames).
//! A reply that would take a connection past the bound, while something is already pending, is
//! not queued: the connection is killed with `slow_consumer` (the same code as a subscriber whose
//! queue is full: in both cases the client does not read what it is sent). Pushes are bounded by
//! count (`outbound_queue`), not counted here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::hub::{ConnShared, Outbound};

mod user;
pub use user::{HashedCells, HashedLimiter, UserLimiter, USER_LIMIT_CELLS};

/// Counters of the connection limits, for tests and metrics (`ServerHandle::limit_stats`).
#[derive(Debug, Default)]
pub struct LimitStats {
    /// The most reply bytes any one connection had pending at once (bytes). Stays at or below
    /// `max_pending_reply_bytes`, unless a single reply is larger (one is always allowed).
    pub pending_reply_bytes_peak: AtomicUsize,
    /// Connections closed because their pending reply bytes would exceed the bound.
    pub closed_pending_replies: AtomicU64,
    /// Connections closed because their socket accepted nothing for `write_timeout_ms`.
    pub closed_write_timeout: AtomicU64,
    /// Connections closed because they did not authenticate within `auth_timeout_ms`.
    pub closed_auth_timeout: AtomicU64,
}

/// Queues replies for one connection, counting their bytes against `max_bytes`.
#[derive(Clone)]
pub(crate) struct Replier {
    pub out: mpsc::Sender<Outbound>,
    pub shared: Arc<ConnShared>,
    pub stats: Arc<LimitStats>,
    pub max_bytes: usize,
}

/// The bytes a reply of `text_len` bytes occupies while pending (its text and the line feed).
pub(crate) fn reply_bytes(text_len: usize) -> usize {
    text_len + 1
}

impl Replier {
    /// Queue `text` (waiting for room: back-pressure), or kill the connection when its pending
    /// reply bytes would pass the bound. A killed connection's replies are dropped.
    pub async fn send(&self, text: String) {
        let n = reply_bytes(text.len());
        self.queue(Outbound::Reply(text), n).await;
    }

    /// Queue `texts` as one message, in order (each counted as [`Replier::send`] counts it).
    pub async fn send_all(&self, texts: Vec<String>) {
        let n = texts.iter().map(|t| reply_bytes(t.len())).sum();
        self.queue(Outbound::Replies(texts), n).await;
    }

    /// Queue `message`, `n` reply bytes, within the bound.
    async fn queue(&self, message: Outbound, n: usize) {
        if self.shared.is_killed() {
            return;
        }
        let before = self.shared.pending_reply_bytes.fetch_add(n, Ordering::AcqRel);
        let pending = before.saturating_add(n);
        if before > 0 && pending > self.max_bytes {
            self.shared.pending_reply_bytes.fetch_sub(n, Ordering::AcqRel);
            self.stats.closed_pending_replies.fetch_add(1, Ordering::Relaxed);
            crate::metrics::connection_closed("pending_replies");
            tracing::warn!(pending_bytes = before, "client does not read its replies; closing (slow_consumer)");
            self.shared.kill("slow_consumer");
            return;
        }
        self.stats.pending_reply_bytes_peak.fetch_max(pending, Ordering::Relaxed);
        if self.out.send(message).await.is_err() {
            self.shared.pending_reply_bytes.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// The writer handed a reply of `text_len` bytes to the socket: it no longer counts as pending.
pub(crate) fn reply_written(shared: &ConnShared, text_len: usize) {
    shared.pending_reply_bytes.fetch_sub(reply_bytes(text_len), Ordering::AcqRel);
}

/// Reply bytes (as counted by [`reply_bytes`]) that a writer handed to its socket at once.
pub(crate) fn reply_bytes_written(shared: &ConnShared, bytes: usize) {
    shared.pending_reply_bytes.fetch_sub(bytes, Ordering::AcqRel);
}

/// The socket accepted nothing for `write_timeout_ms`: count it and kill the connection.
pub(crate) fn write_timed_out(shared: &ConnShared, stats: &LimitStats) {
    stats.closed_write_timeout.fetch_add(1, Ordering::Relaxed);
    crate::metrics::connection_closed("write_timeout");
    tracing::warn!("socket accepted nothing within write_timeout_ms; closing (slow_consumer)");
    shared.kill("slow_consumer");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replier bounded at `max_bytes`, its queue, and what it shares.
    fn replier(max_bytes: usize) -> (Replier, mpsc::Receiver<Outbound>, Arc<ConnShared>, Arc<LimitStats>) {
        let (out, rx) = mpsc::channel(1_000);
        let shared = Arc::new(ConnShared::default());
        let stats = Arc::new(LimitStats::default());
        let r = Replier { out, shared: shared.clone(), stats: stats.clone(), max_bytes };
        (r, rx, shared, stats)
    }

    #[tokio::test]
    async fn pending_reply_bytes_stay_bounded_and_one_reply_always_fits() {
        let (r, mut rx, shared, stats) = replier(100);
        r.send("x".repeat(500)).await; // larger than the bound, but alone: allowed
        assert!(!shared.cancel.is_cancelled());
        let Some(Outbound::Reply(t)) = rx.recv().await else { panic!("a reply") };
        reply_written(&shared, t.len());
        for _ in 0..9 {
            r.send("y".repeat(9)).await; // 10 bytes each: 90 pending
        }
        assert!(!shared.cancel.is_cancelled());
        r.send("z".repeat(10)).await; // 101 > 100
        assert_eq!(shared.kill_code.get(), Some(&"slow_consumer"));
        assert_eq!(shared.pending_reply_bytes.load(Ordering::Relaxed), 90);
        assert_eq!(stats.pending_reply_bytes_peak.load(Ordering::Relaxed), 501);
        assert_eq!(stats.closed_pending_replies.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn replies_sent_together_count_each_reply_and_share_the_bound() {
        let (r, mut rx, shared, stats) = replier(100);
        r.send_all(vec!["a".repeat(19), "b".repeat(29)]).await; // 20 + 30 bytes pending
        assert_eq!(shared.pending_reply_bytes.load(Ordering::Relaxed), 50);
        let Some(Outbound::Replies(ts)) = rx.recv().await else { panic!("the replies, as one message") };
        assert_eq!(ts.iter().map(String::len).collect::<Vec<_>>(), [19, 29], "in order");
        r.send_all(vec!["c".repeat(49), "d".repeat(9)]).await; // 50 + 60 > 100
        assert_eq!(shared.kill_code.get(), Some(&"slow_consumer"));
        assert_eq!(shared.pending_reply_bytes.load(Ordering::Relaxed), 50, "nothing of the refused list counted");
        assert!(rx.try_recv().is_err(), "the refused list is not queued");
        assert_eq!(stats.closed_pending_replies.load(Ordering::Relaxed), 1);
    }
}
