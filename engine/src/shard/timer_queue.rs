//! A shard's timer queue: an ordered set for every timer, plus a plain FIFO for the common case
//! of payment deadlines armed in time order.
//!
//! Every created order arms a payment deadline `payment_timeout_ms` after its creation, so
//! deadlines arrive almost always in non-decreasing order. A `BTreeSet` entry costs about 50
//! bytes per order (24-byte keys in half-full nodes after appends at the right edge) and a
//! tree walk per insert; the FIFO costs 16 bytes and a push (issue 12: memory and CPU per
//! order). A deadline armed out of order (a clock step back, recovered orders) goes to the
//! ordered set, so the earliest timer is always the smaller of the two heads.
//!
//! A deadline in the FIFO is not removed when its order is paid or canceled: that would be a
//! search. It stays until due, and [`TimerQueue::pop_due`] hands it out like any other; the
//! caller checks that the order is still waiting for that deadline (`ShardCore::fire_timers`).
//! So the FIFO holds at most the deadlines of `payment_timeout_ms` worth of orders.
//!
//! The FIFO is a queue of fixed-size chunks ([`ChunkedFifo`]), not one `VecDeque`: a
//! `VecDeque` of millions of deadlines doubles by copying all of them (a shard stalls for the
//! copy) and is on average a third empty; chunks of 4,096 are never copied and never more than
//! one chunk empty.

use std::collections::{BTreeSet, VecDeque};

use super::timers::TimerKind;
use crate::domain::OrderId;

/// One timer: (due time in ms on the engine clock, order, what it does).
pub(super) type Timer = (i64, OrderId, TimerKind);

/// Items per chunk of a [`ChunkedFifo`] (64 KiB of deadlines).
const CHUNK_LEN: usize = 4_096;

/// A FIFO in chunks of [`CHUNK_LEN`]: growing it never copies what it holds.
pub(super) struct ChunkedFifo<T> {
    /// Full chunks, then the one being filled; the front chunk is read from `head`.
    chunks: VecDeque<Vec<T>>,
    head: usize,
}

impl<T> Default for ChunkedFifo<T> {
    fn default() -> Self {
        Self { chunks: VecDeque::new(), head: 0 }
    }
}

impl<T: Copy> ChunkedFifo<T> {
    pub fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_LEN => last.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push(item);
                self.chunks.push_back(chunk);
            }
        }
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(|c| c.get(self.head))
    }

    pub fn back(&self) -> Option<&T> {
        self.chunks.back().and_then(|c| c.last())
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let item = *self.front()?;
        self.head += 1;
        let only = self.chunks.len() == 1;
        if let Some(front) = self.chunks.front_mut().filter(|c| self.head == c.len()) {
            if only {
                // Drained: keep the chunk for the next pushes (no allocation per quiet spell).
                front.clear();
            } else {
                self.chunks.pop_front();
            }
            self.head = 0;
        }
        Some(item)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() - self.head
    }
}

/// The timers of one shard (see the module docs).
#[derive(Default)]
pub(super) struct TimerQueue {
    /// Payment deadlines armed in non-decreasing due time.
    deadlines: ChunkedFifo<(i64, OrderId)>,
    /// Every other timer, and deadlines armed out of order.
    ordered: BTreeSet<Timer>,
}

impl TimerQueue {
    /// Arm a timer.
    pub fn insert(&mut self, timer: Timer) {
        let (at, order_id, kind) = timer;
        let in_order = self.deadlines.back().is_none_or(|last| last.0 <= at);
        if kind == TimerKind::PaymentDeadline && in_order {
            self.deadlines.push_back((at, order_id));
        } else {
            self.ordered.insert(timer);
        }
    }

    /// Disarm a timer. A payment deadline in the FIFO stays until due (module docs).
    pub fn remove(&mut self, timer: &Timer) {
        self.ordered.remove(timer);
    }

    /// The earliest due time, if any timer is armed.
    pub fn next_due_ms(&self) -> Option<i64> {
        match (self.deadlines.front(), self.ordered.first()) {
            (Some(d), Some(o)) => Some(d.0.min(o.0)),
            (Some(d), None) => Some(d.0),
            (None, Some(o)) => Some(o.0),
            (None, None) => None,
        }
    }

    /// Take the earliest timer if it is due at `now_ms`. Ties between the two queues go to the
    /// ordered set first: any order is correct, this one is deterministic.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<Timer> {
        let from_fifo = match (self.deadlines.front(), self.ordered.first()) {
            (Some(d), Some(o)) => d.0 < o.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if from_fifo {
            let &(at, order_id) = self.deadlines.front()?;
            if at > now_ms {
                return None;
            }
            self.deadlines.pop_front();
            Some((at, order_id, TimerKind::PaymentDeadline))
        } else {
            if self.ordered.first()?.0 > now_ms {
                return None;
            }
            self.ordered.pop_first()
        }
    }

    /// Timers armed, stale FIFO deadlines included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.deadlines.len() + self.ordered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(at: i64, id: u64) -> Timer {
        (at, OrderId(id), TimerKind::PaymentDeadline)
    }

    #[test]
    fn pops_in_due_order_across_both_queues() {
        let mut q = TimerQueue::default();
        q.insert(deadline(10, 1));
        q.insert(deadline(20, 2));
        q.insert(deadline(5, 3)); // out of order: the ordered set
        q.insert((15, OrderId(4), TimerKind::Archive));
        q.insert(deadline(20, 5));
        assert_eq!(q.next_due_ms(), Some(5));
        let mut fired = Vec::new();
        while let Some(t) = q.pop_due(100) {
            fired.push((t.0, t.1 .0));
        }
        assert_eq!(fired, vec![(5, 3), (10, 1), (15, 4), (20, 2), (20, 5)]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn nothing_before_its_time() {
        let mut q = TimerQueue::default();
        q.insert(deadline(10, 1));
        q.insert((12, OrderId(2), TimerKind::AutoComplete));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(10).map(|t| t.1), Some(OrderId(1)));
        assert_eq!(q.pop_due(11), None);
        assert_eq!(q.pop_due(12).map(|t| t.2), Some(TimerKind::AutoComplete));
    }

    #[test]
    fn removal_disarms_ordered_timers_and_leaves_fifo_deadlines_for_the_caller() {
        let mut q = TimerQueue::default();
        q.insert(deadline(10, 1));
        q.insert((11, OrderId(2), TimerKind::Archive));
        q.remove(&(11, OrderId(2), TimerKind::Archive));
        q.remove(&deadline(10, 1));
        assert_eq!(q.pop_due(100), Some(deadline(10, 1)));
        assert_eq!(q.pop_due(100), None);
    }

    #[test]
    fn the_fifo_keeps_order_across_chunks() {
        let mut f = ChunkedFifo::default();
        let n = (CHUNK_LEN * 2 + 7) as u64;
        for i in 0..n {
            f.push_back(i);
            if i % 3 == 0 {
                // Interleaved pops drain the front chunk while the back one fills.
                assert_eq!(f.pop_front(), Some(i / 3));
            }
        }
        let popped = n.div_ceil(3);
        assert_eq!(f.len() as u64, n - popped);
        let rest: Vec<u64> = std::iter::from_fn(|| f.pop_front()).collect();
        assert_eq!(rest, (popped..n).collect::<Vec<_>>());
        assert_eq!(f.front(), None);
        f.push_back(1);
        assert_eq!((f.front(), f.back()), (Some(&1), Some(&1)));
    }
}
